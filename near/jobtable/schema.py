"""The job table's SQLite schema, and the migration of tables written by older versions."""

from __future__ import annotations

MAGIC = "near-jobtable"
# 2: attempt counters (crashes, requeues, charged), checkpoint progress, folded node outcomes
# 3: tallies (jobs counted per stage / parameter value and state) and the attention index, so that
#    `status` reads a few thousand rows, not a million
SCHEMA_VERSION = 3
# A table this old or newer (and not newer than SCHEMA_VERSION) can be read without migrating it:
# later versions only added derived tables and indexes, which readers do without (more slowly).
OLDEST_READABLE = 2
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

# Jobs per (stage or parameter value, state). ``key`` is a params key, or '' for the stage;
# ``type`` and ``value`` are what SQLite's json_each says of the value (null values are not
# counted); ``first`` is the seq of the first job counted in the row, so values can be listed in
# the order the sweep introduced them. ``add`` counts the jobs it inserts, a trigger moves them
# when their state changes; anything else that edits jobs marks the tallies stale (meta
# ``tallies``), and the next writer recounts them.
TALLIES = """
CREATE TABLE IF NOT EXISTS tallies (
    key TEXT NOT NULL,
    type TEXT NOT NULL,
    value NOT NULL,
    state TEXT NOT NULL,
    n INTEGER NOT NULL,
    first INTEGER NOT NULL,
    PRIMARY KEY (key, type, value, state)
) WITHOUT ROWID
"""
# The jobs `status` lists: neither pending nor done, or with a reason.
ATTENTION = "state NOT IN ('pending', 'done') OR reason IS NOT NULL"
ATTENTION_INDEX = f"CREATE INDEX IF NOT EXISTS jobs_attention ON jobs(seq) WHERE {ATTENTION}"


MARK_STALE = "INSERT OR REPLACE INTO meta(key, value) VALUES ('tallies', 'stale')"


def _params_of(job: str) -> str:
    """In a trigger: (key, type, value) of each non-null parameter of the ``old`` or ``new`` row
    (none for params that are not JSON)."""
    return (f"SELECT key, type, value FROM json_each(CASE WHEN json_valid({job}.params) THEN {job}.params "
            "ELSE '{}' END) WHERE type != 'null'")


# (each statement looks its tallies up by primary key: an IN over a compound SELECT would scan them)
TALLY_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS jobs_tally_state AFTER UPDATE OF state ON jobs "
    "WHEN old.state IS NOT new.state BEGIN "
    "UPDATE tallies SET n = n - 1 WHERE key = '' AND type = 'text' AND value = old.stage AND state = old.state; "
    "UPDATE tallies SET n = n - 1 WHERE (key, type, value, state) IN "
    f"(SELECT key, type, value, old.state FROM ({_params_of('old')})); "
    "INSERT INTO tallies(key, type, value, state, n, first) VALUES ('', 'text', new.stage, new.state, 1, new.seq) "
    "ON CONFLICT DO UPDATE SET n = n + 1; "
    "INSERT INTO tallies(key, type, value, state, n, first) "
    f"SELECT key, type, value, new.state, 1, new.seq FROM ({_params_of('new')}) WHERE true "
    "ON CONFLICT DO UPDATE SET n = n + 1; END",
    f"CREATE TRIGGER IF NOT EXISTS jobs_tally_stale AFTER UPDATE OF stage, params ON jobs BEGIN {MARK_STALE}; END",
    f"CREATE TRIGGER IF NOT EXISTS jobs_tally_delete AFTER DELETE ON jobs BEGIN {MARK_STALE}; END",
)
# Every job counted from scratch, one row per tally: what a writer stores when it recounts, and
# what a reader computes when the table has no valid tallies. Params that are not JSON fail it.
TALLY_COUNT = (
    "SELECT '', 'text', stage, state, COUNT(*), MIN(seq) FROM jobs GROUP BY stage, state UNION ALL "
    "SELECT p.key, p.type, p.value, j.state, COUNT(*), MIN(j.seq) FROM jobs j, json_each(j.params) p "
    "WHERE p.type != 'null' GROUP BY 1, 2, 3, 4"
)
RECOUNT = ("DELETE FROM tallies", f"INSERT INTO tallies(key, type, value, state, n, first) {TALLY_COUNT}",
           "DELETE FROM meta WHERE key='tallies'")
# Statements that create a new table (TALLY_TRIGGERS contain ';', so they are kept apart).
CREATE = tuple(s for s in SCHEMA.split(";") if s.strip()) + (TALLIES, ATTENTION_INDEX) + TALLY_TRIGGERS

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
    # the tallies are counted by the writer that opened it, right after (see JobTable.open)
    2: (TALLIES, ATTENTION_INDEX) + TALLY_TRIGGERS + (MARK_STALE,),
}
REQUIRED_TABLES = ("meta", "jobs", "deps", "events")
