"""Exception types for bad user input. Each message names the offending file and the problem."""


class MedSegInputError(ValueError):
    """Bad user input (data set, annotation file, config)."""


class DatasetError(MedSegInputError):
    """A data set on disk is missing, corrupt or inconsistent."""


class ConfigError(MedSegInputError):
    """A config file cannot be loaded or names an unknown key."""


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint carries pickled objects outside the allowlist."""
