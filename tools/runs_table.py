#!/usr/bin/env python
"""Summarise finished training runs by the evaluations they logged: one Markdown table.

Each run is an OUTPUT_DIR of tools/train_net.py (its ``metrics.json``). Runs are grouped into
rows with ``NAME=DIR[,DIR...]`` (one DIR per seed); a row reports the metric at its last
evaluation (or at ``--iteration``) as mean ± std over its runs, the one-sided Welch p-value
against the reference row (is the row better than the reference?), the iteration the values come
from, and optionally per-class AP columns. ``--curves`` adds the metric at every evaluation.

  python tools/runs_table.py --metric segm/AP --per-class \\
      "YOLOv8 baseline=out/t3_1/seed0,out/t3_1/seed1" "LMSF-A=out/t3_8/seed0,out/t3_8/seed1"
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from medseg_core.errors import DatasetError, InputNotFoundError


def read_evaluations(run_dir: str) -> Dict[int, Dict[str, float]]:
    """iteration -> evaluation metrics (rows of metrics.json holding any '<task>/AP'-like key).

    A run resumed from a checkpoint logs some evaluations twice; the later line wins."""
    path = os.path.join(run_dir, "metrics.json")
    if not os.path.isfile(path):
        raise InputNotFoundError(f"{path}: no metrics.json (not a training output directory?)")
    evals: Dict[int, Dict[str, float]] = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{n}: not JSON ({e})") from e
            metrics = {k: float(v) for k, v in row.items() if "/" in k and isinstance(v, (int, float))
                       and k.split("/", 1)[0] in ("segm", "bbox", "sem_seg", "volumetric")}
            if metrics and "iteration" in row:
                evals.setdefault(int(row["iteration"]), {}).update(metrics)
    return evals


def value_at(evals: Dict[int, Dict[str, float]], key: str, iteration: Optional[int]) -> Tuple[int, Dict[str, float]]:
    """(iteration, metrics) of the last evaluation holding ``key`` (at or before ``iteration``)."""
    its = sorted(i for i, m in evals.items() if key in m and (iteration is None or i <= iteration))
    if not its:
        raise KeyError(key)
    return its[-1], evals[its[-1]]


def _mean_std(values: Sequence[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def build_table(rows: List[Tuple[str, List[str]]], metric: str, iteration: Optional[int],
                per_class: bool, extra: Sequence[str], reference: Optional[str]) -> str:
    from medseg_core.comparison import welch_one_sided_p

    task = metric.split("/", 1)[0]
    data = []
    for name, dirs in rows:
        picked = []
        for d in dirs:
            evals = read_evaluations(d)
            try:
                picked.append(value_at(evals, metric, iteration))
            except KeyError:
                raise SystemExit(f"error: {d}/metrics.json: no evaluation with {metric!r}") from None
        data.append((name, dirs, picked))
    classes = sorted({k.split("-", 1)[1] for _, _, p in data for _, m in p for k in m
                      if k.startswith(f"{task}/AP-")}) if per_class else []
    ref = reference or data[0][0]
    ref_values = next([m[metric] for _, m in p] for n, _, p in data if n == ref)
    head = ["model", "runs", "iteration", metric] + list(extra) + ["p (> " + ref + ")"] + [f"AP {c}" for c in classes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, dirs, picked in data:
        vals = [m[metric] for _, m in picked]
        p = float("nan") if name == ref else welch_one_sided_p(ref_values, vals)
        its = sorted({i for i, _ in picked})
        cells = [name, str(len(dirs)), "/".join(str(i + 1) for i in its), _mean_std(vals)]
        cells += [_mean_std([m[k] for _, m in picked if k in m]) for k in extra]
        cells.append("-" if math.isnan(p) else f"{p:.3f}")
        cells += [_mean_std([m.get(f"{task}/AP-{c}", float("nan")) for _, m in picked]) for c in classes]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_curves(rows: List[Tuple[str, List[str]]], metric: str) -> str:
    """The metric at every evaluation, mean over a row's runs (runs missing a point are left out)."""
    out = []
    for name, dirs in rows:
        per_run = [{i: m[metric] for i, m in read_evaluations(d).items() if metric in m} for d in dirs]
        its = sorted(set().union(*[set(r) for r in per_run]))
        pts = [f"{i + 1}: {statistics.mean([r[i] for r in per_run if i in r]):.2f}" for i in its]
        out.append(f"- {name}: " + ", ".join(pts))
    return "\n".join(out)


def parse_rows(specs: Sequence[str]) -> List[Tuple[str, List[str]]]:
    rows = []
    for spec in specs:
        if "=" not in spec:
            raise SystemExit(f"error: {spec!r}: expected NAME=DIR[,DIR...]")
        name, dirs = spec.split("=", 1)
        rows.append((name.strip(), [d for d in dirs.split(",") if d]))
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", nargs="+", help="NAME=DIR[,DIR...] (one DIR per seed)")
    ap.add_argument("--metric", default="segm/AP", help="primary metric key in metrics.json")
    ap.add_argument("--extra", nargs="*", default=["segm/AP50", "bbox/AP"], help="more columns")
    ap.add_argument("--iteration", type=int, help="use the last evaluation at or before this iteration")
    ap.add_argument("--per-class", action="store_true", help="per-class AP columns of the metric's task")
    ap.add_argument("--reference", help="row the Welch test compares against (default: the first)")
    ap.add_argument("--curves", action="store_true", help="also print the metric at every evaluation")
    args = ap.parse_args(argv)
    rows = parse_rows(args.rows)
    for _, dirs in rows:
        for d in dirs:
            if not os.path.isfile(os.path.join(d, "metrics.json")):
                print(f"error: {d}: no metrics.json (not a training output directory?)", file=sys.stderr)
                return 2
    print(build_table(rows, args.metric, args.iteration, args.per_class, args.extra, args.reference))
    if args.curves:
        print()
        print(build_curves(rows, args.metric))
    return 0


if __name__ == "__main__":
    from medseg_core.cli_errors import run_cli

    run_cli(main)
