"""Validation before and after typed settings, in one run: `near sweep add`'s check of
sweeps/paper_main.yaml (225 jobs) and of bench_expand.py's 100,000-job grid.

    python benchmarks/bench_validate.py [--before COMMIT] [--repeat N]

"Before" is the code and cfg/ of COMMIT (default: the main branch before typed settings, which
composed each override shape with hydra and checked nothing per job); "after" is this checkout,
which types every setting of every job and computes what its stage reads. Each side runs in its
own interpreter, alternating, N times; the figure is the smaller CPU time of each. Prints LAST the
figure: after / before (target: at most 1.2x) for paper_main and for the 100,000-job grid.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEFORE = "a4345ddf4ead"

# run inside the measured tree: prints one JSON line {"paper_main": cpu s, "grid": cpu s}
PROBE = r"""
import json, sys, time
from pathlib import Path
tree = Path(sys.argv[1])
sys.path.insert(0, str(tree / "benchmarks"))
try:
    from near.sweep.spec import load_spec
    from near.sweep.expand import expand
    from near.sweep.validate import validate_jobs
except ImportError:
    from near.spec import load_spec
    from near.expand import expand
    from near.validate import validate_jobs
import bench_expand

def cpu(spec_path):
    spec = load_spec(spec_path)
    jobs = expand(spec).jobs
    c0 = time.process_time()
    report = validate_jobs(jobs, spec.label)
    return time.process_time() - c0, report.checked

grid = Path(sys.argv[2])
motions = ", ".join(f"m{i}" for i in range(25))
ablations = ", ".join(f"a{i}: {{rl: [++train.params.config.near_config.inference.sigma_level={i}]}}" for i in range(98))
grid.write_text(bench_expand.SPEC.format(workdir=tree, motions=motions, ablations=ablations))
main, n_main = cpu(tree / "sweeps" / "paper_main.yaml")
big, n_big = cpu(grid)
print(json.dumps({"paper_main": main, "paper_main_jobs": n_main, "grid": big, "grid_jobs": n_big}))
"""


def measure(tree: Path, tmp: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", PROBE, str(tree), str(tmp / f"grid-{tree.name}.yaml")], cwd=tree,
                         env=env, capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default=BEFORE, help=f"commit of the 'before' code (default {BEFORE})")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="near-bench-validate-") as tmp_name:
        tmp = Path(tmp_name)
        before = tmp / "before"
        before.mkdir()
        archive = subprocess.run(["git", "archive", args.before, "near", "cfg", "sweeps", "benchmarks"], cwd=REPO,
                                 capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        for _ in range(args.repeat):
            for name, tree in (("before", before), ("after", REPO)):
                runs[name].append(measure(tree, tmp))
                print(f"{name}: {runs[name][-1]}", flush=True)
    best = {name: {k: min(r[k] for r in rs) for k in ("paper_main", "grid")} for name, rs in runs.items()}
    for key, what in (("paper_main", "sweeps/paper_main.yaml (225 jobs)"), ("grid", "bench_expand grid (100000 jobs)")):
        print(f"validate {what}: before {best['before'][key]:.2f} s CPU, after {best['after'][key]:.2f} s CPU")
    print(f"FIGURE validation after/before: paper_main {best['after']['paper_main'] / best['before']['paper_main']:.2f}x, "
          f"100000-job grid {best['after']['grid'] / best['before']['grid']:.2f}x (target <= 1.2x)")


if __name__ == "__main__":
    main()
