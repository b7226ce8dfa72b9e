"""Shared volumetric (3D) segmentation: a network registry and the meta-architecture around it.

Every 3D model of the toolkit (LightMedSeg, LGMSNet-3D, ...) is a plain ``nn.Module`` mapping a
``(B, C_in, D, H, W)`` volume to ``(B, K, D, H, W)`` class logits, registered by name in
:data:`VOLUME_NETWORK_REGISTRY` and selected with ``MODEL.VOLUMETRIC.NETWORK``. The projects
never import each other; both plug into :class:`VolumetricSegmentor`, the Detectron2
meta-architecture that the shared trainer drives:

* **training** takes the "volume" mapper's random crops (``"image"`` (C, d, h, w) float,
  ``"label"`` (d, h, w) int64) and returns ``{"loss_dice", "loss_ce"}`` (soft Dice + cross
  entropy, weights and Dice convention configurable, ``MODEL.VOLUMETRIC.IGNORE_LABEL`` voxels
  excluded from both);
* **inference** runs MONAI's ``sliding_window_inference`` over the whole volume (ROI, overlap,
  constant/Gaussian blending from ``MODEL.VOLUMETRIC.SLIDING_WINDOW``) and returns, per input,
  ``{"pred_label": (D, H, W) int64}`` with the input's spatial shape, plus ``"sem_seg"``
  (K, D, H, W) softmax probabilities when ``MODEL.VOLUMETRIC.RETURN_PROBS`` is on.

A network states the stride its input must be divisible by in an attribute
``size_divisibility`` (0/absent: any size). Inputs that are not divisible are zero-padded at
the far end of each axis (labels with the ignore label) and the output is cropped back, so odd
volume sizes never crash; the same holds for every sliding window (MONAI itself pads volumes
smaller than the ROI).

Sliding-window conventions follow the 3D peers (docs/lightmedseg.md, "3D peers"): MONAI's
sliding window with 50% overlap and Gaussian importance weighting (sigma = ROI/8, nnU-Net's
choice), blending **logits** (as nnU-Net v2 does) before the softmax; optional mirror test-time
augmentation over all axis combinations (nnU-Net's default, off here for CPU cost).
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

__all__ = [
    "VOLUME_NETWORK_REGISTRY",
    "build_volume_network",
    "add_volumetric_config",
    "VolumetricSegmentor",
    "dice_ce_loss",
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
    # in one pass. Best a multiple of the network's size divisibility (else each window is
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

    cfg.INPUT.VOLUME = CN()
    # Training crop size in voxels (array-axis order of the NIfTI data); smaller volumes are
    # zero-padded (label: background) up to it first.
    cfg.INPUT.VOLUME.CROP_SIZE = (48, 64, 48)
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
    # Array axes that may be flipped in training, each independently with FLIP_PROB.
    cfg.INPUT.VOLUME.FLIP_AXES = (0, 1, 2)
    # Per-axis flip probability (LGMSNet-3D pipeline: 0.2; 0 disables flips).
    cfg.INPUT.VOLUME.FLIP_PROB = 0.5
    # Probability of a random 90-degree rotation in the plane of ROTATE90_AXES (the crop must
    # be square in that plane so that batches stack).
    cfg.INPUT.VOLUME.ROTATE90_PROB = 0.0
    # The two array axes of the 90-degree rotation plane.
    cfg.INPUT.VOLUME.ROTATE90_AXES = (0, 2)
    # Probability of multiplying intensities by (1 + U(-SCALE, SCALE)) (MONAI RandScaleIntensity).
    cfg.INPUT.VOLUME.SCALE_INTENSITY_PROB = 0.1
    # Range of that relative intensity scaling.
    cfg.INPUT.VOLUME.SCALE_INTENSITY = 0.1
    # Probability of adding U(-SHIFT, SHIFT) to intensities (MONAI RandShiftIntensity).
    cfg.INPUT.VOLUME.SHIFT_INTENSITY_PROB = 0.1
    # Range of that additive intensity shift (in normalised units).
    cfg.INPUT.VOLUME.SHIFT_INTENSITY = 0.1


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
    """
    num_classes = logits.shape[1]
    valid = target != ignore_label
    tgt = torch.where(valid, target, torch.zeros_like(target))
    if (tgt < 0).any() or (tgt >= num_classes).any():
        bad = torch.unique(tgt[(tgt < 0) | (tgt >= num_classes)]).tolist()
        raise ValueError(f"label values {bad} are outside [0, {num_classes}) and not the ignore label")
    out: Dict[str, torch.Tensor] = {}
    if ce_weight > 0:
        out["loss_ce"] = ce_weight * F.cross_entropy(logits, target.long(), ignore_index=ignore_label)
    if dice_weight > 0:
        prob = logits.float().softmax(1)
        onehot = F.one_hot(tgt.long(), num_classes).movedim(-1, 1).to(prob.dtype)
        mask = valid.unsqueeze(1).to(prob.dtype)
        prob, onehot = prob * mask, onehot * mask
        dims = [0] + list(range(2, prob.ndim)) if batch_dice else list(range(2, prob.ndim))
        inter = (prob * onehot).sum(dims)
        denom = (prob * prob if squared_pred else prob).sum(dims) + onehot.sum(dims)
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
    ):
        super().__init__()
        self.network = network
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.size_divisibility = int(size_divisibility or getattr(network, "size_divisibility", 0) or 0)
        self.loss_cfg = dict(loss_cfg or {})
        self.roi_size = tuple(int(r) for r in roi_size)
        if len(self.roi_size) != 3 or (any(self.roi_size) and not all(self.roi_size)):
            raise ConfigError(
                f"MODEL.VOLUMETRIC.SLIDING_WINDOW.ROI_SIZE must be 3 positive sizes or (0, 0, 0), "
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
        # carries the device (there is no pixel-mean buffer in this meta-arch)
        self.register_buffer("_device_anchor", torch.zeros(0), persistent=False)

    @classmethod
    def from_config(cls, cfg) -> Dict:
        v = cfg.MODEL.VOLUMETRIC
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
            "roi_size": v.SLIDING_WINDOW.ROI_SIZE,
            "overlap": v.SLIDING_WINDOW.OVERLAP,
            "blend_mode": v.SLIDING_WINDOW.MODE,
            "sigma_scale": v.SLIDING_WINDOW.SIGMA_SCALE,
            "sw_batch_size": v.SLIDING_WINDOW.BATCH_SIZE,
            "mirror_tta": v.MIRROR_TTA,
            "return_probs": v.RETURN_PROBS,
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

    def _padded_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Network logits for any input size: pad to the stride, run, crop back."""
        xp, size = pad_to_divisible(x, self.size_divisibility)
        logits = self.network(xp)
        return logits[..., : size[0], : size[1], : size[2]]

    def _window_logits(self, x: torch.Tensor) -> torch.Tensor:
        if not all(self.roi_size):
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
        logits = self.network(x)
        if tuple(logits.shape) != (x.shape[0], self.num_classes) + tuple(x.shape[2:]):
            raise ValueError(
                f"network {type(self.network).__name__} returned {tuple(logits.shape)} for input "
                f"{tuple(x.shape)}; expected (B, {self.num_classes}, D, H, W) at the input resolution"
            )
        return dice_ce_loss(logits, y, self.ignore_label, **self.loss_cfg)

    def inference(self, batched_inputs: List[Dict]) -> List[Dict[str, torch.Tensor]]:
        results = []
        for img in self._images(batched_inputs):
            logits = self.predict_logits(img.unsqueeze(0))[0]
            prob = logits.float().softmax(0)
            res = {"pred_label": prob.argmax(0)}
            if self.return_probs:
                res["sem_seg"] = prob
            results.append(res)
        return results
