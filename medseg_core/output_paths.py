"""Output file names decided before any work, so that nothing is lost or overwritten.

:func:`plan_output_paths` gives one distinct output per input: ``<folder>/<stem><ext>``, with
``_2``, ``_3``, ... appended when two inputs share a stem (``a/x.png`` and ``b/x.jpg``) or when a
file of that name already exists (unless ``overwrite``). An output that would replace one of the
inputs is refused (:class:`~medseg_core.errors.OutputPathError`), ``overwrite`` or not.
"""
from __future__ import annotations

import os
from typing import List, Sequence

from .errors import OutputPathError

__all__ = ["plan_output_paths", "is_file_target"]


def is_file_target(output: str, exts: Sequence[str]) -> bool:
    """True when ``output`` names a file (has one of ``exts``) rather than a folder."""
    return os.path.splitext(output)[1].lower() in tuple(e.lower() for e in exts) and not os.path.isdir(output)


def _key(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


def plan_output_paths(inputs: Sequence[str], output: str, ext: str = ".png", overwrite: bool = False,
                      file_exts: Sequence[str] = (), suffix: str = "") -> List[str]:
    """One output path per input (same order), all distinct, none of them an input.

    Args:
        output: a folder, or (for a single input) a file whose extension is in ``file_exts``.
        ext: extension of outputs written into a folder.
        overwrite: replace existing files (never inputs); otherwise they are kept and the new
            output gets the next free ``_<n>`` suffix.
        suffix: appended to each stem (e.g. ``"_gt_vs_pred"``).
    """
    input_keys = {_key(p): p for p in inputs}
    if len(inputs) == 1 and file_exts and is_file_target(output, file_exts):
        candidates = [output]
    else:
        candidates = [os.path.join(output, os.path.splitext(os.path.basename(p))[0] + suffix + ext) for p in inputs]
    taken = set()
    out = []
    for src, cand in zip(inputs, candidates):
        if _key(cand) in input_keys:
            raise OutputPathError(
                f"{cand}: the output for {src} would overwrite the input file {input_keys[_key(cand)]}",
                hint="choose an output folder (or file) that holds no input",
            )
        stem, e = os.path.splitext(cand)
        path, n = cand, 1
        while _key(path) in taken or _key(path) in input_keys or (os.path.exists(path) and not overwrite):
            n += 1
            path = f"{stem}_{n}{e}"
        taken.add(_key(path))
        out.append(path)
    return out
