"""Reports of runs near did not launch: NEAR's own run-dir layout written by tensorboardX, run
patterns and config metadata, `near sweep import`, and the faults (inf values, empty event files)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import yaml

from near.errors import SpecError
from near.report import aggregates, figures
from near.report.pipeline import Report
from near.report.runmeta import compile_pattern, overrides_columns, run_dir_of
from _report_helpers import make_near_layout, write_run, write_run_tbx

REPO = Path(__file__).resolve().parents[1]
PATTERN = "{algorithm}_{motion}_{seed:d}"
# per-motion references of the reward: (expert, random)
REFS = {"walk": (100.0, 0.0), "spin_kick": (70.0, 10.0)}
SPEC = {
    "title": "NEAR runs",
    # one task reward logged by every algorithm: comparable on one axis (a per-algorithm reward is not)
    "tags": {"rewards/iter": {"label": "Reward", "comparable": True, "expert": {m: e for m, (e, _) in REFS.items()},
                              "random": {m: r for m, (_, r) in REFS.items()}},
             "episode_lengths/iter": {"label": "Episode length"}},
    "ci": {"level": 0.95, "n_boot": 500, "seed": 0},
    "figures": [
        {"kind": "curves", "name": "curves", "hue": "algorithm", "facet": "motion"},
        {"kind": "aggregate", "name": "agg", "hue": "algorithm", "facet": "motion", "tags": ["rewards/iter"],
         "window": 5},
        {"kind": "profile", "name": "profile", "hue": "algorithm", "facet": "motion", "tags": ["rewards/iter"],
         "window": 5},
        {"kind": "improvement", "name": "poi", "hue": "algorithm", "facet": "motion", "tags": ["rewards/iter"],
         "window": 5, "pairs": [["HumanoidNEAR", "HumanoidAMP"]]},
    ],
    "tables": [
        {"name": "final", "by": ["algorithm", "motion"], "window": 5},
        {"kind": "aggregate", "name": "aggregate", "by": ["algorithm"], "task": "motion", "window": 5,
         "tags": ["rewards/iter"], "metrics": ["iqm", "mean"]},
        {"kind": "improvement", "name": "improvement", "by": ["algorithm"], "task": "motion", "window": 5,
         "tags": ["rewards/iter"], "pairs": [["HumanoidNEAR", "HumanoidAMP"]]},
    ],
}


@pytest.fixture(scope="module")
def near_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("near_runs") / "runs"
    values = make_near_layout(root)
    spec = root.parent / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    return root, values, spec


def _finals(values, window=5):
    # tensorboardX stores float32
    return {k: float(np.mean(v.astype(np.float32).astype(np.float64)[-window:])) for k, v in values.items()}


def test_run_patterns():
    p = compile_pattern(PATTERN)
    assert run_dir_of("HumanoidNEAR_spin_kick_42/summaries/events.out", p) == (
        "HumanoidNEAR_spin_kick_42", {"algorithm": "HumanoidNEAR", "motion": "spin_kick", "seed": "42"})
    assert run_dir_of("notes/summaries/events.out", p) is None
    deep = compile_pattern("{_}/{algorithm}/seed{seed}")
    assert run_dir_of("2024/a/NEAR/seed3/summaries/ev", deep) == ("2024/a/NEAR/seed3", {"algorithm": "NEAR", "seed": "3"})
    assert run_dir_of("NEAR_walk_1/summaries/ev", None) == ("NEAR_walk_1", {})
    assert overrides_columns(["task=HumanoidNEAR", "++train.params.seed=3", "~foo", "+x.y=1"]) == {
        "task": "HumanoidNEAR", "train.params.seed": "3", "x.y": "1"}
    for bad, msg in [("{algorithm", "unbalanced"), ("{a-b}", "must be a name"), ("plain", "names no field"),
                     ("{seed:[}", "not a valid regex")]:
        with pytest.raises(SpecError, match=msg):
            compile_pattern(bad)


def test_pattern_report_groups_by_algorithm_and_facets_by_motion(near_runs, tmp_path, monkeypatch):
    root, values, spec = near_runs
    drawn = {}
    save = figures._save

    def capture(fig, out_base, formats, **kw):  # what was drawn, read before the figure is drawn again
        drawn[out_base.name] = ([ax.get_title() for ax in fig.axes if ax.get_visible()],
                                [t.get_text() for t in fig.legends[0].get_texts()] if fig.legends else [])
        return save(fig, out_base, formats, **kw)

    monkeypatch.setattr(figures, "_save", capture)
    out = tmp_path / "out"
    rep = Report(root, spec, out, workers=1, log=lambda m: None, pattern=PATTERN,
                 config=["motion_file=task.env.motion_file"])
    written = rep.run()
    assert rep.warnings == []
    assert sorted(rep.runs.index) == sorted(f"{a}_{m}_{s}" for a, m, s in values)
    assert set(rep.runs["motion_file"]) == {"amp_humanoid_walk.npy", "amp_humanoid_spin_kick.npy"}
    # one panel per motion, one curve per algorithm
    titles, legend = drawn["curves_rewards_iter"]
    assert sorted(titles) == ["spin_kick", "walk"]
    assert legend == ["HumanoidAMP", "HumanoidNEAR", "Expert"]
    names = {p.name for p in written}
    for stem in ("curves_rewards_iter", "curves_episode_lengths_iter", "agg_rewards_iter", "profile_rewards_iter",
                 "poi_rewards_iter"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names
    assert {"final.csv", "aggregate.csv", "improvement.csv", "index.html"} <= names

    # the final table is the statistics of the finals computed here from what was written
    finals = _finals(values)
    csv = pd.read_csv(out / "final.csv")
    for (alg, motion), g in csv[csv.tag == "rewards/iter"].groupby(["algorithm", "motion"]):
        mine = [finals[(alg, motion, s)] for s in (1, 2, 3)]
        row = g.iloc[0]
        assert row["n"] == 3
        assert row["mean"] == pytest.approx(np.mean(mine), abs=1e-9)
        assert row["iqm"] == pytest.approx(scipy.stats.trim_mean(mine, 0.25), abs=1e-9)
        assert row["std"] == pytest.approx(np.std(mine), abs=1e-9)
    # the aggregate table: IQM over normalised runs x motions, CI of the stratified bootstrap
    agg = pd.read_csv(out / "aggregate.csv").set_index(["algorithm", "metric"])
    mats = {}
    for alg in ("HumanoidAMP", "HumanoidNEAR"):
        cols = [[(finals[(alg, m, s)] - REFS[m][1]) / (REFS[m][0] - REFS[m][1]) for s in (1, 2, 3)]
                for m in ("spin_kick", "walk")]
        mats[alg] = np.array(cols).T
        assert agg.loc[(alg, "iqm"), "value"] == pytest.approx(scipy.stats.trim_mean(mats[alg], 0.25, axis=None),
                                                               abs=1e-9)
        assert agg.loc[(alg, "mean"), "value"] == pytest.approx(mats[alg].mean(), abs=1e-9)
        assert agg.loc[(alg, "iqm"), "scores"] == "normalised"
    est = aggregates.interval_estimates(mats, ("iqm",), 0.95, 500, 0)
    assert agg.loc[("HumanoidNEAR", "iqm"), "ci_low"] == pytest.approx(est["HumanoidNEAR"]["iqm"][1], abs=1e-9)
    poi = pd.read_csv(out / "improvement.csv").iloc[0]
    x, y = mats["HumanoidNEAR"], mats["HumanoidAMP"]
    direct = np.mean([np.mean(x[:, k][:, None] > y[:, k][None, :]) for k in range(2)])
    assert (poi.x, poi.y) == ("HumanoidNEAR", "HumanoidAMP") and poi.value == pytest.approx(direct, abs=1e-9)
    md = (out / "aggregate.md").read_text()
    assert "| algorithm | Reward IQM | Reward mean |" in md


def test_near_sweep_import_then_report_together_with_a_near_job(near_runs, tmp_path):
    from near.jobtable import DONE, JobSpec, JobTable

    root, values, spec = near_runs
    exp = tmp_path / "near_paper"
    cmd = [sys.executable, "-m", "near", "sweep", "import", str(root), str(exp), "--pattern", PATTERN]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "12 run(s): 12 new" in proc.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert "12 run(s): 0 new, 12 already imported" in again.stdout
    with JobTable.open(exp) as table:
        jobs = table.jobs()
        assert len(jobs) == 12 and all(j.state == DONE for j in jobs)
        j = next(j for j in jobs if j.params["motion"] == "spin_kick" and j.params["seed"] == "2"
                 and j.params["algorithm"] == "HumanoidNEAR")
        assert j.reason == f"imported from {root.resolve() / 'HumanoidNEAR_spin_kick_2'}"
        assert [(e.from_state, e.to_state) for e in table.history(j.job_id)][-1] == ("pending", DONE)
        # a run near launched, in the same table
        table.add([JobSpec(job_id="native1", stage="rl", command="true", sweep="near_paper",
                           params={"algorithm": "HumanoidPPO", "motion": "walk", "seed": 1})])
        table.transition("native1", DONE, reason="finished")
    steps = (np.arange(20) * 50).tolist()
    write_run(exp / "runs" / "native1", {"rewards/iter": (steps, [1.0] * 20), "episode_lengths/iter": (steps, [2.0] * 20)})
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "near", "report", str(exp), "--spec", str(spec), "--out", str(out),
                           "--workers", "1"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "13 event file(s) in 13 job(s)" in proc.stdout
    csv = pd.read_csv(out / "final.csv")
    csv = csv[csv.tag == "rewards/iter"].set_index(["algorithm", "motion"])
    finals = _finals(values)
    assert csv.loc[("HumanoidNEAR", "walk"), "mean"] == pytest.approx(
        np.mean([finals[("HumanoidNEAR", "walk", s)] for s in (1, 2, 3)]), abs=1e-9)
    assert csv.loc[("HumanoidPPO", "walk"), "mean"] == 1.0
    bad = subprocess.run([sys.executable, "-m", "near", "sweep", "import", str(root), str(tmp_path / "x"),
                          "--pattern", "{algorithm}-{seed:d}"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and "no run dir matches pattern" in bad.stderr


def test_inf_last_value_and_empty_event_file_are_warnings_not_crashes(tmp_path):
    root = tmp_path / "runs"
    steps = list(range(0, 100, 10))
    for seed in (1, 2, 3):
        vals = [float(s) for s in steps]
        if seed == 3:
            vals[-1] = float("inf")  # diverged
        write_run_tbx(root / f"NEAR_walk_{seed}", {"rewards/iter": (steps, vals)})
    empty = root / "NEAR_walk_4" / "summaries" / "events.out.tfevents.0.host"
    empty.parent.mkdir(parents=True)
    empty.write_bytes(b"")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "near", "report", str(root), "--pattern", PATTERN, "--out", str(out),
           "--workers", "1", "--check"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # reported, but --check fails on the warnings
    assert "run NEAR_walk_3: tag 'rewards/iter' has 1 infinite value(s) (first inf at step 90)" in proc.stderr
    assert f"{empty}: empty event file (0 bytes)" in proc.stderr
    assert "check FAILED" in proc.stdout and (out / "curves_rewards_iter.png").stat().st_size > 1000
    csv = pd.read_csv(out / "final.csv")
    # the diverged point is left out: run 3's final is the mean of its last 10 finite values
    assert csv["n"].iloc[0] == 3
    assert csv["mean"].iloc[0] == pytest.approx(np.mean([45.0, 45.0, 40.0]))
    # warm: nothing changed, the warnings are still reported and --check still fails
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 1 and "up to date" in proc.stdout and "empty event file" in proc.stderr


def test_hydra_run_dirs_and_near_plotter_style(tmp_path, monkeypatch):
    """Hydra run dirs (metadata from .hydra/overrides.yaml) drawn in NEAR's plotter style."""
    root = tmp_path / "outputs"
    steps = list(range(0, 50, 10))
    for k, (alg, seed) in enumerate([("NEAR", 1), ("NEAR", 2), ("AMP", 1), ("AMP", 2)]):
        run = root / "2024-05-01" / f"12-00-0{k}"
        write_run_tbx(run, {"rewards/iter": (steps, [float(s * seed) for s in steps])})
        (run / ".hydra").mkdir()
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"task=maze{alg}", f"seed={seed}",
                                                                        "++train.params.config.horizon=32"]))
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"style": "near", "smoothing": 0.9, "tags": {"rewards/iter": {"expert": 60.0, "comparable": True}},
                                    "figures": [{"name": "c", "hue": "task", "facet": None}],
                                    "tables": [{"by": ["task"], "window": 1}]}))
    drawn = []
    monkeypatch.setattr(figures, "curves_figure", lambda *a: drawn.append(a) or [])
    rep = Report(root, spec, tmp_path / "out", workers=1, log=lambda m: None)
    rep.run()
    assert set(rep.runs["task"]) == {"mazeNEAR", "mazeAMP"} and set(rep.runs["seed"]) == {"1", "2"}
    assert set(rep.runs["train.params.config.horizon"]) == {"32"}
    panels, title, band = drawn[0][0], drawn[0][2], drawn[0][12]
    near = panels[0]["curves"]["mazeNEAR"]
    raw = np.array([[s * 1.0 for s in steps], [s * 2.0 for s in steps]])  # no smoothing despite the spec's 0.9
    np.testing.assert_allclose(near.center, raw.mean(axis=0))
    np.testing.assert_allclose(near.high - near.center, raw.std(axis=0))
    assert band == "mean ± 1 std across runs" and panels[0]["expert"] == 60.0


def test_runs_group_by_the_motion_files_they_recorded(tmp_path, monkeypatch):
    """Runs carrying near's motions.json get a ``motions`` column (file name and content hash), so
    two versions of one motion file are told apart by --group-by motions."""
    import json

    root = tmp_path / "runs"
    values = make_near_layout(root, algorithms=("HumanoidNEAR",), motions=("walk",), seeds=(1, 2))
    for (alg, motion, seed) in values:
        digest = ("a" if seed == 1 else "b") * 64  # the same file name, two contents
        (root / f"{alg}_{motion}_{seed}" / "motions.json").write_text(json.dumps(
            [{"motion_file": "amp_humanoid_walk.yaml", "file": "/data/amp_humanoid_walk.yaml", "sha256": digest,
              "synthetic": False}]))
    drawn = {}
    save = figures._save

    def capture(fig, out_base, formats, **kw):
        drawn[out_base.name] = [t.get_text() for t in fig.legends[0].get_texts()] if fig.legends else []
        return save(fig, out_base, formats, **kw)

    monkeypatch.setattr(figures, "_save", capture)
    rep = Report(root, None, tmp_path / "out", workers=1, log=lambda m: None, pattern=PATTERN,
                 group_by=["motions"])
    rep.run()
    assert sorted(rep.runs["motions"]) == ["amp_humanoid_walk.yaml@aaaaaaaa", "amp_humanoid_walk.yaml@bbbbbbbb"]
    legend = next(v for k, v in drawn.items() if k.startswith("curves_rewards"))
    assert sorted(entry[-8:] for entry in legend) == ["aaaaaaaa", "bbbbbbbb"]  # one curve per content (the
    # legend abbreviates the shared file name with a key)


def test_run_without_a_final_value_is_named_and_not_counted(tmp_path):
    """A run whose last values are all NaN (a diverged loss) has no final value: the table counts and
    averages only the runs that have one, and a warning names the run (so --check fails)."""
    root = tmp_path / "runs"
    steps = list(range(0, 200, 10))
    for seed, vals in ((1, [1.0] * 20), (2, [3.0] * 20), (3, [10.0] * 5 + [float("nan")] * 15)):
        write_run_tbx(root / f"NEAR_walk_{seed}", {"loss": (steps, vals)})
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "near", "report", str(root), "--pattern", PATTERN, "--out", str(out),
                           "--workers", "1", "--check"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no finite value in the last 10 point(s)" in proc.stderr and "NEAR_walk_3" in proc.stderr
    csv = pd.read_csv(out / "final.csv")
    assert csv["n"].tolist() == [2] and csv["mean"].tolist() == [2.0]
    assert "| NEAR | 2.00 [1.00, 3.00] | 2 |" in (out / "final.md").read_text()


def test_final_table_bolds_no_best_group_of_a_tag_groups_do_not_share(tmp_path):
    """Each algorithm's reward is its own (comparable: false, the default for rewards): its final table
    names no best algorithm; a metric they share (episode length) still does."""
    root = tmp_path / "runs"
    make_near_layout(root, seeds=(1, 2), n_steps=5)
    rep = Report(root, None, tmp_path / "out", workers=1, log=lambda m: None, pattern=PATTERN)
    rep.run()
    assert rep.spec.tags["rewards/iter"].comparable is False and rep.spec.tags["episode_lengths/iter"].comparable
    csv = pd.read_csv(tmp_path / "out" / "final.csv")
    assert not csv[csv.tag == "rewards/iter"]["best"].any()
    assert csv[csv.tag == "episode_lengths/iter"].groupby("motion")["best"].sum().tolist() == [1, 1]


def test_run_dir_with_an_empty_summaries_folder_is_named_as_left_out(tmp_path):
    """NEAR's saved runs include run dirs whose summaries/ folder holds no event file (not kept): each is
    a run that is in no figure, so it is named under "Left out" and --check fails."""
    root = tmp_path / "runs"
    write_run_tbx(root / "NEAR_walk_1", {"rewards/iter": ([0, 1], [1.0, 2.0])})
    (root / "NEAR_walk_2" / "summaries").mkdir(parents=True)
    (root / "NEAR_walk_3" / "summaries" / "_").mkdir(parents=True)  # NEAR's NCSN runs write into summaries/_
    (root / "NEAR_walk_1" / "eval" / "summaries").mkdir(parents=True)  # a run with data elsewhere is no loss
    rep = Report(root, None, tmp_path / "out", workers=1, log=lambda m: None, pattern=PATTERN)
    rep.run()
    left = {run: why for run, why in ((x.run, x.reason) for x in rep.data.left_out)}
    assert set(left) == {"NEAR_walk_2", "NEAR_walk_3"}
    assert all("no event file" in why for why in left.values())
    assert any("NEAR_walk_2" in w and "NEAR_walk_3" in w for w in rep.warnings)
    assert "NEAR_walk_2" in (tmp_path / "out" / "index.html").read_text()
    # one more such run dir is a change: the report is redrawn and names it
    (root / "NEAR_walk_4" / "summaries").mkdir(parents=True)
    rep = Report(root, None, tmp_path / "out", workers=1, log=lambda m: None, pattern=PATTERN)
    assert rep.run(), "called up to date"
    assert "NEAR_walk_4" in {x.run for x in rep.data.left_out}


def test_config_values_that_are_interpolations_are_resolved_or_named(tmp_path):
    """NEAR's saved config.yaml is hydra's unresolved config: ``task_name: ${task.name}``. Taken as text,
    every run's task read '${task.name}' and runs of different tasks were pooled into one group."""
    root = tmp_path / "runs"
    for task in ("maze", "walk"):
        run = root / f"{task}_1"
        write_run_tbx(run, {"loss": ([0, 1], [1.0, 2.0])})
        (run / "config.yaml").write_text(yaml.safe_dump({
            "task_name": "${task.name}", "num_envs": "",
            "task": {"name": task, "env": {"numEnvs": "${resolve_default:16,${...num_envs}}",
                                           "obs": "${their_own_resolver:1}"}}}))
    rep = Report(root, None, tmp_path / "out", workers=1, log=lambda m: None, pattern="{name}_{seed:d}",
                 config=["task=task_name", "envs=task.env.numEnvs", "obs=task.env.obs"], group_by=["task"])
    rep.run()
    assert sorted(rep.runs["task"]) == ["maze", "walk"]
    # NEAR's own resolvers are near's too, registered or not by whatever ran before in this process
    assert rep.runs["envs"].tolist() == ["16", "16"]
    # an interpolation that cannot be resolved here is no value ...
    assert "obs" not in rep.runs.columns or rep.runs["obs"].isna().all()
    # ... and says so, naming the file and the key
    assert any("config.yaml" in w and "task.env.obs" in w and "their_own_resolver" in w for w in rep.warnings), \
        rep.warnings
    assert pd.read_csv(tmp_path / "out" / "final.csv")["task"].tolist() == ["maze", "walk"]


def _events(path: Path, tag: str, points: list[tuple[int, float, float]]) -> None:
    """An event file of `tag` with (step, value, wall_time) points, written record by record."""
    import struct

    from tensorboard.compat.proto import event_pb2, summary_pb2

    from near.report.events import masked_crc32c

    def record(data: bytes) -> bytes:
        head = struct.pack("<Q", len(data))
        return head + struct.pack("<I", masked_crc32c(head)) + data + struct.pack("<I", masked_crc32c(data))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(record(event_pb2.Event(wall_time=w, step=s, summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=tag, simple_value=v)])).SerializeToString()) for s, v, w in points))


def test_event_files_written_side_by_side_in_one_run_are_a_warning(tmp_path):
    """A pattern that stops above the seeds ('{_}/{algorithm}' over NEAR/seed1, NEAR/seed2) makes two
    seeds one run; their files were written at the same time, so they are not one run's attempts, and
    keeping the latest write per step silently dropped one seed. The warning names the run and --check fails."""
    root = tmp_path / "runs"
    for seed, level, t0 in ((1, 10.0, 1000.0), (2, 20.0, 1000.5)):
        _events(root / "exp" / "NEAR" / f"seed{seed}" / "summaries" / f"events.out.tfevents.{seed}.h", "loss",
                [(s, level, t0 + s) for s in range(0, 100, 10)])
    rep = Report(root, None, tmp_path / "out", workers=1, log=lambda m: None, pattern="{_}/{algorithm}")
    rep.run()
    assert any("exp/NEAR" in w and "at the same time" in w and "seed1" in w and "seed2" in w
               for w in rep.warnings), rep.warnings
    # a restart (the next attempt starts after the last write of the one before) stays silent
    rep = Report(root, None, tmp_path / "out2", workers=1, log=lambda m: None, pattern="{_}/{algorithm}/{seed}")
    rep.run()
    assert not any("at the same time" in w for w in rep.warnings)
    run = tmp_path / "resumed" / "NEAR"
    _events(run / "summaries" / "events.out.tfevents.1.h", "loss", [(s, 1.0, 100.0 + s) for s in range(5)])
    _events(run / "summaries" / "events.out.tfevents.2.h", "loss", [(s, 2.0, 200.0 + s) for s in range(3, 8)])
    rep = Report(run.parent, None, tmp_path / "out3", workers=1, log=lambda m: None, pattern="{algorithm}")
    rep.run()
    assert not any("at the same time" in w for w in rep.warnings), rep.warnings
