"""Array planning for the SLURM executor: which sbatch calls, with which tasks and dependencies.

Pure functions, no cluster: :func:`plan_arrays` turns resource groups (in dependency order) and
the cluster's limits into the list of job arrays to submit, and :func:`parse_limits` reads the limits
from the text of ``scontrol show config`` / ``sacctmgr``.

- A group larger than ``MaxArraySize`` becomes several arrays ("chunks"), tasks ``0..n-1`` each;
  job ``offset + k`` of the group is task ``k`` of the chunk that starts at ``offset``.
- ``MaxSubmitJobs`` and ``MaxJobCount`` leave room for ``budget`` more jobs in the queue; jobs past
  it are deferred (they stay pending; the next ``submit``/``wait`` cycle sends them), and so is every
  job that needs a deferred one.
- A group whose jobs each need exactly one job of one earlier group, covering a prefix of each of its
  chunks once, is chunked like that group and waits with ``aftercorr`` on the matching chunk (task k
  waits for task k only); any other dependent waits ``afterok`` on the jobs it needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

DEFAULT_MAX_ARRAY_SIZE = 1001   # SLURM's default: array indices 0..1000


@dataclass(frozen=True)
class ClusterLimits:
    """What one submit may send. ``max_submit``/``max_jobs`` are ``None`` where the cluster sets none."""

    max_array_size: int = DEFAULT_MAX_ARRAY_SIZE   # tasks of one array (indices < this)
    max_submit: int | None = None                  # MaxSubmitJobs: this user's jobs in the queue
    max_jobs: int | None = None                    # MaxJobCount: all jobs slurmctld holds

    def budget(self, mine_queued: int, all_queued: int) -> int | None:
        """How many more jobs may enter the queue now (None: unlimited). Both limits count array
        tasks: MaxSubmitJobs this user's, MaxJobCount everybody's (slurmctld refuses an array whose
        tasks would pass it, even held ones)."""
        room = [lim - used for lim, used in ((self.max_submit, mine_queued), (self.max_jobs, all_queued))
                if lim is not None]
        return max(0, min(room)) if room else None

    def lowered(self, max_array_size: int | None = None, max_submit: int | None = None) -> "ClusterLimits":
        """These limits, lowered (never raised) by a profile's own settings."""
        return ClusterLimits(
            min(self.max_array_size, max_array_size or self.max_array_size),
            _min_opt(self.max_submit, max_submit), self.max_jobs)


def _min_opt(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


@dataclass(frozen=True)
class Group:
    """Jobs of one stage sharing resources (one array before splitting), in submission order."""

    stage: str
    params: dict
    job_ids: tuple[str, ...]


@dataclass
class PlannedArray:
    """One sbatch: ``job_ids`` become tasks ``0..len-1``; ``offset`` is where they start in the group.

    ``after_corr`` is the index (in the plan) of the array whose task k this array's task k waits for;
    else ``after_ok`` lists the job ids the whole array waits for (resolved to scheduler ids when
    submitting: those of earlier arrays of the plan or of jobs already on the cluster)."""

    stage: str
    params: dict
    job_ids: list[str]
    group: int
    offset: int = 0
    after_corr: int | None = None
    after_ok: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """The arrays to submit in order, and the jobs left pending for a later cycle (and why)."""

    arrays: list[PlannedArray]
    deferred: dict[str, str] = field(default_factory=dict)   # job id -> reason

    @property
    def jobs(self) -> int:
        return sum(len(a.job_ids) for a in self.arrays)


def _chunks(ids: Sequence[str], size: int) -> list[tuple[int, list[str]]]:
    return [(i, list(ids[i:i + size])) for i in range(0, len(ids), size)]


def plan_arrays(groups: Sequence[Group], needs: Mapping[str, Sequence[str]], limits: ClusterLimits,
                budget: int | None = None) -> Plan:
    """Split ``groups`` (dependencies before dependents) into arrays that fit ``limits``.

    ``needs[job]`` lists the jobs ``job`` still waits for (not done); those outside the groups are
    assumed to be on the cluster already. At most ``budget`` jobs are planned (None: no limit).
    """
    if limits.max_array_size < 1:
        raise ValueError(f"max_array_size must be >= 1, got {limits.max_array_size}")
    plan = Plan([])
    in_groups = {j for g in groups for j in g.job_ids}
    where: dict[str, tuple[int, int]] = {}      # planned job -> (array index in plan, task)
    group_of = {j: gi for gi, g in enumerate(groups) for j in g.job_ids}
    left = budget
    for gi, g in enumerate(groups):
        ready = []
        for j in g.job_ids:
            missing = [d for d in needs.get(j, ()) if d in in_groups and d not in where]
            if missing:
                plan.deferred[j] = f"needs {missing[0]}, not submitted in this cycle"
            else:
                ready.append(j)
        for corr_arr, ids in _corr_layout(ready, needs, where, group_of, plan.arrays) or \
                [(None, c) for _, c in _chunks(ready, limits.max_array_size)]:
            if left is not None and len(ids) > left:
                for j in ids[left:]:
                    plan.deferred[j] = "MaxSubmitJobs reached"
                ids = ids[:left]
            if not ids:
                continue
            offset = g.job_ids.index(ids[0]) if corr_arr is None else 0
            arr = PlannedArray(g.stage, g.params, ids, gi, offset, corr_arr)
            if corr_arr is None:
                arr.after_ok = sorted({d for j in ids for d in needs.get(j, ())})
            for k, j in enumerate(ids):
                where[j] = (len(plan.arrays), k)
            plan.arrays.append(arr)
            if left is not None:
                left -= len(ids)
    return plan


def _corr_layout(ready: list[str], needs: Mapping[str, Sequence[str]], where: dict[str, tuple[int, int]],
                 group_of: Mapping[str, int], arrays: list[PlannedArray]) -> list[tuple[int, list[str]]] | None:
    """``[(parent array index, job ids in task order)]`` when every job of ``ready`` needs exactly one
    job, all in arrays of one earlier group planned here, no task needed twice and each parent chunk's
    needed tasks a prefix ``0..m-1``; else None."""
    if not ready:
        return None
    by_parent: dict[int, dict[int, str]] = {}
    parent_group = None
    for j in ready:
        deps = list(needs.get(j, ()))
        if len(deps) != 1 or deps[0] not in where:
            return None
        pg = group_of[deps[0]]
        if parent_group not in (None, pg):
            return None
        parent_group = pg
        arr, task = where[deps[0]]
        tasks = by_parent.setdefault(arr, {})
        if task in tasks:
            return None
        tasks[task] = j
    out = []
    for arr in sorted(by_parent):
        tasks = by_parent[arr]
        if set(tasks) != set(range(len(tasks))) or len(tasks) > len(arrays[arr].job_ids):
            return None
        out.append((arr, [tasks[k] for k in range(len(tasks))]))
    return out


# --------------------------------------------------------------------------- reading the limits
def _int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() else None


def parse_config(text: str) -> dict[str, str]:
    """``scontrol show config`` -> {key: value}."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(\w+)\s*=\s*(.*?)\s*$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def parse_limits(config_text: str, assoc_submit_text: str = "") -> ClusterLimits:
    """Limits from ``scontrol show config`` and ``sacctmgr -n -P`` lines of MaxSubmit values (the
    user's associations and QOS; the smallest set value wins; empty fields mean no limit)."""
    cfg = parse_config(config_text)
    size = _int_or_none(cfg.get("MaxArraySize"))
    submit = None
    for line in assoc_submit_text.splitlines():
        for value in line.split("|"):
            submit = _min_opt(submit, _int_or_none(value))
    return ClusterLimits(size if size else DEFAULT_MAX_ARRAY_SIZE, submit, _int_or_none(cfg.get("MaxJobCount")))
