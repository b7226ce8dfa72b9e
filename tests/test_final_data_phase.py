"""DATALOADER.FINAL_PHASE_*: the train loader is rebuilt with the final-phase overrides (e.g.
mosaic closed) for the last iterations, also when a run resumes past the switch point."""
import os

import pytest

from medseg_core.engine.hooks import FinalDataPhaseHook
from medseg_core.engine.trainer import MedSegTrainer
from medseg_core.testing import load_test_cfg

CFG = os.path.join(os.path.dirname(__file__), "..", "configs", "quick_schedules", "lmsfa_instant_test.yaml")


class RecordingTrainer(MedSegTrainer):
    """Records the mosaic probability of every train loader it builds and of every batch it uses."""

    built = []

    @classmethod
    def build_train_loader(cls, cfg):
        cls.built.append(float(cfg.INPUT.YOLO.MOSAIC_PROB))
        return super().build_train_loader(cfg)


def _train(tmp_path, max_iter, resume=False):
    RecordingTrainer.built = []
    cfg = load_test_cfg(
        CFG, "SOLVER.MAX_ITER", max_iter, "SOLVER.CHECKPOINT_PERIOD", 2, "DATASETS.VALIDATE", "False",
        "DATALOADER.FINAL_PHASE_ITERS", 2, "DATALOADER.FINAL_PHASE_OPTS", '["INPUT.YOLO.MOSAIC_PROB", "0.0"]',
        "TEST.EVAL_PERIOD", 0, "DATASETS.TEST", "()", output_dir=str(tmp_path),
    )
    trainer = RecordingTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    switched_at = []
    hook = next(h for h in trainer._hooks if isinstance(h, FinalDataPhaseHook))
    orig = hook.before_step

    def spy():
        was = hook.switched
        orig()
        if hook.switched and not was:
            switched_at.append(trainer.iter)

    hook.before_step = spy
    trainer.train()
    return list(RecordingTrainer.built), switched_at


def test_final_phase_rebuilds_the_loader_for_the_last_iterations(tmp_path):
    built, switched_at = _train(tmp_path, 5)
    assert built == [1.0, 0.0]  # the mosaic loader, then the final-phase loader
    assert switched_at == [3]  # max_iter 5 - 2 final iterations


def test_final_phase_after_resume_past_the_switch(tmp_path):
    _train(tmp_path, 4)  # checkpoints at iterations 2 and 4 (model_final)
    # resume from the iteration-4 checkpoint with a longer schedule: 6 - 2 = 4 <= start
    built, switched_at = _train(tmp_path, 6, resume=True)
    assert built == [1.0, 0.0]
    assert switched_at == [4]


def test_final_phase_opts_must_be_pairs():
    with pytest.raises(ValueError, match="KEY VALUE"):
        FinalDataPhaseHook(None, 2, ["INPUT.YOLO.MOSAIC_PROB"], lambda cfg: [])
