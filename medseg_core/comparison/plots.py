"""The comparison's figures: the accuracy / compute trade-off (the LMSF-A paper's Fig. 6) and
the learning curves (primary metric against training minutes, one line per model)."""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Tuple

from .curves import CurveSummary
from .metrics import NAN, TASKS
from .stats import ModelSummary

__all__ = ["plot_tradeoff", "tradeoff_figure", "plot_curves"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_tradeoff(summaries: List[ModelSummary], task: str, path: str, info: Dict[str, Any]) -> bool:
    """Primary metric against GFLOPs (paper convention), point area by parameter count (the
    LMSF-A paper's Fig. 6), saved to ``path``. Returns False when no model has both numbers."""
    plt = _pyplot()
    fig, drawn = tradeoff_figure(summaries, task, info)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return drawn


def tradeoff_figure(summaries: List[ModelSummary], task: str, info: Dict[str, Any]) -> Tuple[Any, bool]:
    """The trade-off figure (caller saves and closes it) and whether any model is on it. Each
    marker carries its number, in GFLOPs order, and the legend names the numbers."""
    plt = _pyplot()

    primary = TASKS[task].primary
    ycol = next(c for c in TASKS[task].metric_columns if c.key == primary)
    pts = [(s.name, s.mean.get("gflops_paper", NAN), s.mean.get(primary, NAN), s.mean.get("params_m", NAN))
           for s in summaries]
    pts = [p for p in pts if math.isfinite(p[1]) and math.isfinite(p[2])]
    fig, ax = plt.subplots(figsize=(9, 5), dpi=120)
    if pts:
        # Heavy models cluster at the same GFLOPs, where text beside the markers stacks up and
        # cannot be told apart; a number on each marker and a colour-matched legend cannot.
        from matplotlib.lines import Line2D

        pts.sort(key=lambda p: p[1])
        colors = plt.get_cmap("tab10" if len(pts) <= 10 else "tab20")
        pmax = max((p[3] for p in pts if math.isfinite(p[3])), default=1.0) or 1.0
        handles = []
        for i, (name, x, y, params) in enumerate(pts):
            color = colors(i % colors.N)
            size = 40 + 1500 * (params / pmax if math.isfinite(params) else 0.0)
            ax.scatter([x], [y], s=size, color=color, alpha=0.55, edgecolors="black", zorder=2)
            ax.annotate(str(i + 1), (x, y), ha="center", va="center", fontsize=7, fontweight="bold", zorder=3)
            size_note = f" ({params:.1f} M)" if math.isfinite(params) else ""
            handles.append(Line2D([], [], marker="o", linestyle="", markersize=7, markerfacecolor=color,
                                  markeredgecolor="black", alpha=0.8, label=f"{i + 1}  {name}{size_note}"))
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  borderaxespad=0.0, frameon=False, title="model (params)", title_fontsize=7)
        xs, ys = [p[1] for p in pts], [p[2] for p in pts]
        if min(xs) > 0 and max(xs) / min(xs) > 20:
            ax.set_xscale("log")
            ax.set_xlim(min(xs) / 2.0, max(xs) * 2.0)
        else:
            span = (max(xs) - min(xs)) or max(abs(max(xs)), 1.0)
            ax.set_xlim(min(xs) - 0.25 * span, max(xs) + 0.25 * span)
        yspan = (max(ys) - min(ys)) or max(abs(max(ys)), 1.0)
        ax.set_ylim(min(ys) - 0.25 * yspan, max(ys) + 0.25 * yspan)
    ax.set_xlabel(f"GFLOPs ({info.get('convention', 'paper convention')})")
    ax.set_ylabel(ycol.header)
    ax.set_title(f"{ycol.header} vs. GFLOPs on {info.get('test_set', '')} (area ~ params)", fontsize=10)
    ax.grid(True, alpha=0.3)
    return fig, bool(pts)


def plot_curves(curves: List[CurveSummary], task: str, path: str, info: Dict[str, Any]) -> bool:
    """Primary metric against training minutes: per model the mean over seeds at each curve
    point (points are matched by index: the same fractions of every seed's budget), with the
    seeds' spread (mean +/- one sample std) shaded. Returns False when no model has a curve."""
    plt = _pyplot()
    primary = TASKS[task].primary
    ycol = next(c for c in TASKS[task].metric_columns if c.key == primary)
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    drawn = False
    for c in curves:
        pts = [(x, y, s) for x, y, s in zip(c.minutes, c.mean, c.std) if math.isfinite(x) and math.isfinite(y)]
        if not pts:
            continue
        xs, ys, ss = zip(*pts)
        line, = ax.plot(xs, ys, marker="o", ms=3, label=f"{c.name} ({c.seeds} seed{'s' if c.seeds > 1 else ''})")
        if c.seeds > 1:
            lo = [y - (s if math.isfinite(s) else 0.0) for y, s in zip(ys, ss)]
            hi = [y + (s if math.isfinite(s) else 0.0) for y, s in zip(ys, ss)]
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        drawn = True
    ax.set_xlabel(f"training minutes ({info.get('clock', 'wall')} clock, evaluations excluded)")
    ax.set_ylabel(ycol.header)
    ax.set_title(f"{ycol.header} on {info.get('test_set', '')} during training ({info.get('protocol_short', '')})",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return drawn
