"""The one trainer for every model in the toolkit.

``MedSegTrainer`` is Detectron2's ``DefaultTrainer`` with:

* mappers and evaluators chosen through registries (``INPUT.DATASET_MAPPER_NAME``,
  ``TEST.EVALUATORS``, else by the data set's ``evaluator_type``);
* SGD/Nesterov/AdamW, poly and linear schedules, momentum warm-up (:mod:`.solver`);
* gradient accumulation and AMP in one step loop (:class:`StepTrainer`);
* weight averaging (``MODEL_EMA``) used for evaluation and saved in checkpoints;
* :class:`~medseg_core.checkpoint.SafeCheckpointer` (weights-only loading, atomic writes);
* every data set validated before the first iteration, and evaluation results written to
  ``OUTPUT_DIR/inference/<dataset>/results.json``.
"""
from __future__ import annotations

import logging
import os
import time
import weakref
from collections import OrderedDict
from typing import Dict, Optional

import torch

from .. import compat  # noqa: F401

from detectron2.data import DatasetCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, SimpleTrainer, TrainerBase, create_ddp_model, hooks
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.modeling import build_model
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from detectron2.utils.logger import setup_logger

from ..atomic import atomic_write_json
from ..checkpoint import SafeCheckpointer, check_state_dict_fits, remove_stale_temporaries
from ..data.mappers import build_dataset_mapper
from ..evaluation import build_evaluators
from .hooks import FinalDataPhaseHook, ModelEMA, ModelEMAHook, MomentumWarmupHook
from .solver import build_lr_scheduler, build_optimizer

logger = logging.getLogger(__name__)

__all__ = ["MedSegTrainer", "StepTrainer", "load_weights_for_eval"]


class StepTrainer(SimpleTrainer):
    """SimpleTrainer with gradient accumulation and optional AMP (CUDA only).

    With ``accumulate = k`` the optimizer steps every k iterations on the summed gradients of
    k batches (Ultralytics' nominal-batch behaviour); ``stepped_this_iter`` tells hooks such
    as the weight EMA whether weights changed.
    """

    def __init__(self, model, data_loader, optimizer, accumulate: int = 1, amp: bool = False):
        super().__init__(model, data_loader, optimizer)
        self.accumulate = max(int(accumulate), 1)
        self.amp = bool(amp) and torch.cuda.is_available()
        self.grad_scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.stepped_this_iter = False

    def run_step(self):
        assert self.model.training, "[StepTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        with torch.autocast("cuda", enabled=self.amp):
            loss_dict = self.model(data)
        if isinstance(loss_dict, torch.Tensor):
            loss_dict = {"total_loss": loss_dict}
        losses = sum(loss_dict.values())
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
        else:
            losses.backward()
        self._write_metrics(loss_dict, data_time)
        self.stepped_this_iter = (self.iter + 1) % self.accumulate == 0
        if self.stepped_this_iter:
            if self.grad_scaler is not None:
                self.grad_scaler.step(self.optimizer)
                self.grad_scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self):
        ret = super().state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])


class MedSegTrainer(DefaultTrainer):
    """Detectron2 ``DefaultTrainer`` wired through this toolkit's registries (module doc)."""

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        if cfg.DATASETS.VALIDATE:
            self.validate_datasets(cfg)
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        self.model_ema: Optional[ModelEMA] = (
            ModelEMA(model, cfg.MODEL_EMA.DECAY, cfg.MODEL_EMA.TAU) if cfg.MODEL_EMA.ENABLED else None
        )
        model = create_ddp_model(model, broadcast_buffers=False)
        self._trainer = StepTrainer(
            model, data_loader, optimizer, cfg.SOLVER.ACCUMULATE_STEPS, cfg.SOLVER.AMP.ENABLED
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = SafeCheckpointer(
            model, cfg.OUTPUT_DIR, cfg=cfg, partial_hint=True, trainer=weakref.proxy(self)
        )
        if self.model_ema is not None:
            self.checkpointer.add_checkpointable("model_ema", self.model_ema)
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    # ------------------------------------------------------------------ building blocks
    @staticmethod
    def validate_datasets(cfg) -> None:
        """The pre-training check, before the model is built: load every train and test set (its
        loader decodes every file, cached; see ``medseg_core.data.file_checks``), then the checks
        that depend on the config or on training (:func:`~medseg_core.data.check_dataset_for_config`)."""
        from ..data.validation import check_dataset_for_config

        for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
            start = time.perf_counter()
            dicts = DatasetCatalog.get(name)
            check_dataset_for_config(cfg, name, dicts, training=name in cfg.DATASETS.TRAIN)
            logger.info("Data set %s: %d items checked in %.1fs", name, len(dicts), time.perf_counter() - start)

    @classmethod
    def build_model(cls, cfg):
        model = build_model(cfg)
        n = sum(p.numel() for p in model.parameters())
        logging.getLogger(__name__).info("Model %s: %d parameters", cfg.MODEL.META_ARCHITECTURE, n)
        return model

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=build_dataset_mapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(
            cfg, dataset_name, mapper=build_dataset_mapper(cfg, False, dataset_name)
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluators(cfg, dataset_name, output_folder)

    def build_hooks(self):
        cfg = self.cfg
        ret = [hooks.IterationTimer(), hooks.LRScheduler()]
        if cfg.SOLVER.WARMUP_MOMENTUM >= 0 and cfg.SOLVER.WARMUP_ITERS > 0:
            ret.append(MomentumWarmupHook(cfg.SOLVER.WARMUP_MOMENTUM, cfg.SOLVER.MOMENTUM, cfg.SOLVER.WARMUP_ITERS))
        if self.model_ema is not None:
            ret.append(ModelEMAHook(self.model_ema))
        if cfg.DATALOADER.FINAL_PHASE_ITERS > 0:
            ret.append(FinalDataPhaseHook(
                cfg, cfg.DATALOADER.FINAL_PHASE_ITERS, cfg.DATALOADER.FINAL_PHASE_OPTS, self.build_train_loader
            ))
        if comm.is_main_process():
            ret.append(hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD))

        def test_and_save_results():
            self._last_eval_results = self.test(self.cfg, self.eval_model())
            return self._last_eval_results

        ret.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, test_and_save_results))
        if comm.is_main_process():
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=cfg.get("LOG_PERIOD", 20)))
        return ret

    def train(self):
        """Train; returns the last evaluation results (Detectron2 returns them only when
        TEST.EXPECTED_RESULTS is set)."""
        super().train()
        self._ensure_final_checkpoint()
        return getattr(self, "_last_eval_results", None)

    def _ensure_final_checkpoint(self) -> None:
        """Write ``model_final.pth`` when training is complete but the file is missing: a run killed
        while writing it resumes from the checkpoint of the last iteration, so no iteration is
        left to run and Detectron2's periodic checkpointer would never write it."""
        if not comm.is_main_process() or self.iter < self.max_iter:
            return
        if not os.path.isfile(os.path.join(self.cfg.OUTPUT_DIR, "model_final.pth")):
            logger.info("Training is complete but model_final.pth is missing: writing it now")
            self.checkpointer.save("model_final", iteration=self.max_iter - 1)

    def eval_model(self) -> torch.nn.Module:
        """The model to evaluate: the weight average when enabled and asked for."""
        if self.model_ema is not None and self.cfg.MODEL_EMA.USE_FOR_EVAL:
            return self.model_ema.module
        return self.model

    def resume_or_load(self, resume: bool = True):
        resumed = resume and self.checkpointer.has_checkpoint()
        if comm.is_main_process():
            remove_stale_temporaries(self.cfg.OUTPUT_DIR)
        # a resumed run must fit its own checkpoint; MODEL.WEIGHTS may be partial only when asked
        self.checkpointer.strict = resumed or not self.cfg.MODEL.WEIGHTS_ALLOW_PARTIAL
        self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resumed:
            self.start_iter = self.iter + 1
        if self.model_ema is not None and not resumed:
            # start the average from the (possibly pre-loaded) weights, not from random init
            model = self.model.module if hasattr(self.model, "module") else self.model
            self.model_ema.module.load_state_dict(model.state_dict())
            self.model_ema.updates = 0

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        results = OrderedDict()
        for idx, dataset_name in enumerate(cfg.DATASETS.TEST):
            data_loader = cls.build_test_loader(cfg, dataset_name)
            evaluator = evaluators[idx] if evaluators is not None else cls.build_evaluator(cfg, dataset_name)
            was_training = model.training
            res = inference_on_dataset(model, data_loader, evaluator)
            model.train(was_training)
            results[dataset_name] = res
            if comm.is_main_process():
                logger.info("Evaluation results for %s in csv format:", dataset_name)
                print_csv_format(res)
                write_results_json(cfg.OUTPUT_DIR, dataset_name, res, _current_iter())
        return results[cfg.DATASETS.TEST[0]] if len(results) == 1 else results


def _current_iter() -> Optional[int]:
    try:
        return get_event_storage().iter
    except AssertionError:
        return None


def write_results_json(output_dir: str, dataset_name: str, res: Dict, iteration: Optional[int]) -> str:
    folder = os.path.join(output_dir, "inference", dataset_name)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "results.json")
    atomic_write_json(path, {"dataset": dataset_name, "iteration": iteration, "results": res}, indent=2, default=float)
    return path


def load_weights_for_eval(cfg, model: torch.nn.Module, path: str, resume: bool = False) -> None:
    """Load weights for inference: the weight average when the checkpoint has one and
    ``MODEL_EMA.USE_FOR_EVAL`` is on, else the raw weights."""
    checkpointer = SafeCheckpointer(model, save_dir=cfg.OUTPUT_DIR, cfg=cfg)  # always strict
    extra = checkpointer.resume_or_load(path, resume=resume)
    ema = extra.get("model_ema") if isinstance(extra, dict) else None
    if ema is not None and cfg.MODEL_EMA.USE_FOR_EVAL:
        check_state_dict_fits(model, ema["model"], f"{path} (model_ema)", cfg)
        model.load_state_dict(ema["model"])
        logger.info("Using the weight average (model_ema, %s updates) for evaluation", ema.get("updates"))
