"""Search sweeps on a cheap analytic objective: tests/_search_objective.py logs
f(x, y) = (x - 1.5)^2 + (y + 0.5)^2 + 3 / (step + 1), optimum 0 at (1.5, -0.5)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from near.add import add_spec
from near.errors import SpecError
from near.executors.local import run_local
from near.jobtable import DONE, FAILED, PRUNED, JobTable
from near.sweep.search_block import metric_at
from near.search.controller import hook_for
from near.search.report import trials_frame, write_report
from near.sweep.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
OBJ = REPO / "tests" / "_search_objective.py"


def f_of(x: float, y: float) -> float:
    return (x - 1.5) ** 2 + (y + 0.5) ** 2


def write_spec(path: Path, *, name: str, sampler: str = "tpe", trials: int = 30, parallel: int = 2,
               steps: int = 3, sleep: float = 0.0, extra: str = "", axes: str = "", search_extra: str = "", max_attempts: int = 1) -> Path:
    path.write_text(f"""
name: {name}
workdir: {REPO}
max_attempts: {max_attempts}
{axes}
search:
  sampler: {sampler}
  trials: {trials}
  parallel: {parallel}
  seed: 0
  metric: obj/f
  mode: min
  at: last
  space:
    x: {{uniform: [-5, 5]}}
    y: {{uniform: [-5, 5]}}
{search_extra}
stages:
  - name: f
    command: {sys.executable} {OBJ} --x ${{x}} --y ${{y}} --run-dir ${{run_dir}} --steps {steps} --sleep {sleep} {extra}
""")
    return path


def run_search(exp: Path, workers: int, **kw) -> str:
    """``near sweep run`` in-process; returns its log."""
    out = io.StringIO()
    with JobTable.open(exp) as table:
        def log(m: str) -> None:
            out.write(m + "\n")

        run_local(table, workers, [hook_for(table, log=log)], log=log, progress_s=60, install_signals=False, **kw)
    return out.getvalue()


def test_search_block_errors_name_the_key(tmp_path: Path) -> None:
    base = write_spec(tmp_path / "s.yaml", name="s").read_text()
    for old, new, key in [("sampler: tpe", "sampler: annealing", "search.sampler"),
                          ("at: last", "at: mean_last_0", "search.at"), ("mode: min", "mode: lowest", "search.mode"),
                          ("trials: 30", "trials: 0", "search.trials"),
                          ("x: {uniform: [-5, 5]}", "x: {loguniform: [0, 5]}", "search.space.x.loguniform")]:
        (tmp_path / "s.yaml").write_text(base.replace(old, new))
        with pytest.raises(SpecError, match=rf"s.yaml: {key}"):
            load_spec(tmp_path / "s.yaml")
    p = write_spec(tmp_path / "g.yaml", name="g", sampler="grid")
    with pytest.raises(SpecError, match=r"search.space.x: the grid sampler needs discrete"):
        load_spec(p)
    p = write_spec(tmp_path / "a.yaml", name="a", axes="axes: {x: [1, 2]}")
    with pytest.raises(SpecError, match=r"search.space.x: a search parameter cannot share its name"):
        load_spec(p)


def test_metric_at_rules() -> None:
    steps, values = np.array([2, 0, 1, 3]), np.array([5.0, 9.0, 1.0, 4.0])
    assert metric_at(steps, values, "last", "min") == 4.0
    assert metric_at(steps, values, "best", "min") == 1.0
    assert metric_at(steps, values, "best", "max") == 9.0
    assert metric_at(steps, values, "mean_last_2", "min") == 4.5
    assert metric_at(steps[:0], values[:0], "last", "min") is None


def test_tpe_gets_near_the_optimum_and_beats_random(tmp_path: Path) -> None:
    """30 trials, 2 in flight, 3 seeds (an axis: one study per seed). Tolerance: the median over
    seeds of TPE's best f within 1.0 of the optimum 0 (f spans 0..72 on the box), and below random's."""
    best = {}
    for sampler in ("tpe", "random"):
        spec = write_spec(tmp_path / f"{sampler}.yaml", name=sampler, sampler=sampler, axes="axes: {rep: [0, 1, 2]}")
        add_spec(spec, tmp_path / "exp", validate=False)
        exp = tmp_path / "exp" / sampler
        run_search(exp, workers=6)
        frame = trials_frame(exp)
        assert frame.groupby("study").size().tolist() == [30, 30, 30]
        assert (frame["state"] == "complete").all()
        # the value told is the job's last logged point: f + 3 / steps
        for _, r in frame.iterrows():
            assert r["value"] == pytest.approx(f_of(r["x"], r["y"]) + 1.0, rel=1e-5)
        best[sampler] = frame.groupby("study")["value"].min().to_numpy() - 1.0
    tpe, rnd = np.median(best["tpe"]), np.median(best["random"])
    print(f"best f per seed: tpe {best['tpe'].round(3)}, random {best['random'].round(3)}")
    assert tpe < 1.0, best
    assert tpe < rnd, best


def test_crashed_trial_is_failed_and_report_draws(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "c.yaml", name="c", sampler="random", trials=8, parallel=4, extra="--crash-above 20")
    add_spec(spec, tmp_path, validate=False)
    exp = tmp_path / "c"
    run_search(exp, workers=4)
    frame = trials_frame(exp)
    with JobTable.open(exp) as t:
        states = {j.job_id: j.state for j in t.jobs()}
    assert len(frame) == 8
    for _, r in frame.iterrows():
        crashed = f_of(r["x"], r["y"]) > 20
        assert r["state"] == ("fail" if crashed else "complete")
        assert states[r["job_id"]] == (FAILED if crashed else DONE)
    files = write_report(exp, exp / "figures")
    names = {p.name for p in files}
    assert {"search_best.md", "search_trials.png", "search_parallel.png"} <= names
    assert all(p.stat().st_size > 0 for p in files)


def test_median_pruning_stops_bad_trials_early(tmp_path: Path) -> None:
    """Random configs, 16 trials of 20 steps (0.1 s each), 4 in flight; median pruner after 4
    finished trials and 2 warm-up steps. At least half of the trials worse than the median config
    are pruned, each recorded ``pruned`` with its step and value, before its last step."""
    spec = write_spec(tmp_path / "p.yaml", name="p", sampler="random", trials=16, parallel=4, steps=20, sleep=0.1,
                      search_extra="  pruner: {kind: median, startup: 4, warmup: 2}")
    add_spec(spec, tmp_path, validate=False)
    exp = tmp_path / "p"
    run_search(exp, workers=4, grace_s=5)
    frame = trials_frame(exp)
    assert len(frame) == 16
    with JobTable.open(exp) as t:
        jobs = {j.job_id: j for j in t.jobs()}
    f = np.array([f_of(x, y) for x, y in zip(frame["x"], frame["y"])])
    bad = f > np.median(f)
    pruned = (frame["state"] == "pruned").to_numpy()
    assert pruned[bad].mean() >= 0.5, frame[["trial", "state", "x", "y"]]
    for _, r in frame[pruned].iterrows():
        job = jobs[r["job_id"]]
        assert job.state == PRUNED and "at step" in job.reason and "obj/f=" in job.reason
        assert r["pruned_at"] < 19
    out = subprocess.run([sys.executable, "-m", "near", "sweep", "status", str(exp)], capture_output=True,
                         text=True, check=True).stdout
    assert f"pruned {int(pruned.sum())}" in out and "complete" in out


def _complete(exp: Path) -> int:
    if not (exp / "search" / "journal.log").is_file():
        return 0
    frame = trials_frame(exp)
    return int((frame["state"] == "complete").sum()) if len(frame) else 0


def test_sigkill_of_the_controller_then_rerun_ends_with_exactly_the_budget(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "k.yaml", name="k", sampler="tpe", trials=10, parallel=3, steps=8, sleep=0.1,
                      max_attempts=3)
    add_spec(spec, tmp_path, validate=False)
    exp = tmp_path / "k"
    cmd = [sys.executable, "-m", "near", "sweep", "run", str(exp), "-j", "3", "--lease", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    deadline = time.monotonic() + 120
    while _complete(exp) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, "controller ended or no trial finished"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = trials_frame(exp)
    assert _complete(exp) < 10 and (left["state"] == "running").any()  # trials in flight at the kill
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL, timeout=300)
    frame = trials_frame(exp)
    assert sorted(frame["trial"]) == list(range(10))
    assert (frame["state"] == "complete").all()
    with JobTable.open(exp) as t:
        jobs = {j.job_id: j for j in t.jobs()}
    assert set(frame["job_id"]) <= set(jobs) and all(jobs[j].state == DONE for j in frame["job_id"])


def test_trial_asked_but_not_sampled_when_the_controller_died_gets_its_job(tmp_path: Path) -> None:
    import optuna

    from near.search import study as studymod

    spec = write_spec(tmp_path / "a.yaml", name="a", trials=4, parallel=2, steps=2)
    add_spec(spec, tmp_path, validate=False)
    exp = tmp_path / "a"
    st = optuna.load_study(study_name="search", storage=studymod.storage(exp))
    st.ask()  # a controller killed between asking a trial and sampling its parameters
    run_search(exp, 2)
    frame = trials_frame(exp)
    assert len(frame) == 4 and (frame["state"] == "complete").all(), frame


def test_a_killed_holder_of_the_journal_lock_leaves_it_free_at_once(tmp_path: Path) -> None:
    from near.search import study as studymod

    path = tmp_path / "journal.log"
    code = ("import sys, time; from pathlib import Path; from near.search.study import journal_lock; "
            f"journal_lock(Path({str(path)!r})).acquire(); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    t0 = time.monotonic()
    lock = studymod.journal_lock(path)
    assert lock.acquire() and time.monotonic() - t0 < 1.0
    lock.release()


@pytest.mark.slurm
def test_search_through_the_local_slurm_cluster(tmp_path: Path) -> None:
    """The same kind of study on SLURM: add (first trials), submit, then `wait` keeps 4 trials in
    flight (asks, submits, tells, prunes through scancel) until the budget of 8 is spent. Seeded
    random configs: trials 3.. include configs far worse than the median of the first three."""
    from _slurm_helpers import near, require_cluster

    require_cluster()
    name = f"search-{os.getpid()}"
    spec = write_spec(tmp_path / "s.yaml", name=name, sampler="random", trials=8, parallel=4, steps=15, sleep=0.2,
                      max_attempts=2, search_extra="  pruner: {kind: median, startup: 3, warmup: 2}")
    exp = tmp_path / name
    profile = REPO / "slurm" / "local.yaml"
    near("sweep", "add", spec, "--root", tmp_path, "--no-validate")
    near("sweep", "submit", exp, "--profile", profile)
    out = near("sweep", "wait", exp, "--poll", "1", "--timeout", "400", "--profile", profile)
    assert "every job is done" in out.stdout, out.stdout
    frame = trials_frame(exp)
    assert sorted(frame["trial"]) == list(range(8)) and set(frame["state"]) <= {"complete", "pruned"}
    assert (frame["state"] == "pruned").any(), frame
    with JobTable.open(exp) as t:
        jobs = {j.job_id: j for j in t.jobs()}
    for _, r in frame.iterrows():
        job = jobs[r["job_id"]]
        assert job.scheduler_id
        if r["state"] == "complete":
            assert job.state == DONE and r["value"] == pytest.approx(f_of(r["x"], r["y"]) + 0.2, rel=1e-5)
        else:
            assert job.state == PRUNED and "at step" in job.reason


def test_reproposed_config_is_the_same_job_and_grid_stops_at_its_size(tmp_path: Path) -> None:
    """Random sampling of a 2 x 2 space for 8 trials: at most 4 jobs run, and every trial of a
    config is told that config's one result. The grid sampler of the same space runs 4 trials."""
    space = "  space:\n    x: {choice: [1.5, 0.0]}\n    y: {int: [-1, 0]}\n"
    for sampler, trials in (("random", 8), ("grid", 10)):
        spec = write_spec(tmp_path / f"{sampler}.yaml", name=sampler, sampler=sampler, trials=trials, parallel=2)
        text = spec.read_text()
        spec.write_text(text[:text.index("  space:")] + space + text[text.index("\nstages:"):])
        add_spec(spec, tmp_path, validate=False)
        exp = tmp_path / sampler
        run_search(exp, workers=2)
        frame = trials_frame(exp)
        with JobTable.open(exp) as t:
            jobs = t.jobs()
        assert (frame["state"] == "complete").all()
        by_config = frame.groupby(["x", "y"])
        assert by_config["job_id"].nunique().max() == 1 and by_config["value"].nunique().max() == 1
        assert len(jobs) == frame["job_id"].nunique() <= 4 and all(j.state == DONE for j in jobs)
        if sampler == "random":
            assert len(frame) == 8 and len(jobs) < 8
        else:
            assert len(frame) == 4 and len(jobs) == 4


def test_trials_table_cells_with_bars_keep_their_columns():
    """A categorical parameter may hold '|' (a choice such as "relu|tanh"): escaped, the trials
    table keeps each value under its own heading."""
    import re

    import pandas as pd

    from near.search.report import _markdown

    md = _markdown(pd.DataFrame({"trial": [0], "value": [0.25], "act": ["relu|tanh"], "note": ["two\nlines"]}))
    header, _, row = md.splitlines()
    cells = [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]
    assert cells == ["0", "0.25", "relu\\|tanh", "two lines"] and len(cells) == header.count("|") - 1
