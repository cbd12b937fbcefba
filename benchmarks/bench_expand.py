"""Expanding and persisting a 100,000-job grid, and re-adding it unchanged.

    python benchmarks/bench_expand.py [--keep DIR]

The grid: NEAR (ncsn -> rl, 98 ablation rows that only touch rl, so ncsn jobs are shared) and AMP
(rl) x 25 motions x 40 seeds = 100,000 jobs, near trainer commands validated against cfg/ by shape.
Anchor: inserting the same 100,000 rows into a fresh SQLite file with one bare executemany (the
floor any persistence pays). Prints the steps, then LAST the figure: expand+persist seconds
(target < 3 s on the 2-core dev machine) and re-add seconds (target < 1 s), as ratios to the anchor.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SPEC = """
name: bench
workdir: {workdir}
axes:
  algorithm: [NEAR, AMP]
  motion: [{motions}]
  seed: {{count: 40, base: 0}}
  ablation:
    when: {{algorithm: NEAR}}
    values: {{{ablations}}}
stages:
  - name: ncsn
    when: {{algorithm: NEAR}}
    command: near train ncsn task=motionNEAR ++task.env.motion_file=${{motion}} seed=${{seed}} run_dir=${{run_dir}}
  - name: rl
    when: {{algorithm: NEAR}}
    needs: [ncsn]
    command: >-
      near train rl task=motionNEAR ++task.env.motion_file=${{motion}} seed=${{seed}} run_dir=${{run_dir}}
      ++train.params.config.near_config.inference.eb_model_checkpoint=${{ncsn.run_dir}}/nn/checkpoint.pth
  - name: rl
    when: {{algorithm: AMP}}
    command: near train rl task=motionAMP ++task.env.motion_file=${{motion}} seed=${{seed}} run_dir=${{run_dir}}
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", default=None, help="write the experiment here instead of a temp dir")
    args = ap.parse_args()
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="near-bench-"))
    try:
        run(tmp)
    finally:
        if not args.keep:  # ~140 MB of job tables per run
            shutil.rmtree(tmp, ignore_errors=True)


def run(tmp: Path) -> None:
    """The measurements, in ``tmp``."""
    from near.commands.sweep import add_spec
    from near.sweep.expand import expand
    from near.jobtable import JobTable
    from near.sweep.spec import load_spec
    from near.sweep.validate import validate_jobs

    motions = ", ".join(f"m{i}" for i in range(25))
    ablations = ", ".join(f"a{i}: {{rl: [++train.params.config.near_config.inference.sigma_level={i}]}}"
                          for i in range(98))
    spec_file = tmp / "bench.yaml"
    spec_file.write_text(SPEC.format(workdir=REPO, motions=motions, ablations=ablations))

    c0 = time.process_time()
    t0 = time.perf_counter()
    spec = load_spec(spec_file)
    e = expand(spec)
    t1 = time.perf_counter()
    c1 = time.process_time()
    validated = (REPO / "cfg" / "config.yaml").exists()
    report = validate_jobs(e.jobs, spec.label) if validated else None
    t2 = time.perf_counter()
    c2 = time.process_time()
    table = JobTable.create(tmp / "parts")
    r = table.add(e.jobs, axes=e.axes)
    t3 = time.perf_counter()
    c3 = time.process_time()
    table.close()
    assert r.new == len(e.jobs) == 100_000, (r, len(e.jobs))
    print(f"expand: {len(e.points)} points -> {len(e.jobs)} jobs ({e.shared} shared) in {t1 - t0:.2f} s")
    if report:
        print(f"validate: {report.checked} trainer jobs, {report.shapes} shapes, {t2 - t1:.2f} s")
    print(f"persist: {r.new} new jobs in {t3 - t2:.2f} s")

    # the same through `near sweep add`'s code path (load, expand, validate, persist)
    a0 = time.perf_counter()
    first = add_spec(spec_file, tmp / "exp", validate=validated)
    a1 = time.perf_counter()
    again = add_spec(spec_file, tmp / "exp", validate=validated)
    a2 = time.perf_counter()
    assert first.new == 100_000 and again.new == 0 and again.existing == 100_000
    print(f"near sweep add (all steps): {a1 - a0:.2f} s; again, unchanged: {a2 - a1:.2f} s")
    t4, t5 = a1, a2

    # anchor: the bare SQLite floor for the same rows
    conn = sqlite3.connect(tmp / "anchor.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, stage TEXT, cmd TEXT, params TEXT, deps TEXT)")
    rows = [(j.job_id, j.stage, j.command, str(j.params), str(j.deps)) for j in e.jobs]
    b0 = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t VALUES (?,?,?,?,?)", rows)
    conn.execute("COMMIT")
    anchor = time.perf_counter() - b0
    conn.close()

    total = (t1 - t0) + (t3 - t2)
    cpu = (c1 - c0) + (c3 - c2)
    print(f"cpu time of expand+persist: {cpu:.2f} s (wall/cpu shows how loaded the machine was)")
    print(f"anchor: bare executemany of the same 100000 rows: {anchor:.2f} s")
    print(f"FIGURE expand+persist 100000 jobs: {total:.2f} s (target < 3 s; {total / anchor:.1f}x anchor)"
          f" | add incl. validation {a1 - a0:.2f} s | re-add unchanged: {t5 - t4:.2f} s (target < 1 s;"
          f" {(t5 - t4) / anchor:.2f}x anchor)")


if __name__ == "__main__":
    main()
