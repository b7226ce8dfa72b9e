"""Learning curves of a comparison: one row per (model, seed, curve point), and per model the
mean and spread over seeds at each point.

The points of a run are the trainer's curve evaluations (``train.curve`` of the run record, see
:mod:`medseg_core.engine.curves`) followed by the run's final evaluation on the test set, at the
end of training. Training minutes are on the protocol's clock, evaluations excluded.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence

from .metrics import NAN, TASKS, is_number
from ..atomic import atomic_write_text
from .reports import csv_text, num_text

__all__ = ["CurveSummary", "curve_rows", "summarize_curves", "write_curve_csv"]


def _points(run: Dict[str, Any]) -> List[Dict[str, Any]]:
    train = run.get("train") or {}
    pts = [p for p in train.get("curve", []) if isinstance(p, dict)]
    if pts and run.get("results") and "seconds_by_clock" in train:
        pts = pts + [{
            "point": max(p["point"] for p in pts) + 1, "iteration": train.get("iterations"),
            "images_seen": train.get("images_seen"), "seconds": train["seconds_by_clock"],
            "results": run["results"],
        }]
    return pts


def curve_rows(runs: Sequence[Dict[str, Any]], task: str, clock: str = "wall") -> List[Dict[str, Any]]:
    """Every curve point of every run: model, seed, point, iteration, images seen, epochs,
    training minutes and the task's metric columns."""
    cols = TASKS[task].metric_columns
    rows = []
    for r in sorted(runs, key=lambda r: (r["name"], r["seed"])):
        n_train = (r.get("train") or {}).get("n_train")
        for p in _points(r):
            sec = (p.get("seconds") or {}).get(clock, NAN)
            images = p.get("images_seen")
            row = {
                "model": r["name"], "seed": r["seed"], "point": p["point"], "iteration": p.get("iteration"),
                "images_seen": images,
                "epochs": images / n_train if is_number(images) and is_number(n_train) and n_train else NAN,
                "train_minutes": sec / 60.0 if is_number(sec) else NAN,
            }
            pseudo = {"results": p.get("results") or {}}
            row.update({c.key: c.read(pseudo) for c in cols})
            rows.append(row)
    return rows


@dataclass
class CurveSummary:
    name: str
    seeds: int
    points: List[int] = field(default_factory=list)
    minutes: List[float] = field(default_factory=list)
    mean: List[float] = field(default_factory=list)
    std: List[float] = field(default_factory=list)


def summarize_curves(rows: Sequence[Dict[str, Any]], task: str, order: Sequence[str]) -> List[CurveSummary]:
    """Per model (in ``order``) and point index: mean training minutes, mean and sample std of
    the primary metric over the seeds that reached that point."""
    primary = TASKS[task].primary
    out = []
    for name in order:
        mine = [r for r in rows if r["model"] == name]
        if not mine:
            continue
        s = CurveSummary(name, len({r["seed"] for r in mine}))
        for k in sorted({r["point"] for r in mine}):
            at = [r for r in mine if r["point"] == k]
            ys = [r[primary] for r in at if is_number(r[primary]) and math.isfinite(r[primary])]
            xs = [r["train_minutes"] for r in at if is_number(r["train_minutes"]) and math.isfinite(r["train_minutes"])]
            s.points.append(k)
            s.minutes.append(statistics.fmean(xs) if xs else NAN)
            s.mean.append(statistics.fmean(ys) if ys else NAN)
            s.std.append(statistics.stdev(ys) if len(ys) > 1 else NAN)
        out.append(s)
    return out


def write_curve_csv(rows: Sequence[Dict[str, Any]], task: str, path: str) -> None:
    keys = ["model", "seed", "point", "iteration", "images_seen", "epochs", "train_minutes"] + [
        c.key for c in TASKS[task].metric_columns]
    table = [keys] + [[r[k] if k in ("model", "seed", "point") else num_text(r[k]) if is_number(r[k]) else ""
                       for k in keys] for r in rows]
    atomic_write_text(path, csv_text(table))
