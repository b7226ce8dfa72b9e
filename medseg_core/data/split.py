"""Deterministic, stratified train/val/test splitting of a COCO data set (8:1:1 by default).

LMSF-A's PELD protocol is "a stratified split that preserves the relative frequency of all four
classes", 8:1:1. A frame holds several classes, so this is multi-label stratification; we use
iterative stratification (Sechidis, Tsoumakas & Vlahavas, ECML-PKDD 2011): take the label with
the fewest unassigned examples, give each of its examples to the split that still needs that
label most (ties: the split that needs the most examples overall, then the earlier split), and
repeat. Examples without any label are spread by the same rule at the end.

Determinism: the order of examples inside a label is fixed by ``sha1(seed + unit id)``, so the
same input and seed always give the same split, independently of file order or platform.

``group_key`` keeps all images of a group together (e.g. ``"patient_id"`` or ``"video_id"``
on the COCO image entries): the units of stratification are then groups, whose label counts are
the sums over their images. Use it whenever several frames come from one patient or video, or
the test score leaks.
"""
from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..atomic import atomic_write_json
from ..errors import DatasetError

__all__ = ["stratified_split", "split_coco_file"]


def _key(seed: int, unit: str) -> str:
    return hashlib.sha1(f"{seed}:{unit}".encode()).hexdigest()


def stratified_split(
    unit_labels: Dict[str, Dict[int, int]],
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> List[List[str]]:
    """Split units (images or groups) given their per-label counts.

    Args:
        unit_labels: unit id -> {label: count}; an empty dict is an unlabelled unit.
        ratios: fraction per split (normalised to sum 1).
    Returns:
        one sorted list of unit ids per split.
    """
    if not unit_labels:
        raise DatasetError("cannot split an empty data set")
    r = np.asarray(ratios, dtype=np.float64)
    if (r < 0).any() or r.sum() <= 0:
        raise ValueError(f"bad split ratios {ratios}")
    r = r / r.sum()
    units = sorted(unit_labels, key=lambda u: _key(seed, u))
    labels = sorted({lab for d in unit_labels.values() for lab in d})
    # Desired number of units per split and, per label, desired number of label occurrences.
    need_units = r * len(units)
    need_label = {lab: r * sum(unit_labels[u].get(lab, 0) for u in units) for lab in labels}
    assign: Dict[str, int] = {}
    remaining = {lab: [u for u in units if unit_labels[u].get(lab, 0) > 0] for lab in labels}

    def pick(lab: Optional[int]) -> int:
        best, best_key = 0, None
        for s in range(len(r)):
            if r[s] == 0:
                continue
            k = (need_label[lab][s] if lab is not None else 0.0, need_units[s], -s)
            if best_key is None or k > best_key:
                best, best_key = s, k
        return best

    while True:
        open_labels = [lab for lab in labels if any(u not in assign for u in remaining[lab])]
        if not open_labels:
            break
        lab = min(open_labels, key=lambda la: (sum(u not in assign for u in remaining[la]), la))
        for u in remaining[lab]:
            if u in assign:
                continue
            s = pick(lab)
            assign[u] = s
            need_units[s] -= 1
            for la, cnt in unit_labels[u].items():
                need_label[la][s] -= cnt
    for u in units:
        if u not in assign:
            s = pick(None)
            assign[u] = s
            need_units[s] -= 1
    out: List[List[str]] = [[] for _ in r]
    for u, s in assign.items():
        out[s].append(u)
    return [sorted(x) for x in out]


def split_coco_file(
    json_file: str,
    out_dir: str,
    names: Sequence[str] = ("train", "val", "test"),
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    group_key: Optional[str] = None,
) -> Dict[str, str]:
    """Write ``instances_<split>.json`` per split into ``out_dir``; returns split -> path."""
    from .validation import read_json, validate_coco_dict

    if len(names) != len(ratios):
        raise ValueError("names and ratios must have the same length")
    data = read_json(json_file)
    validate_coco_dict(data, json_file)
    img_unit = {}
    for im in data["images"]:
        if group_key is not None and group_key not in im:
            raise DatasetError(f"{json_file}: image {im['file_name']} has no '{group_key}' for grouping")
        img_unit[im["id"]] = str(im[group_key]) if group_key else f"img{im['id']}"
    unit_labels: Dict[str, Dict[int, int]] = {u: {} for u in img_unit.values()}
    for a in data["annotations"]:
        d = unit_labels[img_unit[a["image_id"]]]
        d[a["category_id"]] = d.get(a["category_id"], 0) + 1
    splits = stratified_split(unit_labels, ratios, seed)
    unit_to_split = {u: names[i] for i, us in enumerate(splits) for u in us}
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    by_split_imgs = defaultdict(set)
    for im in data["images"]:
        by_split_imgs[unit_to_split[img_unit[im["id"]]]].add(im["id"])
    for name in names:
        ids = by_split_imgs[name]
        sub = {k: v for k, v in data.items() if k not in ("images", "annotations")}
        sub["images"] = [im for im in data["images"] if im["id"] in ids]
        sub["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
        path = os.path.join(out_dir, f"instances_{name}.json")
        atomic_write_json(path, sub)
        paths[name] = path
    return paths
