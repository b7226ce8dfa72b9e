"""Side-by-side comparison of models on one test set (the engine of ``tools/compare.py``).

For each model (a config, optionally a trained checkpoint) and each seed, one *run*: train with
the shared trainer under one protocol unless weights are given, evaluate on the common test set,
count parameters and GFLOPs (:func:`medseg_core.complexity.model_complexity`) and time batch-1
inference (:mod:`medseg_core.profiling`). The package, one job per module:

* :mod:`.metrics` — the table's columns and where each value is read (per test-set task);
* :mod:`.stats` — best / second-best marks, mean and spread over seeds, the Welch test;
* :mod:`.reports` — Markdown and CSV tables; :mod:`.plots` — trade-off and learning-curve plots;
* :mod:`.protocol` — fixed iterations, equal epochs or equal minutes; repeat-factor sampling;
* :mod:`.curves` — learning-curve rows and their mean / spread over seeds;
* :mod:`.runner` — :class:`Comparison`: runs, resumes and extends a comparison.
"""
from .. import compat  # noqa: F401

from .curves import CurveSummary, curve_rows, summarize_curves, write_curve_csv
from .metrics import (
    EFFICIENCY_COLUMNS, TASKS, TRAINING_COLUMNS, Column, TaskSpec, extract_metrics, per_class_values,
    precision_recall_at_best_f1, table_columns, task_of_dataset,
)
from .plots import plot_curves, plot_tradeoff, tradeoff_figure
from .protocol import Protocol, train_set_size
from .reports import render_markdown, write_csv, write_per_class_csv, write_runs_csv
from .runner import Comparison, ModelSpec, config_diff
from .stats import ModelSummary, rank_marks, summarize, unify_flops_convention, welch_one_sided_p

__all__ = [
    "Column", "TaskSpec", "TASKS", "EFFICIENCY_COLUMNS", "TRAINING_COLUMNS", "table_columns",
    "precision_recall_at_best_f1", "extract_metrics", "per_class_values", "task_of_dataset",
    "rank_marks", "welch_one_sided_p", "ModelSummary", "summarize", "unify_flops_convention",
    "render_markdown", "write_csv", "write_per_class_csv", "write_runs_csv",
    "plot_tradeoff", "tradeoff_figure", "plot_curves",
    "Protocol", "train_set_size", "CurveSummary", "curve_rows", "summarize_curves", "write_curve_csv",
    "ModelSpec", "Comparison", "config_diff",
]
