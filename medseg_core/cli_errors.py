"""One-line errors for every command-line entry point.

Each tool ends with ``run_cli(main)``. The toolkit's own errors (:class:`~medseg_core.errors.MedSegError`:
bad data, config, checkpoint, output path or options) are printed to stderr as

    error: <file>: <problem> (hint: <what to change>)

as the LAST line, after one ``error: <file>: <problem>`` line per further problem when several
were found at once, and the tool exits with status 2 (argparse's status for bad usage). Any
other exception is a bug and keeps its full traceback. ``--debug`` (anywhere on the command
line; removed before the tool parses its arguments) or ``MEDSEG_DEBUG=1`` prints the traceback
of the toolkit's errors too.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from typing import Callable, List, NoReturn, Optional

from .errors import MedSegError

__all__ = ["run_cli", "format_error", "debug_requested", "INPUT_ERROR_EXIT_CODE"]

INPUT_ERROR_EXIT_CODE = 2
DEBUG_FLAG = "--debug"


def debug_requested(argv: Optional[List[str]] = None) -> bool:
    """True when ``--debug`` is in ``argv`` (default ``sys.argv``, from which it is removed) or
    ``MEDSEG_DEBUG`` is set to a true value."""
    argv = sys.argv if argv is None else argv
    flag = DEBUG_FLAG in argv[1:]
    while DEBUG_FLAG in argv[1:]:
        argv.remove(DEBUG_FLAG)
    env = os.environ.get("MEDSEG_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    return flag or env


# PyTorch's DataLoader re-raises a worker's exception as the same type with the worker's whole
# traceback as its message; the original message is its last line, after "<module>.<Class>: ".
_WORKER_TRACEBACK = re.compile(r"Original Traceback", re.MULTILINE)


def _plain_message(exc: MedSegError) -> str:
    if not _WORKER_TRACEBACK.search(str(exc.message)):
        return exc.one_line()
    last = [line for line in str(exc.message).splitlines() if line.strip()][-1]
    last = re.sub(r"^[\w.]*Error:\s*", "", last.strip())
    return f"{last} (hint: {exc.hint})" if exc.hint else last


def format_error(exc: MedSegError) -> List[str]:
    """The stderr lines for one of the toolkit's errors (the summary last)."""
    lines = [f"error: {d}" for d in exc.details]
    lines.append(f"error: {_plain_message(exc)}")
    return lines


class _NoTracebackForInputErrors(logging.Filter):
    """Detectron2's training loop logs "Exception during training:" with the traceback before
    re-raising; for the toolkit's own errors the one line printed at exit is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], MedSegError):
            return False
        return True


def run_cli(main: Callable[[], Optional[int]]) -> NoReturn:
    """Run a tool's ``main()`` and exit with its status, printing the toolkit's errors as one line."""
    debug = debug_requested()
    if not debug:
        logging.getLogger("detectron2.engine.train_loop").addFilter(_NoTracebackForInputErrors())
    try:
        status = main()
    except MedSegError as e:
        sys.stdout.flush()
        if debug:
            traceback.print_exc()
        for line in format_error(e):
            print(line, file=sys.stderr)
        sys.stderr.flush()
        sys.exit(INPUT_ERROR_EXIT_CODE)
    sys.exit(status if isinstance(status, int) else 0)
