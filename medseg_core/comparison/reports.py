"""The comparison's tables: Markdown (best bold, second-best underlined, per-class table), the
per-model CSV, the per-class CSV and the per-run CSV."""
from __future__ import annotations

import csv
import io
import math
from typing import Any, Dict, List, Optional

from ..atomic import atomic_write_text
from .metrics import NAN, TASKS, Column, extract_metrics, is_number, table_columns
from .stats import ModelSummary, rank_marks

__all__ = ["render_markdown", "write_csv", "write_per_class_csv", "write_runs_csv", "csv_text",
           "num_text"]

# header lines of the Markdown document, in this order, when the info dict has them
INFO_KEYS = ("protocol", "training", "device", "threads", "latency", "complexity", "seeds", "torch", "date")


def _columns(task: str, summaries: Optional[List[ModelSummary]] = None) -> List[Column]:
    """The task's columns; the training-protocol ones only when some model has a value."""
    cols = table_columns(task, runs=[])
    extra = [c for c in table_columns(task) if c not in cols]
    if summaries is None:
        return cols + extra
    return cols + [c for c in extra if any(math.isfinite(s.mean.get(c.key, NAN)) for s in summaries)]

def _as_shown(fmt: str, values: List[float]) -> List[float]:
    """The values rounded as the table prints them, so that marks never single out a row whose
    printed value ties another's (0.004 and 0.001 both print as 0.0)."""
    return [float(fmt.format(v)) if math.isfinite(v) else NAN for v in values]


def _fmt(col: Column, mean: float, std: float, n: int) -> str:
    if not math.isfinite(mean):
        return "–"
    s = col.fmt.format(mean)
    if n > 1 and col.per_seed and math.isfinite(std):
        s += " ± " + col.fmt.format(std)
    return s


def render_markdown(summaries: List[ModelSummary], task: str, info: Dict[str, Any], reference: Optional[str]) -> str:
    """The comparison as a Markdown document: header, main table (marks), per-class table."""
    cols = _columns(task, summaries)
    marks = {c.key: rank_marks(_as_shown(c.fmt, [s.mean.get(c.key, NAN) for s in summaries]), c.higher_is_better)
             for c in cols}
    show_p = reference is not None and any(math.isfinite(s.p_value) for s in summaries)
    lines = [f"# Model comparison: {TASKS[task].name} on `{info.get('test_set', '?')}`", ""]
    for k in INFO_KEYS:
        if k in info:
            lines.append(f"- **{k}**: {info[k]}")
    lines += [
        "- **marks**: **bold** = best, <u>underlined</u> = second best (ties share a mark; train time unranked)",
    ]
    if any(s.n > 1 for s in summaries):
        lines.append("- values are mean ± sample std over the seeds")
    if show_p:
        lines.append(
            f"- **p**: one-sided Welch t-test that `{reference}` has a higher "
            f"{next(c.header for c in cols if c.key == TASKS[task].primary)} than the row's model"
        )
    lines.append("")
    header = ["Model", "Seeds"] + [c.header for c in cols] + (["p"] if show_p else [])
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    for i, s in enumerate(summaries):
        cells = [s.name + (" (ref.)" if s.name == reference and show_p else ""), str(s.n)]
        for c in cols:
            text = _fmt(c, s.mean.get(c.key, NAN), s.std.get(c.key, NAN), s.n)
            m = marks[c.key][i]
            cells.append(f"**{text}**" if m == "best" else f"<u>{text}</u>" if m == "second" else text)
        if show_p:
            cells.append("–" if not math.isfinite(s.p_value) else f"{s.p_value:.3g}")
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- `{s.name}`: {n}" for s in summaries for n in s.notes]
    if notes:
        lines += ["", "Notes:"] + notes
    classes = list(dict.fromkeys(c for s in summaries for c in s.per_class))  # data set order
    if classes:
        lines += ["", f"## {TASKS[task].per_class_header}", ""]
        lines.append("| Model | " + " | ".join(classes) + " |")
        lines.append("|---|" + "|".join(["---:"] * len(classes)) + "|")
        pc_marks = {c: rank_marks(_as_shown("{:.1f}", [s.per_class.get(c, NAN) for s in summaries]), True)
                    for c in classes}
        for i, s in enumerate(summaries):
            cells = []
            for c in classes:
                v = s.per_class.get(c, NAN)
                text = "–" if not math.isfinite(v) else f"{v:.1f}"
                m = pc_marks[c][i]
                cells.append(f"**{text}**" if m == "best" else f"<u>{text}</u>" if m == "second" else text)
            lines.append(f"| {s.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(summaries: List[ModelSummary], task: str, path: str, info: Dict[str, Any]) -> None:
    """One row per model: every column's mean and std, the p-value and the measurement context."""
    cols = _columns(task)
    header = ["model", "config", "seeds"]
    for c in cols:
        header += [c.key, c.key + "_std"]
    header += ["p_value_vs_reference", "test_set", "device", "threads", "protocol"]
    atomic_write_text(path, csv_text([header] + [
        [s.name, s.config, s.n]
        + [x for c in cols for x in (num_text(s.mean.get(c.key, NAN)), num_text(s.std.get(c.key, NAN)))]
        + [num_text(s.p_value), info.get("test_set", ""), info.get("device", ""), info.get("threads", ""),
           info.get("protocol", "")]
        for s in summaries
    ]))


def write_per_class_csv(summaries: List[ModelSummary], path: str) -> None:
    classes = list(dict.fromkeys(c for s in summaries for c in s.per_class))
    atomic_write_text(path, csv_text([["model"] + classes] + [
        [s.name] + [num_text(s.per_class.get(c, NAN)) for c in classes] for s in summaries
    ]))


def write_runs_csv(runs: List[Dict[str, Any]], task: str, path: str) -> None:
    cols = _columns(task)
    rows = [["model", "seed"] + [c.key for c in cols]]
    for r in sorted(runs, key=lambda r: (r["name"], r["seed"])):
        m = extract_metrics(r, task)
        rows.append([r["name"], r["seed"]] + [num_text(m[c.key]) for c in cols])
    atomic_write_text(path, csv_text(rows))


def num_text(v: float) -> str:
    return "" if not (is_number(v) and math.isfinite(v)) else f"{v:.10g}"


def csv_text(rows: List[List[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


