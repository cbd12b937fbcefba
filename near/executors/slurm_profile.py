"""Cluster profiles: what a SLURM cluster needs to run near's jobs (``slurm/*.yaml``).

A profile holds the sbatch settings of one cluster (partition, account, qos, time limit, cpus,
gpus, memory), the setup lines that run before each job (module loads, conda/venv activation,
environment variables), extra sbatch parameters and the array throttle. Loading validates every
key: an unknown key or a wrong type is an error that names the file and the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from near.errors import ConfigError

_TIME = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$")


def parse_time_min(value: Any, where: str = "time") -> int:
    """SLURM time limit -> minutes. Accepts minutes (int) or "MM:SS", "HH:MM:SS", "D-HH:MM:SS"."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected minutes or HH:MM:SS, got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ConfigError(f"{where}: time limit must be positive, got {value}")
        return value
    if isinstance(value, str):
        s = value.strip()
        if s.isdigit():
            return parse_time_min(int(s), where)
        m = _TIME.match(s)
        if m:
            days, hours, mins, secs = (int(g) if g else 0 for g in m.groups())
            if m.group(2) is None:  # "MM:SS"
                hours, mins, secs = 0, mins, secs
            total_s = ((days * 24 + hours) * 60 + mins) * 60 + secs
            return max(1, -(-total_s // 60))
    raise ConfigError(f"{where}: expected minutes or [D-]HH:MM:SS, got {value!r}")


@dataclass
class SlurmProfile:
    """One cluster's settings. ``None`` means: leave it to the cluster's defaults."""

    name: str = "cluster"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: int = 60                      # minutes (YAML may say "01:00:00")
    cpus: int = 1                       # cpus per task
    gpus: int = 0                       # gpus per node (one task per job)
    mem: str | None = None              # e.g. "8G"; mem_per_cpu for per-cpu memory
    mem_per_cpu: str | None = None
    setup: list[str] = field(default_factory=list)        # shell lines before the job runs
    sbatch: dict[str, Any] = field(default_factory=dict)  # extra sbatch parameters (name -> value)
    max_running: int = 256              # array throttle: tasks of one array running at once (%N)
    signal_delay_s: int = 120           # --signal=USR2@N: warning before the time limit
    checkpoint_margin_s: int | None = None  # own deadline before the limit (None: auto)
    max_requeues: int = 50              # time-outs one job may survive through requeue
    python: str | None = None           # interpreter on the cluster (default: this one)
    max_array_size: int | None = None   # lower the cluster's MaxArraySize (tasks per array)
    max_submit_jobs: int | None = None  # lower the cluster's MaxSubmitJobs (own jobs in the queue)
    source: str = ""                    # file the profile came from (set by load_profile)

    def margin_s(self, time_min: int) -> int:
        """Seconds before the time limit at which a job checkpoints and requeues itself.

        SLURM delivers --signal warnings with up to 60 s of jitter, so the job also keeps its own
        deadline: a quarter of the limit, at least 15 s and at most the signal delay.
        """
        if self.checkpoint_margin_s is not None:
            return self.checkpoint_margin_s
        return int(max(15, min(self.signal_delay_s, time_min * 60 // 4)))


_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "partition": (str,), "account": (str,), "qos": (str,), "time": (int, str),
    "cpus": (int,), "gpus": (int,), "mem": (str, int), "mem_per_cpu": (str, int), "setup": (list,),
    "sbatch": (dict,), "max_running": (int,), "signal_delay_s": (int,), "checkpoint_margin_s": (int,),
    "max_requeues": (int,), "python": (str,), "max_array_size": (int,), "max_submit_jobs": (int,),
}


def profile_from_dict(data: Any, source: str = "<profile>") -> SlurmProfile:
    """Validate a parsed profile mapping; errors name ``source`` and the offending key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a cluster profile must be a mapping of keys, got {type(data).__name__}")
    known = {f.name for f in fields(SlurmProfile)} - {"source"}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{source}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        if value is None:
            continue
        types = _TYPES[key]
        if not isinstance(value, types) or isinstance(value, bool):
            want = " or ".join(t.__name__ for t in types)
            raise ConfigError(f"{source}: key {key!r} must be {want}, got {value!r}")
        kwargs[key] = value
    if "time" in kwargs:
        kwargs["time"] = parse_time_min(kwargs["time"], f"{source}: key 'time'")
    for key in ("mem", "mem_per_cpu"):
        if key in kwargs:
            kwargs[key] = str(kwargs[key])
    for key in ("cpus", "max_running", "max_requeues", "max_array_size", "max_submit_jobs"):
        if key in kwargs and kwargs[key] < 1:
            raise ConfigError(f"{source}: key {key!r} must be >= 1, got {kwargs[key]}")
    if kwargs.get("gpus", 0) < 0:
        raise ConfigError(f"{source}: key 'gpus' must be >= 0")
    if "setup" in kwargs and not all(isinstance(x, str) for x in kwargs["setup"]):
        raise ConfigError(f"{source}: key 'setup' must be a list of shell lines (strings)")
    if "sbatch" in kwargs:
        for k in kwargs["sbatch"]:
            if not isinstance(k, str) or not re.fullmatch(r"[a-z][a-z0-9_-]*", k):
                raise ConfigError(f"{source}: sbatch parameter name {k!r} must look like 'mail-type'")
    return SlurmProfile(**kwargs, source=source)


def load_profile(path: str | Path) -> SlurmProfile:
    """Read and validate a profile YAML file."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such cluster profile")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML ({err})") from err
    prof = profile_from_dict(data, str(p))
    if "name" not in (data or {}):
        prof.name = p.stem
    return prof
