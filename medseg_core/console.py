"""Console scripts of the installed package (``medseg-train``, ``medseg-demo``, ...).

The command-line tools are the files of the repository's ``tools/`` and ``demo/`` folders. A
wheel carries copies of them (and of ``configs/``) inside ``medseg_core/_bundled/``, written by
``setup.py`` at build time; in a source checkout they are read where they are. Each console
script runs its file exactly as ``python tools/<name>.py`` would, so there is one implementation
of every tool, and the scripts also work from a folder that is not a checkout.

    medseg-train --config-file "$(medseg-config quick_schedules/lmsfa_instant_test.yaml)"
"""
from __future__ import annotations

import os
import runpy
import sys
from typing import Callable, Dict, Optional

from .extras import MissingExtraError

__all__ = ["bundled_path", "config_file"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_BUNDLED = os.path.join(_PACKAGE_DIR, "_bundled")
_CHECKOUT = os.path.dirname(_PACKAGE_DIR)


def bundled_path(relative: str) -> str:
    """Path of ``tools/...``, ``demo/...`` or ``configs/...``: the wheel's copy when installed,
    else the checkout's file. Raises FileNotFoundError naming both places."""
    for root in (_BUNDLED, _CHECKOUT):
        path = os.path.join(root, relative)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"{relative}: not in {_BUNDLED} nor in {_CHECKOUT}")


def config_file(name: str) -> str:
    """Path of a shipped config, e.g. ``config_file("quick_schedules/lmsfa_instant_test.yaml")``."""
    return bundled_path(os.path.join("configs", name))


def _run(relative: str) -> Callable[[], int]:
    def main() -> int:
        path = bundled_path(relative)
        sys.argv[0] = path
        try:
            runpy.run_path(path, run_name="__main__")
        except MissingExtraError as e:  # an optional package is missing: one line, no traceback
            print(f"error: {e}", file=sys.stderr)
            return 2
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return 0

    main.__name__ = os.path.splitext(os.path.basename(relative))[0]
    return main


train = _run("tools/train_net.py")
demo = _run("demo/demo.py")
model_card = _run("tools/model_card.py")
compare = _run("tools/compare.py")
export = _run("tools/export.py")
benchmark = _run("tools/benchmark.py")
quickstart = _run("tools/quickstart.py")


def print_config_path(argv: Optional[list] = None) -> int:
    """``medseg-config NAME``: print the path of a shipped config (for ``--config-file``)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: medseg-config <folder>/<file>.yaml  (e.g. quick_schedules/lmsfa_instant_test.yaml)",
              file=sys.stderr)
        return 2
    try:
        print(config_file(argv[0]))
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


CONSOLE_SCRIPTS: Dict[str, str] = {
    "medseg-train": "train",
    "medseg-demo": "demo",
    "medseg-model-card": "model_card",
    "medseg-compare": "compare",
    "medseg-export": "export",
    "medseg-benchmark": "benchmark",
    "medseg-quickstart": "quickstart",
    "medseg-config": "print_config_path",
}
