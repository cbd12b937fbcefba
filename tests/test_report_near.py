"""NEAR's own results folders (written here with tensorboardX): leading-underscore run names and
composed tasks without it, motions with underscores, configs under runs/configs/<name>/, an event
file without scalars and a byte-identical copy -- grouped as they are, nothing left out silently,
and `near sweep import` of such a folder read-only to near."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from near.report.pipeline import Report
from _report_helpers import write_run_tbx

REPO = Path(__file__).resolve().parents[1]
PATTERNS = ["_{algorithm}_{motion:walk|crane_pose}_{seed:d}", "{algorithm}_{motion:walk|crane_pose}_{seed:d}"]
RUNS = [("_HumanoidNEAR_walk_1", 1.0), ("_HumanoidNEAR_walk_2", 1.1), ("_HumanoidAMP_crane_pose_1", 0.5),
        ("_HumanoidAMP_crane_pose_2", 0.6), ("HumanoidNEAR_crane_pose_3", 0.9)]


def make_near_results(root: Path) -> Path:
    """runs/<name>/summaries/events... and runs/configs/<name>/run_config.yaml, as NEAR's train.py saves them."""
    runs = root / "runs"
    steps = list(range(0, 200, 20))
    for name, level in RUNS:
        write_run_tbx(runs / name, {"rewards/iter": (steps, [level * s for s in steps]),
                                    "dtw_error/iter": (steps, [10 - level * s / 50 for s in steps])})
        motion = "crane_pose" if "crane" in name else "walk"
        cfg = runs / "configs" / name / "run_config.yaml"
        cfg.parent.mkdir(parents=True)
        cfg.write_text(yaml.safe_dump({"task": {"env": {"motion_file": f"amp_humanoid_{motion}.npy"}}}))
    write_run_tbx(runs / "_HumanoidAMP_walk_9", {})  # the writer's file_version record only
    copy = runs / "_HumanoidNEAR_walk_5" / "summaries"
    copy.mkdir(parents=True)
    src = next((runs / "_HumanoidNEAR_walk_1" / "summaries").glob("events.out.tfevents.*"))
    shutil.copy(src, copy / src.name)
    return runs


@pytest.fixture(scope="module")
def near_results(tmp_path_factory):
    return make_near_results(tmp_path_factory.mktemp("near"))


def test_near_folder_grouped_as_it_is_with_every_run_accounted_for(near_results, tmp_path):
    rep = Report(near_results, out=tmp_path / "out", pattern=PATTERNS, config=["motion_file=task.env.motion_file"],
                 workers=1, use_cache=False, log=lambda m: None)
    rep.run()
    runs = rep.runs
    got = {r: (runs.loc[r, "algorithm"], runs.loc[r, "motion"], runs.loc[r, "seed"]) for r in runs.index}
    assert got == {"_HumanoidNEAR_walk_1": ("HumanoidNEAR", "walk", "1"),
                   "_HumanoidNEAR_walk_2": ("HumanoidNEAR", "walk", "2"),
                   "_HumanoidAMP_crane_pose_1": ("HumanoidAMP", "crane_pose", "1"),
                   "_HumanoidAMP_crane_pose_2": ("HumanoidAMP", "crane_pose", "2"),
                   "HumanoidNEAR_crane_pose_3": ("HumanoidNEAR", "crane_pose", "3")}
    # NEAR's runs/configs/<name>/run_config.yaml is read without being named
    assert runs.loc["_HumanoidAMP_crane_pose_1", "motion_file"] == "amp_humanoid_crane_pose.npy"
    left = {x.run: x.reason for x in rep.data.left_out}
    assert "no scalar" in left["_HumanoidAMP_walk_9"]
    assert "byte-identical copy" in left["_HumanoidNEAR_walk_5"] and "_HumanoidNEAR_walk_1" in left["_HumanoidNEAR_walk_5"]
    assert any("_HumanoidAMP_walk_9" in w for w in rep.warnings)
    assert any("_HumanoidNEAR_walk_5" in w for w in rep.warnings)
    # default grouping: the varying fields algorithm and motion (seed pooled); one curve per algorithm
    assert rep.spec.group_by[:2] == ["algorithm", "motion"] and "seed" not in rep.spec.group_by
    page = (tmp_path / "out" / "index.html").read_text()
    assert "Left out (2)" in page and "_HumanoidAMP_walk_9" in page and "crane_pose" in page


def test_group_by_and_missing_group_values_warn_and_check_fails(near_results, tmp_path):
    (near_results / "configs" / "HumanoidNEAR_crane_pose_3" / "run_config.yaml").write_text("task: {}\n")
    try:
        rep = Report(near_results, out=tmp_path / "out", pattern=PATTERNS, workers=1, use_cache=False,
                     config=["motion_file=task.env.motion_file"], group_by=["motion_file", "algorithm"],
                     log=lambda m: None)
        files = rep.run()
        assert any(p.name == "curves_rewards_iter.png" for p in files)
        assert any("no value for motion_file / algorithm" in w and "HumanoidNEAR_crane_pose_3" in w
                   for w in rep.warnings)
        assert "of each motion_file (4 run(s) in all), a panel per algorithm" in rep.captions["curves_rewards_iter"]
        proc = subprocess.run([sys.executable, "-m", "near", "report", str(near_results), "--out",
                               str(tmp_path / "cli"), "--pattern", PATTERNS[0], "--pattern", PATTERNS[1], "--check"],
                              capture_output=True, text=True, timeout=300, cwd=REPO)
        assert proc.returncode == 1 and "check FAILED" in proc.stdout, proc.stdout + proc.stderr
        assert "left out" in proc.stderr
    finally:
        (near_results / "configs" / "HumanoidNEAR_crane_pose_3" / "run_config.yaml").write_text(
            yaml.safe_dump({"task": {"env": {"motion_file": "amp_humanoid_crane_pose.npy"}}}))


def _listing(root: Path) -> dict:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.rglob("*"))}


def test_import_of_a_read_only_folder_stays_untouched_by_reset_run_and_report(tmp_path):
    runs = make_near_results(tmp_path / "near")
    ncsn = runs / "_HumanoidNCSN_walk_1"
    write_run_tbx(ncsn, {"loss": ([0, 1, 2], [3.0, 2.0, 1.0])})
    subprocess.run(["chmod", "-R", "a-w", str(runs)], check=True)
    before = _listing(runs)
    exp = tmp_path / "exp"
    near = [sys.executable, "-m", "near"]
    try:
        proc = subprocess.run(near + ["sweep", "import", str(runs), str(exp), "--pattern", PATTERNS[0],
                                      "--stage-from", "algorithm"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        from near.jobtable import JobTable

        with JobTable.open(exp) as table:
            frame = table.to_frame()
        stages = dict(zip(frame["algorithm"], frame["stage"]))
        assert stages["HumanoidNCSN"] == "ncsn" and stages["HumanoidNEAR"] == "humanoidnear"
        own = exp / "runs" / frame["job_id"].iloc[0]
        assert own.is_dir() and not own.is_symlink() and (own / "source").is_symlink()
        for cmd in (["sweep", "reset", str(exp), "--state", "done"], ["sweep", "run", str(exp), "-j", "1"],
                    ["report", str(exp), "--out", str(tmp_path / "fig")]):
            proc = subprocess.run(near + cmd, capture_output=True, text=True, timeout=300)
            assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert _listing(runs) == before  # nothing written into the foreign folders
        assert (tmp_path / "fig" / "index.html").is_file()
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(runs)], check=True)
