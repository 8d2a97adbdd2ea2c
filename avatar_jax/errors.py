"""Error types whose message is shown to the user as one line (the CLI prints them, no traceback)."""


class AvatarJaxError(Exception):
    """Base class: a problem with the user's input or environment, explained in the message."""


class ConfigError(AvatarJaxError, ValueError):
    """A config file, key, value or cross-field rule is wrong."""


class InputError(AvatarJaxError, ValueError):
    """An input file or array is unusable (corrupt, wrong format, empty, out of range)."""


class NotBuiltError(AvatarJaxError):
    """A command or feature that is planned but not implemented yet."""


class TrainingError(AvatarJaxError):
    """A training run cannot go on (e.g. too many non-finite steps in a row); the message says why."""
