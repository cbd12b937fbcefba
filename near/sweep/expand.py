"""Expansion: a :class:`~near.sweep.spec.Spec` -> grid points -> jobs. Pure (no I/O).

A job's id is the first 12 hex digits of sha256 over its resolved content: stage name, command
entry (axis values substituted, dispatch placeholders kept), the *sorted* overrides and the ids of
the jobs it needs. Axis values that do not reach a job's content do not change its id, so an
``ncsn`` stage that ignores the ablation axis is one job shared by every ablation.

Commands are rendered shell-safe: each value is quoted for the place its placeholder stands in
(:mod:`near.sweep.shell`); variables the spec lists under ``raw:`` are spliced as words, checked to be
words only. Before building anything, :func:`grid_size` counts the grid and :func:`expand`
refuses one past its job limit.

A job's ``params`` hold only the axes it uses (its own content or its dependencies'): a shared
``ncsn`` job has no ``ablation`` value.
"""

from __future__ import annotations

import gc
import re
import shlex
from dataclasses import dataclass
from hashlib import sha256
from typing import Any, Iterator

from near.sweep import shell as shell_words
from near.errors import SpecError
from near.jobtable import JobSpec
from near.sweep.spec import ALL_STAGES, DEFAULT_MAX_JOBS, Axis, Spec, Stage, format_value
from near.sweep.template import dummy_paths, dummy_slot

ID_LEN = 12
MAX_RENDERED = 1_000_000  # characters of one rendered command or override
DISPATCH_VARS = ("run_dir", "job_id", "exp_dir")
VALUE_VAR = "__near_v"  # shell variables holding the values used inside ${...} expansions
_VALUE_REF = re.compile(r"\$\{__near_v[0-9]+\}")
_VAR = shell_words.PLACEHOLDER

Point = dict[str, Any]
_ABSENT = object()
_NOTHING: frozenset = frozenset()


@dataclass(slots=True)
class Job(JobSpec):
    """A job as expansion makes it: a :class:`JobSpec` that also carries its trainer call
    (``(kind, override words)`` as the trainer will read them, dispatch paths as dummies; None if
    its command does not run near's trainer) for validation."""

    call: tuple[str, tuple[str, ...]] | None = None


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
    factors = _factors(spec)
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
        # caches that make expansion cost per job a few dict lookups (100k jobs in about a second)
        self.cond_keys = sorted({k for st in spec.stages for c in (st.when, st.unless) if c for k in c})
        self.axis_set = frozenset(self.order)
        self._stages_cache: dict[tuple, dict[str, Stage]] = {}
        self._plans_cache: dict[tuple, list[_Plan]] = {}
        self._plans: dict[int, _Plan] = {}
        self._param_keys: dict[frozenset, tuple[str, ...]] = {}
        self._text_names: dict[str, tuple[str, ...]] = {}
        self._ctx_cache: dict[str, dict[int, str]] = {}
        self._var_names: dict[str, set[str]] = {}
        self._orders: dict[str, tuple[str, ...]] = {}  # job id -> its overrides of repeated keys, in order
        self.var_names = set(spec.vars) | {v for a in spec.axes for vs in a.vars.values() for v in vs}

    def _names_in(self, text: str, seen: frozenset = frozenset()) -> set[str]:
        """Point keys a template's rendering depends on (through variables too)."""
        out: set[str] = set()
        names = {m.group(1) for m in _VAR.finditer(text) if m.group(1) and m.group(2) is None}
        for name in names - {*DISPATCH_VARS, "sweep", "stage"}:
            out.add(name)
            if name in self.var_names and name not in seen:
                out |= self._names_of_var(name, seen)
        return out

    def _names_of_var(self, name: str, seen: frozenset) -> set[str]:
        """Point keys variable ``name`` depends on: the axes whose values set it and the names in
        its values (once per variable: variables that repeat each other stay linear)."""
        hit = self._var_names.get(name)
        if hit is None:
            texts = [self.spec.vars[name]] if name in self.spec.vars else []
            hit = set()
            for a in self.spec.axes:
                providers = [vs[name] for vs in a.vars.values() if name in vs]
                if providers:
                    hit.add(a.name)
                    texts += providers
            for t in texts:
                hit |= self._names_in(format_value(t), seen | {name})
            self._var_names[name] = hit
        return hit

    def bundle(self, aname: str, value: Any, stage_name: str) -> tuple[str, list[str]] | None:
        """(where, override templates) that axis value ``value`` adds to ``stage_name``, if any."""
        axis = self.axes.get(aname)
        b = axis.overrides.get(format_value(value)) if axis is not None else None
        extra = (b.get(ALL_STAGES, []) + b.get(stage_name, [])) if b else []
        return (f"axes.{aname}.overrides.{format_value(value)}", extra) if extra else None

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
              shell: bool = True, stack: tuple[str, ...] = (), memo: dict | None = None,
              assigns: list[str] | None = None) -> str:
        """``text`` with its ``${...}`` substituted at ``point`` (dispatch placeholders kept).

        ``shell``: ``text`` is shell code (a command or a raw variable's value): every value goes in
        as one shell word quoted for where it stands, a raw variable's value as its words (checked to
        be words only). Otherwise ``text`` is one word's text (an override, a variable's value):
        values go in as they are. Either way a ``${`` inside a value is escaped as ``$${``, so it
        reaches the command literally."""
        memo = {} if memo is None else memo
        ctxs = self._contexts(text) if shell else None
        top = assigns is None
        assigns = [] if top else assigns

        def sub(m: re.Match) -> str:
            if m.group(0) == "$${":
                return "$${"
            name, attr = m.group(1), m.group(2)
            if attr is not None:
                if name in refs and attr in ("run_dir", "job_id"):
                    return self._dispatch_placeholder(m.group(0), ctxs, m.start(), point, where)
                if name in refs:
                    raise self.err(where, point, f"${{{name}.{attr}}}: references offer run_dir and job_id")
                raise self.err(where, point, f"${{{name}.{attr}}}: {name!r} is not in this stage's needs "
                               f"({', '.join(sorted(refs)) or 'none'})")
            if name in DISPATCH_VARS:
                return self._dispatch_placeholder(m.group(0), ctxs, m.start(), point, where)
            raw = shell and name in self.spec.raw
            if name == "sweep":
                word = self.spec.name
            elif name == "stage":
                word = stage.name
            elif name in point:
                used.add(name)
                word = format_value(point[name]).replace("${", "$${")
            else:
                var = self.lookup_var(point, name)
                if var is None:
                    if name in self.axes:
                        raise self.err(where, point, f"${{{name}}}: axis {name!r} has no value at this point "
                                       "(its 'when' does not match)")
                    raise self.err(where, point, f"unknown variable ${{{name}}} (axes: {', '.join(self.order)}; "
                                   f"dispatch: {', '.join(DISPATCH_VARS)})")
                if var[1]:
                    used.add(var[1])
                if name in stack:
                    raise self.err(where, point, "variables refer to each other in a cycle: "
                                   + " -> ".join(f"${{{n}}}" for n in (*stack, name)))
                word = memo.get((name, raw))
                if word is None:
                    word = memo[(name, raw)] = self.subst(format_value(var[0]), point, stage, refs, used,
                                                          where, raw, (*stack, name), memo, assigns)
                    if len(word) > MAX_RENDERED:
                        raise self.err(where, point, f"${{{name}}} renders to {len(word):,} characters "
                                       f"(more than {MAX_RENDERED:,}: variables that repeat each other?)")
            if not shell:
                return word
            ctx = ctxs[m.start()]
            self._check_context(ctx, f"${{{name}}}", point, where)
            if ctx in (shell_words.PARAM, shell_words.PARAM_DQ):
                if raw:
                    raise self.err(where, point, f"${{{name}}} is raw shell text (raw: in the spec) but stands "
                                   "inside a parameter expansion (${X:-...}); drop it from raw:")
                assigns.append(word)
                return shell_words.variable_ref(f"{VALUE_VAR}{len(assigns)}", ctx)
            if not raw:
                return shell_words.quote(word, ctx)
            if ctx != shell_words.UNQUOTED:
                raise self.err(where, point, f"${{{name}}} is raw shell text (raw: in the spec) but stands "
                               "inside quotes; use it unquoted, or drop it from raw: to pass it as one word")
            problem = shell_words.not_words(word)
            if not problem and stage.validate and stage.call is not None:
                # validation splits a raw value as written: bash must not change its words
                found = shell_words.expansions(word)
                problem = found and f"a {found[0][1]} ({word[found[0][0]:found[0][0] + 12]!r}...), which " \
                    "bash applies before near train reads it (quote it to pass it as written)"
            if problem:
                raise self.err(where, point, f"${{{name}}} = {word!r} is raw shell text (raw: in the spec) "
                               f"but holds {problem}; a raw variable holds shell words only")
            return word

        out = _VAR.sub(sub, text)
        if top and assigns:
            # values inside bash's own ${...} expansions are read from variables set first
            out = "".join(f"{VALUE_VAR}{i}={shell_words.quote(w)}; " for i, w in enumerate(assigns, 1)) + out
        return out

    def _check_context(self, ctx: str, shown: str, point: Point, where: str) -> None:
        """SpecError if a placeholder may not stand where it stands (see :mod:`near.sweep.shell`)."""
        if ctx == shell_words.ESCAPED:
            raise self.err(where, point, f"{shown} right after a backslash: the backslash would "
                           "escape the quoting of its value (drop the backslash)")
        what = shell_words.refused(ctx)
        if what:
            raise self.err(where, point, f"{shown} stands in {what}: bash would evaluate its value "
                           "as code there; pass it through a plain argument or variable instead")

    def _dispatch_placeholder(self, text: str, ctxs: dict[int, str] | None, at: int, point: Point,
                              where: str) -> str:
        """A placeholder dispatch resolves (``${run_dir}``, ``${ncsn.run_dir}``), kept as it is
        once its place is checked: dispatch quotes the path for that place."""
        if ctxs is not None:
            self._check_context(ctxs[at], text, point, where)
        return text

    def _contexts(self, text: str) -> dict[int, str]:
        """Quoting context of each placeholder in the shell text ``text`` (cached per text)."""
        hit = self._ctx_cache.get(text)
        if hit is None:
            hit = self._ctx_cache[text] = shell_words.contexts(text, {m.start() for m in _VAR.finditer(text)})
        return hit

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

    # ------------------------------------------------------------------ fast path (per job)
    def plan(self, stage: Stage) -> "_Plan":
        """What every job of ``stage`` needs, computed once per stage definition."""
        p = self._plans.get(id(stage))
        if p is None:
            p = self._plans[id(stage)] = _Plan(self, stage)
        return p

    def plans_at(self, point: Point) -> tuple[list["_Plan"], dict[str, "_Plan"]]:
        """The plans of the stages that run at ``point``, as a list and by name (cached on the
        condition keys)."""
        key = tuple([point.get(k, _ABSENT) for k in self.cond_keys])
        hit = self._plans_cache.get(key)
        if hit is None:
            plans = [self.plan(s) for s in self.stages_at(point).values()]
            hit = self._plans_cache[key] = (plans, {pl.name: pl for pl in plans})
        return hit

    def job(self, point: Point, stage_name: str) -> tuple[str, frozenset]:
        """Job id and used axes of ``stage_name`` at ``point`` (memoised)."""
        stage = self.stages_at(point).get(stage_name)
        if stage is None:
            raise self.err("stages", point, f"no definition of stage {stage_name!r} matches this point "
                           "(check the stage's 'when' and the 'needs' that refer to it)")
        return self.job_of(self.plan(stage), point)

    def job_of(self, plan: "_Plan", point: Point, here: dict[str, "_Plan"] | None = None,
               done: dict[str, tuple[str, frozenset]] | None = None) -> tuple[str, frozenset]:
        """Job id and used axes of the stage of ``plan`` at ``point`` (memoised on ``plan.rel``).
        ``here``: the plans at ``point`` by stage name; ``done``: the jobs of this point's stages
        found so far (a need at the same point is looked up there first)."""
        # only the point values this stage definition can depend on identify its job; a stage no
        # other stage needs is reached once per point, so it is worth memoising only if shared
        key = (plan.sid, tuple([point.get(k, _ABSENT) for k in plan.rel])) if plan.memo else None
        if key is not None:
            hit = self.memo.get(key)
            if hit is not None:
                return hit
        useds = [plan.when_keys]
        deps: dict[str, str] = {}
        for ref, dep_stage, with_, with_keys in plan.needs:
            if with_:
                target = dict(point)
                target.update(with_)
                dep_id, dep_used = self.job(target, dep_stage)
            elif done is not None and dep_stage in done:
                dep_id, dep_used = done[dep_stage]
            elif here is not None and dep_stage in here:
                dep_id, dep_used = self.job_of(here[dep_stage], point, here, done)
            else:
                dep_id, dep_used = self.job(point, dep_stage)
            deps[ref] = dep_id
            useds.append(dep_used - with_keys if with_keys else dep_used)
        entry, u, _, call = plan.render(0, point)
        useds.append(u)
        overrides = []
        quoted = [entry]
        seen = []  # the overrides as the trainer reads them
        for i in plan.override_idx:
            text, u, q, d = plan.render(i, point)
            overrides.append(text)
            quoted.append(q)
            seen.append(d)
            useds.append(u)
        if plan.bundle_axes:
            bundles = plan.bundles
            for aname, value in point.items():
                if aname in plan.bundle_axes:
                    b = bundles.get((aname, value), _ABSENT)
                    if b is _ABSENT:
                        b = bundles[(aname, value)] = plan.bundle_templates(aname, value)
                    if b is None:
                        continue
                    useds.append(b[0])
                    for t in b[1]:
                        text, u, q, d = plan.render_bundle(t, point)
                        overrides.append(text)
                        quoted.append(q)
                        seen.append(d)
                        useds.append(u)
        used = _NOTHING.union(*useds)
        # NUL-separated fields: unambiguous, as the spec loader and --var refuse any NUL, every
        # override holds '=' or starts with '~' or '-' (so none equals the "\1" marker) and refs
        # are identifiers; ids of existing tables stay as they were
        parts = [plan.name, entry, "\0".join(sorted(overrides)), "\1"]
        if deps:
            for r, d in sorted(deps.items()):
                parts.append(r + "=" + d)
        digest = sha256("\0".join(parts).encode()).hexdigest()[:ID_LEN]
        keys = self._param_keys.get(used)
        if keys is None:
            if used <= self.axis_set:  # axes only: the keys do not depend on the point's order
                keys = self._param_keys[used] = tuple([k for k in self.order if k in used])
                params = {k: point[k] for k in keys}
            else:
                params = {k: point[k] for k in self.order if k in used and k in point}
                params.update({k: v for k, v in point.items() if k not in self.axes and k in used})
        else:
            params = {k: point[k] for k in keys}
        prev = self.jobs.get(digest)
        if len(overrides) > 1:
            if prev is None:
                order = _override_order(overrides)
                if order:  # most jobs set each key once: nothing to compare later
                    self._orders[digest] = order
            else:
                self._check_order(digest, overrides, prev, point, plan.stage.where)
        if prev is not None:
            # the same job reached from another point: keep only the labels all its points agree on
            # (a shared ncsn job gets no ablation value even if a variable of the ablation shaped it)
            if prev.params != params:
                prev.params = {k: v for k, v in prev.params.items() if k in params and params[k] == v}
        else:
            if call is not None and plan.call_to_end:
                call = (call[0], call[1] + tuple(seen))
            self.jobs[digest] = Job(digest, plan.name, "".join(quoted), params, plan.resources, deps,
                                    plan.sweep, plan.max_attempts, plan.workdir, None, 0, call)
        result = (digest, used)
        if key is not None:
            self.memo[key] = result
        return result

    def _check_order(self, digest: str, overrides: list[str], prev: JobSpec, point: Point, where: str) -> None:
        """SpecError if this point's overrides set a key in another order than those of the job it
        shares an id with: the id hashes the overrides sorted (the order of different keys changes
        nothing), but of one key the last wins, so one job would stand for two runs."""
        mine, theirs = _override_order(overrides), self._orders.get(digest, ())
        if mine != theirs:
            raise self.err(where, point, f"overrides set a key more than once, the last one winning "
                           f"({' '.join(mine)}), in another order than at grid point "
                           f"{point_label(prev.params) or '(a shared job)'} ({' '.join(theirs)}): both would be "
                           "one job running the first's value; set each key once per job")

    def closure(self, job_id: str, acc: set[str]) -> None:
        stack = [job_id]
        while stack:
            j = stack.pop()
            if j in acc:
                continue
            acc.add(j)
            stack.extend(self.jobs[j].deps.values())


def _override_order(overrides: list[str]) -> tuple[str, ...]:
    """The overrides that set a key another one sets too (the last one wins), grouped by key in
    their order: what a job id, which hashes the overrides sorted, does not tell apart."""
    keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    if len(set(keys)) == len(keys):
        return ()
    by_key: dict[str, list[str]] = {}
    for k, o in zip(keys, overrides):
        by_key.setdefault(k, []).append(o)
    return tuple(o for k in sorted(by_key) if len(by_key[k]) > 1 for o in by_key[k])


class _Plan:
    """Per stage definition: its identity key (``rel``), needs, templates with their render caches,
    the axes whose values add overrides to it, and the constant fields of its jobs."""

    def __init__(self, ex: _Expander, stage: Stage):
        spec = ex.spec
        self.ex, self.stage, self.sid, self.name = ex, stage, id(stage), stage.name
        self.rel = tuple(sorted(ex.relevant(stage)))
        self.needs = [(n.ref, n.stage, n.with_, frozenset(n.with_)) for n in stage.needs]
        self.refs = {n.ref for n in stage.needs}
        # a stage runs only where its 'when' matches, so every 'when' key is in the point: it
        # labels the job (e.g. algorithm=NEAR for an ncsn stage) without being part of its id
        self.when_keys = frozenset(stage.when or ())
        self._tpls: dict[tuple[str, str], tuple] = {}
        self.templates = [self._template(stage.command, f"{stage.where}.command", shell=True)]
        self.templates += [self._template(o, f"{stage.where}.overrides") for o in stage.overrides]
        self.override_idx = range(1, len(self.templates))
        self.bundle_axes = frozenset(
            a.name for a in spec.axes for b in a.overrides.values() if b.get(ALL_STAGES) or b.get(stage.name)
        )
        self.bundles: dict[tuple, tuple[frozenset, list[tuple]] | None] = {}
        self.call_to_end = stage.call is not None and stage.call.to_end
        # one resources dict per stage definition, shared by its jobs (read-only)
        self.resources = {**spec.resources, **stage.resources}
        self.sweep, self.workdir = spec.name, str(spec.workdir)
        self.max_attempts = stage.max_attempts or spec.max_attempts
        # memoise its jobs if another stage needs it (found again through the need), or if its jobs
        # can be shared by several points (it ignores an axis that varies)
        needed = any(n.stage == stage.name for s in spec.stages for n in s.needs)
        self.memo = needed or not set(ex.order) <= set(self.rel)

    def _template(self, text: str, where: str, shell: bool = False) -> tuple:
        """``shell``: a command (shell code); else an override (one word)."""
        key = (text, where, shell)
        t = self._tpls.get(key)
        if t is None:
            names = self.ex._text_names.get(text)
            if names is None:
                names = self.ex._text_names[text] = tuple(sorted(self.ex._names_in(text)))
            t = self._tpls[key] = (text, names, {}, where, shell)
        return t

    def render(self, i: int, point: Point) -> tuple[str, frozenset, str, str]:
        """Template ``i`` (0: the command, then the stage's overrides) at ``point``."""
        return self.render_bundle(self.templates[i], point)

    def render_bundle(self, tpl: tuple, point: Point) -> tuple[str, frozenset, str, Any]:
        """(text, used axes, `` <shell-quoted text>``, what the trainer reads), memoised on the
        values the template depends on. What the trainer reads: for an override its text, for
        the command its trainer call (see :meth:`call_at`)."""
        text, names, cache, where, shell = tpl
        if not names:
            key = None
        elif len(names) == 1:
            key = point.get(names[0], _ABSENT)
        else:
            key = tuple([point.get(n, _ABSENT) for n in names])
        hit = cache.get(key)
        if hit is None:
            used: set[str] = set()
            memo: dict = {}
            out = self.ex.subst(text, point, self.stage, self.refs, used, where, shell, memo=memo)
            self._check_placeholders(out, point, where)
            hit = cache[key] = (out, frozenset(used), " " + shell_words.quote(out),
                                self.call_at(point, memo) if shell else dummy_paths(out))
        return hit

    def call_at(self, point: Point, memo: dict) -> tuple[str, tuple[str, ...]] | None:
        """The trainer call of the command at ``point``: its kind and override words, each word's
        placeholders filled with their values as they are (a raw variable's value as its words).
        ``memo``: the variables as the command's rendering at ``point`` rendered them."""
        call = self.stage.call
        if call is None:
            return None
        words: list[str] = []
        for w in call.overrides:
            words += self._words(w, point, memo)
        return "".join(self._words(call.kind, point, memo)), tuple(words)

    def _var(self, name: str, point: Point, memo: dict, raw: bool) -> str:
        """Variable or axis ``name`` rendered at ``point`` (as a raw variable's words: ``raw``)."""
        hit = memo.get((name, raw))
        if hit is None:
            hit = self.ex.subst("${%s}" % name, point, self.stage, self.refs, set(), "", raw, memo=memo)
        return hit

    def _words(self, word: tuple, point: Point, memo: dict) -> list[str]:
        """The words one template word becomes at ``point`` (several if a raw variable splices in,
        none if only an empty raw variable stands there)."""
        out = [""]
        kept = [not word]  # an empty quoted word ('') is a word
        for part in word:
            if isinstance(part, str):
                out[-1] += part
            elif part.attr is not None or part.name in DISPATCH_VARS:
                out[-1] += dummy_slot(part)
            elif part.name in self.ex.spec.raw:
                pieces = [dummy_paths(p) for p in shlex.split(self._var(part.name, point, memo, True))]
                if not pieces:
                    continue
                out[-1] += pieces[0]
                out += pieces[1:]
                kept[-1:] = [True] * len(pieces)
                continue
            else:
                out[-1] += dummy_paths(self._var(part.name, point, memo, False))
            kept[-1] = True
        return [w for w, k in zip(out, kept) if k]

    def _check_placeholders(self, out: str, point: Point, where: str) -> None:
        """Every ``${...}`` left in a rendering must be one dispatch resolves: a value ending in ``$``
        next to a ``{`` in the template would otherwise form a new placeholder."""
        for m in _VAR.finditer(out):
            name, attr = m.group(1), m.group(2)
            if name is None or (attr is None and name in DISPATCH_VARS) or (name in self.refs and attr) \
                    or _VALUE_REF.fullmatch(m.group(0)):
                continue
            raise self.ex.err(where, point, f"a value ending in '$' runs into '{{' and forms {m.group(0)}; "
                              "quote the value or put a character between them")

    def bundle_templates(self, aname: str, value: Any) -> tuple[frozenset, list[tuple]] | None:
        """({aname}, override templates) that axis value ``value`` adds to this stage, if any."""
        b = self.ex.bundle(aname, value, self.name)
        if b is None:
            return None
        where, texts = b
        return frozenset([aname]), [self._template(t, where) for t in texts]


def _factors(spec: Spec) -> list[tuple[dict | None, list[Point]]]:
    """The factors of the product: (condition, rows) per axis, one per zip group."""
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
    return factors


_STATE_LIMIT = 100_000  # distinct condition states the count follows before it falls back to a bound


def grid_size(spec: Spec) -> tuple[int, int]:
    """(grid points, jobs) of ``spec`` at most, counted without building the grid: the product of
    the axes honouring the axes' ``when`` (``exclude`` ignored), plus ``include``; jobs are the
    stages that run at each point, plus the jobs their ``needs ... with`` ask for (shared jobs
    counted once per point, so the true number may be smaller)."""
    stages_by_name: dict[str, list[Stage]] = {}
    for s in spec.stages:
        stages_by_name.setdefault(s.name, []).append(s)
    weights: dict[int, int] = {}

    def weight(stage: Stage, seen: frozenset = frozenset()) -> int:
        """The jobs one run of ``stage`` can add: itself and, through ``with``, other points' jobs."""
        w = weights.get(id(stage))
        if w is None:
            w = 1 + sum(max((weight(d, seen | {id(stage)}) for d in stages_by_name.get(n.stage, ())
                             if id(d) not in seen), default=1) for n in stage.needs if n.with_)
            weights[id(stage)] = w
        return w

    def jobs_at(point: Point) -> int:
        return sum(weight(s) for s in spec.stages
                   if _matches(point, s.when) and not (s.unless and _matches(point, s.unless)))

    keys = {k for a in spec.axes if a.when for k in a.when}
    keys |= {k for s in spec.stages for c in (s.when, s.unless) if c for k in c}
    states: dict[tuple, int] = {(): 1}  # the values of ``keys`` fixed so far -> points with them
    bound = 1
    for when, rows in _factors(spec):
        bound *= len(rows)
        if states is None:
            continue
        varies = any(k in keys for k in rows[0])  # zip rows all have the same keys
        if varies and len(states) * len(rows) > 10 * _STATE_LIMIT:
            states = None
            continue
        new: dict[tuple, int] = {}
        for state, n in states.items():
            if not _matches(dict(state), when):
                new[state] = new.get(state, 0) + n
            elif not varies:
                new[state] = new.get(state, 0) + n * len(rows)
            else:
                for row in rows:
                    kept = tuple(sorted([*state, *((k, v) for k, v in row.items() if k in keys)],
                                        key=lambda kv: kv[0]))
                    new[kept] = new.get(kept, 0) + n
        states = new if len(new) <= _STATE_LIMIT else None
    if states is None:  # too many distinct states: every point could run every stage
        points = bound
        jobs = bound * sum(max(weight(s) for s in group) for group in stages_by_name.values())
    else:
        points = sum(states.values())
        jobs = sum(n * jobs_at(dict(state)) for state, n in states.items())
    for inc in spec.include:
        combos = 1
        for vs in inc.values():
            combos *= len(vs)
        points += combos
        if combos > _STATE_LIMIT:
            jobs += combos * sum(max(weight(s) for s in group) for group in stages_by_name.values())
            continue
        rows: list[Point] = [{}]
        for k, vs in inc.items():
            rows = [dict(r, **{k: v}) for r in rows for v in vs]
        jobs += sum(jobs_at(r) for r in rows)
    return points, jobs


def check_size(spec: Spec, max_jobs: int = DEFAULT_MAX_JOBS) -> None:
    """SpecError if ``spec`` may expand to more than ``max_jobs`` jobs (before building anything)."""
    points, jobs = grid_size(spec)
    if jobs > max_jobs:
        sizes = " x ".join(f"{a.name} ({len(a.values):,})" for a in spec.axes)
        raise SpecError(f"{spec.label}: axes: {sizes} make {points:,} grid points and up to {jobs:,} jobs, "
                        f"more than the limit of {max_jobs:,} jobs (shrink the grid, or raise the limit "
                        "with --max-jobs)")


def expand(spec: Spec, points: list[Point] | None = None, *, max_jobs: int = DEFAULT_MAX_JOBS) -> Expansion:
    """Expand ``spec`` into distinct jobs (dependencies before dependents) and its grid points.
    SpecError if it may give more than ``max_jobs`` jobs (checked first) or gives none.
    ``points``: expand these points instead of the grid (a point may carry keys that are no axis,
    e.g. a search trial's parameters: they are substituted as ``${key}`` and label the jobs)."""
    if points is None:
        check_size(spec, max_jobs)
    # Expansion allocates hundreds of thousands of small containers and frees none of them: the
    # cyclic GC would rescan the growing heap again and again (most of the time on big grids).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _expand(spec, points)
    finally:
        if enabled:
            gc.enable()


def _expand(spec: Spec, points: list[Point] | None) -> Expansion:
    ex = _Expander(spec)
    points = grid_points(spec) if points is None else points
    jobs_map = ex.jobs
    job_of = ex.job_of
    plans_at = ex.plans_at
    closure = ex.closure
    for p in points:
        plans, here = plans_at(p)
        if len(plans) == 1:  # one stage here: its job and its dependencies, each used once more
            job = jobs_map[job_of(plans[0], p, here)[0]]
            if not job.deps:
                job.uses += 1
                continue
        done: dict[str, tuple[str, frozenset]] = {}
        ids: set[str] = set()
        for plan in plans:
            r = done[plan.name] = job_of(plan, p, here, done)
            jid = r[0]
            deps = jobs_map[jid].deps
            ids.add(jid)
            for d in deps.values():  # usually a stage of this point, done just before
                if d not in ids:
                    closure(d, ids)
        for j in ids:
            jobs_map[j].uses += 1
    jobs = [j for j in ex.jobs.values() if j.uses > 0]
    if not jobs:
        if not points:
            raise SpecError(f"{spec.label}: exclude: removes every grid point, so the spec gives 0 jobs")
        raise SpecError(f"{spec.label}: stages: none runs at any of the {len(points):,} grid points "
                        "(check their when/unless), so the spec gives 0 jobs")
    return Expansion(jobs=jobs, points=points, axes=list(ex.order))


def iter_commands(expansion: Expansion) -> Iterator[tuple[str, str]]:
    """(job_id, command template) pairs, e.g. for a dry run."""
    for j in expansion.jobs:
        yield j.job_id, j.command
