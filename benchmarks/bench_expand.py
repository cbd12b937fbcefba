"""Expanding and persisting a 100,000-job grid, and re-adding it unchanged.

    python benchmarks/bench_expand.py [--keep DIR]
    python benchmarks/bench_expand.py --against main [--rounds 2]   # this tree vs main, alternately

The grid: NEAR (ncsn -> rl, 98 ablation rows that only touch rl, so ncsn jobs are shared) and AMP
(rl) x 25 motions x 40 seeds = 100,000 jobs, near trainer commands validated against cfg/ by shape.
Anchor: inserting the same 100,000 rows into a fresh SQLite file with one bare executemany (the
floor any persistence pays). Prints the steps, then LAST the figure: expand+persist seconds
(target < 3 s on the 2-core dev machine) and re-add seconds (target < 1 s), as ratios to the anchor.
With ``--against REF``: the CPU seconds of expanding and validating the same grid, and of validating
sweeps/paper_main.yaml, for this tree and REF's near/ in alternating fresh processes; LAST the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TREE = Path(os.environ.get("NEAR_BENCH_TREE", str(REPO)))  # --against: the other tree (its near/ and cfg/)
sys.path.insert(0, str(TREE))

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
    ap.add_argument("--against", default=None, metavar="GIT_REF",
                    help="time this tree and GIT_REF's near/ (e.g. main) alternately, and print the ratio")
    ap.add_argument("--rounds", type=int, default=2, help="with --against: runs of each tree")
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.against:
        return compare(args.against, args.rounds)
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="near-bench-"))
    try:
        if args.measure:
            print(json.dumps(measure(tmp)))
        else:
            run(tmp)
    finally:
        if not args.keep:  # ~140 MB of job tables per run
            shutil.rmtree(tmp, ignore_errors=True)


def _imports():
    """expand, load_spec, validate_jobs of whichever near is on the path (the sweep package, or
    the loose modules before it)."""
    if (Path(sys.path[0]) / "near" / "sweep").is_dir():
        from near.sweep.expand import expand
        from near.sweep.spec import load_spec
        from near.sweep.validate import validate_jobs
    else:
        from near.expand import expand
        from near.spec import load_spec
        from near.validate import validate_jobs
    return expand, load_spec, validate_jobs


def measure(tmp: Path) -> dict[str, float]:
    """Seconds of: expanding the 100,000-job grid, validating it, and loading + expanding +
    validating sweeps/paper_main.yaml (CPU time: the machine is shared)."""
    expand, load_spec, validate_jobs = _imports()
    assert Path(sys.modules[expand.__module__].__file__).is_relative_to(Path(sys.path[0])), sys.path[0]
    spec_file = tmp / "bench.yaml"
    spec_file.write_text(_spec_text())
    out = {}
    c0 = time.process_time()
    spec = load_spec(spec_file)
    e = expand(spec)
    c1 = time.process_time()
    validate_jobs(e.jobs, spec.label)
    c2 = time.process_time()
    main_spec = load_spec(TREE / "sweeps" / "paper_main.yaml")
    validate_jobs(expand(main_spec).jobs, main_spec.label)
    c3 = time.process_time()
    out.update(expand=c1 - c0, validate=c2 - c1, paper_main=c3 - c2, jobs=len(e.jobs))
    return out


def compare(ref: str, rounds: int) -> None:
    """This tree and ``ref``'s near/ measured alternately in fresh processes."""
    old = Path(tempfile.mkdtemp(prefix="near-bench-ref-"))
    try:
        # the ref's code checks against its own cfg/ and sweeps (the settings schema lives in both)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "near", "cfg", "sweeps"],
                                 capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
        runs: dict[str, list[dict]] = {ref: [], "this tree": []}
        for i in range(rounds):
            for name, path in ((ref, old), ("this tree", REPO)):
                env = {**os.environ, "NEAR_BENCH_TREE": str(path)}
                r = subprocess.run([sys.executable, __file__, "--measure"], env=env, capture_output=True, text=True,
                                   check=True, cwd=path)
                runs[name].append(json.loads(r.stdout.strip().splitlines()[-1]))
                print(f"round {i + 1} {name}: " + ", ".join(f"{k} {v:.2f} s" for k, v in runs[name][-1].items()
                                                          if k != "jobs"))
    finally:
        shutil.rmtree(old, ignore_errors=True)
    best = {name: {k: min(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    for k in ("expand", "validate", "paper_main"):
        print(f"{k}: {ref} {best[ref][k]:.2f} s, this tree {best['this tree'][k]:.2f} s "
              f"({best['this tree'][k] / best[ref][k]:.2f}x)")
    total = {name: b["expand"] + b["validate"] for name, b in best.items()}
    print(f"FIGURE expand+validate 100000 jobs, cpu seconds (best of {rounds}): {ref} {total[ref]:.2f} s, "
          f"this tree {total['this tree']:.2f} s = {total['this tree'] / total[ref]:.2f}x {ref} (target <= 1.2x); "
          f"paper_main.yaml load+expand+validate {best['this tree']['paper_main'] / best[ref]['paper_main']:.2f}x")


def _spec_text() -> str:
    motions = ", ".join(f"m{i}.yaml" for i in range(25))  # motion lists: a name must be a file or a built-in
    ablations = ", ".join(f"a{i}: {{rl: [++train.params.config.near_config.inference.sigma_level={i}]}}"
                          for i in range(98))
    return SPEC.format(workdir=TREE, motions=motions, ablations=ablations)


def run(tmp: Path) -> None:
    """The measurements, in ``tmp``."""
    from near.commands.sweep import add_spec
    from near.sweep.expand import expand
    from near.jobtable import JobTable
    from near.sweep.spec import load_spec
    from near.sweep.validate import validate_jobs

    spec_file = tmp / "bench.yaml"
    spec_file.write_text(_spec_text())

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
