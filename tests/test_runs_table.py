"""tools/runs_table.py: evaluations read from metrics.json (resumed duplicates, last or chosen
iteration), mean ± std over seeds and the Welch p against the first row, per-class columns."""
import json
import os
import statistics
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import runs_table  # noqa: E402

from medseg_core.comparison import welch_one_sided_p  # noqa: E402


def _run(tmp_path, name, evals):
    d = tmp_path / name
    d.mkdir()
    with open(d / "metrics.json", "w") as f:
        for it, ap in evals:
            f.write(json.dumps({"iteration": it, "total_loss": 1.0}) + "\n")  # a training row
            f.write(json.dumps({"iteration": it, "segm/AP": ap, "segm/AP50": 2 * ap, "bbox/AP": ap + 1,
                                "segm/AP-duct": ap / 10}) + "\n")
    return str(d)


def test_last_evaluation_mean_std_and_welch(tmp_path):
    a0 = _run(tmp_path, "a0", [(99, 5.0), (199, 10.0), (99, 6.0)])  # resumed: 99 logged twice
    a1 = _run(tmp_path, "a1", [(99, 4.0), (199, 12.0)])
    b0 = _run(tmp_path, "b0", [(99, 7.0), (199, 15.0)])
    b1 = _run(tmp_path, "b1", [(99, 8.0), (199, 16.0)])
    assert runs_table.read_evaluations(a0)[99]["segm/AP"] == 6.0
    table = runs_table.build_table([("A", [a0, a1]), ("B", [b0, b1])], "segm/AP", None, True,
                                   ["bbox/AP"], None).splitlines()
    assert table[2].startswith(f"| A | 2 | 200 | 11.00 ± {statistics.stdev([10.0, 12.0]):.2f} | 12.00 ± 1.41 | - |")
    p = welch_one_sided_p([10.0, 12.0], [15.0, 16.0])
    assert table[3] == f"| B | 2 | 200 | 15.50 ± 0.71 | 16.50 ± 0.71 | {p:.3f} | 1.55 ± 0.07 |"
    early = runs_table.build_table([("A", [a0, a1])], "segm/AP", 150, False, [], None).splitlines()
    assert early[2] == "| A | 2 | 100 | 5.00 ± 1.41 | - |"


def test_a_folder_without_metrics_is_one_line_error(tmp_path, capsys):
    assert runs_table.main([f"A={tmp_path}"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path}: no metrics.json (not a training output directory?)"
    with pytest.raises(SystemExit):
        runs_table.main(["no-equals-sign"])
