"""Sweep specs: YAML files in ``sweeps/`` loaded into a validated :class:`Spec`.

Every error names the file and the key path, e.g.
``sweeps/demo.yaml: axes.motion.overrides.circle: unknown stage 'rll' (stages: ncsn, rl)``.

Format (all keys but ``axes`` and ``stages`` optional)::

    name: demo                 # sweep name -> experiments/<name>/ (default: file stem)
    workdir: ..                # where commands run, relative to this file (default: ..)
    max_attempts: 3            # dispatches per job before it is failed
    snapshot: true             # jobs run a frozen copy of workdir's code taken at dispatch
                               #   (experiments/<name>/snapshots/); false: run the live tree
    resources: {cpus: 1, gpus: 0, mem: 2G, time: "00:30:00"}   # defaults for every stage
                               #   also checkpoint: a path/glob in the run dir whose changes are
                               #   progress (near train: nn/checkpoint.pth), max_requeues: 20
    vars: {budget: 100}        # template variables (defaults; axis values' bundles may set them)
    raw: [bundle]              # variables spliced as shell words, not quoted (see "Commands and quoting")
    axes:                      # the cartesian product of all axes, in this order
      algorithm: [NEAR, AMP]                 # short form: a list of values
      seed: {count: 3, base: 42}             # seeds: an explicit list or count + base
      motion:
        values: [circle, figure8]
        overrides:                           # per-value overrides (NEAR's task_specific_cfg)
          circle: [max_iterations=20]        # a list: every stage
          figure8: {rl: [max_iterations=40], ncsn: "++a.b=1 ++c=2"}   # per stage
      ablation:
        when: {algorithm: NEAR}              # conditional: only at points matching (earlier axes)
        values:                              # named variants: value -> bundle of overrides
          default: [++x.sigma_level=-1]
          no_anneal: {"*": [++x.sigma_level=5], ncsn: []}
          v1: {vars: {model: ncsnv1}, rl: [...]}  # a bundle may also set template variables
    x-rl: &rl near train rl ...   # x-* keys are ignored: a place for YAML anchors
    search: {sampler: tpe, trials: 40, metric: ..., space: {lr: {loguniform: [1e-5, 1e-3]}}}
                               # search instead of enumerate: one study per grid point of the axes,
                               #   trials as jobs (format in near/sweep/search_block.py)
    zip: [[task, budget]]      # axes that vary together (same length), one factor of the product
    exclude: [{algorithm: Track, motion: figure8}]   # drop matching points (values or lists)
    include: [{algorithm: NEAR, motion: stepturn, seed: [1, 2]}]   # extra points (lists: product)
    stages:                    # a list (or a name -> definition mapping)
      - name: ncsn
        when: {algorithm: NEAR}              # which grid points run this stage
        unless: {motion: walk_and_wave}      # ... and which not
        command: near train ncsn task=motion${algorithm} seed=${seed} run_dir=${run_dir}
        overrides: [++train.params.config.near_config.training.n_iters=200]
        resources: {cpus: 1, time: "00:10:00"}
      - name: rl
        when: {algorithm: NEAR}
        needs: {ncsn: ncsn}                  # ref -> stage of the same point, or
        # needs: {walk: {stage: ncsn, with: {motion: walk}}}   # ... of another point; `with` may
        #   also pass new keys (e.g. {part: lower_body}) that the needed stage uses as ${part}
        command: near train rl ... eb_model_checkpoint=${ncsn.run_dir}/nn/checkpoint.pth

Template variables: ``${<axis>}``, ``${<var>}`` (from ``vars`` and value bundles; may contain
``${...}`` themselves), ``${sweep}``, ``${stage}`` (substituted at expansion) and
``${run_dir}``, ``${job_id}``, ``${exp_dir}``, ``${<ref>.run_dir}`` (resolved at dispatch).
``$${`` is a literal ``${`` (e.g. a hydra interpolation: ``'x=$${y}'``). A ``--var`` value is
literal text (a ``${`` in it is not a placeholder).

Commands and quoting. A ``command`` is shell code that bash runs; the values substituted into it
are data. Every axis value, variable and ``--var`` value reaches the command as exactly what it
holds, as (part of) one argument, wherever its placeholder stands: bare (``tag=${tag}`` with
``a; rm -rf ~`` runs ``tag='a; rm -rf ~'``), inside ``'...'``, ``"..."``, ``$'...'``, ``$(...)``
or backticks. Values made only of letters, digits and ``_+=.,:/@%-`` need no quotes and are left
as they are, so ordinary commands read (and hash into job ids) exactly as written. Each entry of
``overrides`` is one argument too. Shell code in the command itself is the spec's own: ``&&``,
``>``, ``$(date)`` in a ``command`` run as written; to pass a literal ``$(`` or backtick to a
program, single-quote it in the command (``echo '$(not run)'``); in a value it is always literal.
Inside bash's own parameter expansions (``"${X:-${v}}"``, ``${X/a/${v}}``) a value is read from a
shell variable (``__near_v1``) assigned at the top of the command, so it is exactly its bytes
there too. Where bash evaluates text as arithmetic (``$(( ))``, ``(( ))``, ``$[ ]``, ``let``,
``[[ ]]`` with ``-eq``/``-lt``/..., array subscripts, ``${X:offset}``, ``declare -i``/``-n``/``-a``,
assignments in a command that declares integer variables) a placeholder is refused, as it is
right after a backslash, as the name of a parameter expansion, or inside quotes within one. The
guarantee ends at the arguments: what the command itself does with a value (``eval``,
``bash -c``, ``${!name}``, a variable declared integer elsewhere) is the command's own. The
dispatch placeholders (``${run_dir}``, ``${exp_dir}``, ``${<ref>.run_dir}``) follow the same rules:
their paths are quoted for their place at dispatch (:mod:`near.sweep.dispatch`), so an
experiment root may hold blanks, quotes or ``$(...)`` (but hydra's override grammar cannot read
quotes, commas, brackets or non-ASCII letters in ``run_dir=...``: ``near sweep add`` refuses such a
folder for a stage that runs near's trainer).

``raw: [NAME, ...]`` opts variables (or axes) out of quoting: their value is spliced as shell
words, for bundles of several overrides such as ``base: task=Humanoid${algorithm} seed=${seed}``
or ``ncsnv2: "${model}.L=50 ${model}.ema=True"`` (values substituted inside a raw value are still
quoted). A raw value must be words only: quotes are fine (``'++x=[a, b]'``), an operator (``;``
``&`` ``|`` ``<`` ``>`` ``(`` ``)``, a newline), a command substitution, a ``#`` comment or an
unclosed quote is refused, naming the file, the key, the grid point and the variable; so is a raw
variable placed inside quotes, and a placeholder right after a backslash. A ``--var`` that forces
a raw variable is checked the same way.

Validation reads a trainer call's arguments as written, so in a stage that runs ``near train``
(and validates) a word that bash itself changes is refused, naming the word: a brace expansion
(NEAR's unquoted ``k={a.yaml:x,b.yaml:y}`` would reach the trainer as two overrides), a ``$``
expansion (``$HOME``, ``$${x}``, which bash reads as ``${x}``, not a hydra interpolation),
``$(...)``, backticks, ``$'...'``. Quote such a word to pass it as written (``'k=$${x}'``), or
set ``validate: false``. A raw value spliced into such a stage is checked the same way.

A multi-line command keeps its lines (a ``#`` comment ends at its line); runs of blanks between
words become one space, quoted text is kept byte for byte.

Limits and strictness: a spec is UTF-8 YAML without duplicate keys, read with YAML 1.2's core
schema: only ``true``/``false`` are booleans (``NO``, ``yes``, ``on`` stay text), ``10:00`` and
``2024-01-01`` are text, ``0o17`` is octal and ``017`` decimal; aliases may expand the document to
at most 100,000 nodes (a recursive alias is refused); no text (value, key, command, ``--var``)
may hold a NUL byte or an unpaired surrogate, which no command can carry; ``workdir`` must be a
directory; values are plain scalars; every value a ``when``,
``unless`` or ``exclude`` names must be one its axis (or an ``include``, or a ``needs.with``) has;
a spec must give at least one job; ``resources.slurm`` values are one line, and its options are
none near writes itself (``array``, ``output``, ``signal``, ``dependency``, ...; ``time``, ``mem``,
``cpus-per-task``, ``gpus-per-node`` come from ``resources``), nor a prefix of one, which sbatch
would take for it. The grid is counted
before it is built: more than 1,000,000 jobs (``near sweep add --max-jobs N`` to change) is refused
with the count.
"""

from __future__ import annotations

import os
import re
import reprlib
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from near.errors import SpecError
from near.sweep.shell import normalize_command, unbalanced
from near.sweep.template import Call, parse_call

RESOURCE_KEYS = ("cpus", "gpus", "mem", "time", "slurm", "checkpoint", "max_requeues")
# names and sizes are matched whole (re.fullmatch): `$` would let a trailing newline through
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SWEEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_TIME = re.compile(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)|\d+")
# what sbatch --mem accepts: a whole number of megabytes, or of K/M/G/T(B) (no fraction, no blank)
_MEM = re.compile(r"\d+(?:[KMGT]B?)?", re.IGNORECASE)
# the most jobs one spec may expand to unless the caller raises it (`near sweep add --max-jobs`)
DEFAULT_MAX_JOBS = 1_000_000
_SCALARS = (str, int, float, bool, type(None))
ALL_STAGES = "*"
_RESERVED = {"run_dir", "job_id", "exp_dir", "sweep", "stage"}

# Overrides per stage: {"*": [...], "rl": [...]}
StageOverrides = dict[str, list[str]]


@dataclass
class Axis:
    """One axis: its values, per-value overrides and an optional condition on earlier axes."""

    name: str
    values: list[Any]
    overrides: dict[str, StageOverrides] = field(default_factory=dict)  # str(value) -> overrides
    when: dict[str, list[Any]] | None = None
    vars: dict[str, dict[str, Any]] = field(default_factory=dict)  # str(value) -> template variables


@dataclass
class Need:
    """A reference from a stage to an earlier stage's job (at this point, or with some axes replaced)."""

    ref: str
    stage: str
    with_: dict[str, Any] = field(default_factory=dict)


@dataclass
class Stage:
    """One stage definition (several definitions may share a name under different ``when``)."""

    name: str
    command: str
    overrides: list[str] = field(default_factory=list)
    needs: list[Need] = field(default_factory=list)
    resources: dict[str, Any] = field(default_factory=dict)
    when: dict[str, list[Any]] | None = None
    unless: dict[str, list[Any]] | None = None
    max_attempts: int | None = None
    validate: bool = True
    where: str = ""  # key path in the spec, for error messages
    call: Call | None = None  # the command's call of near's trainer, parsed once


@dataclass
class Spec:
    """A loaded, validated sweep spec."""

    path: Path
    name: str
    workdir: Path
    axes: list[Axis]
    stages: list[Stage]
    zip: list[list[str]] = field(default_factory=list)
    include: list[dict[str, Any]] = field(default_factory=list)
    exclude: list[dict[str, list[Any]]] = field(default_factory=list)
    max_attempts: int = 3
    resources: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    vars: dict[str, Any] = field(default_factory=dict)
    snapshot: bool = True   # jobs run a code snapshot taken at dispatch (near.snapshot)
    raw: frozenset[str] = frozenset()  # variables (or axes) spliced as shell text, not quoted
    search: Any = None  # near.sweep.search_block.SearchConfig when the spec has a `search:` block

    @property
    def label(self) -> str:
        """The spec file as shown in messages (relative to the working directory when possible)."""
        return display_path(self.path)

    def axis(self, name: str) -> Axis:
        for a in self.axes:
            if a.name == name:
                return a
        raise KeyError(name)


def display_path(path: Path) -> str:
    """``path`` relative to the current directory if it is below it, else absolute."""
    try:
        return os.path.relpath(path) if not os.path.relpath(path).startswith("..") else str(path)
    except ValueError:
        return str(path)


def format_value(value: Any) -> str:
    """How an axis value appears in a command (hydra-friendly: True/False, null)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


class _Ctx:
    """Error helper: knows the file and builds key paths; carries the job limit."""

    def __init__(self, label: str, max_jobs: int = DEFAULT_MAX_JOBS):
        self.label = label
        self.max_jobs = max_jobs

    def err(self, where: str, msg: str) -> SpecError:
        where = "".join(c if c.isprintable() else repr(c)[1:-1] for c in where)  # keys with newlines
        return SpecError(f"{self.label}: {where}: {msg}" if where else f"{self.label}: {msg}")


def load_spec(path: str | os.PathLike, *, max_jobs: int = DEFAULT_MAX_JOBS) -> Spec:
    """Read and validate a sweep spec file; SpecError names the file and the key path.
    ``max_jobs``: refuse a ``count`` axis with more values than this (the grid is counted later,
    in :func:`near.sweep.expand.expand`)."""
    path = Path(path)
    label = display_path(path.resolve()) if path.exists() else str(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise SpecError(f"{label}: cannot read spec: {err.strerror or err}") from err
    return spec_from_bytes(raw, path.resolve(), label=label, max_jobs=max_jobs)


def spec_from_bytes(raw: bytes, path: Path, *, label: str | None = None,
                    max_jobs: int = DEFAULT_MAX_JOBS) -> Spec:
    """Parse and validate the bytes of a spec file that lives (or would live) at ``path``."""
    label = label or display_path(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise SpecError(f"{label}: not UTF-8 text: byte 0x{raw[err.start]:02x} at line {line} "
                        f"(offset {err.start}); save the spec as UTF-8") from None
    data = _yaml_load(text, label)
    ctx = _Ctx(label, max_jobs)
    _check_strings(data, ctx)
    return parse_spec(data, path, ctx)


def text_problem(text: str) -> str | None:
    """What in ``text`` no command can carry (a NUL byte, an unpaired surrogate), or None."""
    if "\0" in text:
        return "holds a NUL byte (\\0), which no command argument can carry"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            return f"holds {text[err.start]!a}, which is not text (an unpaired surrogate)"
    return None


def _check_strings(data: Any, ctx: _Ctx) -> None:
    """SpecError naming the key of the first text (value or key) that :func:`text_problem` refuses."""
    seen: set[int] = set()
    stack: list[tuple[Any, tuple]] = [(data, ())]
    while stack:
        node, where = stack.pop()
        if isinstance(node, str):
            problem = text_problem(node)
            if problem:
                raise ctx.err(_key_path(where), problem)
        elif isinstance(node, (dict, list)) and id(node) not in seen:
            seen.add(id(node))  # an aliased subtree is checked once
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for k, v in items:
                if isinstance(k, str) and text_problem(k):
                    raise ctx.err(_key_path(where), f"a key {text_problem(k)}")
                stack.append((v, (*where, k)))


def _key_path(where: tuple) -> str:
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in where).lstrip(".")


_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = 80
# a spec whose aliases expand to more YAML nodes than this is refused before it is built
MAX_YAML_NODES = 100_000


def _show(value: Any) -> str:
    """``repr(value)`` cut short: a value in a message may be a huge (aliased) structure."""
    return _SHOW.repr(value)


def _yaml_load(text: str, label: str) -> Any:
    import yaml

    try:
        return yaml.load(text, Loader=_strict_loader())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        pos = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError(f"{label}: malformed YAML: {pos}{problem}") from None
    except RecursionError:
        raise SpecError(f"{label}: malformed YAML: nested too deeply") from None


_LOADER = None


def _strict_loader():
    """yaml.SafeLoader that refuses a mapping with the same key twice (plain YAML keeps the last)."""
    global _LOADER
    if _LOADER is not None:
        return _LOADER
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def compose_document(self):
            node = super().compose_document()
            _check_expanded_size(node, yaml)
            return node

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen: dict = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be overridden
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.setdefault(key, key_node)
                    except TypeError:
                        continue  # unhashable: SafeLoader reports it
                    if first is not key_node:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {_show(key)} (first at line {first.start_mark.line + 1})",
                            key_node.start_mark)
            return super().construct_mapping(node, deep=deep)

    # YAML 1.2 core schema: only true/false are booleans, so `NO` (Norway) and `on` stay text;
    # no sexagesimal (`10:00` is text, not 600) and no dates
    StrictLoader.yaml_implicit_resolvers = {}
    for tag, pattern, first in (
            ("bool", r"(?:true|True|TRUE|false|False|FALSE)", "tTfF"),
            ("null", r"(?:~|null|Null|NULL|)", ["~", "n", "N", ""]),
            ("int", r"(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)", "-+0123456789"),
            ("float", r"(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)"
                      r"|\.(?:nan|NaN|NAN))", "-+.0123456789"),
            ("merge", r"<<", "<")):
        StrictLoader.add_implicit_resolver(f"tag:yaml.org,2002:{tag}", re.compile(f"^{pattern}$"), list(first))

    def construct_int(loader, node):
        text = loader.construct_scalar(node)
        if text.startswith(("0o", "0x")):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text, 10)

    StrictLoader.add_constructor("tag:yaml.org,2002:int", construct_int)
    _LOADER = StrictLoader
    return _LOADER


def _check_expanded_size(root, yaml) -> None:
    """A ComposerError if the document, its aliases expanded, has more than MAX_YAML_NODES nodes
    or an alias inside the node it refers to (a billion laughs would otherwise hang the load)."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise yaml.composer.ComposerError(None, None, "an alias refers to a node that contains it",
                                              node.start_mark)
        open_.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = ()
        for child in children:
            total += size(child)
            if total > MAX_YAML_NODES:
                raise yaml.composer.ComposerError(
                    None, None, f"aliases expand this document to more than {MAX_YAML_NODES:,} nodes",
                    node.start_mark)
        open_.discard(key)
        sizes[key] = total
        return total

    size(root)


def parse_spec(data: Any, path: Path, ctx: _Ctx | None = None) -> Spec:
    """Validate an already-parsed spec mapping (``path`` names it in errors and anchors ``workdir``)."""
    ctx = ctx or _Ctx(display_path(path))
    if not isinstance(data, dict):
        raise ctx.err("", f"a sweep spec is a mapping with 'axes' and 'stages', not {type(data).__name__}")
    known = {"name", "description", "workdir", "max_attempts", "resources", "vars", "raw", "axes", "zip",
             "include", "exclude", "stages", "snapshot", "search"}
    for key in data:
        # x-* keys hold YAML anchors for reuse (`x-rl: &rl ...` then `command: *rl`)
        if key not in known and not str(key).startswith("x-"):
            raise ctx.err(str(key), f"unknown key (known: {', '.join(sorted(known))}, or x-* for anchors)")
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not _SWEEP_NAME.fullmatch(name):
        raise ctx.err("name", f"{_show(name)} is not a valid sweep name (letters, digits, _ . -)")
    workdir_raw = data.get("workdir", "..")
    if not isinstance(workdir_raw, str):
        raise ctx.err("workdir", "must be a path")
    workdir = (path.parent / workdir_raw).resolve()
    if not workdir.is_dir():
        raise ctx.err("workdir", f"{_show(workdir_raw)} is {workdir}, which is not a directory (commands run there)")
    max_attempts = _posint(data.get("max_attempts", 3), "max_attempts", ctx)
    snapshot = data.get("snapshot", True)
    if not isinstance(snapshot, bool):
        raise ctx.err("snapshot", f"must be true or false, got {_show(snapshot)}")
    resources = _resources(data.get("resources", {}), "resources", ctx)

    if "stages" not in data:
        raise ctx.err("stages", "missing: a spec needs at least one stage with a command")
    stages = _stages(data["stages"], ctx)
    stage_names = list(dict.fromkeys(s.name for s in stages))

    if "axes" not in data or data["axes"] is None:
        raw_axes: dict = {}
    else:
        raw_axes = data["axes"]
    if not isinstance(raw_axes, dict):
        raise ctx.err("axes", "must be a mapping axis name -> values")
    axes: list[Axis] = []
    for aname, raw in raw_axes.items():
        axes.append(_axis(aname, raw, stage_names, [a.name for a in axes], ctx))
    axis_names = [a.name for a in axes]

    zips = data.get("zip", []) or []
    if not isinstance(zips, list) or not all(isinstance(z, list) for z in zips):
        raise ctx.err("zip", "must be a list of lists of axis names, e.g. [[task, budget]]")
    seen_zip: set[str] = set()
    for i, group in enumerate(zips):
        if len(group) < 2:
            raise ctx.err(f"zip[{i}]", "zip at least two axes together")
        for a in group:
            if a not in axis_names:
                raise ctx.err(f"zip[{i}]", f"unknown axis {_show(a)} (axes: {', '.join(axis_names)})")
            if a in seen_zip:
                raise ctx.err(f"zip[{i}]", f"axis {_show(a)} is in two zip groups")
            seen_zip.add(a)
        lengths = {a: len(next(x for x in axes if x.name == a).values) for a in group}
        if len(set(lengths.values())) != 1:
            raise ctx.err(f"zip[{i}]", "zipped axes need the same number of values: "
                          + ", ".join(f"{a}={n}" for a, n in lengths.items()))
        # a zip group is one factor of the grid, present where its condition matches: every
        # axis in it must have that condition, or one axis's 'when' would silently not apply
        whens = {a: _when_text(next(x for x in axes if x.name == a).when) for a in group}
        if len(set(whens.values())) != 1:
            raise ctx.err(f"zip[{i}]", "zipped axes vary together, so they need the same 'when': "
                          + ", ".join(f"{a}: {w or 'none'}" for a, w in whens.items()))

    filters: dict[str, list[dict[str, list[Any]]]] = {}
    for key in ("exclude", "include"):
        entries = data.get(key) or []
        if not isinstance(entries, list):
            raise ctx.err(key, f"must be a list of mappings axis -> value (or list of values), not {_kind(entries)}")
        filters[key] = [_point_filter(e, f"{key}[{i}]", axis_names, ctx) for i, e in enumerate(entries)]
    exclude, include = filters["exclude"], filters["include"]

    with_keys = {k for st in stages for n in st.needs for k in n.with_}
    for s in stages:
        for need in s.needs:
            if need.stage not in stage_names:
                raise ctx.err(f"{s.where}.needs.{need.ref}",
                              f"unknown stage {_show(need.stage)} (stages: {', '.join(stage_names)})")
            for k in need.with_:
                if not _NAME.fullmatch(k) or k in _RESERVED:
                    raise ctx.err(f"{s.where}.needs.{need.ref}.with.{k}",
                                  "keys are axis names or new identifiers (passed to the needed job)")
        for cond_name in ("when", "unless"):
            cond = getattr(s, cond_name)
            for k in cond or {}:
                if k not in axis_names and k not in with_keys:
                    raise ctx.err(f"{s.where}.{cond_name}", f"unknown axis {_show(k)} (axes: {', '.join(axis_names)})")
    _check_stage_cycles(stages, ctx)
    _check_condition_values(axes, stages, exclude, include, ctx)

    top_vars = _vars(data.get("vars"), "vars", ctx)
    for a in axes:
        if a.name in top_vars:
            raise ctx.err(f"vars.{a.name}", "a variable cannot have the name of an axis")
    names = set(top_vars) | {k for a in axes for vs in a.vars.values() for k in vs} | set(axis_names) | with_keys
    raw_names = data.get("raw") or []
    if not isinstance(raw_names, list):
        raise ctx.err("raw", "must be a list of variable names, e.g. [base]")
    for i, rname in enumerate(raw_names):
        if not isinstance(rname, str) or rname not in names:
            raise ctx.err(f"raw[{i}]", f"{_show(rname)} is not a variable or axis of this spec "
                          f"({', '.join(sorted(names)) or 'none'})")
    desc = data.get("description", "")
    if desc is not None and not isinstance(desc, str):
        raise ctx.err("description", f"must be text, not {_kind(desc)}")
    search = None
    if data.get("search") is not None:
        from near.sweep.search_block import parse_search

        search = parse_search(data["search"], [s.name for s in stages], axis_names, set(top_vars), ctx.err)
    return Spec(path=path, name=name, workdir=workdir, axes=axes, stages=stages, zip=[list(z) for z in zips],
                include=include, exclude=exclude, max_attempts=max_attempts, resources=resources,
                description=str(desc or ""), vars=top_vars, snapshot=snapshot,
                raw=frozenset(raw_names), search=search)


def _when_text(when: dict[str, list[Any]] | None) -> str:
    """An axis's condition as comparable text ('' for none)."""
    if not when:
        return ""
    return ", ".join(f"{k}={'|'.join(sorted(format_value(v) for v in vs))}" for k, vs in sorted(when.items()))


def _kind(v: Any) -> str:
    return "a mapping" if isinstance(v, dict) else "a list" if isinstance(v, list) else _show(v)


def _scalar(v: Any, where: str, ctx: _Ctx, what: str = "values") -> Any:
    """``v`` if it is a plain YAML scalar (text, number, boolean, null); else a SpecError."""
    if isinstance(v, _SCALARS):
        return v
    if isinstance(v, (dict, list)):
        raise ctx.err(where, f"{what} are scalars, not {_kind(v)}")
    import datetime

    if isinstance(v, (datetime.date, datetime.datetime)):
        raise ctx.err(where, f"YAML reads {v} as a {type(v).__name__}; quote it ('{v}') to use it as text")
    raise ctx.err(where, f"{what} are text, numbers, booleans or null, not {type(v).__name__}")


def _check_distinct(values: list[Any], where: str, ctx: _Ctx, known: dict | None = None) -> dict:
    """Values that are equal in Python (1, 1.0 and true) but written differently would be one
    point to caches and two in commands: refuse them. Returns value -> its text."""
    seen: dict = {} if known is None else known
    for v in values:
        first = seen.setdefault(v, format_value(v))
        if first != format_value(v):
            raise ctx.err(where, f"values {first} and {format_value(v)} are equal to YAML (1 == 1.0 == true); "
                          "quote one of them to make it text")
    return seen


def _check_condition_values(axes: list[Axis], stages: list[Stage], exclude: list[dict], include: list[dict],
                            ctx: _Ctx) -> None:
    """Every value a ``when``, ``unless`` or ``exclude`` names must be one the key can take (a value
    of the axis, of an ``include`` or of a ``needs.with``): a misspelt one would silently match
    nothing."""
    known: dict[str, set[str]] = {}
    for a in axes:
        known.setdefault(a.name, set()).update(format_value(v) for v in a.values)
    for i, inc in enumerate(include):
        for k, vs in inc.items():
            known.setdefault(k, set()).update(format_value(v) for v in vs)
            _check_distinct(vs, f"include[{i}].{k}", ctx, _check_distinct(next(a for a in axes if a.name == k).values,
                                                                         f"axes.{k}", ctx))
    for s in stages:
        for n in s.needs:
            for k, v in n.with_.items():
                known.setdefault(k, set()).add(format_value(v))

    def check(cond: dict[str, list[Any]] | None, where: str) -> None:
        for k, vs in (cond or {}).items():
            for v in vs:
                if format_value(v) not in known.get(k, ()):
                    shown = sorted(known.get(k, ()))
                    listed = ", ".join(shown[:20]) + (", ..." if len(shown) > 20 else "")
                    raise ctx.err(f"{where}.{k}", f"{_show(format_value(v))} is not a value of {_show(k)}, so this "
                                  f"matches nothing (values: {listed})")

    for a in axes:
        check(a.when, f"axes.{a.name}.when")
    for s in stages:
        check(s.when, f"{s.where}.when")
        check(s.unless, f"{s.where}.unless")
    for i, ex in enumerate(exclude):
        check(ex, f"exclude[{i}]")


def _vars(raw: Any, where: str, ctx: _Ctx) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ctx.err(where, "must be a mapping name -> value")
    out = {}
    for k, v in raw.items():
        if not isinstance(k, str) or not _NAME.fullmatch(k):
            raise ctx.err(f"{where}.{k}", "variable names are identifiers")
        out[k] = _scalar(v, f"{where}.{k}", ctx, "variable values (strings may use ${...})")
    return out


def _posint(v: Any, where: str, ctx: _Ctx) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ctx.err(where, f"must be a positive integer, not {_show(v)}")
    return v


def _resources(raw: Any, where: str, ctx: _Ctx) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ctx.err(where, "must be a mapping with cpus, gpus, mem, time")
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if not isinstance(k, str) or k not in RESOURCE_KEYS:
            raise ctx.err(f"{where}.{k}", f"unknown resource (known: {', '.join(RESOURCE_KEYS)})")
        if k == "cpus":  # sbatch refuses --cpus-per-task=0
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ctx.err(f"{where}.{k}", f"must be a positive integer, not {_show(v)}")
        elif k == "gpus":
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ctx.err(f"{where}.{k}", f"must be a non-negative integer, not {_show(v)}")
        elif k == "mem":
            if not (isinstance(v, int) or (isinstance(v, str) and _MEM.fullmatch(v))):
                raise ctx.err(f"{where}.{k}", f"{_show(v)} is not a memory size (e.g. 4G, 512M)")
            v = f"{v}M" if isinstance(v, int) else v
        elif k == "time":
            if not (isinstance(v, int) or (isinstance(v, str) and _TIME.fullmatch(v))):
                raise ctx.err(f"{where}.{k}", f"{_show(v)} is not a time limit (HH:MM:SS, D-HH:MM:SS or minutes)")
            v = str(v)
        elif k == "checkpoint":  # the job's checkpoint: only its changes count as progress
            if not isinstance(v, str) or not v.strip() or v.startswith("/") or ".." in v.split("/"):
                raise ctx.err(f"{where}.{k}", f"must be a path or glob inside the run dir, not {v!r}")
        elif k == "max_requeues":  # attempts not charged (interrupted, or progress made) before failing
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ctx.err(f"{where}.{k}", f"must be a positive integer, not {v!r}")
        elif k == "slurm":
            if not isinstance(v, dict):
                raise ctx.err(f"{where}.{k}", "must be a mapping of extra sbatch options")
            for opt, val in v.items():  # become `#SBATCH --OPT=VAL` lines: plain option names only
                if not isinstance(opt, str) or not re.fullmatch(r"[a-z][a-z0-9_-]*", opt):
                    raise ctx.err(f"{where}.{k}.{opt}", "sbatch option names look like 'constraint' or 'mail-type'")
                owned = _sbatch_owned(opt)
                if owned:
                    raise ctx.err(f"{where}.{k}.{opt}", owned)
                _scalar(val, f"{where}.{k}.{opt}", ctx, "sbatch option values")
                if "\n" in str(val) or "\r" in str(val):  # would end the #SBATCH header: a script line
                    raise ctx.err(f"{where}.{k}.{opt}", "sbatch option values are one line (no line breaks)")
        out[k] = v
    return out


# sbatch options near's submission writes itself (its array, log, signal for checkpointing and
# dependencies), and those it writes from typed resources; an extra option of the same name would
# replace them in the script
_SBATCH_NEAR = ("array", "output", "error", "open-mode", "signal", "job-name", "dependency",
                "kill-on-invalid-dep", "hold", "wrap", "parsable")
_SBATCH_TYPED = {"cpus-per-task": "cpus", "mem": "mem", "mem-per-cpu": "mem", "time": "time", "gpus-per-node": "gpus"}


def _sbatch_owned(opt: str) -> str | None:
    """Why extra sbatch option ``opt`` may not be given, or None. sbatch takes any unambiguous
    prefix of an option (``--sig`` is ``--signal``), so a prefix of an owned one is refused too."""
    name = opt.replace("_", "-")
    for owned in _SBATCH_NEAR:
        if owned.startswith(name):
            return f"near sets sbatch's --{owned} itself (its arrays, logs, checkpoint signal and dependencies)"
    for owned, key in _SBATCH_TYPED.items():
        if owned.startswith(name):
            return f"sbatch's --{owned} comes from resources.{key}; set that instead"
    return None


# Bump when expansion or validation changes what an unchanged spec produces.
EXPANSION_VERSION = 2


def with_settings(spec: Spec, *, name: str | None = None, set_vars: dict[str, str] | None = None) -> Spec:
    """``spec`` renamed and with template variables forced from the command line (``near sweep add
    --name NAME --var KEY=VALUE``): a forced variable beats the spec's ``vars`` and every value's
    bundle, so e.g. one budget variable shrinks a whole sweep for a smoke test. A forced value is
    literal text: a ``${`` in it is not a placeholder."""
    import dataclasses

    for key, value in (set_vars or {}).items():
        problem = text_problem(f"{key}{value}")
        if problem:
            raise SpecError(f"{spec.label}: --var {key}: {problem}")
    set_vars = {k: str(v).replace("${", "$${") for k, v in (set_vars or {}).items()}
    known = set(spec.vars) | {k for a in spec.axes for vs in a.vars.values() for k in vs}
    for key in set_vars:
        if key not in known:
            raise SpecError(f"{spec.label}: --var {key}: not a variable of this spec "
                            f"(variables: {', '.join(sorted(known)) or 'none'})")
    if name is not None and not _SWEEP_NAME.fullmatch(name):
        raise SpecError(f"{spec.label}: --name {_show(name)} is not a valid sweep name (letters, digits, _ . -)")
    axes = [dataclasses.replace(a, vars={v: {k: x for k, x in vs.items() if k not in set_vars}
                                         for v, vs in a.vars.items()}) for a in spec.axes]
    return dataclasses.replace(spec, name=name or spec.name, vars={**spec.vars, **set_vars}, axes=axes)


_CODE_DIGEST: str | None = None


def _code_digest() -> str:
    """A digest of the source of near's code that expands and validates specs (near/sweep, the
    add service, the typed settings and their composition): a near that expands or checks
    differently may add or refuse jobs of an unchanged spec."""
    global _CODE_DIGEST
    if _CODE_DIGEST is None:
        import hashlib

        package = Path(__file__).resolve().parents[1]
        files = sorted(Path(__file__).resolve().parent.glob("*.py"))
        files += [package / "add.py", package / "training" / "settings.py", package / "training" / "config.py"]
        h = hashlib.sha256()
        for f in files:
            h.update(f"\0{f.relative_to(package)}\0".encode())
            h.update(f.read_bytes())
        _CODE_DIGEST = h.hexdigest()
    return _CODE_DIGEST


def spec_fingerprint(spec: Spec, *, validate: bool = True) -> str:
    """A digest of everything an ``add`` of ``spec`` depends on: the spec file's bytes, its workdir,
    the hydra tree under ``<workdir>/cfg`` (paths, sizes, mtimes), near's expansion version and the
    source of near's expansion and validation. Equal digests mean re-adding cannot add or reject
    anything."""
    import hashlib

    h = hashlib.sha256()
    h.update(f"{EXPANSION_VERSION}\0{_code_digest()}\0{spec.workdir}\0{validate}\0{spec.name}\0"
             f"{sorted(spec.vars.items())}\0".encode())
    h.update(spec.path.read_bytes())
    cfg = spec.workdir / "cfg"
    if validate and cfg.is_dir():
        for root, dirs, files in os.walk(cfg):
            dirs.sort()
            for f in sorted(files):
                st = os.stat(os.path.join(root, f))
                h.update(f"\0{os.path.relpath(os.path.join(root, f), cfg)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def time_to_seconds(t: str | int) -> int:
    """A SLURM-style time limit (minutes, MM:SS, HH:MM:SS, D-HH:MM:SS) in seconds."""
    s = str(t)
    if s.isdigit():
        return int(s) * 60
    days = 0
    if "-" in s:
        d, s = s.split("-", 1)
        days = int(d)
    parts = [int(p) for p in s.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    h, m, sec = parts
    return ((days * 24 + h) * 60 + m) * 60 + sec


def parse_overrides(raw: Any, where: str, stage_names: list[str], ctx: _Ctx) -> StageOverrides:
    """A list / string of overrides (every stage) or a mapping stage -> list / string."""
    if raw is None:
        return {}
    if isinstance(raw, dict):
        out: StageOverrides = {}
        for k, v in raw.items():
            k = str(k)
            if k != ALL_STAGES and k not in stage_names:
                raise ctx.err(f"{where}.{k}", f"unknown stage {_show(k)} (stages: {', '.join(stage_names)}, or '*')")
            out[k] = _override_list(v, f"{where}.{k}", ctx)
        return out
    return {ALL_STAGES: _override_list(raw, where, ctx)}


def _override_list(raw: Any, where: str, ctx: _Ctx) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        try:
            items = shlex.split(raw)
        except ValueError as err:
            raise ctx.err(where, f"cannot split overrides: {err}") from err
    elif isinstance(raw, list):
        items = raw
    else:
        raise ctx.err(where, f"overrides are a list of key=value strings, not {type(raw).__name__}")
    out = []
    for i, o in enumerate(items):
        if not isinstance(o, str):
            raise ctx.err(f"{where}[{i}]", f"override {_show(o)} must be a string key=value (quote it)")
        if "=" not in o and not o.startswith("~") and not o.startswith("-"):
            raise ctx.err(f"{where}[{i}]", f"override {_show(o)} is not key=value")
        out.append(o)
    return out


def _cond(raw: Any, where: str, ctx: _Ctx) -> dict[str, list[Any]]:
    if not isinstance(raw, dict) or not raw:
        raise ctx.err(where, "must be a mapping axis -> value or list of values, e.g. {algorithm: NEAR}")
    return {str(k): _value_list(v, f"{where}.{k}", ctx) for k, v in raw.items()}


def _value_list(v: Any, where: str, ctx: _Ctx) -> list[Any]:
    """A value or a list of values (scalars) in a condition, include or exclude."""
    vs = v if isinstance(v, list) else [v]
    if not vs:
        raise ctx.err(where, "an empty list matches nothing")
    return [_scalar(x, f"{where}[{i}]" if isinstance(v, list) else where, ctx) for i, x in enumerate(vs)]


def _axis(name: Any, raw: Any, stage_names: list[str], earlier: list[str], ctx: _Ctx) -> Axis:
    where = f"axes.{name}"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ctx.err(where, "axis names are identifiers (letters, digits, _)")
    if name in _RESERVED:
        raise ctx.err(where, f"{_show(name)} is reserved ({', '.join(sorted(_RESERVED))})")
    when = None
    overrides: dict[str, StageOverrides] = {}
    axis_vars: dict[str, dict[str, Any]] = {}
    if isinstance(raw, list):
        values = raw
    elif isinstance(raw, dict):
        if set(raw) <= {"count", "base"} and "count" in raw:
            values = _seeds(raw, where, ctx)
        else:
            allowed = {"values", "overrides", "when", "count", "base"}
            for k in raw:
                if k not in allowed:
                    raise ctx.err(f"{where}.{k}", f"unknown key (known: {', '.join(sorted(allowed))})")
            if "count" in raw:
                if "values" in raw:
                    raise ctx.err(where, "give either values or count/base, not both")
                values = _seeds({k: raw[k] for k in ("count", "base") if k in raw}, where, ctx)
            elif "values" not in raw:
                raise ctx.err(f"{where}.values", "missing (a list, a mapping of named variants, or count/base)")
            else:
                vals = raw["values"]
                if isinstance(vals, dict):  # named variants: value -> bundle of overrides
                    values = list(vals)
                    for v, bundle in vals.items():
                        _scalar(v, f"{where}.values.{v}", ctx, "axis values")
                        bundle, vvars = _split_vars(bundle, f"{where}.values.{v}", ctx)
                        if vvars:
                            axis_vars[format_value(v)] = vvars
                        overrides[format_value(v)] = parse_overrides(bundle, f"{where}.values.{v}", stage_names, ctx)
                elif isinstance(vals, list):
                    values = vals
                else:
                    raise ctx.err(f"{where}.values", "must be a list or a mapping of named variants")
            if raw.get("overrides") is not None:
                if not isinstance(raw["overrides"], dict):
                    raise ctx.err(f"{where}.overrides", "must be a mapping value -> overrides")
                keys = {format_value(v) for v in values}
                for v, bundle in raw["overrides"].items():
                    _scalar(v, f"{where}.overrides.{v}", ctx, "axis values")
                    fv = format_value(v)
                    if fv not in keys:
                        raise ctx.err(f"{where}.overrides.{v}", f"{_show(v)} is not a value of axis {name} "
                                      f"({', '.join(map(format_value, values))})")
                    bundle, vvars = _split_vars(bundle, f"{where}.overrides.{v}", ctx)
                    if vvars:
                        axis_vars.setdefault(fv, {}).update(vvars)
                    parsed = parse_overrides(bundle, f"{where}.overrides.{v}", stage_names, ctx)
                    merged = overrides.setdefault(fv, {})
                    for st, lst in parsed.items():
                        merged[st] = merged.get(st, []) + lst
            if "when" in raw:
                when = _cond(raw["when"], f"{where}.when", ctx)
                for k in when:
                    if k not in earlier:
                        raise ctx.err(f"{where}.when", f"{_show(k)} is not an axis declared before {_show(name)} "
                                      f"(earlier axes: {', '.join(earlier) or 'none'})")
    else:
        raise ctx.err(where, "an axis is a list of values or a mapping with 'values'")
    if not values:
        raise ctx.err(where, "has no values")
    for i, v in enumerate(values):
        _scalar(v, f"{where}.values[{i}]" if isinstance(raw, dict) else f"{where}[{i}]", ctx,
                "axis values (use named variants for bundles)")
    fvals = [format_value(v) for v in values]
    dup = {v for v in fvals if fvals.count(v) > 1}
    if dup:
        raise ctx.err(where, f"duplicate value(s) {', '.join(sorted(dup))}")
    _check_distinct(values, where, ctx)
    return Axis(name=name, values=values, overrides=overrides, when=when, vars=axis_vars)


def _split_vars(bundle: Any, where: str, ctx: _Ctx) -> tuple[Any, dict[str, Any]]:
    """A value's bundle may carry ``vars:`` (template variables) next to its overrides."""
    if isinstance(bundle, dict) and "vars" in bundle:
        rest = {k: v for k, v in bundle.items() if k != "vars"}
        return (rest or None), _vars(bundle["vars"], f"{where}.vars", ctx)
    return bundle, {}


def _seeds(raw: dict, where: str, ctx: _Ctx) -> list[int]:
    count = raw.get("count")
    base = raw.get("base", 0)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ctx.err(f"{where}.count", f"must be a positive integer, not {_show(count)}")
    if count > ctx.max_jobs:  # every value is at least one grid point
        raise ctx.err(f"{where}.count", f"{count:,} values is more than the limit of {ctx.max_jobs:,} jobs "
                      "(raise it with --max-jobs)")
    if isinstance(base, bool) or not isinstance(base, int):
        raise ctx.err(f"{where}.base", f"must be an integer, not {_show(base)}")
    return list(range(base, base + count))


def _point_filter(entry: Any, where: str, axis_names: list[str], ctx: _Ctx) -> dict[str, list[Any]]:
    if not isinstance(entry, dict) or not entry:
        raise ctx.err(where, "must be a mapping axis -> value (or list of values)")
    for k in entry:
        if k not in axis_names:
            raise ctx.err(f"{where}.{k}", f"unknown axis {_show(k)} (axes: {', '.join(axis_names)})")
    return {str(k): _value_list(v, f"{where}.{k}", ctx) for k, v in entry.items()}


def _stages(raw: Any, ctx: _Ctx) -> list[Stage]:
    items: list[tuple[str, Any, str]] = []
    if isinstance(raw, dict):
        for name, body in raw.items():
            items.append((name, body, f"stages.{name}"))
    elif isinstance(raw, list):
        for i, body in enumerate(raw):
            if not isinstance(body, dict) or "name" not in body:
                raise ctx.err(f"stages[{i}]", "each stage is a mapping with a name and a command")
            items.append((body["name"], body, f"stages[{i}]"))
    else:
        raise ctx.err("stages", "must be a list of stages or a mapping name -> stage")
    if not items:
        raise ctx.err("stages", "no stages")
    for name, _, where in items:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ctx.err(where, f"stage name {_show(name)} must be an identifier")
    names = list(dict.fromkeys(n for n, _, _ in items))
    out = []
    allowed = {"name", "command", "overrides", "needs", "resources", "when", "unless", "max_attempts", "validate"}
    for name, body, where in items:
        if isinstance(body, str):
            body = {"command": body}
        if not isinstance(body, dict):
            raise ctx.err(where, "a stage is a mapping with a command")
        for k in body:
            if k not in allowed:
                raise ctx.err(f"{where}.{k}", f"unknown key (known: {', '.join(sorted(allowed))})")
        cmd = body.get("command")
        if not isinstance(cmd, str) or not cmd.strip():
            raise ctx.err(f"{where}.command", "missing or empty: the command template this stage runs")
        cmd = normalize_command(cmd)
        problem = unbalanced(cmd)
        if problem:
            raise ctx.err(f"{where}.command", f"the shell cannot read this command: it ends with {problem}")
        overrides = parse_overrides(body.get("overrides"), f"{where}.overrides", names, ctx)
        if set(overrides) - {ALL_STAGES}:
            raise ctx.err(f"{where}.overrides", "a stage's own overrides are a plain list")
        needs = []
        raw_needs = body.get("needs") or {}
        if isinstance(raw_needs, list):  # needs: [ncsn] == {ncsn: ncsn}
            raw_needs = {str(n): str(n) for n in raw_needs}
        if not isinstance(raw_needs, dict):
            raise ctx.err(f"{where}.needs", "must be a mapping ref -> stage (or {stage, with})")
        for ref, target in raw_needs.items():
            ref = str(ref)
            if not _NAME.fullmatch(ref) or ref in ("run_dir", "job_id", "exp_dir", "sweep", "stage"):
                raise ctx.err(f"{where}.needs.{ref}", "reference names are identifiers, not reserved names")
            if isinstance(target, str):
                needs.append(Need(ref, target))
            elif isinstance(target, dict) and "stage" in target:
                for k in target:
                    if k not in ("stage", "with"):
                        raise ctx.err(f"{where}.needs.{ref}.{k}", "unknown key (known: stage, with)")
                w = target.get("with") or {}
                if not isinstance(w, dict):
                    raise ctx.err(f"{where}.needs.{ref}.with", "must be a mapping axis -> value")
                needs.append(Need(ref, str(target["stage"]), {
                    str(k): _scalar(v, f"{where}.needs.{ref}.with.{k}", ctx) for k, v in w.items()}))
            else:
                raise ctx.err(f"{where}.needs.{ref}", "must be a stage name or {stage: NAME, with: {axis: value}}")
        when = _cond(body["when"], f"{where}.when", ctx) if "when" in body else None
        unless = _cond(body["unless"], f"{where}.unless", ctx) if "unless" in body else None
        ma = body.get("max_attempts")
        validate = body.get("validate", True)
        if not isinstance(validate, bool):
            raise ctx.err(f"{where}.validate", f"must be true or false, not {_show(validate)}")
        call = parse_call(cmd)
        if validate and call is not None and call.expanded:
            shown, what = call.expanded[0]
            raise ctx.err(f"{where}.command", f"bash changes the trainer argument {_show(shown)} ({what}) "
                          "before near train reads it, so it cannot be validated as written; quote it "
                          "('...') to pass it as written (a hydra interpolation is '++a=$${b}'), or set "
                          "validate: false on this stage")
        out.append(Stage(
            name=name, command=cmd, overrides=overrides.get(ALL_STAGES, []), needs=needs,
            resources=_resources(body.get("resources"), f"{where}.resources", ctx), when=when, unless=unless,
            max_attempts=None if ma is None else _posint(ma, f"{where}.max_attempts", ctx),
            validate=validate, where=where, call=call,
        ))
    return out


def _check_stage_cycles(stages: list[Stage], ctx: _Ctx) -> None:
    graph: dict[str, set[str]] = {}
    where: dict[str, str] = {}
    for s in stages:
        graph.setdefault(s.name, set()).update(n.stage for n in s.needs)
        where.setdefault(s.name, s.where)
    state: dict[str, int] = {}

    def visit(n: str, chain: list[str]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            raise ctx.err(f"{where[n]}.needs", "stages depend on each other in a cycle: "
                          + " -> ".join(chain + [n]))
        state[n] = 1
        for m in sorted(graph.get(n, ())):
            visit(m, chain + [n])
        state[n] = 2

    for n in graph:
        visit(n, [])
