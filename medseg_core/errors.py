"""Exception types for bad user input, and the one-line form the command-line tools print.

Every message starts with the file the problem is in (the user's data, config or checkpoint
file; for a bad command-line value, the option) and says what is wrong with it:
``"<file>: <problem>"``. An optional ``hint`` says what to change. Several problems found at
once (e.g. every corrupt image of a data set) travel in ``details``, one ``"<file>: <problem>"``
line each; the message itself then summarises them.

The command-line tools print these errors as ``error: <message>`` without a traceback (see
:mod:`medseg_core.cli_errors`); anything else is a bug and keeps its traceback.

:func:`here` prefixes a message with the source file that raises it, for checks whose fault is
in the toolkit's own code or in a value with no user file to name.
"""
from __future__ import annotations

import os
import sys
from typing import Iterable, Optional

__all__ = [
    "MedSegError", "MedSegInputError", "DatasetError", "ConfigError", "UsageError", "InputNotFoundError", "OutputPathError",
    "CheckpointError", "CheckpointNotFoundError", "CheckpointMismatchError", "UnsafeCheckpointError",
    "here",
]


class MedSegError(Exception):
    """An error caused by the user's input: printed by the tools as one ``error: ...`` line.

    Args:
        message: ``"<file>: <problem>"``.
        hint: what to change, printed after the message.
        details: one ``"<file>: <problem>"`` line per problem when several were found at once.
    """

    def __init__(self, message: str, hint: Optional[str] = None, details: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = list(details)

    def one_line(self) -> str:
        """The message and hint as one line (newlines of a wrapped message removed)."""
        text = " ".join(str(self.message).split("\n")).strip()
        return f"{text} (hint: {self.hint})" if self.hint else text


class MedSegInputError(MedSegError, ValueError):
    """Bad user input (data set, annotation file, config)."""


class DatasetError(MedSegInputError):
    """A data set on disk is missing, corrupt or inconsistent."""


class ConfigError(MedSegInputError):
    """A config file cannot be loaded, names an unknown key or holds a value outside its range."""


class UsageError(MedSegInputError):
    """Command-line options that cannot be combined or are missing."""


class InputNotFoundError(MedSegInputError, FileNotFoundError):
    """An input named on the command line (image, glob, video) does not exist."""


class OutputPathError(MedSegInputError):
    """An output would overwrite an input or another output."""


class CheckpointError(MedSegError, RuntimeError):
    """A checkpoint file is missing, corrupt, unsafe or does not fit the model."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's tensors do not match the model built from the config."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint carries pickled objects outside the allowlist."""


def _source_label(filename: str, module: str) -> str:
    """``lmsfa/heads/base.py`` for a package module, ``tools/export.py`` for a script of the
    repository, else the file's base name."""
    if module and module != "__main__":
        parts = module.split(".")
        if os.path.basename(filename) == "__init__.py":
            parts.append("__init__")
        return "/".join(parts) + ".py"
    path = os.path.abspath(filename)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if path.startswith(repo + os.sep):
        return os.path.relpath(path, repo).replace(os.sep, "/")
    return os.path.basename(path)


def here(message: str = "", depth: int = 1) -> str:
    """``message`` prefixed with the source file of the caller (``depth`` frames up), e.g.
    ``here() + "unknown head 'X'"`` gives ``"lmsfa/heads/base.py: unknown head 'X'"``: the prefix
    follows the code when it moves or is renamed, instead of a hard-coded path going stale."""
    frame = sys._getframe(depth)
    return f"{_source_label(frame.f_code.co_filename, frame.f_globals.get('__name__', ''))}: {message}"
