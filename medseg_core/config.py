"""Shared config keys, safe YAML loading and the one place that builds a full project config.

Detectron2's ``CfgNode.merge_from_file`` falls back to ``yaml.unsafe_load`` when a file has
Python tags; :class:`SafeCfgNode` never does. Unknown keys, malformed files and values outside
their valid range (:mod:`medseg_core.config_rules`) raise :class:`~medseg_core.errors.ConfigError`
naming the file.
"""
from __future__ import annotations

import os
from typing import Any, Callable, List, Optional, Sequence

from . import compat  # noqa: F401

import torch
import yaml
from detectron2.config import CfgNode as _D2CfgNode
from detectron2.config import get_cfg

from .config_keys import config_value  # noqa: F401  (re-exported)
from .errors import ConfigError

__all__ = ["SafeCfgNode", "add_medseg_config", "config_value", "get_project_cfg", "load_config", "read_config_tree"]


class SafeCfgNode(_D2CfgNode):
    """A Detectron2 ``CfgNode`` that only ever loads YAML with ``yaml.safe_load``."""

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        if allow_unsafe:
            raise ConfigError(f"{cfg_filename}: unsafe YAML loading is disabled in this project")
        if not os.path.isfile(cfg_filename):
            raise ConfigError(f"{cfg_filename}: config file does not exist")
        try:
            super().merge_from_file(cfg_filename, allow_unsafe=False)
        except yaml.YAMLError as e:
            raise ConfigError(f"{cfg_filename}: not valid (safe) YAML: {e}") from e
        except KeyError as e:
            raise ConfigError(f"{cfg_filename}: {e.args[0] if e.args else e}") from e
        except (AssertionError, ValueError) as e:
            raise ConfigError(f"{cfg_filename}: {e}") from e

    def merge_from_list(self, cfg_list: list) -> None:
        try:
            super().merge_from_list(cfg_list)
        except (KeyError, AssertionError, ValueError) as e:
            raise ConfigError(f"command-line options {list(cfg_list)}: {e}") from e


def add_medseg_config(cfg: _D2CfgNode) -> None:
    """Add the keys shared by every project (data mapping, solver extras, weight EMA, eval)."""
    from detectron2.config import CfgNode as CN

    # Run on the GPU when one is visible, else on the CPU (Detectron2's default is "cuda").
    cfg.MODEL.DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    # Training only: load the tensors of MODEL.WEIGHTS whose names and shapes match the model and
    # keep the others as initialised (fine-tuning from a backbone-only checkpoint or one with
    # another class count). False: any missing, unexpected or mis-shaped tensor stops the run.
    # Evaluation, the demo, export and --resume always require an exact match.
    cfg.MODEL.WEIGHTS_ALLOW_PARTIAL = False
    # Name of the dataset mapper in medseg_core.data.DATASET_MAPPER_REGISTRY; "" picks one
    # from the training set's evaluator_type ("coco" -> instance, "sem_seg", "volume").
    cfg.INPUT.DATASET_MAPPER_NAME = ""
    # Resize every image (and mask) to this (H, W) in training and test; (0, 0) keeps
    # Detectron2's shortest-edge resizing. LGMSNet-style semantic models use (256, 256).
    cfg.INPUT.FIXED_SIZE = (0, 0)
    # Significant bits of 16-bit single-channel images (PNG/TIFF): pixel values are scaled from
    # [0, 2^BITS - 1] to the models' 0..255 input range. 16 = the file's full range (OpenCV's
    # convention); 12 for 12-bit X-rays stored in 16-bit files. A value above the range stops
    # the run with the file named. 8-bit images are never rescaled.
    cfg.INPUT.IMAGE_BIT_DEPTH = 16
    # Random 90-degree rotation (p = 0.5) in the semantic mapper (LGMSNet's RandomRotate90).
    cfg.INPUT.RANDOM_ROTATE90 = False
    # Instance mask format: "auto" reads it from the registered data set ("bitmask" when any
    # annotation is RLE, else "polygon"); "polygon" or "bitmask" force one.
    cfg.INPUT.MASK_FORMAT = "auto"
    # Detectron2 drops training images without annotations by default; images with no
    # instances are valid negatives in medical video, so keep them.
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    # Final training phase with a different data pipeline: for the last FINAL_PHASE_ITERS
    # iterations the train loader is rebuilt with FINAL_PHASE_OPTS (KEY VALUE pairs) applied,
    # e.g. ["INPUT.YOLO.MOSAIC_PROB", "0.0"] to close mosaic as Ultralytics does (close_mosaic
    # = 10 epochs by default there; the LMSF-A release trains with it off). 0 = no final phase.
    cfg.DATALOADER.FINAL_PHASE_ITERS = 0
    # KEY VALUE overrides of the final phase's train loader (see FINAL_PHASE_ITERS).
    cfg.DATALOADER.FINAL_PHASE_OPTS = []
    # Optimizer: "SGD" or "ADAMW".
    cfg.SOLVER.OPTIMIZER = "SGD"
    # Power of the "WarmupPolyLR" schedule (lr * (1 - it / max_iter) ** power).
    cfg.SOLVER.POLY_LR_POWER = 0.9
    # Final LR factor of "WarmupPolyLR" and "WarmupLinearLR" (Ultralytics lrf = 0.01).
    cfg.SOLVER.END_LR_FACTOR = 0.0
    # Momentum at the start of warm-up, ramped linearly to SOLVER.MOMENTUM (Ultralytics 0.8);
    # a negative value keeps the momentum fixed.
    cfg.SOLVER.WARMUP_MOMENTUM = -1.0
    # Gradient accumulation: an optimizer step every this many iterations (1 = every iteration).
    cfg.SOLVER.ACCUMULATE_STEPS = 1
    # Multi-process (DDP) training: SOLVER.IMS_PER_BATCH is the global batch of all processes
    # together (each takes IMS_PER_BATCH / number of processes); BASE_LR, MAX_ITER and the
    # schedule are per global step, so they need no change when the number of GPUs changes.
    # Synchronise BatchNorm statistics over all processes (BN over the global batch, as one
    # process on the whole batch would compute). Worth it when the per-process batch is small;
    # no effect in one process or on GroupNorm / InstanceNorm models.
    cfg.MODEL.SYNC_BATCHNORM = False
    # DDP's find_unused_parameters: needed only by a model that leaves some parameters without
    # a gradient in some iterations (costs a graph traversal per step).
    cfg.MODEL.DDP_FIND_UNUSED_PARAMETERS = False
    # Time budget (medseg_core.engine.budget; tools/compare.py --budget-minutes): train for this
    # many minutes of BUDGET.CLOCK time instead of SOLVER.MAX_ITER iterations, the LR schedule
    # re-planned to end with the budget (STEPS scaled, warm-up frozen at the first plan as the
    # config's WARMUP_ITERS / MAX_ITER fraction). 0 = off.
    cfg.SOLVER.BUDGET = CN()
    # Budget in minutes (0 disables it).
    cfg.SOLVER.BUDGET.MINUTES = 0.0
    # Clock of the budget and of the reported training time: "wall" (elapsed) or "cpu" (this
    # process's CPU time, all its threads; fair on a shared machine, data-loader workers excluded).
    cfg.SOLVER.BUDGET.CLOCK = "wall"
    # Re-plan every iteration of the first REPLAN_PERIOD, then every REPLAN_PERIOD iterations.
    cfg.SOLVER.BUDGET.REPLAN_PERIOD = 10
    # Save a resumable "model_last" checkpoint every this many budget minutes (0 = never).
    cfg.SOLVER.BUDGET.CHECKPOINT_MINUTES = 5.0
    # Weight averaging of the whole model (Polyak/EMA of weights, as YOLO trainers do), used
    # for evaluation and saved in checkpoints. Not to be confused with EMA attention.
    cfg.MODEL_EMA = CN()
    # Enable the weight-EMA hook.
    cfg.MODEL_EMA.ENABLED = False
    # Final decay of the average; the effective decay ramps as DECAY * (1 - exp(-n / TAU)).
    cfg.MODEL_EMA.DECAY = 0.9999
    # Ramp time constant of the decay, in optimizer updates.
    cfg.MODEL_EMA.TAU = 2000.0
    # Evaluate (and load in --eval-only) the averaged weights instead of the raw ones.
    cfg.MODEL_EMA.USE_FOR_EVAL = True
    # Evaluators to run, by name in medseg_core.evaluation.EVALUATOR_REGISTRY; empty picks
    # them from each test set's evaluator_type.
    cfg.TEST.EVALUATORS = []
    # Learning curve (medseg_core.engine.curves): evaluate on CURVE.DATASET at POINTS evenly spaced
    # points of training (of the time budget when SOLVER.BUDGET.MINUTES > 0, else of
    # SOLVER.MAX_ITER); POINTS - 1 run during training, the last is the final evaluation.
    # Curve evaluations do not count as training time.
    cfg.TEST.CURVE = CN()
    # Number of points (0 = no curve; else >= 2).
    cfg.TEST.CURVE.POINTS = 0
    # Registered data set to evaluate on; "" = the first of DATASETS.TEST.
    cfg.TEST.CURVE.DATASET = ""
    # tools/compare.py tests the other models against the first model whose config sets this
    # (one-sided Welch test of the primary metric), unless --reference names another.
    cfg.TEST.COMPARISON_REFERENCE = False
    # How instance models return pred_masks: "full" ((N, H, W) at the image size; evaluators need
    # it) or "boxes" (medseg_core.cropped_masks.CroppedMasks: each mask only inside its box, memory
    # proportional to the box areas; the demo sets it). Models without support return "full".
    cfg.TEST.MASK_OUTPUT = "full"
    # Maximum detections per image passed to COCOEvaluator (COCO's default is 100).
    cfg.TEST.DETECTIONS_PER_IMAGE_EVAL = 100
    # Ultralytics-protocol evaluator "ultralytics_segm" (the protocol of YOLO papers such as LMSF-A).
    cfg.TEST.ULTRALYTICS = CN()
    # Letterbox size (longest side) whose 1/MASK_RATIO grid masks are scored on (paper: 640).
    cfg.TEST.ULTRALYTICS.IMAGE_SIZE = 640
    # Detections with a score above this count (Ultralytics validator: 0.001).
    cfg.TEST.ULTRALYTICS.CONF_THRESH = 0.001
    # At most this many detections per image, best first (Ultralytics validator: 300).
    cfg.TEST.ULTRALYTICS.MAX_DET = 300
    # Masks are compared at 1/MASK_RATIO of the letterboxed canvas (Ultralytics: 4).
    cfg.TEST.ULTRALYTICS.MASK_RATIO = 4
    # Ground-truth overlap map: where instances overlap the smaller one keeps the pixels.
    cfg.TEST.ULTRALYTICS.OVERLAP_MASK = True
    # Input shape (channels first, no batch) at which medseg_core.complexity counts params/FLOPs:
    # (C, H, W) for 2D models, (C, D, H, W) for volumetric ones.
    cfg.TEST.COMPLEXITY_INPUT_SHAPE = (3, 640, 640)
    # FLOP convention of the model's paper: "thop2x" (2 x legacy-thop ops: Ultralytics, LMSF-A),
    # "thop" (legacy-thop ops = MACs, e.g. LGMSNet) or "fvcore" (fvcore MACs).
    cfg.MODEL.FLOPS_CONVENTION = "thop2x"
    # Decode every registered image, mask, RLE and volume once (in parallel, cached by path, size
    # and modification time) and check sizes, label values and annotations before training
    # starts, so that a bad file fails in seconds rather than hours in (every bad file listed).
    cfg.DATASETS.VALIDATE = True
    # Volumetric (3D) models: MODEL.VOLUMETRIC.* and INPUT.VOLUME.* (one comment per key there).
    from .modeling.volumetric import add_volumetric_config

    add_volumetric_config(cfg)


def get_project_cfg(config_functions: Optional[Sequence[Callable]] = None) -> SafeCfgNode:
    """Detectron2 defaults + shared keys + the given projects' ``add_*_config`` functions
    (default: every installed project's)."""
    if config_functions is None:
        from .projects import project_config_functions

        config_functions = project_config_functions()
    cfg = SafeCfgNode(get_cfg())
    add_medseg_config(cfg)
    for fn in config_functions:
        fn(cfg)
    # add_*_config functions create sub-nodes with Detectron2's CfgNode; YAML merging would then
    # refuse to merge a SafeCfgNode into them ("Type mismatch"), so re-type the whole tree.
    return SafeCfgNode(cfg)


def load_config(
    config_file: Optional[str], opts: Sequence[str] = (), freeze: bool = True
) -> SafeCfgNode:
    """Build the config of a YAML file and ``KEY VALUE`` overrides, with the keys of the projects
    they need (``medseg_core.projects``: only those projects are imported)."""
    from .projects import config_functions_for

    cfg = get_project_cfg(config_functions_for(config_file, opts))
    if config_file:
        cfg.merge_from_file(config_file)
    if opts:
        cfg.merge_from_list(list(opts))
    from .config_rules import validate_config
    from .data.registration import resolve_mask_format

    validate_config(cfg, config_file, opts)  # value ranges (medseg_core.config_rules), before any work
    resolve_mask_format(cfg)
    if freeze:
        cfg.freeze()
    return cfg


def _yaml_value(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _merge_tree(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge_tree(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml_tree(path: str, depth: int = 0) -> Optional[dict]:
    if depth > 20 or not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            tree = yaml.safe_load(f) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(tree, dict):
        return None
    base = tree.pop("_BASE_", None)
    if isinstance(base, str):
        base = os.path.expanduser(base)
        if not base.startswith(("/", "https://", "http://")):
            base = os.path.join(os.path.dirname(path), base)  # Detectron2's rule
        parent = _read_yaml_tree(base, depth + 1)
        if parent is None:
            return None
        tree = _merge_tree(parent, tree)
    return tree


def read_config_tree(config_file: Optional[str], opts: Sequence[str] = ()) -> Optional[dict]:
    """The nested dict a config file (with its ``_BASE_`` chain) and ``KEY VALUE`` overrides
    describe, read with ``yaml.safe_load`` and without any schema; None when a file cannot be
    read (loading it then reports why). Used to decide which projects a config needs."""
    tree: dict = {}
    if config_file:
        tree = _read_yaml_tree(config_file)
        if tree is None:
            return None
    opts = list(opts)
    for key, value in zip(opts[0::2], opts[1::2]):
        node = tree
        parts = str(key).split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {}) if isinstance(node.get(part), dict) or part not in node else {}
        node[parts[-1]] = _yaml_value(value)
    return tree


def set_num_classes(cfg, num_classes: int) -> None:
    """Set the object-class count (background excluded) of every instance-model head: each
    ``MODEL.*.NUM_CLASSES`` except semantic heads (``SEM_SEG_HEAD`` counts background), so that
    one call adapts any instance model of the toolkit to a data set."""
    def visit(node):
        for key, val in node.items():
            if key == "NUM_CLASSES" and isinstance(val, int):
                node[key] = int(num_classes)
            elif isinstance(val, _D2CfgNode) and key != "SEM_SEG_HEAD":
                visit(val)

    was_frozen = cfg.is_frozen()
    cfg.defrost()
    visit(cfg.MODEL)
    if was_frozen:
        cfg.freeze()


def list_config_files(root: str, include_base: bool = False) -> List[str]:
    """Every YAML config under ``root`` (``Base-*.yaml`` only with ``include_base``)."""
    out = []
    for dirpath, _, files in os.walk(root):
        for f in sorted(files):
            if f.endswith(".yaml") and (include_base or not f.startswith("Base")):
                out.append(os.path.join(dirpath, f))
    return sorted(out)
