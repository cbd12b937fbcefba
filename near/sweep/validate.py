"""Validate jobs that run near's trainer against the hydra config tree and the typed settings,
before anything is written.

Every job whose command runs ``near train ncsn|rl`` (also ``python -m near train ...``) is checked
against ``<workdir>/cfg`` by :class:`near.sweep.settings_check.SettingsChecker`: hydra composes once
per override shape, and every job's every setting is typed against
:mod:`near.training.settings`, so an unknown key (``++task.env.episodeLenght=50``), a wrong type
(``num_envs=abc``) or a value out of range in any job stops the add with the key and the closest
declared one. The report keeps each job's identity (what its stage reads) for
:func:`near.sweep.shared.merge_shared`, and notes the overrides a stage does not read.

Isaac Gym tasks (``task=Humanoid*``) without a config here are skipped and reported, not failed.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from near.errors import ConfigError
from near.jobtable import JobSpec
from near.sweep.settings_check import SettingsChecker

_PLACEHOLDER = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?\}")
_SHELL_CHARS = set(";&|<>()")
# what makes a command more than plain words split at blanks (then the full parser reads it)
_NOT_PLAIN = re.compile(r"""['"\\;&|<>()`#\n]""")
DUMMY_ROOT = "/tmp/near-validate"
ISAACGYM_TASK_PREFIX = "Humanoid"


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
    """``(kind, overrides)`` if ``command`` runs ``near train KIND OVERRIDES...``, else None.

    The command is split as the shell splits it (quotes, operators such as ``;`` or ``&&`` even
    without blanks around them); the overrides end at the first operator. Placeholders are replaced
    by dummy paths first, so the result is what hydra would see."""
    text = _PLACEHOLDER.sub(_dummy, command)
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        tokens = list(lexer)
    except ValueError:
        return None
    for i, tok in enumerate(tokens):
        start = None
        if os.path.basename(tok) == "near" and tokens[i + 1 : i + 2] == ["train"]:
            start = i + 2
        elif tok == "-m" and tokens[i + 1 : i + 3] == ["near", "train"]:
            start = i + 3
        if start is not None and start < len(tokens):
            kind = tokens[start]
            rest = []
            after = tokens[start + 1 :]
            for i, t in enumerate(after):
                if t and set(t) <= _SHELL_CHARS:
                    break
                if t.isdigit() and after[i + 1 : i + 2] and after[i + 1][0] in "<>":
                    break  # the file descriptor of a redirection (2>&1)
                rest.append(t)
            return kind, rest
    return None


def _dummy(m: re.Match) -> str:
    if m.group(0) == "$${":
        return "${"
    name, attr = m.group(1), m.group(2)
    return f"{DUMMY_ROOT}/{name}" if attr is None else f"{DUMMY_ROOT}/{name}_{attr}"


def _split(override: str) -> tuple[str, str, str]:
    """(prefix, key, value) of a hydra override: ``++a.b=1`` -> ('++', 'a.b', '1')."""
    m = re.match(r"^(\+\+|\+|~)?([^=]*)(?:=(.*))?$", override, re.S)
    assert m is not None
    return m.group(1) or "", m.group(2), m.group(3) or ""


class Validator:
    """The settings checks of one or several validations (its caches kept between them)."""

    def __init__(self) -> None:
        self.checker = SettingsChecker()


def _task_of(overrides: list[str]) -> str | None:
    for o in overrides:
        prefix, key, value = _split(o)
        if key == "task":
            return value
    return None


def _fast_call(command: str) -> tuple[str, list[str]] | None | bool:
    """The trainer call of a plain (unquoted) command without shlex: ``(kind, overrides)``; None if
    it does not run near's trainer; False if it needs the full parser (quotes, escapes)."""
    if _NOT_PLAIN.search(command):
        return False
    toks = command.split()
    try:
        i = toks.index("train")
    except ValueError:
        return None
    if i == 0 or not (os.path.basename(toks[i - 1]) == "near") or i + 1 >= len(toks):
        return False  # e.g. a different "train" word: let the full parser decide
    return toks[i + 1], [_PLACEHOLDER.sub(_dummy, t) if "${" in t else t for t in toks[i + 2:]]


def validate_jobs(jobs: Iterable[JobSpec], spec_label: str, *, validator: Validator | None = None,
                  skip_stages: Iterable[tuple[str, str]] = ()) -> ValidationReport:
    """Check every trainer job's settings; ConfigError names the spec file, the job (id and grid
    point) and the override or key.

    ``skip_stages``: (job_id, reason) pairs not to check (e.g. stages with ``validate: false``).
    Per job this costs a split of its command (shlex only for quoted commands) and a few cached
    lookups; hydra composes once per distinct shape, each distinct override value is typed once.
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
        call = _fast_call(job.command)
        if call is False:
            call = trainer_call(job.command)
        if call is None:
            report.not_trainer += 1
            continue
        kind, overrides = call
        if not has_config:
            raise ConfigError(f"{spec_label}: job {job.job_id} ({job.label}): runs near's trainer "
                              f"but {cfg_dir}/config.yaml does not exist (set the spec's workdir to the repo)")
        task = _task_of(overrides)
        if task and task.startswith(ISAACGYM_TASK_PREFIX) and not (cfg_dir / "task" / f"{task}.yaml").exists():
            report.skipped[_isaac_note(cfg_dir)] = report.skipped.get(_isaac_note(cfg_dir), 0) + 1
            continue
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


#: where the environments look for motion files, under cfg/
MOTION_DIRS = {"Humanoid": ("task", "motions", "humanoid"), "motion": ("task", "motions")}


def motion_notes(motions: dict[tuple[str, str, str], int]) -> list[str]:
    """Which motions the jobs train on: synthetic clips (named, no file: not motion capture) and
    files, with those not found here (their jobs stop with an error naming the file)."""
    synthetic: dict[str, int] = {}
    files: dict[str, int] = {}
    missing: dict[str, list[str]] = {}
    for (cfg_dir, env_type, file), n in motions.items():
        if not file.endswith((".npy", ".yaml", ".yml")):
            synthetic[file] = synthetic.get(file, 0) + n
            continue
        files[file] = files.get(file, 0) + n
        folder = Path(cfg_dir).joinpath(*MOTION_DIRS.get(env_type, ("task", "motions")))
        path = Path(file).expanduser()
        if not any(c.is_file() for c in (Path(cfg_dir).parent / path, folder / path, folder / path.name)):
            missing.setdefault(str(folder), []).append(file)
    notes = []
    if synthetic or files:
        notes.append("synthetic motions (near's generated clips, not motion capture): "
                     + (", ".join(f"{m} ({n} job(s))" for m, n in synthetic.items()) or "none"))
    if files:
        notes.append("motion files: " + ", ".join(f"{m} ({n} job(s))" for m, n in files.items()))
    for folder, names in missing.items():
        notes.append(f"motion files not found (looked in the workdir and {folder}): {', '.join(names)}; "
                     "their jobs stop with an error naming the file until it is added")
    return notes


def _isaac_note(cfg_dir: Path) -> str:
    return (f"Isaac Gym tasks ({ISAACGYM_TASK_PREFIX}*) have no config in {cfg_dir}/task "
            "(Isaac Gym is not installed)")


def _config_error(spec_label: str, job: JobSpec, cfg_dir: Path, problem: str) -> ConfigError:
    if isinstance(problem, str) and problem.startswith(("unknown setting", "ill-typed setting", "setting ")):
        return ConfigError(f"{spec_label}: job {job.job_id} ({job.label}): {problem}")
    return ConfigError(f"{spec_label}: job {job.job_id} ({job.label}), stage {job.stage!r}: "
                       f"does not compose with {cfg_dir}: {problem}")
