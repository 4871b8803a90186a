"""The one exception type for input that cannot work; its message names the problem and the fix.

The command line prints such errors as one line (no traceback) and exits with status 2.
"""


class ConfigError(ValueError):
    """A config, data path or argument that cannot work."""


class TrainingStopped(RuntimeError):
    """A run that stopped itself because going on would waste it (a non-finite loss).

    The command line prints it as one line and exits with status 1.
    """
