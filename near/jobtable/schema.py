"""The job table's SQLite schema, and the migration of tables written by older versions."""

from __future__ import annotations

MAGIC = "near-jobtable"
# 2: attempt counters (crashes, requeues, charged), checkpoint progress, folded node outcomes
SCHEMA_VERSION = 2
TABLE_FILENAME = "jobs.db"

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL UNIQUE,
    sweep TEXT NOT NULL,
    stage TEXT NOT NULL,
    command_template TEXT NOT NULL,
    command TEXT,
    params TEXT NOT NULL,
    resources TEXT NOT NULL,
    workdir TEXT,
    point TEXT,
    state TEXT NOT NULL,
    reason TEXT,
    exit_code INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 3,
    scheduler_id TEXT,
    lease_owner TEXT,
    lease_expires REAL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    started REAL,
    finished REAL,
    crashes INTEGER NOT NULL DEFAULT 0,
    requeues INTEGER NOT NULL DEFAULT 0,
    charged INTEGER NOT NULL DEFAULT 0,
    progress TEXT
);
CREATE INDEX jobs_state ON jobs(state, seq);
CREATE TABLE deps (
    job_id TEXT NOT NULL,
    ref TEXT NOT NULL,
    dep_job_id TEXT NOT NULL,
    PRIMARY KEY (job_id, ref)
) WITHOUT ROWID;
CREATE INDEX deps_dep ON deps(dep_job_id);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    ts REAL NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    reason TEXT,
    detail TEXT
);
CREATE INDEX events_job ON events(job_id, id);
CREATE TABLE outcomes (
    job_id TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (job_id, name)
) WITHOUT ROWID;
"""

JOB_COLUMNS = (
    "job_id, sweep, stage, command_template, command, params, resources, workdir, point, state, reason, "
    "exit_code, attempts, max_attempts, scheduler_id, lease_owner, lease_expires, created, updated, "
    "started, finished, crashes, requeues, charged, progress"
)


# version -> statements that bring a table of that version to the next one (run in one transaction)
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "ALTER TABLE jobs ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN requeues INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN charged INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN progress TEXT",
        "CREATE TABLE outcomes (job_id TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (job_id, name)) WITHOUT ROWID",
    ),
}
REQUIRED_TABLES = ("meta", "jobs", "deps", "events")
