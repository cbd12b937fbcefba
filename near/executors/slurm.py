"""The SLURM executor: submit a sweep's jobs as job arrays, reconcile, cancel.

- :func:`submit` claims every pending job (compare-and-set pending -> queued in the job table, so
  two submitters never queue a job twice), groups the claimed jobs by (stage, resources), and
  sends each group as one submitit job array (one ``sbatch``), throttled with ``%N``; a group larger
  than the cluster's MaxArraySize becomes several arrays, and no more jobs are claimed than
  MaxSubmitJobs/MaxJobCount leave room for (the planning is :mod:`near.executors.slurm_plan`). The
  jobs' code is frozen first (:mod:`near.snapshot`). A later stage
  waits on exactly the scheduler ids it needs (``afterok``, ``kill-on-invalid-dep=yes``: if one of
  them fails SLURM removes the dependent array instead of leaving it pending forever; ``sync``
  then blocks the jobs whose dependency failed and puts the others back to pending).
- :func:`sync` folds the outcome files the nodes wrote (the nodes never open the job table) and
  reconciles the rest with ``squeue`` and ``sacct`` in a bounded number of calls (ids batched by
  array, not one call per job); :func:`reconcile` is the pure decision behind it.
- :func:`cancel` records ``cancelled`` and ``scancel`` s, batched.

What runs on the node is :class:`near.executors.slurm_node.NodeJob`. submitit's files (pickles,
sbatch scripts, logs) live under ``<exp>/slurm/submitit``.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from near.errors import NearError, TableError
from near.executors.base import Hook, Plan, View, backoff_s, decide, fold, is_transient
from near.executors.outcomes import CANCELLED as K_CANCELLED, LOST, REQUEUED, Outcome
from near.executors.runner import Task
from near.executors.slurm_node import INTERRUPTED
from near.executors.slurm_plan import ClusterLimits, Group, parse_limits, plan_arrays
from near.executors.slurm_profile import SlurmProfile
from near.jobtable import (
    ACTIVE_STATES, BLOCKED, BLOCKING_STATES, CANCELLED, DONE, PENDING, PRUNED, QUEUED, RUNNING,
    STATES, Change, JobBrief, JobRecord, JobTable, topo_order,
)
from near.snapshot import Snapshotter

ID_BATCH = 400          # scheduler ids per squeue/sacct/scancel call (keeps argv small)


class SlurmError(NearError):
    """A SLURM command failed (the message has its stderr)."""


def slurm_dir(exp_dir: str | os.PathLike) -> Path:
    """Where this sweep's SLURM files live: ``<exp>/slurm``."""
    return Path(exp_dir) / "slurm"


# --------------------------------------------------------------------------- resources
EXTRA = "sbatch_extra"   # key of a job's own extra sbatch options (the spec's ``resources.slurm``)


def job_slurm_params(profile: SlurmProfile, resources: dict) -> dict:
    """The submitit/sbatch parameters of one job: the profile, overridden by the job's resources
    (``cpus``, ``gpus``, ``mem``, ``time``, ``partition``, ``qos``, ``account``); the spec's
    ``resources.slurm`` mapping (extra sbatch options, e.g. ``{constraint: a100}``) goes under
    ``EXTRA`` and, being part of the parameters, of the resource group."""
    from near.executors.slurm_profile import parse_time_min

    r = resources or {}
    time_min = parse_time_min(r["time"], "job resources 'time'") if "time" in r else profile.time
    params = {
        "partition": r.get("partition", profile.partition),
        "account": r.get("account", profile.account),
        "qos": r.get("qos", profile.qos),
        "time": time_min,
        "cpus_per_task": int(r.get("cpus", profile.cpus)),
        "gpus_per_node": int(r.get("gpus", profile.gpus)) or None,
        "mem": str(r["mem"]) if "mem" in r else profile.mem,
        "mem_per_cpu": None if "mem" in r else profile.mem_per_cpu,
    }
    if r.get("slurm"):
        params[EXTRA] = dict(r["slurm"])
    return {k: v for k, v in params.items() if v is not None}


def _group_key(stage: str, params: dict) -> tuple:
    return (stage, json.dumps(params, sort_keys=True))


# --------------------------------------------------------------------------- submit
@dataclass
class ArraySubmission:
    """One sbatch: a stage's jobs sharing resources."""

    stage: str
    params: dict
    job_ids: list[str]
    scheduler_id: str = ""            # the array id (or the job id of a 1-job group)
    dependency: str = ""


@dataclass
class SubmitResult:
    """What :func:`submit` did."""

    submitted: int = 0
    arrays: list[ArraySubmission] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)   # reason -> count
    seconds: float = 0.0

    @property
    def sbatch_calls(self) -> int:
        return len(self.arrays)


def _dependency_spec(dep_sids: Iterable[str], array_sizes: dict[str, int]) -> str:
    """``afterok:`` over the given scheduler ids; whole arrays (all tasks needed) by their base id."""
    by_array: dict[str, set[str]] = defaultdict(set)
    singles: list[str] = []
    for sid in set(dep_sids):
        base, _, task = sid.partition("_")
        if task:
            by_array[base].add(sid)
        else:
            singles.append(sid)
    parts = sorted(singles)
    for base, sids in sorted(by_array.items()):
        parts += [base] if array_sizes.get(base) == len(sids) else sorted(sids)
    return "afterok:" + ":".join(parts) if parts else ""


def _groups(profile: SlurmProfile, claimed: dict[str, JobRecord]) -> list[Group]:
    """Claimed jobs grouped by (stage, resources), dependencies first; a group whose jobs sit at
    different depths (a stage depending on itself) splits by depth."""
    level: dict[str, int] = {}
    for j in topo_order(list(claimed.values())):
        level[j.job_id] = 1 + max((level.get(d, 0) for d in j.deps.values() if d in claimed), default=-1)
    members: dict[tuple, list[str]] = defaultdict(list)
    params_of: dict[tuple, dict] = {}
    for jid, rec in claimed.items():
        params = job_slurm_params(profile, rec.resources)
        key = (level[jid], *_group_key(rec.stage, params))
        members[key].append(jid)
        params_of[key] = params
    return [Group(key[1], params_of[key], tuple(members[key])) for key in sorted(members)]


def _needs(claimed: dict[str, JobRecord], everything: dict[str, JobRecord]) -> dict[str, list[str]]:
    """Each claimed job's dependencies that are not done yet."""
    return {jid: [d for d in rec.deps.values() if everything[d].state != DONE] for jid, rec in claimed.items()}


def cluster_limits(profile: SlurmProfile) -> ClusterLimits:
    """The cluster's MaxArraySize and MaxJobCount (``scontrol show config``) and this user's
    MaxSubmitJobs (``sacctmgr``: the user's associations and the profile's QOS), lowered by the
    profile's ``max_array_size`` / ``max_submit_jobs``."""
    config = _run(["scontrol", "show", "config"])
    user = os.environ.get("USER") or _whoami()
    submit_lines = []
    try:
        submit_lines.append(_run(["sacctmgr", "-n", "-P", "show", "assoc", "where", f"user={user}",
                                  "format=MaxSubmit,GrpSubmit"]))
        if profile.qos:
            submit_lines.append(_run(["sacctmgr", "-n", "-P", "show", "qos", profile.qos,
                                      "format=MaxSubmitPU,GrpSubmit"]))
    except SlurmError:
        pass  # no accounting database: no per-user limits to respect
    limits = parse_limits(config, "\n".join(submit_lines))
    return limits.lowered(profile.max_array_size, profile.max_submit_jobs)


def _whoami() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def queue_sizes() -> tuple[int, int]:
    """(this user's, everybody's) queued and running array tasks, from one squeue call (a pending
    array is one line, ``ID_[5-1000%8]``, holding many tasks)."""
    user = os.environ.get("USER") or _whoami()
    mine = total = 0
    for line in _run(["squeue", "-h", "-o", "%u|%i"]).splitlines():
        owner, _, sid = line.partition("|")
        n = len(_expand_array_id(sid.strip()))
        total += n
        if owner.strip() == user:
            mine += n
    return mine, total


def submit(
    exp_dir: str | os.PathLike,
    profile: SlurmProfile,
    *,
    stages: Sequence[str] | None = None,
    resubmit: Sequence[str] = (),
    hold: bool = False,
    log=print,
) -> SubmitResult:
    """Submit every pending job of the sweep (plus ``resubmit`` states, reset first) to SLURM.

    Jobs are claimed with compare-and-set (pending -> queued) before any sbatch: a job another
    submitter claimed is skipped, so concurrent or repeated submits never queue a job twice.
    ``hold`` submits the arrays held (``sbatch --hold``; benchmarks use it).
    """
    with _sigterm_interrupts():
        return _submit(exp_dir, profile, stages=stages, resubmit=resubmit, hold=hold, log=log)


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt meanwhile, as Ctrl-C does, so that either one lets a submit
    put back the jobs it claimed but did not send (in the main thread only: signals go there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def _interrupts_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block ended (an sbatch and the recording of its ids): an
    interrupt lands before an array is sent or after it is recorded, never in between."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _submit(exp_dir: str | os.PathLike, profile: SlurmProfile, *, stages: Sequence[str] | None,
            resubmit: Sequence[str], hold: bool, log) -> SubmitResult:
    """:func:`submit`, its signals set up."""
    import submitit

    t0 = time.perf_counter()
    res = SubmitResult()
    table = JobTable.open(exp_dir)
    claimed: dict[str, JobRecord] = {}
    sent: set[str] = set()  # claimed jobs in an array SLURM accepted
    try:
        if resubmit:
            n = table.reset(resubmit)
            log(f"reset {n} job(s) in {', '.join(resubmit)} to pending")
        everything = {j.job_id: j for j in table.jobs()}
        pending = [j for j in everything.values() if j.state == PENDING
                   and (stages is None or j.stage in stages)]
        owner = f"slurm-submit-{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        if not pending:
            res.seconds = time.perf_counter() - t0
            return res

        limits = cluster_limits(profile)
        budget = limits.budget(*queue_sizes())
        if budget == 0:
            res.skipped["queue limit reached"] = len(pending)
            log(f"the cluster's queue limit (MaxSubmitJobs/MaxJobCount) is reached: {len(pending)} job(s) "
                "stay pending; the next submit or wait cycle sends them")
            res.seconds = time.perf_counter() - t0
            return res

        # 1. claim, dependencies first. A job goes if each dependency is done, active on the
        #    cluster (has a scheduler id) or claimed in this same call; no more than the queue takes.
        order = topo_order(pending)
        roots = [j.job_id for j in order if all(everything[d].state == DONE for d in j.deps.values())]
        room = len(roots) if budget is None else min(len(roots), budget)
        for rec in table.claim(owner, limit=room or 1, lease_s=None, to_state=QUEUED, job_ids=roots):
            claimed[rec.job_id] = rec
        skip = Counter()
        skip["queue limit reached"] = len(roots) - room
        skip["claimed by another submitter"] = room - len(claimed)
        root_set = set(roots)
        for j in order:
            if j.job_id in root_set:
                continue
            if budget is not None and len(claimed) >= budget:
                skip["queue limit reached"] += 1
                continue
            ok = True
            for dep in j.deps.values():
                d = everything[dep]
                if dep in claimed or d.state == DONE or (d.state in ACTIVE_STATES and d.scheduler_id):
                    continue
                ok = False
            if not ok:
                skip["dependency not submitted"] += 1
                continue
            if table.transition(j.job_id, QUEUED, expect=(PENDING,), owner=None, new_owner=owner,
                                reason="submitting to slurm"):
                claimed[j.job_id] = table.get(j.job_id)
            else:
                skip["claimed by another submitter"] += 1
        res.skipped.update((why, n) for why, n in skip.items() if n > 0)
        if skip["queue limit reached"]:
            log(f"{skip['queue limit reached']} job(s) stay pending: the cluster's queue limit "
                "(MaxSubmitJobs/MaxJobCount) is reached; the next submit or wait cycle sends them")
        if not claimed:
            res.seconds = time.perf_counter() - t0
            return res

        # 2. group by (stage, resources), dependencies first; split into arrays that fit the cluster
        plan = plan_arrays(_groups(profile, claimed), _needs(claimed, everything), limits, budget)
        for jid, why in plan.deferred.items():
            table.release(jid, reason=f"not submitted: {why}; the next submit sends it")
        if plan.deferred:
            log(f"{len(plan.deferred)} job(s) stay pending ({next(iter(plan.deferred.values()))}); "
                "the next submit or wait cycle sends them")
            res.skipped["deferred (cluster limits)"] = len(plan.deferred)

        # 3. freeze the code the jobs will run, then one sbatch per planned array
        snapshots = Snapshotter(exp_dir, table.meta(), log)
        folder = slurm_dir(exp_dir) / "submitit"
        sid_of = {jid: r.scheduler_id for jid, r in everything.items()
                  if r.state in ACTIVE_STATES and r.scheduler_id}
        array_sizes: dict[str, int] = {}
        from near.executors.slurm_node import NodeJob

        sweep = table.sweep or Path(exp_dir).name
        try:
            for planned in plan.arrays:
                for jid in planned.job_ids:
                    snapshots.freeze(claimed[jid], table.claims_since_reset(jid) <= 1)
            folder.mkdir(parents=True, exist_ok=True)
            chunks_of = Counter(a.group for a in plan.arrays)
            for planned in plan.arrays:
                if planned.after_corr is not None:
                    # task k waits only for task k of the array it needs: one failure removes one dependent
                    dependency = f"aftercorr:{res.arrays[planned.after_corr].scheduler_id}"
                else:
                    dependency = _dependency_spec([sid_of[d] for d in planned.after_ok], array_sizes)
                g = ArraySubmission(planned.stage, planned.params, planned.job_ids, dependency=dependency)
                extra = dict(profile.sbatch)
                extra.update(g.params.get(EXTRA, {}))  # the stage's own options beat the profile's
                if g.dependency:
                    extra["dependency"] = g.dependency
                    extra["kill-on-invalid-dep"] = "yes"
                if hold:
                    extra["hold"] = True
                ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=profile.max_requeues,
                                            python=profile.python)
                ex.update_parameters(
                    job_name=f"near-{sweep}-{g.stage}", setup=list(profile.setup),
                    array_parallelism=profile.max_running, signal_delay_s=profile.signal_delay_s,
                    additional_parameters=extra, stderr_to_stdout=True,
                    **{k: v for k, v in g.params.items() if k != EXTRA},
                )
                margin = profile.margin_s(g.params["time"])
                with _interrupts_held():
                    with ex.batch():
                        sub = [ex.submit(NodeJob(str(Path(exp_dir).resolve()), jid, g.params["time"] * 60,
                                                 margin, profile.max_requeues, task=Task.of(claimed[jid])))
                               for jid in g.job_ids]
                    ids = [s.job_id for s in sub]
                    g.scheduler_id = ids[0].split("_")[0]
                    if len(ids) > 1:
                        array_sizes[g.scheduler_id] = len(ids)
                    for jid, sid in zip(g.job_ids, ids):
                        sid_of[jid] = sid
                        table.set_scheduler_id(jid, sid)
                    res.arrays.append(g)
                    sent.update(g.job_ids)
                res.submitted += len(ids)
                log(f"submitted {len(ids)} {g.stage} job(s) as slurm {'array ' if len(ids) > 1 else ''}"
                    f"{g.scheduler_id}" + (f" (group jobs {planned.offset}..{planned.offset + len(ids) - 1})"
                                           if chunks_of[planned.group] > 1 else "")
                    + (f" ({g.dependency[:60]}{'...' if len(g.dependency) > 60 else ''})" if g.dependency else ""))
        except Exception as err:
            # sbatch refused (or the snapshot could not be written): put back what was not submitted
            # (no attempt charged); keep what was
            done_ids = {jid for g in res.arrays for jid in g.job_ids}
            for jid in claimed:
                if jid not in done_ids and jid not in plan.deferred:
                    table.release(jid, reason=f"sbatch failed: {str(err).strip()[-300:]}")
            raise SlurmError(f"sbatch failed after {len(res.arrays)} array(s): {str(err).strip()[-1500:]}") from err
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM: what was claimed but not sent goes back to pending (no attempt charged);
        # left queued without a scheduler id, nothing would ever submit, sync or reset it
        with _interrupts_held():  # a second Ctrl-C does not cut the putting back short
            for jid in claimed:
                if jid not in sent:
                    table.release(jid, reason="submit interrupted before sending it")
        raise
    finally:
        table.close()
    res.seconds = time.perf_counter() - t0
    return res


# --------------------------------------------------------------------------- scheduler queries
def _run(cmd: list[str], ok_codes: Sequence[int] = (0,)) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError as err:
        raise SlurmError(f"{cmd[0]} not found: is this a SLURM machine? ({err})") from err
    except subprocess.TimeoutExpired as err:
        raise SlurmError(f"{cmd[0]} did not answer in 120 s") from err
    if out.returncode not in ok_codes:
        if "Invalid job id" in out.stderr:
            return out.stdout  # every id in the batch already left slurmctld's memory
        raise SlurmError(f"{' '.join(cmd[:3])} ... failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    return out.stdout


def _batches(ids: Sequence[str], n: int = ID_BATCH) -> Iterable[list[str]]:
    ids = sorted(set(ids))
    for i in range(0, len(ids), n):
        yield ids[i : i + n]


@dataclass
class SchedulerView:
    """States of jobs as SLURM reports them, keyed by near's scheduler id (``ARRAY_TASK`` or ``JOB``)."""

    live: dict[str, tuple[str, str]] = field(default_factory=dict)      # squeue: state, reason
    accounted: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # sacct: state, exit, reason
    calls: int = 0


def query_scheduler(scheduler_ids: Iterable[str]) -> SchedulerView:
    """squeue + sacct for the arrays/jobs behind ``scheduler_ids``: ceil(#arrays / 400) calls each."""
    view = SchedulerView()
    scheduler_ids = [sid for sid in scheduler_ids if sid]
    bases = sorted({sid.split("_")[0] for sid in scheduler_ids})
    for chunk in _batches(bases):
        out = _run(["squeue", "-h", "-r", "-j", ",".join(chunk), "-o", "%i|%T|%r"], ok_codes=(0,))
        view.calls += 1
        for line in out.splitlines():
            sid, state, reason = (line.split("|") + ["", ""])[:3]
            view.live[sid.strip()] = (state.strip(), reason.strip())
    out = []
    for chunk in _batches(bases):
        out.append(_run(["sacct", "-X", "-n", "-P", "-j", ",".join(chunk), "-o", "JobID,State,ExitCode,Reason"]))
        view.calls += 1
    view.accounted = parse_sacct("\n".join(out), scheduler_ids)
    return view


def parse_sacct(out: str, scheduler_ids: Iterable[str]) -> dict[str, tuple[str, str, str]]:
    """``sacct -X -P -o JobID,State,ExitCode,Reason`` lines -> scheduler id -> (state, exit code,
    reason), for every id sacct lists and every task of ``scheduler_ids`` its array's line covers.

    ``A_[3-9%2]`` stands for the tasks that never started (still pending, or removed, e.g. by a
    failed dependency). Right after an array is cancelled, slurmdbd may list it as a bare ``A``
    until it has recorded the range: that line then covers each of the array's tasks without a
    line of its own (without it they would stay queued until a later sync)."""
    accounted: dict[str, tuple[str, str, str]] = {}
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) < 4:
            continue
        rec = (parts[1].split()[0] if parts[1] else "", parts[2], parts[3])
        for sid in _expand_array_id(parts[0].strip()):
            accounted[sid] = rec
    for sid in scheduler_ids:
        base = sid.split("_")[0]
        if sid != base and sid not in accounted and base in accounted:
            accounted[sid] = accounted[base]
    return accounted


def _expand_array_id(text: str) -> list[str]:
    """``"7_[0-2,5%4]"`` -> ``["7_0", "7_1", "7_2", "7_5"]``; plain ids are returned as they are."""
    if "[" not in text:
        return [text]
    base, _, rng = text.partition("_[")
    out = []
    for part in rng.rstrip("]").split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit():
            out += [f"{base}_{k}" for k in range(int(lo), int(hi or lo) + 1)]
    return out



# --------------------------------------------------------------------------- sync
@dataclass
class SyncResult:
    """What :func:`sync` changed: ``changes[new state] = count``; ``scancelled`` dependents removed."""

    checked: int = 0
    changes: dict[str, int] = field(default_factory=dict)
    scancelled: int = 0
    scheduler_calls: int = 0
    seconds: float = 0.0


_LOST_STATES = {"FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "TIMEOUT", "PREEMPTED",
                "COMPLETED"}
_DEP_REASONS = ("DependencyNeverSatisfied", "Dependency")


def _exit_code(text: str) -> int | None:
    try:
        return int(text.split(":")[0])
    except (ValueError, AttributeError):
        return None


_RESUBMIT = "dependency array failed on the cluster; will be resubmitted"


def reconcile(active: Sequence[JobRecord], view: SchedulerView, outcomes: dict[str, list[Outcome]],
              briefs: Sequence[JobBrief] = ()) -> Plan:
    """Pure: the changes that bring the table's ``active`` jobs in line with what their nodes wrote
    (``outcomes``: each job's outcome files not folded yet, oldest first) and, where a node wrote
    nothing (it died, or was killed before it could), with what SLURM says (``view``): what one
    controller cycle decides (files folded first, then :func:`explain_scheduler`).

    Outcome files come first: the scheduler ``view`` must be taken BEFORE they were read, so that an
    outcome written before SLURM saw the job end is never missed (no finished job taken for a lost
    one). ``briefs`` (every job's id, state, scheduler id and deps) is needed only when some active
    job has dependencies."""
    out = Plan()
    folded: list[JobRecord] = []
    for job in active:
        changes, job = fold(job, outcomes.get(job.job_id, ()))
        out.changes += changes
        folded.append(job)
    rest = explain_scheduler(folded, view, briefs)
    out.changes += rest.changes
    out.scancel += rest.scancel
    return out


def explain_scheduler(jobs: Sequence[JobRecord], view: SchedulerView, briefs: Sequence[JobBrief] = ()) -> Plan:
    """Pure: for ``jobs`` as their outcome files left them, what SLURM's ``view`` implies (started,
    requeued, cancelled, lost on the cluster, a dependency that failed)."""
    out = Plan()
    states = {b.job_id: b.state for b in briefs}
    # the states the files leave are what the dependency checks must see (a dependency whose
    # file says it failed blocks its dependents now)
    for job in jobs:
        if job.job_id in states:
            states[job.job_id] = job.state
    sids = {b.job_id: b.scheduler_id for b in briefs if b.scheduler_id}
    mates: dict[str, list[JobBrief]] = {}  # array id -> the table's jobs submitted in it
    for b in briefs:
        if b.scheduler_id:
            mates.setdefault(b.scheduler_id.split("_")[0], []).append(b)

    def dep_states(job: JobRecord) -> dict[str, str]:
        return {d: states.get(d, "") for d in job.deps.values()}

    def array_dep_failed(job: JobRecord) -> bool:
        """Whether a job that ``job``'s array waited on failed (in the table, or per sacct in this
        pass). The array waits on the union of its jobs' needs, so SLURM removes all of it
        (kill-on-invalid-dep), also the tasks whose own dependencies succeeded; sacct then
        reports them CANCELLED, often with no reason."""
        for mate in mates.get(job.scheduler_id.split("_")[0], []):
            for d in mate.deps.values():
                acct = view.accounted.get(sids.get(d, ""), ("",))[0]
                if states.get(d) in BLOCKING_STATES or acct in _LOST_STATES - {"COMPLETED"}:
                    return True
        return False

    for job in jobs:
        sid = job.scheduler_id
        if job.state not in ACTIVE_STATES or not sid:
            continue  # recorded by its outcomes; or claimed by a submit still running (or dead before sbatch)
        failed_deps = [d for d, st in dep_states(job).items() if st in BLOCKING_STATES] if job.deps else []
        if failed_deps and job.state == QUEUED:
            # its dependency failed: never let it pend on the cluster
            if sid in view.live:
                out.scancel.append(sid)
            out.changes.append(Change(job.job_id, BLOCKED, expect=(QUEUED,),
                                      reason=f"dependency {failed_deps[0]} {states[failed_deps[0]]}"))
            continue
        seen: Outcome | None = None
        if sid in view.live:
            st, why = view.live[sid]
            if st == "RUNNING" and job.state == QUEUED:
                out.changes.append(Change(job.job_id, RUNNING, expect=(QUEUED,), detail=f"slurm {sid} (sync)"))
            elif st == "PENDING" and why in _DEP_REASONS[:1]:
                out.scancel.append(sid)
                out.changes.append(Change(job.job_id, PENDING, expect=ACTIVE_STATES, charge=-1, reason=_RESUBMIT))
            elif st == "PENDING" and job.state == RUNNING:
                # requeued, and its node wrote nothing (killed before it could)
                seen = Outcome(job.job_id, REQUEUED, reason=f"{INTERRUPTED}; requeued (sync)")
        elif sid in view.accounted:
            st, code, why = view.accounted[sid]
            exit_code = _exit_code(code)
            if st == "CANCELLED":
                # never started, and SLURM says it waited on a dependency (or one is not done): removed
                # by kill-on-invalid-dep (a task of the array it waited on failed) -> submit it again
                waited = any(r in why for r in _DEP_REASONS) or (job.deps and any(
                    st_ != DONE for st_ in dep_states(job).values())) or (job.deps and array_dep_failed(job))
                if job.state == QUEUED and job.deps and waited:
                    out.changes.append(Change(job.job_id, PENDING, expect=(job.state,), charge=-1, reason=_RESUBMIT))
                else:
                    seen = Outcome(job.job_id, K_CANCELLED, exit_code=exit_code,
                                   reason=f"cancelled on the cluster (slurm {sid})")
            elif st in _LOST_STATES:
                what = "finished without recording a result" if st == "COMPLETED" else st
                seen = Outcome(job.job_id, LOST, exit_code=exit_code, reason=f"lost on the cluster: slurm {sid} {what}")
        if seen is not None:
            ch = decide(job, seen)
            if ch is not None:
                out.changes.append(ch)
    return out


class SlurmBackend:
    """The SLURM backend of the controller: submits pending jobs as arrays, tells what squeue and
    sacct say of the active jobs whose nodes wrote nothing that explains them, and scancels.

    ``profile`` None never submits (``near sweep sync``, ``wait --profile none``); ``view``: use
    this scheduler view instead of asking squeue/sacct (benchmarks). Jobs of the local backend
    (leased by a local controller) are not its to judge."""

    name = "slurm"

    def __init__(self, table: JobTable, profile: SlurmProfile | None, *, log=print,
                 view: SchedulerView | None = None):
        self.table = table
        self.profile = profile
        self.log = log
        self.fixed_view = view
        self.submitted = 0
        self.scheduler_calls = 0
        self.scancelled = 0
        self.checked = 0
        self._t0 = time.monotonic()
        self._last_counts: dict[str, int] | None = None
        self._faults = 0
        self._resume_at = 0.0

    def look(self) -> View:
        active = [j for j in self.table.jobs(states=ACTIVE_STATES) if not _is_local(j)]
        self.checked = len(active)
        view = self.fixed_view
        if view is None:  # before the files are read: see reconcile
            view = query_scheduler(j.scheduler_id for j in active if j.scheduler_id)
        self.scheduler_calls += view.calls
        briefs = self.table.briefs() if any(j.deps for j in active) else ()
        return View(jobs=active, state=(view, briefs))

    def explain(self, jobs: Sequence[JobRecord], view: View) -> Plan:
        scheduler, briefs = view.state
        return explain_scheduler(jobs, scheduler, briefs)

    def settle(self, plan: Plan) -> None:
        for chunk in _batches(plan.scancel):
            _run(["scancel", *chunk])
            self.scheduler_calls += 1
            self.scancelled += len(chunk)
        counts = self.table.counts()
        if counts != self._last_counts:
            line = "  ".join(f"{s} {counts[s]}" for s in STATES if counts.get(s))
            self.log(f"[{time.monotonic() - self._t0:7.0f} s] {line}")
            self._last_counts = counts

    def recorded(self, change: Change) -> None:
        pass

    def dispatch(self) -> int:
        """Submit what is pending; a transient fault (a full disk...) is retried after a back-off."""
        if self.profile is None or time.monotonic() < self._resume_at or not self.table.counts().get(PENDING, 0):
            return 0
        try:
            n = submit(self.table.exp_dir, self.profile, log=self.log).submitted
        except SlurmError as err:
            if not is_transient(err):
                raise
            self._faults += 1
            wait = backoff_s(self._faults)
            self._resume_at = time.monotonic() + wait
            self.log(f"cannot submit yet ({err.__cause__}); the jobs stay pending, retrying in {wait:.0f} s")
            return 0
        self._faults = 0
        self.submitted += n
        return n

    def stop(self, job_ids: Sequence[str] | None, reason: str) -> None:
        """scancel these jobs (None: nothing; a stopped controller leaves the cluster's jobs be)."""
        if job_ids is None:
            return
        jobs = {j.job_id: j for j in self.table.jobs(states=[*ACTIVE_STATES, PRUNED, CANCELLED])}
        sids = [jobs[j].scheduler_id for j in job_ids if j in jobs and jobs[j].scheduler_id]
        for chunk in _batches(sids):
            _run(["scancel", *chunk])
            self.scancelled += len(chunk)

    def hurry(self) -> None:
        pass

    def busy(self) -> bool:
        return False

    def finished(self) -> bool:
        """No job is queued or running on the cluster (what is pending could not be submitted)."""
        counts = self.table.counts()
        return not any(counts.get(s, 0) for s in ACTIVE_STATES)

    def abandon(self) -> None:
        pass


def _is_local(job: JobRecord) -> bool:
    """A job of the local backend (its lease holder is a local controller)."""
    return str(job.lease_owner or "").startswith("local:") or str(job.scheduler_id or "").startswith("local-")


def sync(exp_dir: str | os.PathLike, *, log=print, hooks: Sequence[Hook] = (),
         view: SchedulerView | None = None) -> SyncResult:
    """One controller cycle without submitting: fold what the nodes wrote (outcome files) and
    reconcile the rest with SLURM (squeue, sacct), then run the ``hooks``.
    ``view``: use this scheduler view instead of asking squeue/sacct (benchmarks)."""
    from near.executors.controller import Controller

    t0 = time.perf_counter()
    with JobTable.open(exp_dir) as table:
        backend = SlurmBackend(table, None, log=lambda m: None, view=view)
        ctl = Controller(table, backend, hooks)
        ctl.cycle()
    return SyncResult(checked=backend.checked, changes=ctl.changed, scancelled=backend.scancelled,
                      scheduler_calls=backend.scheduler_calls, seconds=time.perf_counter() - t0)


# --------------------------------------------------------------------------- cancel
@dataclass
class CancelResult:
    """What :func:`cancel` did."""

    cancelled: int = 0
    scancelled: int = 0


def cancel(exp_dir: str | os.PathLike, *, states: Sequence[str] = (PENDING, QUEUED, RUNNING),
           job_ids: Sequence[str] | None = None, reason: str = "cancelled by user (near sweep cancel)") -> CancelResult:
    """Record ``cancelled`` for the selected jobs, then ``scancel`` those on the cluster (batched).

    The table is written first: a job that starts between the two steps is stopped by the scancel,
    and what its node reports afterwards changes nothing (the job is no longer active); one already
    running gets SIGTERM, checkpoints and exits.
    """
    bad = [s for s in states if s not in (PENDING, QUEUED, RUNNING, BLOCKED)]
    if bad:
        raise TableError(f"cancel: cannot cancel jobs in state(s) {', '.join(bad)}")
    res = CancelResult()
    with JobTable.open(exp_dir) as table:
        jobs = table.jobs(states=states)
        if job_ids is not None:
            wanted = set()
            for p in job_ids:
                wanted.add(table.find(p).job_id)
            jobs = [j for j in jobs if j.job_id in wanted]
        sids = []
        for j in jobs:
            if table.mark_cancelled(j.job_id, reason, expect=(j.state,)):
                res.cancelled += 1
                if j.state in ACTIVE_STATES and j.scheduler_id:
                    sids.append(j.scheduler_id)
        for chunk in _batches(sids):
            _run(["scancel", *chunk])
            res.scancelled += len(chunk)
    return res


# --------------------------------------------------------------------------- wait
@dataclass
class WaitResult:
    """How :func:`wait` ended: the final counts by state, whether it timed out, resubmissions."""

    counts: dict[str, int]
    timed_out: bool = False
    resubmitted: int = 0
    seconds: float = 0.0

    @property
    def all_done(self) -> bool:
        """Nothing timed out and every job is done or pruned (a search stopped it on purpose)."""
        return not self.timed_out and all(n == 0 for s, n in self.counts.items() if s not in (DONE, PRUNED))


def wait(exp_dir: str | os.PathLike, profile: SlurmProfile | None = None, *, poll_s: float = 10.0,
         timeout_s: float | None = None, log=print, hooks: Sequence[Hook] = ()) -> WaitResult:
    """The controller on SLURM: cycle until no job is queued or running; a counts line whenever
    they change.

    With a ``profile``, jobs put back to pending (a crash with attempts left, a dependency array
    removed by SLURM) are submitted again, so one ``wait`` drives the sweep to its end. ``hooks``
    run once per cycle; jobs they add are submitted in that cycle.
    """
    from near.executors.controller import Controller

    with JobTable.open(exp_dir) as table:
        backend = SlurmBackend(table, profile, log=log)
        ctl = Controller(table, backend, hooks, poll_s=poll_s, progress_s=float("inf"), timeout_s=timeout_s,
                         log=log)
        run = ctl.run(install_signals=False)
    if run.timed_out:
        active = sum(run.counts.get(s, 0) for s in ACTIVE_STATES)
        log(f"wait: timed out after {timeout_s:.0f} s with {active} job(s) still queued or running")
    return WaitResult(counts=run.counts, timed_out=run.timed_out, resubmitted=backend.submitted, seconds=run.seconds)

