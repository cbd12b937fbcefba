"""User-facing errors. The CLI prints these without a traceback and exits with status 2."""


class NearError(Exception):
    """Base class for errors caused by the user's input (spec, table, config, paths)."""


class SpecError(NearError):
    """A sweep spec is malformed; the message names the file and the key."""


class ConfigError(NearError):
    """An override does not compose with the hydra config tree in cfg/."""


class TableError(NearError):
    """The job table is missing, corrupt, foreign, or asked for an impossible transition."""
