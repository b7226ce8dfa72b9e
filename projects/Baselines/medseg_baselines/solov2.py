"""SOLOv2 (Wang et al., "SOLOv2: Dynamic and Fast Instance Segmentation", NeurIPS 2020) as a
Detectron2 meta-architecture, written from the paper.

* Backbone: ResNet-50 + FPN P2-P6 (Detectron2's ``build_resnet_fpn_backbone``; P6 by max
  pooling, as SOLO's FPN), 256 channels.
* Instance head (:mod:`.solov2_head`): category branch on S x S grids per level
  (S = 40, 36, 24, 16, 12 for P2..P6) and kernel branch predicting dynamic 1x1 conv kernels;
  unified mask feature branch at 1/4 of the input (E = 256).
* Targets (:mod:`.solov2_targets`): scale ranges (1-96, 48-192, 96-384, 192-768, 384-2048 px of
  sqrt(wh)), centre regions with sigma = 0.2.
* Loss (:mod:`.solov2_loss`): focal category loss + 3 x Dice mask loss.
* Inference: category scores (sigmoid, kept at their 2x2 local maxima as the reference code
  does), cells above 0.1 produce masks sigma(G * F); masks with no more pixels than their level
  stride are dropped; score = category score x maskness (mean probability inside the binary
  mask); the best 500 go through **Matrix NMS** (:mod:`.matrix_nms`, Gaussian, class-aware),
  decayed scores below 0.05 are dropped and the best 100 kept; masks are resampled once to the
  original image size (padding removed) and thresholded at 0.5. SOLOv2 predicts no boxes:
  ``pred_boxes`` are the masks' tight boxes (so box AP is defined).
  Where the reference computes masks for every cell above the threshold before ranking, here
  at most ``PRE_NMS_TOPK`` cells (best category scores) get a mask, bounding the work on a CPU.

Deploy split: :meth:`SOLOv2.network` (normalised padded images -> per-level category logits,
per-level kernels, mask feature), :meth:`SOLOv2.postprocess` (-> ``[{"instances": Instances}]``
at the original sizes) and :meth:`SOLOv2.complexity_forward` (the network only); with
:class:`~medseg_core.modeling.normalized_input.SplitInferenceDeploy` they are the deploy interface
(export, runtimes, benchmark, demo).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import medseg_core  # noqa: F401  (compatibility shim before detectron2)

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.structures import BitMasks, Instances

from medseg_core.errors import ConfigError
from medseg_core.modeling.normalized_input import ImageInput, SplitInferenceDeploy, normalized_input_config

from .instance_masks import gt_mask_tensor, resample_to_original, training_instances
from .matrix_nms import matrix_nms
from .solov2_head import SOLOv2InstanceHead, SOLOv2MaskFeatureHead
from .solov2_loss import SOLOv2Loss, dynamic_masks
from .solov2_targets import SOLOTargets, solov2_targets

__all__ = ["SOLOv2"]


def _cells_last(x: Tensor) -> Tensor:
    """(B, K, S, S) -> (B, S * S, K), cells row-major."""
    return x.flatten(2).transpose(1, 2)


@META_ARCH_REGISTRY.register()
class SOLOv2(SplitInferenceDeploy, nn.Module):
    """SOLOv2 instance segmentation; see the module docstring."""

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        in_features: Sequence[str],
        mask_in_features: Sequence[str],
        num_classes: int,
        num_grids: Sequence[int],
        scale_ranges: Sequence[Sequence[float]],
        level_strides: Sequence[int],
        sigma: float,
        head_channels: int,
        num_head_convs: int,
        norm: str,
        mask_feature_channels: int,
        mask_dim: int,
        kernel_size: int,
        prior_prob: float,
        criterion: SOLOv2Loss,
        score_thresh: float = 0.1,
        mask_thresh: float = 0.5,
        pre_nms_topk: int = 500,
        nms_kernel: str = "gaussian",
        nms_sigma: float = 0.5,
        update_thresh: float = 0.05,
        detections_per_image: int = 100,
        image_input: ImageInput,
        size_divisibility: int = 32,
    ) -> None:
        super().__init__()
        if not (len(in_features) == len(num_grids) == len(scale_ranges) == len(level_strides)):
            raise ConfigError(
                f"MODEL.SOLOV2: IN_FEATURES {list(in_features)}, NUM_GRIDS {list(num_grids)}, SCALE_RANGES "
                f"{[list(r) for r in scale_ranges]} and LEVEL_STRIDES {list(level_strides)} must have one entry per level"
            )
        self.backbone = backbone
        shapes = backbone.output_shape()
        missing = [f for f in list(in_features) + list(mask_in_features) if f not in shapes]
        if missing:
            raise ConfigError(f"MODEL.SOLOV2: features {missing} not produced by the backbone ({sorted(shapes)})")
        channels = {shapes[f].channels for f in list(in_features) + list(mask_in_features)}
        if len(channels) != 1:
            raise ConfigError(f"MODEL.SOLOV2: the FPN levels differ in channels {channels}")
        cin = channels.pop()
        self.in_features, self.mask_in_features = list(in_features), list(mask_in_features)
        self.num_classes = int(num_classes)
        self.num_grids = [int(s) for s in num_grids]
        self.scale_ranges = [tuple(float(v) for v in r) for r in scale_ranges]
        self.level_strides = [int(s) for s in level_strides]
        self.sigma, self.kernel_size = float(sigma), int(kernel_size)
        self.mask_stride = shapes[self.mask_in_features[0]].stride
        self.head = SOLOv2InstanceHead(
            cin, num_classes, num_grids, mask_dim * kernel_size ** 2, head_channels, num_head_convs, norm, prior_prob
        )
        self.mask_head = SOLOv2MaskFeatureHead(cin, len(mask_in_features), mask_feature_channels, mask_dim, norm)
        self.criterion = criterion
        self.init_input(image_input, max(int(size_divisibility), getattr(backbone, "size_divisibility", 0) or 0))
        self.score_thresh, self.mask_thresh = float(score_thresh), float(mask_thresh)
        self.pre_nms_topk, self.detections_per_image = int(pre_nms_topk), int(detections_per_image)
        self.nms_kernel, self.nms_sigma, self.update_thresh = nms_kernel, float(nms_sigma), float(update_thresh)
        if nms_kernel not in ("gaussian", "linear"):
            raise ConfigError(f"MODEL.SOLOV2.MATRIX_NMS_KERNEL must be 'gaussian' or 'linear', got {nms_kernel!r}")

    @classmethod
    def from_config(cls, cfg) -> Dict:
        s = cfg.MODEL.SOLOV2
        return dict(
            backbone=build_backbone(cfg),
            in_features=s.IN_FEATURES, mask_in_features=s.MASK_IN_FEATURES, num_classes=s.NUM_CLASSES,
            num_grids=s.NUM_GRIDS, scale_ranges=s.SCALE_RANGES, level_strides=s.LEVEL_STRIDES, sigma=s.SIGMA,
            head_channels=s.HEAD_CHANNELS, num_head_convs=s.NUM_HEAD_CONVS, norm=s.NORM,
            mask_feature_channels=s.MASK_FEATURE_CHANNELS, mask_dim=s.MASK_DIM, kernel_size=s.KERNEL_SIZE,
            prior_prob=s.PRIOR_PROB,
            criterion=SOLOv2Loss(s.NUM_CLASSES, s.KERNEL_SIZE, s.FOCAL_ALPHA, s.FOCAL_GAMMA,
                                 s.LOSS_CATE_WEIGHT, s.LOSS_MASK_WEIGHT),
            **normalized_input_config(cfg), size_divisibility=s.SIZE_DIVISIBILITY, score_thresh=s.SCORE_THRESH_TEST, mask_thresh=s.MASK_THRESH,
            pre_nms_topk=s.PRE_NMS_TOPK, nms_kernel=s.MATRIX_NMS_KERNEL, nms_sigma=s.MATRIX_NMS_SIGMA,
            update_thresh=s.UPDATE_THRESH, detections_per_image=s.DETECTIONS_PER_IMAGE,
        )

    # ------------------------------------------------------------------ network
    def network(self, images: Tensor) -> Tuple[Tensor, ...]:
        """Normalised (B, 3, H, W) -> (cate_l..., kernel_l..., mask feature) raw outputs."""
        feats = self.backbone(images)
        cate, kernel = self.head([feats[f] for f in self.in_features])
        return (*cate, *kernel, self.mask_head([feats[f] for f in self.mask_in_features]))

    def complexity_forward(self, images: Tensor) -> Tuple[Tensor, ...]:
        """The network alone (for parameter/FLOP counting)."""
        return self.network(images)

    def deploy_output_names(self) -> List[str]:
        """The order of :meth:`network`: per level category logits and kernels; the mask feature."""
        return [f"{kind}_{f}" for kind in ("cate", "kernel") for f in self.in_features] + ["mask_feature"]

    def _split(self, raw: Sequence[Tensor]):
        levels = (len(raw) - 1) // 2
        cate = torch.cat([_cells_last(c) for c in raw[:levels]], 1)
        kernel = torch.cat([_cells_last(k) for k in raw[levels:2 * levels]], 1)
        return cate, kernel, raw[-1]

    def forward(self, batched_inputs: List[Dict]):
        images = self.preprocess_image(batched_inputs)
        raw = self.network(images.tensor)
        if self.training:
            cate, kernel, mask_feature = self._split(raw)
            targets = self.prepare_targets(batched_inputs, images.tensor.shape[-2:])
            return self.criterion(cate, kernel, mask_feature, targets)
        sizes = [(int(x.get("height", h)), int(x.get("width", w))) for x, (h, w) in zip(batched_inputs, images.image_sizes)]
        return self.postprocess(raw, images.image_sizes, sizes)

    # ------------------------------------------------------------------ training
    def prepare_targets(self, batched_inputs: List[Dict], padded_hw) -> List[SOLOTargets]:
        return [
            solov2_targets(
                inst.gt_boxes.tensor.float(), inst.gt_classes.long(), gt_mask_tensor(inst, padded_hw, self.device, where),
                self.num_classes, self.num_grids, self.scale_ranges, self.sigma, self.mask_stride,
            )
            for where, inst in training_instances(batched_inputs, self.device)
        ]

    # ------------------------------------------------------------------ inference
    def _cell_strides(self, device: torch.device) -> Tensor:
        return torch.cat([torch.full((s * s,), float(st), device=device) for s, st in zip(self.num_grids, self.level_strides)])

    @torch.no_grad()
    def postprocess(
        self, raw: Sequence[Tensor], image_sizes: List[Tuple[int, int]], original_sizes: List[Tuple[int, int]]
    ) -> List[Dict[str, Instances]]:
        """Raw network outputs -> per image ``{"instances": Instances}`` at ``original_sizes``."""
        levels = (len(raw) - 1) // 2
        # keep each category score only at its 2x2 local maximum (reference "points NMS")
        cate_levels = []
        for c in raw[:levels]:
            p = c.float().sigmoid()
            peak = F.max_pool2d(p, 2, stride=1, padding=1)[..., :-1, :-1]
            cate_levels.append(_cells_last(p * (peak == p)))
        cate = torch.cat(cate_levels, 1)
        kernel = torch.cat([_cells_last(k) for k in raw[levels:2 * levels]], 1).float()
        mask_feature = raw[-1].float()
        strides = self._cell_strides(cate.device)
        return [
            {"instances": self._image_instances(cate[i], kernel[i], mask_feature[i], strides, self.mask_stride, hw, out)}
            for i, (hw, out) in enumerate(zip(image_sizes, original_sizes))
        ]

    def _image_instances(
        self, cate: Tensor, kernel: Tensor, mask_feature: Tensor, strides: Tensor, mask_stride: int,
        image_size: Tuple[int, int], out_size: Tuple[int, int],
    ) -> Instances:
        H, W = out_size
        cand = (cate > self.score_thresh).nonzero()
        scores = cate[cand[:, 0], cand[:, 1]]
        if scores.numel() > self.pre_nms_topk:
            top = scores.topk(self.pre_nms_topk).indices
            cand, scores = cand[top], scores[top]
        cells, labels = cand[:, 0], cand[:, 1]
        probs = dynamic_masks(mask_feature, kernel[cells], self.kernel_size).sigmoid()
        binary = probs > self.mask_thresh
        areas = binary.flatten(1).sum(1).float()
        keep = areas > strides[cells]
        probs, binary, areas, labels, scores = probs[keep], binary[keep], areas[keep], labels[keep], scores[keep]
        maskness = (probs * binary).flatten(1).sum(1) / areas.clamp(min=1.0)
        scores = scores * maskness
        order = scores.argsort(descending=True)[: self.pre_nms_topk]
        probs, binary, areas, labels, scores = probs[order], binary[order], areas[order], labels[order], scores[order]
        scores = matrix_nms(binary, labels, scores, self.nms_kernel, self.nms_sigma, areas)
        keep = scores >= self.update_thresh
        probs, labels, scores = probs[keep], labels[keep], scores[keep]
        order = scores.argsort(descending=True)[: self.detections_per_image]
        probs, labels, scores = probs[order], labels[order], scores[order]
        masks = resample_to_original(probs, mask_stride, image_size, (H, W)) > self.mask_thresh
        inst = Instances((H, W))
        inst.pred_masks = masks
        inst.pred_boxes = BitMasks(masks).get_bounding_boxes()
        inst.scores = scores
        inst.pred_classes = labels
        return inst
