"""Expansion: a :class:`~near.spec.Spec` -> grid points -> jobs. Pure (no I/O).

A job's id is the first 12 hex digits of sha256 over its resolved content: stage name, command
entry (axis values substituted, dispatch placeholders kept), the *sorted* overrides and the ids of
the jobs it needs. Axis values that do not reach a job's content do not change its id, so an
``ncsn`` stage that ignores the ablation axis is one job shared by every ablation.

A job's ``params`` hold only the axes it uses (its own content or its dependencies'): a shared
``ncsn`` job has no ``ablation`` value.
"""

from __future__ import annotations

import gc
import hashlib
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
_ABSENT = object()


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
    if not spec.include:
        return out  # a product of distinct values has no duplicates
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
        # caches that make expansion cost per job a few dict lookups (100k jobs in seconds)
        self.cond_keys = sorted({k for st in spec.stages for c in (st.when, st.unless) if c for k in c})
        self._stages_cache: dict[tuple, dict[str, Stage]] = {}
        self._render_cache: dict[tuple, tuple[str, frozenset]] = {}
        self._text_names: dict[str, tuple[str, ...]] = {}
        self._bundle_cache: dict[tuple, tuple[str, list[str]] | None] = {}
        self._resources: dict[int, dict[str, Any]] = {}
        self._relevant: dict[int, tuple[str, ...]] = {}
        self.var_names = set(spec.vars) | {v for a in spec.axes for vs in a.vars.values() for v in vs}

    def _names_in(self, text: str, seen: frozenset = frozenset()) -> set[str]:
        """Point keys a template's rendering depends on (through variables too)."""
        out: set[str] = set()
        for m in _VAR.finditer(text):
            name, attr = m.group(1), m.group(2)
            if name is None or attr is not None or name in DISPATCH_VARS or name in ("sweep", "stage"):
                continue
            out.add(name)
            if name in self.var_names and name not in seen:
                texts = [self.spec.vars[name]] if name in self.spec.vars else []
                for a in self.spec.axes:
                    providers = [vs[name] for vs in a.vars.values() if name in vs]
                    if providers:
                        out.add(a.name)
                        texts += providers
                for t in texts:
                    out |= self._names_in(format_value(t), seen | {name})
        return out

    def render(self, text: str, point: Point, stage: Stage, refs: set[str], where: str) -> tuple[str, frozenset]:
        """``subst`` memoised on the point values the template depends on."""
        names = self._text_names.get(text)
        if names is None:
            names = self._text_names[text] = tuple(sorted(self._names_in(text)))
        key = (id(stage), text, tuple([point.get(n, _ABSENT) for n in names]))
        hit = self._render_cache.get(key)
        if hit is None:
            used: set[str] = set()
            hit = (self.subst(text, point, stage, refs, used, where), frozenset(used))
            self._render_cache[key] = hit
        return hit

    def bundle(self, aname: str, value: Any, stage_name: str) -> tuple[str, list[str]] | None:
        """(where, override templates) that axis value ``value`` adds to ``stage_name``, if any."""
        key = (aname, value, stage_name)
        try:
            return self._bundle_cache[key]
        except KeyError:
            pass
        axis = self.axes.get(aname)
        out = None
        if axis is not None:
            b = axis.overrides.get(format_value(value))
            extra = (b.get(ALL_STAGES, []) + b.get(stage_name, [])) if b else []
            if extra:
                out = (f"axes.{aname}.overrides.{format_value(value)}", extra)
        self._bundle_cache[key] = out
        return out

    def err(self, where: str, point: Point, msg: str) -> SpecError:
        return SpecError(f"{self.label}: {where}: {msg} (at grid point {point_label(point)})")

    def stages_at(self, point: Point) -> dict[str, Stage]:
        key = tuple([point.get(k, _ABSENT) for k in self.cond_keys])
        hit = self._stages_cache.get(key)
        if hit is None:
            hit = self._stages_cache[key] = self._stages_at(point)
        return hit

    def _stages_at(self, point: Point) -> dict[str, Stage]:
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

    def relevant(self, stage: Stage, seen: frozenset = frozenset()) -> set[str]:
        """Every point key the jobs of ``stage`` can depend on: its conditions, the names in its
        templates (through variables), the axes whose values add overrides to it, and (minus what
        ``with`` fixes) those of the stages it needs."""
        out = set(self.cond_keys)
        for text in [stage.command, *stage.overrides]:
            out |= self._names_in(text)
        for a in self.spec.axes:
            for bundle in a.overrides.values():
                extra = bundle.get(ALL_STAGES, []) + bundle.get(stage.name, [])
                if extra:
                    out.add(a.name)
                    for t in extra:
                        out |= self._names_in(t)
        for need in stage.needs:
            for dep in self.by_name.get(need.stage, []):
                if id(dep) not in seen:
                    out |= self.relevant(dep, seen | {id(stage)}) - set(need.with_)
        return out

    def job(self, point: Point, stage_name: str) -> tuple[str, frozenset]:
        """Job id and used axes of ``stage_name`` at ``point`` (memoised)."""
        stage = self.stages_at(point).get(stage_name)
        if stage is None:
            raise self.err("stages", point, f"no definition of stage {stage_name!r} matches this point "
                           "(check the stage's 'when' and the 'needs' that refer to it)")
        rel = self._relevant.get(id(stage))
        if rel is None:
            rel = self._relevant[id(stage)] = tuple(sorted(self.relevant(stage)))
        # only the point values this stage definition can depend on identify its job
        key = (id(stage), tuple([point.get(k, _ABSENT) for k in rel]))
        hit = self.memo.get(key)
        if hit is not None:
            return hit
        used: set[str] = set()
        deps: dict[str, str] = {}
        for need in stage.needs:
            if need.with_:
                target = dict(point)
                target.update(need.with_)
            else:
                target = point
            dep_id, dep_used = self.job(target, need.stage)
            deps[need.ref] = dep_id
            used |= dep_used - set(need.with_)
        refs = set(deps)
        entry, u = self.render(stage.command, point, stage, refs, f"{stage.where}.command")
        used |= u
        overrides = []
        for o in stage.overrides:
            text, u = self.render(o, point, stage, refs, f"{stage.where}.overrides")
            overrides.append(text)
            used |= u
        for aname, value in point.items():
            b = self.bundle(aname, value, stage_name)
            if b is None:
                continue
            used.add(aname)
            for o in b[1]:
                text, u = self.render(o, point, stage, refs, b[0])
                overrides.append(text)
                used |= u
        if stage.when:  # labels the job (e.g. algorithm=NEAR for an ncsn stage); not part of its id
            used |= {k for k in stage.when if k in point}
        # NUL-separated fields (YAML strings cannot hold NUL): unambiguous and cheaper than JSON
        content = "\0".join([stage_name, entry, "\0".join(sorted(overrides)), "\1"] +
                             [f"{r}={d}" for r, d in sorted(deps.items())])
        digest = hashlib.sha256(content.encode()).hexdigest()[:ID_LEN]
        params = {k: point[k] for k in self.order if k in used and k in point}
        params.update({k: v for k, v in point.items() if k not in self.axes and k in used and k not in params})
        if digest in self.jobs:
            # the same job reached from another point: keep only the labels all its points agree on
            # (a shared ncsn job gets no ablation value even if a variable of the ablation shaped it)
            prev = self.jobs[digest]
            if prev.params != params:
                prev.params = {k: v for k, v in prev.params.items() if k in params and params[k] == v}
        else:
            command = entry + "".join(" " + _quote(o) for o in overrides)
            resources = self._resources.get(id(stage))
            if resources is None:  # one dict per stage definition, shared by its jobs (read-only)
                resources = self._resources[id(stage)] = {**self.spec.resources, **stage.resources}
            self.jobs[digest] = JobSpec(
                job_id=digest, stage=stage_name, command=command, params=params, resources=resources,
                deps=deps, sweep=self.spec.name, workdir=str(self.spec.workdir),
                max_attempts=stage.max_attempts or self.spec.max_attempts, uses=0,
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


_QUOTED: dict[str, str] = {}


def _quote(o: str) -> str:
    q = _QUOTED.get(o)
    if q is None:
        if len(_QUOTED) > 100_000:
            _QUOTED.clear()
        q = _QUOTED[o] = _quote_uncached(o)
    return q


def _quote_uncached(o: str) -> str:
    """Shell-quote an override unless it is plainly safe; placeholders stay readable (they are
    substituted textually before the shell sees the command, inside the quotes if any)."""
    bare = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_.]*\}", "", o)
    return o if re.fullmatch(r"[A-Za-z0-9_+=.,:/@%\-]*", bare) else shlex.quote(o)


def expand(spec: Spec) -> Expansion:
    """Expand ``spec`` into distinct jobs (dependencies before dependents) and its grid points."""
    # Expansion allocates hundreds of thousands of small containers and frees none of them: the
    # cyclic GC would rescan the growing heap again and again (most of the time on big grids).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _expand(spec)
    finally:
        if enabled:
            gc.enable()


def _expand(spec: Spec) -> Expansion:
    ex = _Expander(spec)
    points = grid_points(spec)
    jobs_map = ex.jobs
    for p in points:
        ids: set[str] = set()
        for name in ex.stages_at(p):
            jid, _ = ex.job(p, name)
            if jobs_map[jid].deps:
                ex.closure(jid, ids)
            else:
                ids.add(jid)
        for j in ids:
            jobs_map[j].uses += 1
    jobs = [j for j in ex.jobs.values() if j.uses > 0]
    return Expansion(jobs=jobs, points=points, axes=list(ex.order))


def iter_commands(expansion: Expansion) -> Iterator[tuple[str, str]]:
    """(job_id, command template) pairs, e.g. for a dry run."""
    for j in expansion.jobs:
        yield j.job_id, j.command
