"""The search's part of a controller loop: once per poll cycle, tell finished trials, prune losing
running ones, and ask new trials (added to the job table as jobs) up to ``parallel`` in flight.

:class:`SearchHook` is a callable taking the :class:`~near.jobtable.JobTable`, as the controller
loops of ``near sweep run`` (local) and ``near sweep wait`` (SLURM) call their hooks. Stopping a
pruned job is the executor's: the command binds ``hook.stop`` to the executor's
``prune(job_ids, reason) -> int`` (:class:`~near.executors.base.Executor`).

Trial <-> job: a trial's job id is stored in the trial's user attributes right after its
parameters are sampled, before the job is added. A controller that was stopped or killed finds
its unfinished trials in the journal on restart (Optuna state RUNNING), rebuilds their jobs from
the stored parameters (same content, same job id; adding is idempotent) and keeps following
them, so no trial is lost or asked twice. A re-proposed identical config is the same job: the
second trial is told the first one's result.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from near.errors import SpecError
from near.jobtable import BLOCKED, CANCELLED, DONE, FAILED, PENDING, PRUNED, RUNNING, JobSpec, JobTable, run_dir_for
from near.search import study as studymod
from near.sweep.search_block import SearchConfig, metric_at, to_template
from near.search.metric import TagReader

META_KEY = "search"


@dataclass
class _Tracked:
    trial: Any          # optuna.trial.Trial
    study: str          # study name
    job_id: str
    reported: int = -1  # last step told to the study as an intermediate value


def trial_jobs(spec, point: dict[str, Any], params: dict[str, Any]) -> tuple[str, list[JobSpec]]:
    """(the trial's own job id, every job it needs) for axes ``point`` and search ``params``."""
    from near.sweep.expand import expand

    cfg: SearchConfig = spec.search
    exp = expand(spec, [{**point, **params}])
    own = [j for j in exp.jobs if j.stage == cfg.stage]
    if len(own) != 1:
        where = studymod.study_name(point)
        raise SpecError(f"{spec.label}: search.stage: stage {cfg.stage!r} has {len(own)} job(s) at {where} "
                        "(a trial needs exactly one job of the stage that logs the metric)")
    return own[0].job_id, exp.jobs


def axes_points(spec) -> list[dict[str, Any]]:
    """One point per study: the grid of the axes (a single empty point without axes)."""
    from near.sweep.expand import grid_points

    return grid_points(spec) if spec.axes else [{}]


def probe_params(cfg: SearchConfig) -> dict[str, Any]:
    """A representative config (each dimension's low end or first choice), for validation."""
    return {p.name: to_template(p.choices[0] if p.kind == "choice" else p.low) for p in cfg.space}


def save_settings(table: JobTable, spec_path: str, name: str | None, set_vars: dict[str, str]) -> None:
    """Remember how the search spec was loaded, so run/wait rebuild the same trials."""
    table.set_meta(META_KEY, json.dumps({"spec": str(spec_path), "name": name, "vars": set_vars}))


def load_settings(table: JobTable):
    """The search spec of a sweep (as it was added), or None when the sweep is no search."""
    from near.sweep.spec import load_spec, with_settings

    raw = table.meta().get(META_KEY)
    if not raw:
        return None
    s = json.loads(raw)
    return with_settings(load_spec(s["spec"]), name=s["name"], set_vars=s["vars"])


class SearchHook:
    """Drives the studies of one search sweep from a controller loop (see the module docstring)."""

    def __init__(self, exp_dir: str | os.PathLike, spec, *, stop: Callable[[list[str], str], int] | None = None,
                 log: Callable[[str], None] = print):
        self.exp_dir = Path(exp_dir)
        self.spec = spec
        self.cfg: SearchConfig = spec.search
        self.stop = stop
        self.log = log
        self.reader = TagReader(self.cfg.metric)
        self.store = studymod.storage(exp_dir)
        self.points = {studymod.study_name(p): p for p in axes_points(spec)}
        self.studies = {n: studymod.open_study(exp_dir, self.cfg, n, self.store, i) for i, n in enumerate(self.points)}
        self.asked = {n: 0 for n in self.points}
        self.tracked: list[_Tracked] = []
        self._recovered = False

    # ------------------------------------------------------------------ recovery
    def _recover(self, table: JobTable) -> None:
        """Follow the trials a previous controller left unfinished (their jobs re-added if missing)."""
        from optuna.trial import Trial, TrialState

        for name, st in self.studies.items():
            trials = st.get_trials(deepcopy=False)
            self.asked[name] = sum(1 for t in trials if t.state != TrialState.WAITING)  # queued grid configs
            for t in trials:
                if t.state != TrialState.RUNNING:
                    continue
                if set(t.params) != set(self.cfg.params):
                    # killed between ask and sampling: it never had a job
                    st.tell(t.number, state=TrialState.FAIL)
                    continue
                params = {k: to_template(v) for k, v in t.params.items()}
                job_id, jobs = trial_jobs(self.spec, self.points[name], params)
                table.add(jobs, axes=[a.name for a in self.spec.axes])
                trial = Trial(st, t._trial_id)
                if t.user_attrs.get(studymod.JOB_ATTR) != job_id:
                    trial.set_user_attr(studymod.JOB_ATTR, job_id)
                reported = max(t.intermediate_values, default=-1)
                self.tracked.append(_Tracked(trial, name, job_id, reported))
                self.log(f"search: trial {t.number} ({name}) continues with job {job_id}")

    # ------------------------------------------------------------------ one poll cycle
    def __call__(self, table: JobTable) -> None:
        if not self._recovered:
            self._recover(table)
            self._recovered = True
        states = {b.job_id: b.state for b in table.briefs()}
        # a new trial whose config ran before is told at once, which frees its slot: ask again
        # until every slot holds a trial whose job still has to run (or the budget is spent)
        while True:
            self._follow(table, states)
            if not self._ask(table, states):
                break

    def _follow(self, table: JobTable, states: dict[str, str]) -> None:
        from optuna.trial import TrialState

        keep = []
        for tr in self.tracked:
            state = states.get(tr.job_id)
            st = self.studies[tr.study]
            run_dir = run_dir_for(table.exp_dir, tr.job_id)
            if state == DONE:
                steps, values = self.reader.series(run_dir)
                value = metric_at(steps, values, self.cfg.at, self.cfg.mode)
                if value is None:
                    st.tell(tr.trial, state=TrialState.FAIL)
                    self.log(f"search: trial {tr.trial.number} failed: job {tr.job_id} logged no {self.cfg.metric!r}")
                else:
                    st.tell(tr.trial, value)
                    self.log(f"search: trial {tr.trial.number} {self.cfg.metric}={value:.6g} (job {tr.job_id})")
                self.reader.forget(run_dir)
            elif state in (FAILED, CANCELLED, BLOCKED) or state is None:
                st.tell(tr.trial, state=TrialState.FAIL)
                self.log(f"search: trial {tr.trial.number} failed (job {tr.job_id} {state or 'missing'})")
            elif state == PRUNED:
                st.tell(tr.trial, state=TrialState.PRUNED)
                self.log(f"search: trial {tr.trial.number} pruned (job {tr.job_id})")
            elif state == RUNNING and self.cfg.pruner is not None and self.stop is not None:
                if not self._maybe_prune(tr, run_dir):
                    keep.append(tr)
            else:
                keep.append(tr)
        self.tracked = keep

    def _maybe_prune(self, tr: _Tracked, run_dir: str) -> bool:
        """Report new intermediate values; True when the trial was pruned (its job stopped)."""
        from optuna.trial import TrialState

        steps, values = self.reader.series(run_dir)
        new = steps > tr.reported
        if not new.any():
            return False
        for s, v in zip(steps[new].tolist(), values[new].tolist()):
            tr.trial.report(float(v), int(s))
        tr.reported = int(steps[-1])
        if not tr.trial.should_prune():
            return False
        step, value = int(steps[-1]), float(values[-1])
        reason = f"pruned by {self.cfg.pruner.kind} at step {step} ({self.cfg.metric}={value:.6g})"
        if not self.stop([tr.job_id], reason):
            return False  # finished meanwhile: told next cycle
        self.studies[tr.study].tell(tr.trial, state=TrialState.PRUNED)
        self.log(f"search: trial {tr.trial.number} {reason} (job {tr.job_id})")
        return True

    def _ask(self, table: JobTable, states: dict[str, str]) -> int:
        """Ask trials up to ``parallel`` in flight per study; returns how many were asked. The new
        jobs enter ``states`` as pending."""
        asked = 0
        budget = self.cfg.budget
        axes = [a.name for a in self.spec.axes]
        for name, st in self.studies.items():
            in_flight = sum(1 for t in self.tracked if t.study == name)
            new_jobs: list[JobSpec] = []
            while in_flight < self.cfg.parallel and self.asked[name] < budget:
                trial = st.ask()
                self.asked[name] += 1
                params = studymod.suggest(trial, self.cfg)
                job_id, jobs = trial_jobs(self.spec, self.points[name], params)
                trial.set_user_attr(studymod.JOB_ATTR, job_id)
                new_jobs += jobs
                self.tracked.append(_Tracked(trial, name, job_id))
                in_flight += 1
                asked += 1
                again = " (same config as an earlier trial: its job's result)" if job_id in states else ""
                self.log(f"search: trial {trial.number} ({name}) -> job {job_id} "
                         + " ".join(f"{k}={v}" for k, v in params.items()) + again)
            if new_jobs:
                table.add(new_jobs, axes=axes)
                for j in new_jobs:
                    states.setdefault(j.job_id, PENDING)
        return asked

    # ------------------------------------------------------------------ summary
    def finished(self) -> bool:
        """Every study has asked its budget and nothing is in flight."""
        return not self.tracked and all(n >= self.cfg.budget for n in self.asked.values())


def hook_for(table: JobTable, *, log: Callable[[str], None] = print) -> SearchHook | None:
    """The search hook of a sweep, or None when the sweep is a plain grid."""
    spec = load_settings(table)
    return None if spec is None else SearchHook(table.exp_dir, spec, log=log)


def add_search(spec, root: str | os.PathLike, *, validate: bool = True, name: str | None = None,
               set_vars: dict[str, str] | None = None) -> tuple[Path, int, list[str]]:
    """``near sweep add`` of a search spec: validate a probe trial's jobs (before writing anything),
    create the table and the studies, and add the first ``parallel`` trials of every study.
    Returns (sweep folder, trials in flight, notes)."""
    from near.sweep.validate import validate_jobs

    notes: list[str] = []
    points = axes_points(spec)
    if validate:
        jobs = trial_jobs(spec, points[0], probe_params(spec.search))[1]
        skip = [(j.job_id, "stage has validate: false") for j in jobs
                if any(s.name == j.stage and not s.validate for s in spec.stages)]
        notes = validate_jobs(jobs, spec.label, skip_stages=skip).notes()
    target = Path(root) / spec.name
    with JobTable.open_or_create(target, sweep=spec.name) as table:
        save_settings(table, str(spec.path), name, dict(set_vars or {}))
        hook = SearchHook(target, spec, log=lambda m: None)
        hook(table)
        in_flight = len(hook.tracked)
    cfg = spec.search
    notes.insert(0, f"search: {len(points)} stud{'y' if len(points) == 1 else 'ies'} x {cfg.budget} trials "
                 f"({cfg.sampler}, {cfg.parallel} in flight, {cfg.mode} {cfg.metric} at {cfg.at}); "
                 f"journal {studymod.journal_path(target)}")
    return target, in_flight, notes
