"""Valid ranges of config values: one table of rules, checked when a config is loaded.

A value outside its range (``SOLVER.MAX_ITER 0``, ``SOLVER.IMS_PER_BATCH -2``, a probability of
1.5, a NaN learning rate, a YOLO size that is not a multiple of 32, a 2-element crop for a 3D
model) stops :func:`medseg_core.config.load_config` with one
:class:`~medseg_core.errors.ConfigError` naming the config file (or the command-line option) and
every offending key, before anything is built; Detectron2 would start and fail later, or train
on silently.

:data:`RULES` covers the Detectron2 keys the toolkit's models read and every key that
``medseg_core`` adds. Each project registers the rules of its own keys next to them, in its
``config.py`` (:func:`register_config_rules`), so this module names no project. A key absent
from a config (its project is not installed) is skipped. ``tests/test_config_rules.py`` checks
that every numeric key the toolkit adds has a rule.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .config_keys import config_value
from .errors import ConfigError

__all__ = [
    "Rule", "integer", "number", "probability", "one_of", "sequence", "multiple_of", "boolean", "matches",
    "odd_integer", "sizes_or", "RULES", "CROSS_CHECKS", "register_config_rules", "validate_config", "config_problems",
]


class Rule:
    """A predicate on one config value and the phrase saying what a valid value is."""

    def __init__(self, ok: Callable[[Any], bool], text: str) -> None:
        self.ok, self.text = ok, text

    def problem(self, value: Any) -> Optional[str]:
        try:
            good = self.ok(value)
        except (TypeError, ValueError):
            good = False
        return None if good else f"must be {self.text}"

    def __repr__(self) -> str:
        return f"Rule({self.text})"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _bounds_text(lo, hi, lo_open, hi_open) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return ""


def _in_bounds(v, lo, hi, lo_open, hi_open) -> bool:
    if lo is not None and (v < lo or (lo_open and v == lo)):
        return False
    if hi is not None and (v > hi or (hi_open and v == hi)):
        return False
    return True


def integer(lo: Optional[int] = None, hi: Optional[int] = None) -> Rule:
    b = _bounds_text(lo, hi, False, False)
    return Rule(lambda v: _is_int(v) and _in_bounds(v, lo, hi, False, False), f"an integer {b}".strip())


def number(lo: Optional[float] = None, hi: Optional[float] = None, lo_open: bool = False,
           hi_open: bool = False, allow_none: bool = False) -> Rule:
    b = _bounds_text(lo, hi, lo_open, hi_open)
    text = f"a finite number {b}".strip() + (" (or None)" if allow_none else "")
    return Rule(lambda v: (allow_none and v is None) or (_is_real(v) and _in_bounds(v, lo, hi, lo_open, hi_open)),
                text)


def probability() -> Rule:
    return number(0.0, 1.0)


def boolean() -> Rule:
    return Rule(lambda v: isinstance(v, bool), "True or False")


def one_of(*choices: Any, case_sensitive: bool = True) -> Rule:
    def ok(v):
        if case_sensitive or not isinstance(v, str):
            return v in choices
        return v.upper() in {str(c).upper() for c in choices}

    return Rule(ok, "one of " + ", ".join(repr(c) for c in choices))


def matches(pattern: str, text: str) -> Rule:
    rx = re.compile(pattern)
    return Rule(lambda v: isinstance(v, str) and rx.fullmatch(v) is not None, text)


def multiple_of(m: int, lo: int) -> Rule:
    return Rule(lambda v: _is_int(v) and v >= lo and v % m == 0, f"a multiple of {m} >= {lo}")


def sequence(item: Rule, length: Optional[int] = None, min_len: int = 1, max_len: Optional[int] = None,
             increasing: bool = False, distinct: bool = False) -> Rule:
    """A list/tuple whose items all satisfy ``item``."""
    def ok(v):
        if not isinstance(v, (list, tuple)):
            return False
        n = len(v)
        if (length is not None and n != length) or n < min_len or (max_len is not None and n > max_len):
            return False
        if not all(item.ok(x) for x in v):
            return False
        if increasing and any(b <= a for a, b in zip(v, v[1:])):
            return False
        return not distinct or len(set(v)) == n

    if length is not None:
        size = f"{length} values"
    elif max_len is not None:
        size = f"{min_len}..{max_len} values"
    else:
        size = f"at least {min_len} value{'s' if min_len != 1 else ''}"
    extra = ", increasing" if increasing else (", distinct" if distinct else "")
    return Rule(ok, f"a list of {size}{extra}, each {item.text}")


def odd_integer(lo: int = 1) -> Rule:
    return Rule(lambda v: _is_int(v) and v >= lo and v % 2 == 1, f"an odd integer >= {lo}")


def sizes_or(length: int, item: Rule, *special: Tuple) -> Rule:
    """``length`` values each satisfying ``item``, or exactly one of the ``special`` tuples
    (e.g. ``(0, 0, 0)``: "planned from the data")."""
    plain = sequence(item, length=length)
    specials = [tuple(x) for x in special]
    names = " or ".join(str(x) for x in specials)
    return Rule(lambda v: isinstance(v, (list, tuple)) and (tuple(v) in specials or plain.ok(v)),
                f"{length} values, each {item.text}" + (f", or {names}" if names else ""))


# A cross-key check returns (key, problem) pairs for values that are fine alone but not together.
CrossCheck = Callable[[Any], List[Tuple[str, str]]]

_POS_INT, _NONNEG_INT = integer(1), integer(0)
_POS, _NONNEG = number(0, lo_open=True), number(0)
_PROB = probability()
_IOU = number(0.0, 1.0)

RULES: Dict[str, Rule] = {
    # --- model (Detectron2 keys the toolkit's models read) ---
    "MODEL.DEVICE": matches(r"cpu|cuda(:\d+)?|mps", "'cpu', 'cuda', 'cuda:<index>' or 'mps'"),
    "MODEL.PIXEL_MEAN": sequence(number(), min_len=1),
    "MODEL.PIXEL_STD": sequence(_POS, min_len=1),
    "MODEL.WEIGHTS_ALLOW_PARTIAL": boolean(),
    "MODEL.FLOPS_CONVENTION": one_of("thop2x", "thop", "fvcore"),
    "MODEL.ROI_HEADS.NUM_CLASSES": _POS_INT,
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": _PROB,
    "MODEL.ROI_HEADS.NMS_THRESH_TEST": _IOU,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": _POS_INT,
    "MODEL.ROI_HEADS.POSITIVE_FRACTION": number(0, 1, lo_open=True),
    "MODEL.ROI_HEADS.IOU_THRESHOLDS": sequence(_IOU, increasing=True),
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": _POS_INT,
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": _POS_INT,
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE": _POS_INT,
    "MODEL.RPN.POSITIVE_FRACTION": number(0, 1, lo_open=True),
    "MODEL.RPN.NMS_THRESH": _IOU,
    "MODEL.RPN.IOU_THRESHOLDS": sequence(_IOU, increasing=True),
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": _POS_INT,
    "MODEL.RPN.PRE_NMS_TOPK_TEST": _POS_INT,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": _POS_INT,
    "MODEL.RPN.POST_NMS_TOPK_TEST": _POS_INT,
    "MODEL.RETINANET.NUM_CLASSES": _POS_INT,
    "MODEL.RETINANET.SCORE_THRESH_TEST": _PROB,
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES": _POS_INT,
    "MODEL.SEM_SEG_HEAD.IGNORE_VALUE": _NONNEG_INT,
    # --- weight averaging ---
    "MODEL_EMA.ENABLED": boolean(),
    "MODEL_EMA.DECAY": number(0, 1, hi_open=True),
    "MODEL_EMA.TAU": _POS,
    "MODEL_EMA.USE_FOR_EVAL": boolean(),
    # --- volumetric models (medseg_core.modeling.volumetric) ---
    "MODEL.VOLUMETRIC.IN_CHANNELS": _POS_INT,
    "MODEL.VOLUMETRIC.NUM_CLASSES": integer(2),
    "MODEL.VOLUMETRIC.IGNORE_LABEL": _NONNEG_INT,
    "MODEL.VOLUMETRIC.SIZE_DIVISIBILITY": _NONNEG_INT,
    "MODEL.VOLUMETRIC.LOSS.DICE_WEIGHT": _NONNEG,
    "MODEL.VOLUMETRIC.LOSS.CE_WEIGHT": _NONNEG,
    "MODEL.VOLUMETRIC.LOSS.DICE_SMOOTH": _NONNEG,
    # (0, 0, 0): the whole volume in one pass; (-1, -1, -1): the training patch
    "MODEL.VOLUMETRIC.SLIDING_WINDOW.ROI_SIZE": sizes_or(3, _POS_INT, (0, 0, 0), (-1, -1, -1)),
    "MODEL.VOLUMETRIC.SLIDING_WINDOW.OVERLAP": number(0, 1, hi_open=True),
    "MODEL.VOLUMETRIC.SLIDING_WINDOW.MODE": one_of("gaussian", "constant"),
    "MODEL.VOLUMETRIC.SLIDING_WINDOW.SIGMA_SCALE": _POS,
    "MODEL.VOLUMETRIC.SLIDING_WINDOW.BATCH_SIZE": _POS_INT,
    # one loss weight per output, full resolution first (their sum must be positive: _deep_supervision)
    "MODEL.VOLUMETRIC.DEEP_SUPERVISION.WEIGHTS": sequence(_NONNEG, min_len=1),
    # --- input ---
    "INPUT.FORMAT": one_of("BGR", "RGB", "L", "YUV-BT.601"),
    "INPUT.MASK_FORMAT": one_of("auto", "polygon", "bitmask"),
    "INPUT.RANDOM_FLIP": one_of("horizontal", "vertical", "both", "none"),
    "INPUT.MIN_SIZE_TRAIN": sequence(_POS_INT, min_len=1),
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": one_of("choice", "range"),
    "INPUT.MAX_SIZE_TRAIN": _POS_INT,
    "INPUT.MIN_SIZE_TEST": _NONNEG_INT,
    "INPUT.MAX_SIZE_TEST": _POS_INT,
    "INPUT.CROP.TYPE": one_of("relative_range", "relative", "absolute", "absolute_range"),
    "INPUT.CROP.SIZE": sequence(_POS, length=2),
    "INPUT.FIXED_SIZE": sequence(_NONNEG_INT, length=2),
    "INPUT.IMAGE_BIT_DEPTH": integer(8, 16),
    "INPUT.RANDOM_ROTATE90": boolean(),
    "INPUT.VOLUME.CROP_SIZE": sizes_or(3, _POS_INT, (0, 0, 0)),  # (0, 0, 0): planned from the data
    "INPUT.VOLUME.FOREGROUND_CROP_PROB": _PROB,
    "INPUT.VOLUME.NORMALIZE": one_of("zscore", "range", "percentile", "none"),
    "INPUT.VOLUME.INTENSITY_RANGE": sequence(number(), length=2, increasing=True),
    "INPUT.VOLUME.PERCENTILES": sequence(number(0, 100), length=2, increasing=True),
    "INPUT.VOLUME.FLIP_AXES": sequence(integer(0, 2), min_len=0, max_len=3, distinct=True),
    "INPUT.VOLUME.FLIP_PROB": _PROB,
    "INPUT.VOLUME.ROTATE90_PROB": _PROB,
    "INPUT.VOLUME.ROTATE90_AXES": sequence(integer(0, 2), length=2, distinct=True),
    "INPUT.VOLUME.SCALE_INTENSITY_PROB": _PROB,
    "INPUT.VOLUME.SCALE_INTENSITY": _NONNEG,
    "INPUT.VOLUME.SHIFT_INTENSITY_PROB": _PROB,
    "INPUT.VOLUME.SHIFT_INTENSITY": _NONNEG,
    "INPUT.VOLUME.PLAN_MAX_VOXELS": _NONNEG_INT,  # 0: no bound
    "INPUT.VOLUME.TARGET_SPACING": sizes_or(3, _POS, (0, 0, 0)),  # (0, 0, 0): the training set's median
    "INPUT.VOLUME.CACHE_MB": _NONNEG,  # 0: off
    "INPUT.VOLUME.ROTATE_PROB": _PROB,
    "INPUT.VOLUME.ROTATE_DEGREES": number(0, 180),
    "INPUT.VOLUME.SCALE_PROB": _PROB,
    "INPUT.VOLUME.SCALE_RANGE": sequence(_POS, length=2, increasing=True),
    "INPUT.VOLUME.NOISE_PROB": _PROB,
    "INPUT.VOLUME.NOISE_STD": _NONNEG,
    "INPUT.VOLUME.BLUR_PROB": _PROB,
    "INPUT.VOLUME.BLUR_SIGMA": sequence(_POS, length=2, increasing=True),
    "INPUT.VOLUME.CONTRAST_PROB": _PROB,
    "INPUT.VOLUME.CONTRAST": number(0, 1, hi_open=True),  # factor 1 +/- this stays positive
    "INPUT.VOLUME.LOWRES_PROB": _PROB,
    "INPUT.VOLUME.LOWRES_ZOOM": sequence(number(0, 1, lo_open=True), length=2, increasing=True),
    "INPUT.VOLUME.GAMMA_PROB": _PROB,
    "INPUT.VOLUME.GAMMA_RANGE": sequence(_POS, length=2, increasing=True),
    # --- data loading ---
    "DATALOADER.NUM_WORKERS": _NONNEG_INT,
    "DATALOADER.REPEAT_THRESHOLD": _NONNEG,
    "DATALOADER.FINAL_PHASE_ITERS": _NONNEG_INT,  # 0: no final phase
    "DATALOADER.FINAL_PHASE_OPTS": Rule(lambda v: isinstance(v, (list, tuple)) and len(v) % 2 == 0,
                                        "a list of KEY VALUE pairs"),
    "DATALOADER.FILTER_EMPTY_ANNOTATIONS": boolean(),
    "DATASETS.VALIDATE": boolean(),
    # --- solver ---
    "SOLVER.MAX_ITER": _POS_INT,
    "SOLVER.IMS_PER_BATCH": _POS_INT,
    "SOLVER.BASE_LR": _POS,
    "SOLVER.MOMENTUM": number(0, 1, hi_open=True),
    "SOLVER.NESTEROV": boolean(),
    "SOLVER.WEIGHT_DECAY": _NONNEG,
    "SOLVER.WEIGHT_DECAY_NORM": _NONNEG,
    "SOLVER.WEIGHT_DECAY_BIAS": number(0, allow_none=True),
    "SOLVER.BIAS_LR_FACTOR": _POS,
    "SOLVER.GAMMA": _POS,
    "SOLVER.STEPS": sequence(_NONNEG_INT, min_len=0, increasing=True),
    "SOLVER.WARMUP_FACTOR": number(0, 1),
    "SOLVER.WARMUP_ITERS": _NONNEG_INT,
    "SOLVER.WARMUP_METHOD": one_of("linear", "constant"),
    "SOLVER.LR_SCHEDULER_NAME": one_of("WarmupMultiStepLR", "WarmupCosineLR", "WarmupPolyLR", "WarmupLinearLR"),
    "SOLVER.CHECKPOINT_PERIOD": _POS_INT,
    "SOLVER.REFERENCE_WORLD_SIZE": _NONNEG_INT,
    "SOLVER.CLIP_GRADIENTS.ENABLED": boolean(),
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": one_of("value", "norm", "full_model"),
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": _POS,
    "SOLVER.CLIP_GRADIENTS.NORM_TYPE": _POS,
    "SOLVER.AMP.ENABLED": boolean(),
    "SOLVER.OPTIMIZER": one_of("SGD", "ADAMW", case_sensitive=False),
    "SOLVER.POLY_LR_POWER": _POS,
    "SOLVER.END_LR_FACTOR": number(0, 1),
    "SOLVER.WARMUP_MOMENTUM": number(hi=1, hi_open=True),
    "SOLVER.ACCUMULATE_STEPS": _POS_INT,
    "SOLVER.BUDGET.MINUTES": _NONNEG,
    "SOLVER.BUDGET.CLOCK": one_of("wall", "cpu"),
    "SOLVER.BUDGET.REPLAN_PERIOD": _POS_INT,
    "SOLVER.BUDGET.CHECKPOINT_MINUTES": _NONNEG,
    # --- test ---
    "TEST.EVAL_PERIOD": _NONNEG_INT,
    "TEST.DETECTIONS_PER_IMAGE": _POS_INT,
    "TEST.DETECTIONS_PER_IMAGE_EVAL": _POS_INT,
    "TEST.MASK_OUTPUT": one_of("full", "boxes"),
    "TEST.ULTRALYTICS.IMAGE_SIZE": multiple_of(32, 32),
    "TEST.ULTRALYTICS.CONF_THRESH": _PROB,
    "TEST.ULTRALYTICS.MAX_DET": _POS_INT,
    "TEST.ULTRALYTICS.MASK_RATIO": _POS_INT,
    "TEST.ULTRALYTICS.OVERLAP_MASK": boolean(),
    "TEST.COMPLEXITY_INPUT_SHAPE": sequence(_POS_INT, min_len=3, max_len=4),
    "TEST.CURVE.POINTS": Rule(lambda v: _is_int(v) and (v == 0 or v >= 2), "0 (off) or an integer >= 2"),
}


def _pixel_stats_agree(cfg) -> List[Tuple[str, str]]:
    mean, std = list(cfg.MODEL.PIXEL_MEAN), list(cfg.MODEL.PIXEL_STD)
    if len(mean) != len(std):
        return [("MODEL.PIXEL_STD", f"must have as many values as MODEL.PIXEL_MEAN ({len(mean)}), got {len(std)}")]
    return []


def _ultralytics_mask_ratio(cfg) -> List[Tuple[str, str]]:
    u = cfg.TEST.get("ULTRALYTICS")
    if u is not None and _is_int(u.IMAGE_SIZE) and _is_int(u.MASK_RATIO) and u.MASK_RATIO > 0 \
            and u.IMAGE_SIZE % u.MASK_RATIO:
        return [("TEST.ULTRALYTICS.MASK_RATIO", f"must divide TEST.ULTRALYTICS.IMAGE_SIZE ({u.IMAGE_SIZE}), got {u.MASK_RATIO}")]
    return []


def _deep_supervision(cfg) -> List[Tuple[str, str]]:
    ds = cfg.MODEL.get("VOLUMETRIC", {}).get("DEEP_SUPERVISION")
    w = ds.get("WEIGHTS") if ds is not None else None
    if ds is not None and ds.get("ENABLED") and isinstance(w, (list, tuple)) and w \
            and all(isinstance(x, (int, float)) for x in w) and sum(w) <= 0:
        return [("MODEL.VOLUMETRIC.DEEP_SUPERVISION.WEIGHTS", f"must have a positive sum, got {tuple(w)}")]
    return []


CROSS_CHECKS: List[CrossCheck] = [_pixel_stats_agree, _ultralytics_mask_ratio, _deep_supervision]


def register_config_rules(rules: Dict[str, Rule], cross_checks: Iterable[CrossCheck] = ()) -> None:
    """Add a project's rules (called from its ``config.py``, next to the keys it adds)."""
    RULES.update(rules)
    for c in cross_checks:
        if c not in CROSS_CHECKS:
            CROSS_CHECKS.append(c)


_MISSING = object()


def config_problems(cfg) -> List[Tuple[str, str]]:
    """Every ``(key, problem)`` of ``cfg`` against :data:`RULES` and :data:`CROSS_CHECKS`."""
    out: List[Tuple[str, str]] = []
    for key, rule in RULES.items():
        value = config_value(cfg, key, _MISSING)
        if value is _MISSING:
            continue
        problem = rule.problem(value)
        if problem:
            out.append((key, f"{problem}, got {value!r}"))
    bad_keys = {k for k, _ in out}
    for check in CROSS_CHECKS:
        try:
            found = check(cfg)
        except (AttributeError, KeyError, TypeError, ValueError):
            continue  # a value the single-key rules already refuse
        out += [(k, p) for k, p in found if k not in bad_keys]
    return out


def validate_config(cfg, source: Optional[str], overrides: Sequence[str] = ()) -> None:
    """Raise one :class:`ConfigError` listing every value of ``cfg`` outside its valid range.

    Each problem names the key and where its value came from: the command line when ``overrides``
    set it, else ``source`` (the config file)."""
    problems = config_problems(cfg)
    if not problems:
        return
    from_cli = set(list(overrides)[0::2])
    lines = []
    for key, problem in problems:
        where = "command line" if key in from_cli else (source or "config defaults")
        lines.append(f"{where}: {key} {problem}")
    if len(lines) == 1:
        raise ConfigError(lines[0])
    raise ConfigError(f"{source or 'config'}: {len(lines)} config values are outside their valid range "
                      "(each listed above)", details=lines)
