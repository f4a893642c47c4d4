"""The configuration error every config check raises (its own module: config.py and runs.py both
use it, and runs.py must not import config.py, which imports runs.py)."""


class ConfigError(ValueError):
    """A configuration problem; the message names every offending key."""
