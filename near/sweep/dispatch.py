"""The last step from template to command, at dispatch: near's dispatch placeholders
(``${run_dir}``, ``${job_id}``, ``${exp_dir}``, ``${<ref>.run_dir}``, ``${<ref>.job_id}``) become
the job's paths, each quoted for the place it stands in, as every value is at expansion
(:mod:`near.sweep.shell`): an experiment root with blanks, quotes or ``$(...)`` in its name
reaches the command as exactly its bytes. A run dir is never followed out of its experiment.
"""

from __future__ import annotations

import os
import re

from near.errors import TableError
from near.sweep import shell

_PLACEHOLDER = shell.PLACEHOLDER
_VALUE_REF = re.compile(r"__near_v[0-9]+")  # variables expansion set for values inside ${...}
_PATH_VAR = "__near_"  # variables dispatch sets for paths inside ${...}


def run_dir_for(exp_dir: str | os.PathLike, job_id: str) -> str:
    """The run directory of a job: ``<exp_dir>/runs/<job_id>`` (stable across attempts)."""
    return os.path.join(os.fspath(exp_dir), "runs", job_id)


def leads_elsewhere(path: str | os.PathLike) -> str | None:
    """Where ``path`` really leads when that is not its own entry in its parent folder (it is, or
    lies below, a link out of it); None when it is where it says. A run dir that leads elsewhere
    would have its job write somewhere its table does not say."""
    path = os.fspath(path)
    real = os.path.realpath(path)
    here = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    return None if real == here else real


def checked_run_dir(exp_dir: str, job_id: str) -> str:
    """:func:`run_dir_for`, refused (TableError) when it leads out of the experiment
    (:func:`leads_elsewhere`)."""
    path = run_dir_for(exp_dir, job_id)
    real = leads_elsewhere(path)
    if real is not None:
        raise TableError(f"job {job_id}: its run dir {path} leads to {real}, out of the experiment "
                         f"{exp_dir}; near does not write through it (remove the link)")
    return path


def resolve_command(template: str, job_id: str, exp_dir: str | os.PathLike, deps: dict[str, str]) -> str:
    """The command of a job: ``template`` with its dispatch placeholders substituted, each path
    quoted for where it stands (inside bash's own ``${...}`` it is read from a variable set at
    the top); ``$${`` yields a literal ``${``. An unknown placeholder, or one where no value may
    stand (a table written before near refused such templates), raises TableError."""
    exp_dir = os.fspath(exp_dir)
    found = [m for m in _PLACEHOLDER.finditer(template) if m.group(0) != "$${"]
    places = shell.contexts(template, {m.start() for m in found}) if found else {}
    assigns: dict[str, str] = {}

    def sub(m: re.Match) -> str:
        if m.group(0) == "$${":
            return "${"
        name, attr = m.group(1), m.group(2)
        if attr is None and _VALUE_REF.fullmatch(name):
            return m.group(0)
        value = _lookup(name, attr, job_id, exp_dir, deps)
        if value is None:
            raise TableError(f"job {job_id}: unresolvable placeholder {m.group(0)} in command {template!r}")
        place = places[m.start()]
        if place in (shell.PARAM, shell.PARAM_DQ):
            var = _PATH_VAR + name + (f"_{attr}" if attr else "")
            assigns[var] = value
            return shell.variable_ref(var, place)
        if place == shell.ESCAPED or shell.refused(place):
            raise TableError(f"job {job_id}: {m.group(0)} stands where no path may stand "
                             f"({shell.refused(place) or 'after a backslash'}) in command {template!r}")
        return shell.quote(value, place, final=True)

    out = _PLACEHOLDER.sub(sub, template)
    if assigns:
        out = "".join(f"{k}={shell.quote(v, final=True)}; " for k, v in assigns.items()) + out
    return out


def _lookup(name: str, attr: str | None, job_id: str, exp_dir: str, deps: dict[str, str]) -> str | None:
    if attr is None:
        if name == "run_dir":
            return checked_run_dir(exp_dir, job_id)
        if name == "job_id":
            return job_id
        if name == "exp_dir":
            return exp_dir
    elif name in deps:
        if attr == "run_dir":
            return checked_run_dir(exp_dir, deps[name])
        if attr == "job_id":
            return deps[name]
    return None


def resolve_for_display(template: str, job_id: str, exp_dir: str, deps: dict[str, str]) -> str:
    """:func:`resolve_command` for listing many jobs (``to_frame``): plain string replacement when
    the paths need no quoting and no other ``${`` is left (the same text, without a scan or a
    look at the file system)."""
    if shell.quote(exp_dir, final=True) == exp_dir:
        out = template.replace("${run_dir}", run_dir_for(exp_dir, job_id))
        for ref, dep in deps.items():
            out = out.replace("${" + ref + ".run_dir}", run_dir_for(exp_dir, dep))
        if "${" not in out and "$$" not in out:
            return out
    return resolve_command(template, job_id, exp_dir, deps)
