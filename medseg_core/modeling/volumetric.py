"""Shared volumetric (3D) segmentation: a network registry and the meta-architecture around it.

Every 3D model of the toolkit (LightMedSeg, LGMSNet-3D, ...) is a plain ``nn.Module`` mapping a
``(B, C_in, D, H, W)`` volume to ``(B, K, D, H, W)`` class logits, registered by name in
:data:`VOLUME_NETWORK_REGISTRY` and selected with ``MODEL.VOLUMETRIC.NETWORK``. The projects
never import each other; both plug into :class:`VolumetricSegmentor`, the Detectron2
meta-architecture that the shared trainer drives:

* **training** takes the "volume" mapper's random crops (``"image"`` (C, d, h, w) float,
  ``"label"`` (d, h, w) int64) and returns ``{"loss_dice", "loss_ce"}`` (soft Dice + cross
  entropy, weights and Dice convention configurable, ``MODEL.VOLUMETRIC.IGNORE_LABEL`` voxels
  excluded from both). With deep supervision (``MODEL.VOLUMETRIC.DEEP_SUPERVISION``) a
  network that has ``forward_deep_supervision(x) -> [full, 1/2, 1/4, ...]`` decoder outputs
  is trained on the weighted sum of each output's loss against the label down-sampled by
  nearest neighbour (nnU-Net; the weights are normalised to sum 1);
* **inference** runs MONAI's ``sliding_window_inference`` over the whole volume (ROI, overlap,
  constant/Gaussian blending from ``MODEL.VOLUMETRIC.SLIDING_WINDOW``) and returns, per input,
  ``{"pred_label": (D, H, W) int64}`` with the input's spatial shape, plus ``"sem_seg"``
  (K, D, H, W) softmax probabilities when ``MODEL.VOLUMETRIC.RETURN_PROBS`` is on.

A network states the stride its input must be divisible by in an attribute
``size_divisibility`` (0/absent: any size). Inputs that are not divisible are zero-padded at
the far end of each axis (labels with the ignore label) and the output is cropped back, so odd
volume sizes never crash; the same holds for every sliding window (MONAI itself pads volumes
smaller than the ROI).

Sliding-window conventions follow nnU-Net and MONAI: 50% overlap and Gaussian importance
weighting (sigma = ROI/8, nnU-Net's choice), blending **logits** (as nnU-Net v2 does) before the
softmax; the window can be the training patch (``ROI_SIZE (-1, -1, -1)``); optional mirror
test-time augmentation over all axis combinations (nnU-Net's default; the key's default is off
for CPU cost, the msd-hippocampus recipe turns it on). A prediction made at a resampled
spacing (input key ``"orig_shape"``) is interpolated back to the stored grid before the argmax.
"""
from __future__ import annotations

import itertools
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import compat  # noqa: F401

from detectron2.config import CfgNode as CN
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils.registry import Registry

from ..errors import ConfigError
from .distributed import count_normalizer, sum_over_ranks

__all__ = [
    "VOLUME_NETWORK_REGISTRY",
    "build_volume_network",
    "add_volumetric_config",
    "VolumetricSegmentor",
    "dice_ce_loss",
    "deep_supervision_outputs",
    "downsample_label",
    "pad_to_divisible",
]

VOLUME_NETWORK_REGISTRY = Registry("VOLUME_NETWORK")
VOLUME_NETWORK_REGISTRY.__doc__ = """
3D segmentation networks by name (``MODEL.VOLUMETRIC.NETWORK``). A registered object is called
as ``obj(cfg)`` and returns an ``nn.Module`` mapping ``(B, MODEL.VOLUMETRIC.IN_CHANNELS, D, H, W)``
to ``(B, MODEL.VOLUMETRIC.NUM_CLASSES, D, H, W)`` logits. An int attribute ``size_divisibility``
tells the meta-architecture which stride the input sizes must be multiples of.
"""


def add_volumetric_config(cfg) -> None:
    """Keys shared by every volumetric model: network choice, loss, sliding window, 3D input."""
    cfg.MODEL.VOLUMETRIC = CN()
    # Name of the network in VOLUME_NETWORK_REGISTRY (e.g. "LightMedSeg", "LGMSNet3D").
    cfg.MODEL.VOLUMETRIC.NETWORK = ""
    # Image channels (modalities) fed to the network; a volume with another count is an error.
    cfg.MODEL.VOLUMETRIC.IN_CHANNELS = 1
    # Output classes including background (msd-hippocampus: background, anterior, posterior).
    cfg.MODEL.VOLUMETRIC.NUM_CLASSES = 3
    # Label value excluded from loss and metrics (also used to pad labels of odd-sized crops).
    cfg.MODEL.VOLUMETRIC.IGNORE_LABEL = 255
    # Input-size multiple; 0 uses the network's own ``size_divisibility`` attribute.
    cfg.MODEL.VOLUMETRIC.SIZE_DIVISIBILITY = 0
    # Return softmax probabilities ("sem_seg", K x D x H x W) besides the label volume at
    # inference; off by default because K float volumes can be large.
    cfg.MODEL.VOLUMETRIC.RETURN_PROBS = False
    # Mirror test-time augmentation: average logits over flips of all axis combinations
    # (8 passes, nnU-Net's default); off by default for CPU cost.
    cfg.MODEL.VOLUMETRIC.MIRROR_TTA = False

    cfg.MODEL.VOLUMETRIC.LOSS = CN()
    # Weight of the soft Dice term ("loss_dice").
    cfg.MODEL.VOLUMETRIC.LOSS.DICE_WEIGHT = 1.0
    # Weight of the voxel-wise cross-entropy term ("loss_ce").
    cfg.MODEL.VOLUMETRIC.LOSS.CE_WEIGHT = 1.0
    # Include the background class in the Dice term (MONAI DiceCELoss: yes; nnU-Net: no).
    cfg.MODEL.VOLUMETRIC.LOSS.DICE_INCLUDE_BACKGROUND = False
    # "Batch Dice": sum intersections over the whole batch rather than per volume (nnU-Net),
    # which is stable for small structures missing from some crops.
    cfg.MODEL.VOLUMETRIC.LOSS.DICE_BATCH = True
    # Square the probabilities in the Dice denominator (MONAI ``squared_pred``; LGMSNet-3D).
    cfg.MODEL.VOLUMETRIC.LOSS.DICE_SQUARED_PRED = False
    # Smoothing added to numerator and denominator of the soft Dice (MONAI's 1e-5).
    cfg.MODEL.VOLUMETRIC.LOSS.DICE_SMOOTH = 1e-5

    cfg.MODEL.VOLUMETRIC.SLIDING_WINDOW = CN()
    # Window (ROI) size in voxels, array-axis order; (0, 0, 0) runs the whole (padded) volume
    # in one pass; (-1, -1, -1) uses the training patch size (INPUT.VOLUME.CROP_SIZE or its
    # plan; nnU-Net). Best a multiple of the network's size divisibility (else each window is
    # padded up to it, which costs compute but is correct).
    cfg.MODEL.VOLUMETRIC.SLIDING_WINDOW.ROI_SIZE = (0, 0, 0)
    # Fraction of overlap between neighbouring windows (nnU-Net / LGMSNet-3D: 0.5).
    cfg.MODEL.VOLUMETRIC.SLIDING_WINDOW.OVERLAP = 0.5
    # Blending of overlapping windows: "gaussian" (nnU-Net) or "constant" (MONAI default).
    cfg.MODEL.VOLUMETRIC.SLIDING_WINDOW.MODE = "gaussian"
    # Gaussian sigma as a fraction of the ROI (nnU-Net and MONAI: 1/8).
    cfg.MODEL.VOLUMETRIC.SLIDING_WINDOW.SIGMA_SCALE = 0.125
    # Windows evaluated per network call.
    cfg.MODEL.VOLUMETRIC.SLIDING_WINDOW.BATCH_SIZE = 1

    cfg.MODEL.VOLUMETRIC.DEEP_SUPERVISION = CN()
    # Deep supervision: networks with a ``forward_deep_supervision`` method (decoder outputs at
    # full, 1/2, 1/4, ... resolution) are trained on a weighted sum of the Dice + CE losses of
    # every output against the label down-sampled by nearest neighbour (nnU-Net). Networks
    # without such outputs train on their single output.
    cfg.MODEL.VOLUMETRIC.DEEP_SUPERVISION.ENABLED = True
    # Loss weight per output, full resolution first; the number of entries is the number of
    # outputs used (normalised to sum 1). nnU-Net's 1, 1/2, 1/4 with the lowest set to 0 for a
    # 3-pooling plan (Task04 Hippocampus) leaves (1, 0.5).
    cfg.MODEL.VOLUMETRIC.DEEP_SUPERVISION.WEIGHTS = (1.0, 0.5)

    cfg.INPUT.VOLUME = CN()
    # Training patch (crop) size in voxels, array-axis order; smaller volumes are zero-padded
    # (label: background) up to it first. (0, 0, 0): planned from the training set's median
    # shape, rounded up to the network's stride (nnU-Net's rule; medseg_core.data.volumetric_plan).
    cfg.INPUT.VOLUME.CROP_SIZE = (0, 0, 0)
    # Upper bound on the planned patch's voxel count (0: none); the axis with the largest
    # patch/median ratio shrinks by one stride step until it fits (CPU cost per iteration).
    cfg.INPUT.VOLUME.PLAN_MAX_VOXELS = 0
    # Resample volumes whose spacing differs from TARGET_SPACING by more than 1% (trilinear
    # image, nearest label); predictions are resampled back to the stored grid.
    cfg.INPUT.VOLUME.RESAMPLE = True
    # Target voxel spacing in mm, array-axis order; (0, 0, 0): the training set's median
    # spacing (the coarse axis of anisotropic data: its 10th percentile; nnU-Net).
    cfg.INPUT.VOLUME.TARGET_SPACING = (0.0, 0.0, 0.0)
    # Where the data set statistics (shape/spacing per volume, medians) are cached as JSON;
    # "" = $MEDSEG_CACHE_DIR/volume_stats or ~/.cache/medseg-d2/volume_stats.
    cfg.INPUT.VOLUME.STATS_CACHE_DIR = ""
    # Keep decoded, normalised volumes in memory up to this many MB per process (0: off).
    cfg.INPUT.VOLUME.CACHE_MB = 1024
    # Probability that a crop is centred on a foreground voxel (else on a background voxel),
    # MONAI RandCropByPosNegLabeld; nnU-Net oversamples foreground with 0.33.
    cfg.INPUT.VOLUME.FOREGROUND_CROP_PROB = 0.33
    # Intensity normalisation per volume and channel: "zscore" (nnU-Net's MRI scheme),
    # "range" (clip INTENSITY_RANGE, scale to [0, 1]: CT), "percentile" (PERCENTILES -> [0, 1])
    # or "none".
    cfg.INPUT.VOLUME.NORMALIZE = "zscore"
    # With "zscore": compute mean/std over non-zero voxels only and leave zeros at zero
    # (skull-stripped MRI); False uses all voxels.
    cfg.INPUT.VOLUME.ZSCORE_NONZERO = False
    # (min, max) intensity window for NORMALIZE "range" (LGMSNet-3D/BTCV CT: -175, 250).
    cfg.INPUT.VOLUME.INTENSITY_RANGE = (-175.0, 250.0)
    # (lower, upper) percentiles for NORMALIZE "percentile".
    cfg.INPUT.VOLUME.PERCENTILES = (0.5, 99.5)
    # Probability of a random rotation about all three axes (nnU-Net: 0.2).
    cfg.INPUT.VOLUME.ROTATE_PROB = 0.2
    # Rotation range, +/- degrees per axis (nnU-Net, isotropic 3D: 30).
    cfg.INPUT.VOLUME.ROTATE_DEGREES = 30.0
    # Probability of a random zoom (nnU-Net: 0.2).
    cfg.INPUT.VOLUME.SCALE_PROB = 0.2
    # Zoom factor range (nnU-Net: 0.7 - 1.4).
    cfg.INPUT.VOLUME.SCALE_RANGE = (0.7, 1.4)
    # Probability of additive Gaussian noise (nnU-Net: 0.1).
    cfg.INPUT.VOLUME.NOISE_PROB = 0.1
    # Upper bound of the noise standard deviation, drawn uniformly per sample (normalised units).
    cfg.INPUT.VOLUME.NOISE_STD = 0.1
    # Probability of a Gaussian blur (nnU-Net: 0.2).
    cfg.INPUT.VOLUME.BLUR_PROB = 0.2
    # Blur sigma range in voxels (nnU-Net: 0.5 - 1).
    cfg.INPUT.VOLUME.BLUR_SIGMA = (0.5, 1.0)
    # Probability of multiplying intensities by (1 + U(-SCALE, SCALE)) (nnU-Net brightness: 0.15).
    cfg.INPUT.VOLUME.SCALE_INTENSITY_PROB = 0.15
    # Range of that relative intensity scaling (nnU-Net: 0.75 - 1.25).
    cfg.INPUT.VOLUME.SCALE_INTENSITY = 0.25
    # Probability of adding U(-SHIFT, SHIFT) to intensities (MONAI RandShiftIntensity; not in
    # nnU-Net).
    cfg.INPUT.VOLUME.SHIFT_INTENSITY_PROB = 0.0
    # Range of that additive intensity shift (in normalised units).
    cfg.INPUT.VOLUME.SHIFT_INTENSITY = 0.1
    # Probability of a contrast change around the mean, range kept (nnU-Net: 0.15).
    cfg.INPUT.VOLUME.CONTRAST_PROB = 0.15
    # Contrast factor range 1 +/- this (nnU-Net: 0.75 - 1.25).
    cfg.INPUT.VOLUME.CONTRAST = 0.25
    # Probability of simulated low resolution: down-sample (nearest), up-sample back (nnU-Net: 0.25).
    cfg.INPUT.VOLUME.LOWRES_PROB = 0.25
    # Zoom range of that down-sampling (nnU-Net: 0.5 - 1).
    cfg.INPUT.VOLUME.LOWRES_ZOOM = (0.5, 1.0)
    # Probability of a gamma transform on [0, 1]-rescaled intensities, mean/std kept (nnU-Net: 0.3).
    cfg.INPUT.VOLUME.GAMMA_PROB = 0.3
    # Gamma range (nnU-Net: 0.7 - 1.5).
    cfg.INPUT.VOLUME.GAMMA_RANGE = (0.7, 1.5)
    # Array axes that may be flipped in training, each independently with FLIP_PROB.
    cfg.INPUT.VOLUME.FLIP_AXES = (0, 1, 2)
    # Per-axis flip probability (nnU-Net mirroring: 0.5; LGMSNet-3D pipeline: 0.2; 0 disables).
    cfg.INPUT.VOLUME.FLIP_PROB = 0.5
    # Probability of a random 90-degree rotation in the plane of ROTATE90_AXES (the crop must
    # be square in that plane so that batches stack).
    cfg.INPUT.VOLUME.ROTATE90_PROB = 0.0
    # The two array axes of the 90-degree rotation plane.
    cfg.INPUT.VOLUME.ROTATE90_AXES = (0, 2)


def build_volume_network(cfg) -> nn.Module:
    """The network named by ``MODEL.VOLUMETRIC.NETWORK``."""
    name = cfg.MODEL.VOLUMETRIC.NETWORK
    if not name:
        raise ConfigError(
            "MODEL.VOLUMETRIC.NETWORK is empty; set it to one of "
            f"{sorted(name for name, _ in VOLUME_NETWORK_REGISTRY)} (import the model's project first)"
        )
    if name not in VOLUME_NETWORK_REGISTRY:
        raise ConfigError(
            f"MODEL.VOLUMETRIC.NETWORK={name!r} is not registered; known: "
            f"{sorted(name for name, _ in VOLUME_NETWORK_REGISTRY)}"
        )
    return VOLUME_NETWORK_REGISTRY.get(name)(cfg)


def deep_supervision_outputs(cfg) -> int:
    """How many outputs (full resolution first) a network should return for deep supervision:
    ``len(MODEL.VOLUMETRIC.DEEP_SUPERVISION.WEIGHTS)`` when enabled, else 1."""
    ds = cfg.MODEL.VOLUMETRIC.DEEP_SUPERVISION
    return max(len(ds.WEIGHTS), 1) if ds.ENABLED else 1


def downsample_label(label: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``(B, D, H, W)`` int labels -> ``(B, *size)`` by nearest neighbour (ignore label kept)."""
    if tuple(label.shape[1:]) == tuple(size):
        return label
    return F.interpolate(label[:, None].float(), size=tuple(size), mode="nearest")[:, 0].round().long()


def pad_to_divisible(
    x: torch.Tensor, divisor: int, value: float = 0.0
) -> Tuple[torch.Tensor, Tuple[int, int, int]]:
    """Pad the last three axes at their far end up to multiples of ``divisor``.

    Returns the padded tensor and the original spatial size (to crop the output back).
    """
    size = tuple(int(s) for s in x.shape[-3:])
    if divisor <= 1:
        return x, size
    pad = [(-s) % divisor for s in size]
    if not any(pad):
        return x, size
    # F.pad lists the last axis first
    return F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]), value=value), size


def dice_ce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_label: int = 255,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    include_background: bool = False,
    batch_dice: bool = True,
    squared_pred: bool = False,
    smooth: float = 1e-5,
) -> Dict[str, torch.Tensor]:
    """Soft Dice + cross entropy on ``(B, K, *S)`` logits and ``(B, *S)`` int targets.

    Dice per class is ``1 - (2 sum(p g) + s) / (sum(p^a) + sum(g) + s)`` (a = 2 with
    ``squared_pred``), summed over voxels of each volume (or of the whole batch with
    ``batch_dice``), then averaged over classes (and volumes). Voxels equal to
    ``ignore_label`` count in neither term. Written here rather than taken from MONAI because
    MONAI's DiceCELoss has no ignore label and its MaskedDiceLoss masks logits before the
    softmax (ignored voxels then still contribute 1/K).

    Under DDP the cross entropy is averaged over the valid voxels of the global batch and the
    batch Dice sums over the global batch (all-reduced, with gradients, as nnU-Net does), so the
    processes' mean loss equals one process's loss on the global batch.
    """
    num_classes = logits.shape[1]
    valid = target != ignore_label
    tgt = torch.where(valid, target, torch.zeros_like(target))
    if (tgt < 0).any() or (tgt >= num_classes).any():
        bad = torch.unique(tgt[(tgt < 0) | (tgt >= num_classes)]).tolist()
        raise ValueError(f"label values {bad} are outside [0, {num_classes}) and not the ignore label")
    out: Dict[str, torch.Tensor] = {}
    if ce_weight > 0:
        ce = F.cross_entropy(logits, target.long(), ignore_index=ignore_label, reduction="sum")
        out["loss_ce"] = ce_weight * ce / count_normalizer(valid.sum())
    if dice_weight > 0:
        prob = logits.float().softmax(1)
        onehot = F.one_hot(tgt.long(), num_classes).movedim(-1, 1).to(prob.dtype)
        mask = valid.unsqueeze(1).to(prob.dtype)
        prob, onehot = prob * mask, onehot * mask
        dims = [0] + list(range(2, prob.ndim)) if batch_dice else list(range(2, prob.ndim))
        inter = (prob * onehot).sum(dims)
        denom = (prob * prob if squared_pred else prob).sum(dims) + onehot.sum(dims)
        if batch_dice:
            inter, denom = sum_over_ranks(inter), sum_over_ranks(denom)
        dice = (2 * inter + smooth) / (denom + smooth)
        if not include_background:
            dice = dice[..., 1:]
        out["loss_dice"] = dice_weight * (1 - dice).mean()
    return out


@META_ARCH_REGISTRY.register()
class VolumetricSegmentor(nn.Module):
    """Detectron2 meta-architecture for 3D semantic segmentation (see the module docstring)."""

    @configurable
    def __init__(
        self,
        *,
        network: nn.Module,
        num_classes: int,
        ignore_label: int = 255,
        size_divisibility: int = 0,
        loss_cfg: Optional[Dict] = None,
        roi_size: Sequence[int] = (0, 0, 0),
        overlap: float = 0.5,
        blend_mode: str = "gaussian",
        sigma_scale: float = 0.125,
        sw_batch_size: int = 1,
        mirror_tta: bool = False,
        return_probs: bool = False,
        deep_supervision_weights: Sequence[float] = (),
        roi_resolver=None,
    ):
        super().__init__()
        self.network = network
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.size_divisibility = int(size_divisibility or getattr(network, "size_divisibility", 0) or 0)
        self.loss_cfg = dict(loss_cfg or {})
        self.roi_size = tuple(int(r) for r in roi_size)
        # (-1, -1, -1): the training patch, resolved on first use (the plan may need the training
        # set's statistics, which building a model for export or counting must not require)
        self._roi_resolver = roi_resolver
        if self.roi_size == (-1, -1, -1) and roi_resolver is None:
            raise ConfigError("MODEL.VOLUMETRIC.SLIDING_WINDOW.ROI_SIZE (-1, -1, -1) needs the training patch (a config)")
        if len(self.roi_size) != 3 or (self.roi_size != (-1, -1, -1) and (
                any(r < 0 for r in self.roi_size) or (any(self.roi_size) and not all(self.roi_size)))):
            raise ConfigError(
                f"MODEL.VOLUMETRIC.SLIDING_WINDOW.ROI_SIZE must be 3 positive sizes, (0, 0, 0) or (-1, -1, -1), "
                f"got {roi_size}"
            )
        if not 0 <= overlap < 1:
            raise ConfigError(f"MODEL.VOLUMETRIC.SLIDING_WINDOW.OVERLAP must be in [0, 1), got {overlap}")
        if blend_mode not in ("gaussian", "constant"):
            raise ConfigError(f"MODEL.VOLUMETRIC.SLIDING_WINDOW.MODE must be gaussian or constant, got {blend_mode!r}")
        self.overlap = float(overlap)
        self.blend_mode = blend_mode
        self.sigma_scale = float(sigma_scale)
        self.sw_batch_size = int(sw_batch_size)
        self.mirror_tta = bool(mirror_tta)
        self.return_probs = bool(return_probs)
        w = [float(x) for x in deep_supervision_weights]
        if any(x < 0 for x in w) or (w and sum(w) <= 0):
            raise ConfigError(f"MODEL.VOLUMETRIC.DEEP_SUPERVISION.WEIGHTS must be >= 0 with a positive sum, got {w}")
        # normalised to sum 1 (nnU-Net); used only with a network that has multi-scale outputs
        self.ds_weights = [x / sum(w) for x in w] if len(w) > 1 else []
        # carries the device (there is no pixel-mean buffer in this meta-arch)
        self.register_buffer("_device_anchor", torch.zeros(0), persistent=False)

    @classmethod
    def from_config(cls, cfg) -> Dict:
        v = cfg.MODEL.VOLUMETRIC
        roi = tuple(int(r) for r in v.SLIDING_WINDOW.ROI_SIZE)
        resolver = None
        if roi == (-1, -1, -1):
            from ..data.volumetric_plan import volume_plan

            plan_cfg = cfg.clone()
            resolver = lambda: volume_plan(plan_cfg).crop_size  # noqa: E731
        return {
            "network": build_volume_network(cfg),
            "num_classes": v.NUM_CLASSES,
            "ignore_label": v.IGNORE_LABEL,
            "size_divisibility": v.SIZE_DIVISIBILITY,
            "loss_cfg": {
                "dice_weight": v.LOSS.DICE_WEIGHT,
                "ce_weight": v.LOSS.CE_WEIGHT,
                "include_background": v.LOSS.DICE_INCLUDE_BACKGROUND,
                "batch_dice": v.LOSS.DICE_BATCH,
                "squared_pred": v.LOSS.DICE_SQUARED_PRED,
                "smooth": v.LOSS.DICE_SMOOTH,
            },
            "roi_size": roi,
            "overlap": v.SLIDING_WINDOW.OVERLAP,
            "blend_mode": v.SLIDING_WINDOW.MODE,
            "sigma_scale": v.SLIDING_WINDOW.SIGMA_SCALE,
            "sw_batch_size": v.SLIDING_WINDOW.BATCH_SIZE,
            "mirror_tta": v.MIRROR_TTA,
            "return_probs": v.RETURN_PROBS,
            "deep_supervision_weights": tuple(v.DEEP_SUPERVISION.WEIGHTS) if v.DEEP_SUPERVISION.ENABLED else (),
            "roi_resolver": resolver,
        }

    @property
    def device(self) -> torch.device:
        return self._device_anchor.device

    # ------------------------------------------------------------------ network passes
    def complexity_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network alone on a ``(B, C, D, H, W)`` tensor (for parameter / FLOP counting);
        through the network's own ``complexity_forward`` when it has one (e.g. to run attention
        as explicit matmul + ``nn.Softmax`` so that the counters see it)."""
        fn = getattr(self.network, "complexity_forward", None)
        return fn(x) if callable(fn) else self.network(x)

    def network_example(self, image: torch.Tensor) -> torch.Tensor:
        """The ``(1, C, d, h, w)`` tensor the network runs on for one window of ``image``
        (``(C, D, H, W)``): the first sliding-window ROI (zero-padded to the ROI where the volume is
        smaller; the sliding window pads to the same size, though on both sides) or, without a ROI,
        the whole volume; padded to the stride. Only its shape matters for timing.
        Network-only latency is measured on this, since the network never sees the whole volume."""
        x = image.to(self.device, torch.float32).unsqueeze(0)
        if all(self._resolved_roi()):
            x = x[(..., *(slice(0, r) for r in self.roi_size))]
            pad = [p for r, n in zip(reversed(self.roi_size), reversed(x.shape[2:])) for p in (0, max(0, r - n))]
            x = torch.nn.functional.pad(x, pad)
        return pad_to_divisible(x, self.size_divisibility)[0]

    def _padded_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Network logits for any input size: pad to the stride, run, crop back."""
        xp, size = pad_to_divisible(x, self.size_divisibility)
        logits = self.network(xp)
        return logits[..., : size[0], : size[1], : size[2]]

    def _resolved_roi(self) -> Tuple[int, int, int]:
        """The sliding-window ROI, planned from the data on first use when configured as -1."""
        if self.roi_size == (-1, -1, -1):
            self.roi_size = tuple(int(r) for r in self._roi_resolver())
        return self.roi_size

    def _window_logits(self, x: torch.Tensor) -> torch.Tensor:
        if not all(self._resolved_roi()):
            return self._padded_forward(x)
        from monai.inferers import sliding_window_inference

        return sliding_window_inference(
            x, self.roi_size, self.sw_batch_size, self._padded_forward,
            overlap=self.overlap, mode=self.blend_mode, sigma_scale=self.sigma_scale,
        )

    @torch.no_grad()
    def predict_logits(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, C, D, H, W)`` -> ``(B, K, D, H, W)`` logits over the whole volume."""
        logits = self._window_logits(image)
        if self.mirror_tta:
            count = 1
            for r in range(1, 4):
                for axes in itertools.combinations((2, 3, 4), r):
                    logits = logits + self._window_logits(image.flip(axes)).flip(axes)
                    count += 1
            logits = logits / count
        return logits

    # ------------------------------------------------------------------ Detectron2 API
    def _images(self, batched_inputs: List[Dict]) -> List[torch.Tensor]:
        out = []
        for d in batched_inputs:
            img = d["image"]
            if img.ndim != 4:
                raise ValueError(
                    f"{d.get('file_name', 'input')}: expected a (C, D, H, W) image tensor, got shape {tuple(img.shape)}"
                )
            out.append(img.to(self.device, torch.float32))
        return out

    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return self.inference(batched_inputs)
        images = self._images(batched_inputs)
        shapes = {tuple(i.shape) for i in images}
        if len(shapes) != 1:
            raise ValueError(f"training crops must share one shape to be batched, got {sorted(shapes)}")
        x = torch.stack(images)
        y = torch.stack([d["label"].to(self.device, torch.long) for d in batched_inputs])
        if tuple(y.shape[1:]) != tuple(x.shape[2:]):
            raise ValueError(f"label crop {tuple(y.shape[1:])} does not match image crop {tuple(x.shape[2:])}")
        x, _ = pad_to_divisible(x, self.size_divisibility)
        y, _ = pad_to_divisible(y, self.size_divisibility, value=self.ignore_label)
        ds = getattr(self.network, "forward_deep_supervision", None)
        if self.ds_weights and callable(ds):
            outputs = list(ds(x))[: len(self.ds_weights)]
        else:
            outputs = [self.network(x)]
        logits = outputs[0]
        if tuple(logits.shape) != (x.shape[0], self.num_classes) + tuple(x.shape[2:]):
            raise ValueError(
                f"network {type(self.network).__name__} returned {tuple(logits.shape)} for input "
                f"{tuple(x.shape)}; expected (B, {self.num_classes}, D, H, W) at the input resolution"
            )
        if len(outputs) == 1:
            return dice_ce_loss(logits, y, self.ignore_label, **self.loss_cfg)
        weights = self.ds_weights[: len(outputs)]
        total = sum(weights)
        losses: Dict[str, torch.Tensor] = {}
        for w, out in zip(weights, outputs):
            if w == 0:
                continue
            part = dice_ce_loss(out, downsample_label(y, out.shape[2:]), self.ignore_label, **self.loss_cfg)
            for k, v in part.items():
                losses[k] = losses.get(k, 0.0) + (w / total) * v
        return losses

    def inference(self, batched_inputs: List[Dict]) -> List[Dict[str, torch.Tensor]]:
        results = []
        for d, img in zip(batched_inputs, self._images(batched_inputs)):
            logits = self.predict_logits(img.unsqueeze(0))
            orig = d.get("orig_shape")
            if orig is not None and tuple(orig) != tuple(logits.shape[2:]):
                # the mapper resampled the volume to the target spacing: back to the stored grid
                logits = F.interpolate(logits.float(), size=tuple(int(s) for s in orig), mode="trilinear",
                                       align_corners=False)
            logits = logits[0]
            prob = logits.float().softmax(0)
            res = {"pred_label": prob.argmax(0)}
            if self.return_probs:
                res["sem_seg"] = prob
            results.append(res)
        return results
