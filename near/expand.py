"""Expansion: a :class:`~near.spec.Spec` -> grid points -> jobs. Pure (no I/O).

A job's id is the first 12 hex digits of sha256 over its resolved content: stage name, command
entry (axis values substituted, dispatch placeholders kept), the *sorted* overrides and the ids of
the jobs it needs. Axis values that do not reach a job's content do not change its id, so an
``ncsn`` stage that ignores the ablation axis is one job shared by every ablation.

A job's ``params`` hold only the axes it uses (its own content or its dependencies'): a shared
``ncsn`` job has no ``ablation`` value.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import dataclass
from typing import Any, Iterator

from near.errors import SpecError
from near.jobtable import JobSpec
from near.spec import ALL_STAGES, Axis, Spec, Stage, format_value

ID_LEN = 12
DISPATCH_VARS = ("run_dir", "job_id", "exp_dir")
_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?\}")

Point = dict[str, Any]


@dataclass
class Expansion:
    """The jobs of a spec (distinct, dependencies first) and its grid points."""

    jobs: list[JobSpec]
    points: list[Point]
    axes: list[str]

    @property
    def shared(self) -> int:
        """Jobs used by more than one grid point."""
        return sum(1 for j in self.jobs if j.uses > 1)


def point_label(point: Point) -> str:
    """``algorithm=NEAR motion=circle seed=42`` (names a grid point in messages)."""
    return " ".join(f"{k}={format_value(v)}" for k, v in point.items())


def _matches(point: Point, cond: dict[str, list[Any]] | None) -> bool:
    if not cond:
        return True
    for k, allowed in cond.items():
        if k not in point:
            return False
        fv = format_value(point[k])
        if not any(fv == format_value(a) for a in allowed):
            return False
    return True


def grid_points(spec: Spec) -> list[Point]:
    """All grid points: product of the axes (zip groups as one factor, conditional axes only where
    their ``when`` matches), minus ``exclude``, plus ``include``; duplicates dropped, order kept."""
    factors: list[tuple[dict | None, list[Point]]] = []
    zipped = {a: i for i, group in enumerate(spec.zip) for a in group}
    done_groups: set[int] = set()
    by_name = {a.name: a for a in spec.axes}
    for axis in spec.axes:
        if axis.name in zipped:
            gi = zipped[axis.name]
            if gi in done_groups:
                continue
            done_groups.add(gi)
            group = [by_name[n] for n in spec.zip[gi]]
            rows = [dict(zip([g.name for g in group], vals)) for vals in zip(*[g.values for g in group])]
            factors.append((axis.when, rows))
        else:
            factors.append((axis.when, [{axis.name: v} for v in axis.values]))

    out: list[Point] = []

    def rec(i: int, point: Point) -> None:
        if i == len(factors):
            out.append(point)
            return
        when, rows = factors[i]
        if not _matches(point, when):
            rec(i + 1, point)
            return
        for row in rows:
            p = dict(point)
            p.update(row)
            rec(i + 1, p)

    rec(0, {})
    if spec.exclude:
        out = [p for p in out if not any(_matches(p, ex) for ex in spec.exclude)]
    order = [a.name for a in spec.axes]
    for inc in spec.include:
        keys = list(inc)
        combos: list[Point] = [{}]
        for k in keys:
            combos = [dict(c, **{k: v}) for c in combos for v in inc[k]]
        for c in combos:
            out.append({k: c[k] for k in order if k in c})
    seen: set[tuple] = set()
    uniq = []
    for p in out:
        key = tuple((k, format_value(v)) for k, v in p.items())
        if key not in seen:
            seen.add(key)
            uniq.append(p)
    return uniq


class _Expander:
    def __init__(self, spec: Spec):
        self.spec = spec
        self.axes: dict[str, Axis] = {a.name: a for a in spec.axes}
        self.order = [a.name for a in spec.axes]
        self.by_name: dict[str, list[Stage]] = {}
        for s in spec.stages:
            self.by_name.setdefault(s.name, []).append(s)
        self.memo: dict[tuple, tuple[str, frozenset]] = {}
        self.jobs: dict[str, JobSpec] = {}
        self.label = spec.label

    def err(self, where: str, point: Point, msg: str) -> SpecError:
        return SpecError(f"{self.label}: {where}: {msg} (at grid point {point_label(point)})")

    def stages_at(self, point: Point) -> dict[str, Stage]:
        out: dict[str, Stage] = {}
        for s in self.spec.stages:
            if _matches(point, s.when) and not (s.unless and _matches(point, s.unless)):
                if s.name in out:
                    raise self.err(s.where, point, f"two definitions of stage {s.name!r} match "
                                   f"({out[s.name].where} and {s.where}); make their 'when' exclusive")
                out[s.name] = s
        return out

    def lookup_var(self, point: Point, name: str) -> tuple[Any, str | None] | None:
        """A template variable: the last axis (in point order) whose value's bundle sets it, else
        the spec's ``vars``. Returns (value, axis or None)."""
        for aname in reversed(list(point)):
            axis = self.axes.get(aname)
            if axis is not None and axis.vars:
                vs = axis.vars.get(format_value(point[aname]))
                if vs and name in vs:
                    return vs[name], aname
        if name in self.spec.vars:
            return self.spec.vars[name], None
        return None

    def subst(self, text: str, point: Point, stage: Stage, refs: set[str], used: set[str], where: str,
              depth: int = 0) -> str:
        def sub(m: re.Match) -> str:
            if m.group(0) == "$${":
                return "$${"
            name, attr = m.group(1), m.group(2)
            if attr is None:
                if name in DISPATCH_VARS:
                    return m.group(0)
                if name == "sweep":
                    return self.spec.name
                if name == "stage":
                    return stage.name
                if name in point:
                    used.add(name)
                    return format_value(point[name])
                var = self.lookup_var(point, name)
                if var is not None:
                    if depth > 8:
                        raise self.err(where, point, f"${{{name}}}: variables refer to each other in a cycle")
                    if var[1]:
                        used.add(var[1])
                    return self.subst(format_value(var[0]), point, stage, refs, used, where, depth + 1)
                if name in self.axes:
                    raise self.err(where, point, f"${{{name}}}: axis {name!r} has no value at this point "
                                   "(its 'when' does not match)")
                raise self.err(where, point, f"unknown variable ${{{name}}} (axes: {', '.join(self.order)}; "
                               f"dispatch: {', '.join(DISPATCH_VARS)})")
            if name in refs and attr in ("run_dir", "job_id"):
                return m.group(0)
            if name in refs:
                raise self.err(where, point, f"${{{name}.{attr}}}: references offer run_dir and job_id")
            raise self.err(where, point, f"${{{name}.{attr}}}: {name!r} is not in this stage's needs "
                           f"({', '.join(sorted(refs)) or 'none'})")

        return _VAR.sub(sub, text)

    def job(self, point: Point, stage_name: str, chain: tuple = ()) -> tuple[str, frozenset]:
        """Job id and used axes of ``stage_name`` at ``point`` (memoised)."""
        key = (tuple((k, format_value(v)) for k, v in point.items()), stage_name)
        hit = self.memo.get(key)
        if hit is not None:
            return hit
        if key in chain:
            raise self.err("stages", point, f"stage {stage_name!r} needs itself through 'with'")
        stages = self.stages_at(point)
        stage = stages.get(stage_name)
        if stage is None:
            raise self.err("stages", point, f"no definition of stage {stage_name!r} matches this point "
                           "(check the stage's 'when' and the 'needs' that refer to it)")
        used: set[str] = set()
        deps: dict[str, str] = {}
        for need in stage.needs:
            target = dict(point)
            for k, v in need.with_.items():
                target[k] = v
            target = {k: target[k] for k in self.order if k in target} | \
                {k: v for k, v in target.items() if k not in self.axes}
            dep_id, dep_used = self.job(target, need.stage, chain + (key,))
            deps[need.ref] = dep_id
            used |= dep_used - set(need.with_)
        refs = set(deps)
        entry = self.subst(stage.command, point, stage, refs, used, f"{stage.where}.command")
        overrides = [self.subst(o, point, stage, refs, used, f"{stage.where}.overrides")
                     for o in stage.overrides]
        for aname, value in point.items():
            bundle = self.axes[aname].overrides.get(format_value(value)) if aname in self.axes else None
            if not bundle:
                continue
            extra = bundle.get(ALL_STAGES, []) + bundle.get(stage_name, [])
            if extra:
                used.add(aname)
                where = f"axes.{aname}.overrides.{format_value(value)}"
                overrides += [self.subst(o, point, stage, refs, used, where) for o in extra]
        if stage.when:  # labels the job (e.g. algorithm=NEAR for an ncsn stage); not part of its id
            used |= {k for k in stage.when if k in point}
        digest = hashlib.sha256(json.dumps(
            [stage_name, entry, sorted(overrides), sorted(deps.items())], separators=(",", ":")
        ).encode()).hexdigest()[:ID_LEN]
        params = {k: point[k] for k in self.order if k in used and k in point}
        params.update({k: v for k, v in point.items() if k not in self.axes and k in used})
        if digest in self.jobs:
            # the same job reached from another point: keep only the labels all its points agree on
            # (a shared ncsn job gets no ablation value even if a variable of the ablation shaped it)
            prev = self.jobs[digest]
            prev.params = {k: v for k, v in prev.params.items() if k in params and params[k] == v}
            prev.point = point_label(prev.params)
        else:
            command = entry + "".join(" " + _quote(o) for o in overrides)
            resources = dict(self.spec.resources)
            resources.update(stage.resources)
            self.jobs[digest] = JobSpec(
                job_id=digest, stage=stage_name, command=command, params=params, resources=resources,
                deps=deps, sweep=self.spec.name, workdir=str(self.spec.workdir),
                max_attempts=stage.max_attempts or self.spec.max_attempts, point=point_label(params), uses=0,
            )
        result = (digest, frozenset(used))
        self.memo[key] = result
        return result

    def closure(self, job_id: str, acc: set[str]) -> None:
        stack = [job_id]
        while stack:
            j = stack.pop()
            if j in acc:
                continue
            acc.add(j)
            stack.extend(self.jobs[j].deps.values())


def _quote(o: str) -> str:
    """Shell-quote an override unless it is plainly safe; placeholders stay readable (they are
    substituted textually before the shell sees the command, inside the quotes if any)."""
    bare = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_.]*\}", "", o)
    return o if re.fullmatch(r"[A-Za-z0-9_+=.,:/@%\-]*", bare) else shlex.quote(o)


def expand(spec: Spec) -> Expansion:
    """Expand ``spec`` into distinct jobs (dependencies before dependents) and its grid points."""
    ex = _Expander(spec)
    points = grid_points(spec)
    per_point: list[set[str]] = []
    for p in points:
        ids: set[str] = set()
        for name in ex.stages_at(p):
            jid, _ = ex.job(p, name)
            ex.closure(jid, ids)
        per_point.append(ids)
    for ids in per_point:
        for j in ids:
            ex.jobs[j].uses += 1
    jobs = [j for j in ex.jobs.values() if j.uses > 0]
    return Expansion(jobs=jobs, points=points, axes=list(ex.order))


def iter_commands(expansion: Expansion) -> Iterator[tuple[str, str]]:
    """(job_id, command template) pairs, e.g. for a dry run."""
    for j in expansion.jobs:
        yield j.job_id, j.command
