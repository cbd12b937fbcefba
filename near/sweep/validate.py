"""Validate jobs that run near's trainer against the hydra config tree and the typed settings,
before anything is written.

Every job whose command runs ``near train ncsn|rl`` (also ``python -m near train ...``) is checked
against ``<workdir>/cfg`` by :class:`near.sweep.settings_check.SettingsChecker`: hydra composes once
per override shape, and every job's every setting is typed against
:mod:`near.training.settings`, so an unknown key (``++task.env.episodeLenght=50``), a wrong type
(``num_envs=abc``) or a value out of range in any job stops the add with the key and the closest
declared one. The report keeps each job's identity (what its stage reads) for
:func:`near.sweep.shared.merge_shared`, and notes the overrides a stage does not read.

Every task must have its config in ``cfg/task`` (the humanoid tasks run on MuJoCo here), so a
misspelt ``task=`` is refused like any other key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from near.errors import ConfigError
from near.jobtable import JobSpec
from near.sweep.settings_check import SettingsChecker
from near.sweep.template import dummy_slot, parse_call

if TYPE_CHECKING:
    from near.sweep.spec import Spec


@dataclass
class ValidationReport:
    """What validation did: jobs checked, distinct shapes composed, jobs skipped and why, each
    checked job's identity and the overrides a stage does not read."""

    checked: int = 0
    shapes: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> jobs
    not_trainer: int = 0
    identities: dict[str, tuple] = field(default_factory=dict)  # job id -> what its stage reads
    ignored: dict[tuple[str, str], int] = field(default_factory=dict)  # (stage, override key) -> jobs
    motions: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (cfg dir, env type, file) -> jobs

    def notes(self) -> list[str]:
        notes = [f"skipped hydra validation of {n} job(s): {why}" for why, n in self.skipped.items()]
        by_stage: dict[str, list[str]] = {}
        for (stage, key), n in self.ignored.items():
            by_stage.setdefault(stage, []).append(f"{key} ({n} job(s))")
        for stage, keys in by_stage.items():
            notes.append(f"stage {stage} does not read these overrides (jobs that differ only there are one "
                         f"job): {', '.join(keys)}")
        return notes + motion_notes(self.motions)


def trainer_call(command: str) -> tuple[str, list[str]] | None:
    """``(kind, overrides)`` if ``command`` runs ``near train KIND OVERRIDES...``, else None: the
    words as the shell splits them (:func:`near.sweep.template.parse_call`), the overrides ending
    at the first operator, dispatch placeholders as dummy paths (what hydra would see)."""
    call = parse_call(command)
    if call is None:
        return None
    return _fill(call.kind), [_fill(w) for w in call.overrides]


def _fill(word) -> str:
    return "".join(p if isinstance(p, str) else dummy_slot(p) for p in word)


class Validator:
    """The settings checks of one or several validations (its caches kept between them)."""

    def __init__(self) -> None:
        self.checker = SettingsChecker()




def validate_jobs(jobs: Iterable[JobSpec], spec_label: str, *, validator: Validator | None = None,
                  skip_stages: Iterable[tuple[str, str]] = ()) -> ValidationReport:
    """Check every trainer job's settings; ConfigError names the spec file, the job (id and grid
    point) and the override or key.

    ``skip_stages``: (job_id, reason) pairs not to check (e.g. stages with ``validate: false``).
    A job from expansion carries its trainer call (kind and override words, read from the parsed
    template); any other job's command is parsed here. Per job this costs a few cached lookups:
    hydra composes once per distinct shape, each distinct override is typed once per shape.
    """
    validator = validator or Validator()
    checker = validator.checker
    skip = dict(skip_stages)
    report = ValidationReport()
    shapes_before = checker.shapes
    cfg_dirs: dict[str | None, tuple[Path, bool]] = {}
    for job in jobs:
        if skip and job.job_id in skip:
            report.skipped[skip[job.job_id]] = report.skipped.get(skip[job.job_id], 0) + 1
            continue
        info = cfg_dirs.get(job.workdir)
        if info is None:
            cfg_dir = Path(job.workdir or ".") / "cfg"
            info = cfg_dirs[job.workdir] = (cfg_dir, (cfg_dir / "config.yaml").is_file())
        cfg_dir, has_config = info
        # jobs from expansion carry their trainer call, read from the parsed template
        call = getattr(job, "call", _UNPARSED)
        if call is _UNPARSED:
            call = trainer_call(job.command)
        if call is None:
            report.not_trainer += 1
            continue
        kind, overrides = call[0], list(call[1])
        if not has_config:
            raise ConfigError(f"{spec_label}: job {job.job_id} ({job.label}): runs near's trainer "
                              f"but {cfg_dir}/config.yaml does not exist (set the spec's workdir to the repo)")
        try:
            found = checker.check(kind, overrides, cfg_dir)
        except ConfigError as err:
            raise _config_error(spec_label, job, cfg_dir, str(err)) from None
        report.checked += 1
        report.identities[job.job_id] = found.identity
        if found.motion is not None:
            where = (str(cfg_dir), *found.motion)
            report.motions[where] = report.motions.get(where, 0) + 1
        for key in found.ignored:
            report.ignored[(kind, key)] = report.ignored.get((kind, key), 0) + 1
    report.shapes = checker.shapes - shapes_before
    return report


def motion_folders(cfg_dir: str | Path, env_type: str) -> list[Path]:
    """Where an environment of ``env_type`` looks for a relative motion file (after the workdir),
    with ``cfg_dir`` as its config tree: the humanoid's own lookup ($NEAR_MOTION_DIR, a NEAR
    checkout, then ``cfg/task/motions/humanoid``), else ``cfg/task/motions``."""
    if env_type == "Humanoid":
        from near.training.envs.humanoid.motion_lib import motion_dirs

        return motion_dirs(Path(cfg_dir) / "task" / "motions" / "humanoid")
    return [Path(cfg_dir) / "task" / "motions"]


def motion_notes(motions: dict[tuple[str, str, str], int]) -> list[str]:
    """Which motions the jobs train on: synthetic clips (named, no file: not motion capture) and
    files, with those not found here (their jobs stop with an error naming the file)."""
    synthetic: dict[str, int] = {}
    files: dict[str, int] = {}
    missing: dict[str, list[str]] = {}
    broken: list[str] = []
    for (cfg_dir, env_type, file), n in motions.items():
        if not file.endswith((".npy", ".yaml", ".yml")):
            synthetic[file] = synthetic.get(file, 0) + n
            continue
        files[file] = files.get(file, 0) + n
        folders = motion_folders(cfg_dir, env_type)
        path = Path(file).expanduser()
        candidates = [Path(cfg_dir).parent / path, *(f / p for f in folders for p in (path, path.name))]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            missing.setdefault(", ".join(map(str, folders)), []).append(file)
        elif env_type == "Humanoid" and found.suffix in (".yaml", ".yml"):
            broken.extend(_broken_list(found))
    notes = []
    if synthetic or files:
        notes.append("synthetic motions (near's generated clips, not motion capture): "
                     + (", ".join(f"{m} ({n} job(s))" for m, n in synthetic.items()) or "none"))
    if files:
        notes.append("motion files: " + ", ".join(f"{m} ({n} job(s))" for m, n in files.items()))
    for folder, names in missing.items():
        notes.append(f"motion files not found (looked in the workdir and {folder}): {', '.join(names)}; "
                     "their jobs stop with an error naming the file until it is added")
    notes.extend(f"{problem}; its jobs stop with this error until it is fixed" for problem in dict.fromkeys(broken))
    return notes


def _broken_list(path: Path) -> list[str]:
    """What is wrong with a humanoid motion list (a clip it names missing, a bad entry), or nothing."""
    from near.training.envs.humanoid.motion_lib import listed_clips

    try:
        listed_clips(path)
    except ConfigError as err:
        return [str(err)]
    return []


_UNPARSED = object()


def _config_error(spec_label: str, job: JobSpec, cfg_dir: Path, problem: str) -> ConfigError:
    if isinstance(problem, str) and problem.startswith(("unknown setting", "ill-typed setting", "setting ")):
        return ConfigError(f"{spec_label}: job {job.job_id} ({job.label}): {problem}")
    return ConfigError(f"{spec_label}: job {job.job_id} ({job.label}), stage {job.stage!r}: "
                       f"does not compose with {cfg_dir}: {problem}")


def hydra_path_problem(path: str) -> str | None:
    """Why a run dir below ``path`` cannot stand unquoted in a hydra override value (``run_dir=``
    ``PATH/runs/ID``, ``...checkpoint=PATH/runs/ID/nn/...``), or None: hydra's grammar reads a
    comma as a sweep, ``${`` as an interpolation, and refuses quotes, brackets, ``=``, ``~``,
    ``#``, non-ASCII letters and more."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if "${" in path:
        return "holds '${', which hydra reads as an interpolation"
    value = f"{path}/runs/0"
    try:
        parsed = OverridesParser.create().parse_override(f"k={value}")
        ok = not parsed.is_sweep_override() and parsed.value() == value
    except HydraException:
        ok = False
    if ok:
        return None
    bad = sorted({c for c in path if c not in "/._-" and not (c.isascii() and c.isalnum())
                  and _hydra_refuses_char(c)})
    return "holds " + (", ".join(repr(c) for c in bad) if bad else "text") + ", which hydra's override grammar " \
        "cannot read in a value"


def _hydra_refuses_char(c: str) -> bool:
    """Whether hydra's override grammar cannot read character ``c`` inside a path value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    value = f"/a{c}b"
    try:
        parsed = OverridesParser.create().parse_override(f"k={value}")
        return parsed.is_sweep_override() or parsed.value() != value
    except HydraException:
        return True


def check_experiment_path(spec: "Spec", exp_dir: str | Path) -> None:
    """ConfigError naming the experiment folder when a validated stage of ``spec`` runs near's
    trainer and the folder's absolute path cannot stand in its overrides (:func:`hydra_path_problem`):
    every such job would stop when hydra reads its ``run_dir``."""
    trainer = [s for s in spec.stages if s.validate and s.call is not None]
    if not trainer:
        return
    path = str(Path(exp_dir).resolve())
    problem = hydra_path_problem(path)
    if problem:
        raise ConfigError(f"{spec.label}: stage {trainer[0].name!r} runs near train, whose run dirs would lie "
                          f"in {path}, which {problem} (every such job would stop there); add the sweep "
                          "under another --root, or set validate: false on the stage if it passes no near path")
