"""`near sweep status` and `near sweep show` on a 1,000,000-job table: this checkout against main.

    python benchmarks/bench_status.py [--jobs 1000000] [--base main] [--keep DIR]

The table: NEAR's grid shape (4 algorithms x 25 motions x 10 ablations x seeds; one ncsn job per
four rl jobs, each rl job needing its ncsn job), 70% done, 30% pending, 40 jobs failed or running.
It is written by the code of ``--base`` (a `git worktree` of it at a temp path: JobTable.create,
then one executemany in one transaction), so the base reads it as its own. A copy is opened once
by this checkout's code for writing (the upgrade or recount any writing command does, timed
apart); then both run the real CLI (`python -m near`, each with its own checkout first on the
path) on their copy, and their outputs must match. The base's copy is never opened by a writer:
rows inserted outside near leave a base that keeps tallies counting from the jobs (its path for
tables edited by other tools), so against such a base the ratio is what the tallies save. Prints the steps, then LAST the figure: seconds of `status` and of
`show` (best of 3; the base runs once) and the ratios to the base.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BUILD = r"""
import hashlib, json, sqlite3, sys, time
from near.jobtable import JobTable
path, n = sys.argv[1], int(sys.argv[2])
JobTable.create(path, sweep="big").close()
algorithms = ["NEAR", "AMP", "PPO", "Track"]
motions = [f"motion{m:02d}" for m in range(25)]
ablations = ["none"] + [f"ablation{a}" for a in range(9)]
now = time.time()
ids = [hashlib.sha1(str(i).encode()).hexdigest()[:16] for i in range(n)]
jobs, deps = [], []
for i, job_id in enumerate(ids):
    point = {"algorithm": algorithms[i % 4], "motion": motions[i // 4 % 25], "ablation": ablations[i // 100 % 10],
             "seed": i // 5000}
    state = "done" if i % 10 < 7 else "pending"
    reason = exit_code = None
    if i % (n // 40) == 1:
        state, reason, exit_code = ("failed", "crashed (exit code 1) (lost 3 of max_attempts 3)", 1) if i % 2 \
            else ("running", None, None)
    stage = "ncsn" if i % 5 == 0 else "rl"
    command = (f"near train {stage} task=motion{point['algorithm']} ++task.env.motion_file={point['motion']} "
               f"seed={point['seed']} run_dir=${{run_dir}}")
    if stage == "rl":
        command += " ++train.params.config.near_config.inference.eb_model_checkpoint=${ncsn.run_dir}/nn/checkpoint.pth"
        deps.append((job_id, "ncsn", ids[i - i % 5]))
    jobs.append((job_id, "big", stage, command, json.dumps(point), '{"cpus": 1, "time": "04:00:00"}', "/work/near",
                 state, reason, exit_code, 0 if state == "pending" else 1, now, now))
conn = sqlite3.connect(path + "/jobs.db", isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.executemany("INSERT INTO jobs(job_id, sweep, stage, command_template, params, resources, workdir, state, "
                 "reason, exit_code, attempts, created, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", jobs)
conn.executemany("INSERT INTO deps(job_id, ref, dep_job_id) VALUES (?,?,?)", deps)
conn.execute("UPDATE meta SET value=? WHERE key='axes'", (json.dumps(["algorithm", "motion", "ablation", "seed"]),))
conn.execute("COMMIT")
conn.close()
print(ids[n // 2 + 1])  # an rl job in the middle, for `show`
"""

UPGRADE = "import sys; from near.jobtable import JobTable; JobTable.open(sys.argv[1]).close()"


def near(checkout: Path, *args: str, cwd: Path) -> tuple[float, str]:
    """Seconds of one `python -m near ...` run from ``checkout``, and its output."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "near", *args], cwd=cwd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if r.returncode:
        sys.exit(f"{checkout}: near {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return took, r.stdout


def python(checkout: Path, code: str, *args: str, cwd: Path) -> str:
    """The output of ``python -c code args`` importing near from ``checkout``."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def run(tmp: Path, n: int, base: str) -> None:
    main_tree = tmp / "base"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(main_tree), base], check=True)
    try:
        for tree in (main_tree, REPO):  # each run imports its own near, not the installed one
            where = python(tree, "import near; print(near.__file__)", cwd=tmp)
            assert where.startswith(str(tree)), (tree, where)
        start = time.perf_counter()
        job = python(main_tree, BUILD, str(tmp / "old"), str(n), cwd=tmp)
        print(f"built {n} jobs with {base}'s JobTable.create + one executemany: {time.perf_counter() - start:.1f} s")
        (tmp / "new").mkdir()
        shutil.copy(tmp / "old" / "jobs.db", tmp / "new" / "jobs.db")
        start = time.perf_counter()
        python(REPO, UPGRADE, str(tmp / "new"), cwd=tmp)
        print(f"upgrade by the first writing command of this checkout (once per table): "
              f"{time.perf_counter() - start:.1f} s")

        old_status, old_out = near(main_tree, "sweep", "status", "old", cwd=tmp)
        print(f"{base}: status {old_status:.2f} s")
        old_show, old_shown = near(main_tree, "sweep", "show", "old", job, cwd=tmp)
        print(f"{base}: show {old_show:.2f} s")
        new_status = new_show = float("inf")
        for _ in range(3):
            took, out = near(REPO, "sweep", "status", "new", cwd=tmp)
            new_status = min(new_status, took)
            assert out.replace("new", "old") == old_out.replace("new", "old"), "status differs from the base's"
            took, shown = near(REPO, "sweep", "show", "new", job, cwd=tmp)
            new_show = min(new_show, took)
            assert shown.replace("/new/", "/old/") == old_shown, "show differs from the base's"
        print(f"this checkout: status {new_status:.2f} s, show {new_show:.2f} s (best of 3; outputs match {base}'s)")
        print(f"FIGURE {n} jobs: status {new_status:.2f} s (target < 1 s; {base} {old_status:.2f} s, "
              f"{old_status / new_status:.1f}x faster) | show {new_show:.2f} s ({base} {old_show:.2f} s, "
              f"{old_show / new_show:.1f}x)")
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(main_tree)], check=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--base", default="main", help="the git revision to compare with (default: main)")
    ap.add_argument("--keep", default=None, help="work here instead of a temp dir (kept)")
    args = ap.parse_args()
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="near-bench-status-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        run(tmp, args.jobs, args.base)
    finally:
        if not args.keep:  # two ~400 MB tables
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
