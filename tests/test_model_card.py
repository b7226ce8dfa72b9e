"""tools/model_card.py --markdown on the LMSF-A instant config with a tiny trained checkpoint: the
card's numbers are the measured ones (counts = medseg_core.complexity, metrics = the training
run's own final evaluation of the same weights), each with its command."""
import json
import os
import re
import sys

import pytest

from medseg_core.complexity import model_complexity
from medseg_core.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(REPO, "configs", "quick_schedules", "lmsfa_instant_test.yaml")
OPTS = ["TEST.COMPLEXITY_INPUT_SHAPE", "(3,128,128)"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from medseg_core.engine.trainer import MedSegTrainer

    out = str(tmp_path_factory.mktemp("card_run"))
    cfg = load_config(CFG, ["OUTPUT_DIR", out, "SOLVER.MAX_ITER", "2", "MODEL.DEVICE", "cpu"], freeze=False)
    cfg.freeze()
    trainer = MedSegTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    with open(os.path.join(out, "inference", "smoke_peld_val", "results.json")) as f:
        return os.path.join(out, "model_final.pth"), json.load(f)["results"]


def _load_tool():
    sys.path.insert(0, os.path.join(REPO, "tools"))
    try:
        import model_card
    finally:
        sys.path.pop(0)
    return model_card


def test_markdown_card_reports_measured_numbers(trained, tmp_path, one_thread):
    weights, train_results = trained
    md = tmp_path / "card.md"
    tool = _load_tool()
    assert tool.main(["--config-file", CFG, "--markdown", "--weights", weights, "--output", str(md),
                      "--no-fvcore", "--latency-runs", "20", *OPTS]) == 0
    text = md.read_text()
    for section in ("## Architecture", "## Size and cost", "## Data", "## Metrics", "## Latency"):
        assert section in text
    cx = model_complexity(load_config(CFG, OPTS + ["MODEL.DEVICE", "cpu"]), with_fvcore=False)
    assert f"| params | {cx['params']:,} |" in text and f"| params (fused) | {cx['params_fused']:,} |" in text
    assert f"| GFLOPs (paper) | {cx['gflops_paper']:.3f} | `thop2x`" in text
    assert "| `MODEL.META_ARCHITECTURE` | `LMSFA` |" in text
    from detectron2.data import DatasetCatalog
    assert f"| `smoke_peld_train` | {len(DatasetCatalog.get('smoke_peld_train')):,} |" in text
    assert "saved at iteration 1." in text  # Detectron2 stores the last finished iteration
    # metrics: the card evaluates the checkpoint itself; the same weights scored the same in training
    rows = dict(re.findall(r"\| `((?:segm|bbox)/[^`]+)` \| ([^ |]+) \|", text))
    expected = {f"{task}/{k}": v for task in ("segm", "bbox") for k, v in train_results[task].items()}
    assert set(rows) == set(expected)
    for key, value in expected.items():
        assert float(rows[key]) == pytest.approx(value, rel=1e-3, abs=1e-6, nan_ok=True), key
    assert re.search(rf"python tools/train_net.py --config-file \S+ --eval-only .*MODEL.WEIGHTS {re.escape(weights)}", text)
    m = re.search(r"\| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", text.split("## Latency")[1])
    median, _, low, high, fps = map(float, m.groups())
    assert 0 < low <= median <= high and fps == pytest.approx(1000 / median, rel=0.01, abs=0.06)  # FPS printed with one decimal
    assert "20 runs after 3 warm-up" in text and "python tools/model_card.py --config-file" in text


def test_card_without_checkpoint_and_bad_input(tmp_path, capsys):
    tool = _load_tool()
    assert tool.main(["--config-file", CFG, "--markdown", "--no-fvcore", *OPTS]) == 0
    out = capsys.readouterr().out
    assert out.count("No checkpoint given (`--weights`): nothing measured.") == 2
    missing = str(tmp_path / "nope.pth")
    assert tool.main(["--config-file", CFG, "--markdown", "--weights", missing]) == 2
    assert f"{missing}: checkpoint does not exist" in capsys.readouterr().err
    assert tool.main(["--config-file", CFG, "--weights", missing]) == 2
