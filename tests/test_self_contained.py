"""The repository is self-contained: no file refers to files or folders outside it.

Someone who clones the repository or installs the wheel gets only what is in it, so a docstring,
config comment, README or script that points to background notes, to the papers folder or to an
absolute path on a developer's machine is a dead reference. Each fact must be written where it
is used (or in ``docs/``).

Flagged in every tracked text file:

* the words "design notes" / "notes §" and any path into the ``shared/`` folder beside the
  repository (``shared/notes``, ``shared/papers``, ``../shared/...``);
* absolute paths of a developer's machine (``/work/``, ``/home/``, ``/Users/``);
* relative paths (``../``...) that, resolved from the file's own folder, leave the repository.

One allowance: **data sets**. The public data sets are read from ``$MEDSEG_DATASETS`` and by
default from ``../shared/data`` beside the repository (``medseg_core/data/builtin.py``). A
``../shared/data`` reference is therefore allowed in the code that reads data sets
(``medseg_core/data/``), in the tests that use them (``tests/``: the ``shared_data`` fixture and
the real-data tests), and in documentation only on a line that also names ``MEDSEG_DATASETS``,
i.e. where it documents that default and how to change it.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
SELF = Path(__file__).resolve()

_SHARED = "shared"
_DATA_REF = "../" + _SHARED + "/data"
# Patterns are assembled from pieces so that this file does not match itself by accident.
_FORBIDDEN = [
    (re.compile(r"design\s+" + "notes", re.I), "reference to external design notes"),
    (re.compile(r"\bnotes\s*" + "§"), "reference to a section of external notes"),
    (re.compile(r"(?<![\w.-])" + _SHARED + r"/(notes|papers)\b"), "path into the shared folder"),
    (re.compile(r"\.\./(\.\./)*" + _SHARED + r"/(?!data\b)"), "path into the shared folder"),
    (re.compile(r"(?<![\w.$])/(work|home|Users)/[\w.-]"), "absolute path of a developer machine"),
]
_DATA = re.compile(r"(\.\./)+" + _SHARED + r"/data\b")
_RELATIVE = re.compile(r"(?<![\w./-])((?:\.\./)+[\w.\-/]*)")
_TEXT_SUFFIXES = {
    ".py", ".md", ".yaml", ".yml", ".sh", ".txt", ".cfg", ".toml", ".ini", ".cff", ".json", "",
}


def _tracked_files() -> List[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
            text=True, check=True,
        ).stdout.split("\n")
        files = [REPO / f for f in out if f]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. an sdist)
        files = [p for p in REPO.rglob("*") if p.is_file() and ".venv" not in p.parts]
    return [f for f in files if f.is_file() and f.suffix in _TEXT_SUFFIXES and f != SELF]


def _data_reference_allowed(rel_path: str, line: str) -> bool:
    if rel_path.startswith(("medseg_core/data/", "tests/")):
        return True
    return "MEDSEG_DATASETS" in line


def find_external_references(text: str, rel_path: str) -> Iterator[Tuple[int, str, str]]:
    """Yield ``(line number, reason, line)`` for every reference in ``text`` (the content of the
    repository file ``rel_path``) to something outside the repository."""
    folder = (REPO / rel_path).parent
    for lineno, line in enumerate(text.splitlines(), 1):
        for pattern, reason in _FORBIDDEN:
            if pattern.search(line):
                yield lineno, reason, line
        if _DATA.search(line) and not _data_reference_allowed(rel_path, line):
            yield lineno, "data-set path outside the code that reads data sets", line
        for m in _RELATIVE.finditer(line):
            target = m.group(1)
            if _DATA.match(target):
                continue  # handled (with its allowance) above
            resolved = Path(os.path.normpath(folder / target))
            if REPO not in resolved.parents and resolved != REPO:
                yield lineno, f"relative path {target!r} leaves the repository", line


def test_scanner_flags_what_it_should():
    """The scanner itself: each kind of external reference is caught, allowed ones are not."""
    bad = {
        "see the design " + "notes (Sec. 2)": "projects/X/x.py",
        "as in notes " + "§3.2": "projects/X/x.py",
        "read ../" + _SHARED + "/notes/a.md": "README.md",
        "recipe of ../../" + _SHARED + "/papers/b.txt": "dev/x.sh",
        "python /" + "work/main/tools/x.py": "Makefile",
        "link [a](../../../outside/file.md)": "projects/LMSFA/README.md",
        "results on " + _DATA_REF + " splits": "README.md",
        "ROOT = '" + _DATA_REF + "'": "tools/x.py",
    }
    for text, path in bad.items():
        assert list(find_external_references(text, path)), (text, path)
    good = {
        "see [docs](../../docs/lmsfa.md)": "projects/LMSFA/README.md",
        "root: $MEDSEG_DATASETS, default " + _DATA_REF: "README.md",
        "default root " + _DATA_REF: "medseg_core/data/builtin.py",
        "skips without " + _DATA_REF: "tests/conftest.py",
        "x = a / b  # ratio, not a path": "medseg_core/x.py",
        "tmp = '/tmp/x'": "medseg_core/x.py",
    }
    for text, path in good.items():
        assert not list(find_external_references(text, path)), (text, path)


def test_no_file_refers_outside_the_repository():
    problems = []
    for f in _tracked_files():
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        rel = f.relative_to(REPO).as_posix()
        for lineno, reason, line in find_external_references(text, rel):
            problems.append(f"{rel}:{lineno}: {reason}: {line.strip()[:120]}")
    if problems:
        pytest.fail("references to files outside the repository:\n" + "\n".join(problems))
