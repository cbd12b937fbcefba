"""Jobs that compute the same thing are one job: merging expansion's jobs by what their stage reads.

Expansion names a job by its text (a hash of its command and dependencies), so two ``ncsn`` jobs
whose commands differ only in overrides the energy model never reads (NEAR's ablation generator
passes the ``inference.*`` reward settings to it too) would train identical models twice. After
validation, jobs of one stage whose identities are equal (:class:`near.sweep.settings_check.JobSettings`:
the settings the stage reads), that run the same program in the same workdir with the same
resources and the same (merged) dependencies, become one: the first of them, or the one a job
table already holds. Job ids stay the text ids, so a table written before keeps working: a job
whose id is in the table is never merged away. Pure (no I/O).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Iterable

from near.jobtable import JobSpec

# a command that is the trainer call alone: the overrides are all it varies
_PLAIN_CALL = re.compile(r"""^\s*(?:\S*/)?(?:near\s+train|python3?\s+-m\s+near\s+train)\s""")
_MORE_THAN_A_CALL = re.compile(r"""[;&|<>`#\n]|\$\(""")


def _program(job: JobSpec) -> str | None:
    """The program a job runs when its command is a trainer call and nothing else (else None:
    such a job is never merged)."""
    if _MORE_THAN_A_CALL.search(job.command):
        return None
    m = _PLAIN_CALL.match(job.command)
    if m is None:
        return None
    rest = job.command[m.end():].split(None, 1)
    return " ".join(m.group(0).split() + rest[:1])


def merge_shared(jobs: list[JobSpec], identities: dict[str, tuple], existing: Iterable[str] = ()) -> list[JobSpec]:
    """``jobs`` (dependencies first) with each group of equal jobs merged into one; dependents point
    at the job kept, its ``uses`` count the grid points of the group, and its ``params`` keep only
    the axis values the group shares."""
    existing = set(existing)
    group_of: dict[str, tuple] = {}
    groups: dict[tuple, list[JobSpec]] = {}
    for job in jobs:
        identity, program = identities.get(job.job_id), _program(job)
        if identity is None or program is None:
            key: tuple = ("job", job.job_id)
        else:
            deps = tuple(sorted((ref, group_of.get(dep, ("job", dep))) for ref, dep in job.deps.items()))
            key = (job.stage, program, job.workdir, identity, deps, job.max_attempts,
                   json.dumps(job.resources, sort_keys=True, default=str))
        group_of[job.job_id] = key
        groups.setdefault(key, []).append(job)

    kept_as: dict[str, str] = {}
    merged: dict[str, list[JobSpec]] = {}
    for members in groups.values():
        if len(members) == 1:
            continue
        keep = next((j for j in members if j.job_id in existing), members[0])
        for j in members:
            if j is not keep and j.job_id not in existing:
                kept_as[j.job_id] = keep.job_id
                merged.setdefault(keep.job_id, []).append(j)
    if not kept_as:
        return jobs

    out = []
    for job in jobs:
        if job.job_id in kept_as:
            continue
        deps = {ref: kept_as.get(dep, dep) for ref, dep in job.deps.items()}
        others = merged.get(job.job_id, [])
        if others or deps != job.deps:
            params = {k: v for k, v in job.params.items() if all(o.params.get(k, _NONE) == v for o in others)}
            job = dataclasses.replace(job, deps=deps, params=params, uses=job.uses + sum(o.uses for o in others),
                                      point=job.point if params == job.params else None)
        out.append(job)
    return out


_NONE = object()
