"""Hard-link installed distributions and everything they require into another venv.

Used by dev/check_wheel.sh: the wheel check needs a fresh venv holding only the prerequisites the
README asks a user to install first (torch, torchvision, Detectron2). Installing them again costs
a 5.7 GB download; linking the files the development venv already holds costs seconds and gives
the same bytes. Only the listed distributions and their (marker-evaluated, extra-free)
requirements are linked, with their metadata, so `pip check` and the wheel's own dependency
resolution in the new venv see exactly that set and nothing of this package or its extras.

Usage: python dev/clone_distributions.py TARGET_VENV DIST [DIST ...]   (run with the source venv)
"""
from __future__ import annotations

import importlib.metadata as md
import os
import re
import shutil
import sys
import sysconfig
from typing import Dict, List, Tuple

try:
    from packaging.requirements import Requirement
except ImportError:  # pip always vendors it
    from pip._vendor.packaging.requirements import Requirement


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(names: List[str]) -> Dict[str, md.Distribution]:
    """The distributions ``names`` and their installed requirements, with the extras the
    requirements ask for (``cuda-toolkit[cublas,...]``), markers evaluated."""
    installed = {_key(d.metadata["Name"]): d for d in md.distributions()}
    out: Dict[str, md.Distribution] = {}
    done: set = set()
    todo: List[Tuple[str, str]] = [(_key(n), "") for n in names]
    while todo:
        key, extra = todo.pop()
        if (key, extra) in done:
            continue
        done.add((key, extra))
        if key not in installed:
            raise SystemExit(f"clone_distributions: {key} is required but not installed in {sys.prefix}")
        dist = out[key] = installed[key]
        for spec in dist.requires or []:
            req = Requirement(spec)
            base = req.marker is None or req.marker.evaluate({"extra": ""})
            # pass "": the base requirements; pass for an extra: only what that extra adds
            wanted = base if not extra else (not base and req.marker.evaluate({"extra": extra}))
            if wanted:
                todo.append((_key(req.name), ""))
                todo.extend((_key(req.name), e) for e in req.extras)
    return out


def link_into(dists: Dict[str, md.Distribution], target_site: str) -> int:
    """Hard-link (copy across file systems) every file of ``dists`` that lives in site-packages."""
    count = 0
    for dist in dists.values():
        root = os.path.realpath(str(dist.locate_file("")))
        for f in dist.files or []:
            src = os.path.realpath(str(dist.locate_file(f)))
            rel = os.path.relpath(src, root)
            if rel.startswith("..") or not os.path.isfile(src):
                continue  # scripts in bin/ and the like: not needed to import
            dst = os.path.join(target_site, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if os.path.exists(dst):
                continue
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
            count += 1
    return count


def main(argv: List[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    target, names = argv[0], argv[1:]
    site = sysconfig.get_path("purelib", vars={"base": target, "platbase": target})
    if not os.path.isdir(site):
        print(f"clone_distributions: {site} does not exist (create the venv first)", file=sys.stderr)
        return 2
    dists = closure(names)
    n = link_into(dists, site)
    print(f"linked {n} files of {len(dists)} distributions into {site}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
