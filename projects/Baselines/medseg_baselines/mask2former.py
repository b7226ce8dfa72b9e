"""Mask2Former (instance segmentation) as a Detectron2 meta-architecture, wrapping the maintained
Hugging Face ``transformers`` implementation (``Mask2FormerForUniversalSegmentation``).

The LMSF-A paper compares against Mask2Former (Table II/IV, "Mask2former [11]", 44.4 M params).
Why ``transformers`` and not the registry package ``maskformer2`` (upstream Mask2Former code):

* ``maskformer2==0.1`` cannot build any model as shipped (``SetCriterion`` got a new signature
  but ``MaskFormer.from_config`` still passes ``weight_dict=``), ships no configs, and depends
  on URL-only packages and exact hydra/omegaconf pins, so it installs only with ``--no-deps``
  and ``pip check`` then fails (docs/baselines.md);
* ``transformers`` is already a dependency, ``pip check`` stays clean, the model builds offline
  from a config with ``use_pretrained_backbone=False`` (no hub access), its multi-scale
  deformable attention has a pure-PyTorch path (CPU training works) and its loss is upstream's
  (Hungarian matching with point-sampled BCE + dice, class weight 2 / mask 5 / dice 5,
  no-object 0.1, deep supervision).

Backbones (``MODEL.MASK2FORMER.BACKBONE``): "resnet50" (transformers ``ResNetConfig``, 44.0 M
params in total at 6 classes, the paper's 44 M row) and "swin_tiny" (``SwinConfig`` Swin-T,
47.4 M). Both are randomly initialised: nothing is downloaded.

This wrapper only adapts the interfaces:

* input: Detectron2 ``batched_inputs`` -> normalised, zero-padded batch (``ImageList``, padded to
  ``SIZE_DIVISIBILITY``); ground truth ``gt_masks`` (BitMasks or polygons, rasterised here) padded
  to the batch size as upstream does;
* training returns the loss dict (``loss_cross_entropy``, ``loss_mask``, ``loss_dice`` and the
  ``_<i>`` deep-supervision terms, already weighted);
* inference follows upstream ``instance_inference``: softmax class scores without the no-object
  class, top-k over all (query, class) pairs, mask = logit > 0 after bilinear resizing to the
  original image size (the padding removed first), score = class score x mean mask probability
  inside the mask. It returns ``Instances`` with one binary mask per detection at the original
  size (``pred_masks`` [N, H, W] bool), not a merged label map. Choice where upstream is silent
  for our use: upstream returns all-zero boxes; here ``pred_boxes`` are the masks' tight boxes so
  that box AP is meaningful in the comparison table.

Deploy interface (:mod:`medseg_core.deploy`): ``deploy_forward`` = the transformers network
(``class_logits`` (B, Q, C+1), ``mask_logits`` (B, Q, H/4, W/4)); ``deploy_postprocess`` = the
inference above; the contract = the "instance" test mapper's shortest-edge resize
(``INPUT.MIN_SIZE_TEST``, ``MAX_SIZE_TEST``) and padding with PIXEL_MEAN to ``SIZE_DIVISIBILITY``.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

import medseg_core  # noqa: F401  (compatibility shim before detectron2)

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import BitMasks, Boxes, ImageList, Instances, PolygonMasks
from detectron2.structures.masks import polygons_to_bitmask

from medseg_core.errors import ConfigError
from medseg_core.modeling.normalized_input import ImageInput, NormalizedInputModel, normalized_input_config

__all__ = ["HFMask2Former", "build_hf_mask2former_config"]

logger = logging.getLogger(__name__)

_STAGES = ["stage1", "stage2", "stage3", "stage4"]


def _backbone_config(name: str, drop_path_rate: float):
    from transformers import ResNetConfig, SwinConfig

    if name == "resnet50":
        return ResNetConfig(
            depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048], embedding_size=64,
            layer_type="bottleneck", out_features=_STAGES,
        )
    if name == "swin_tiny":
        return SwinConfig(
            embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
            drop_path_rate=drop_path_rate, out_features=_STAGES,
        )
    raise ConfigError(f"MODEL.MASK2FORMER.BACKBONE must be 'resnet50' or 'swin_tiny', got {name!r}")


def build_hf_mask2former_config(cfg):
    """The ``transformers.Mask2FormerConfig`` described by ``cfg.MODEL.MASK2FORMER``."""
    from transformers import Mask2FormerConfig

    m = cfg.MODEL.MASK2FORMER
    if m.NUM_CLASSES < 1:
        raise ConfigError(f"MODEL.MASK2FORMER.NUM_CLASSES must be >= 1, got {m.NUM_CLASSES}")
    with _QuietTransformers():
        return Mask2FormerConfig(
            backbone_config=_backbone_config(m.BACKBONE, m.DROP_PATH_RATE),
            use_pretrained_backbone=False,
            num_labels=m.NUM_CLASSES,
            num_queries=m.NUM_QUERIES,
            hidden_dim=m.HIDDEN_DIM,
            feature_size=m.HIDDEN_DIM,
            mask_feature_size=m.HIDDEN_DIM,
            decoder_layers=m.DEC_LAYERS,
            encoder_layers=m.ENC_LAYERS,
            dim_feedforward=m.DIM_FEEDFORWARD,
            class_weight=m.CLASS_WEIGHT,
            mask_weight=m.MASK_WEIGHT,
            dice_weight=m.DICE_WEIGHT,
            no_object_weight=m.NO_OBJECT_WEIGHT,
            use_auxiliary_loss=m.DEEP_SUPERVISION,
            train_num_points=m.TRAIN_NUM_POINTS,
            oversample_ratio=m.OVERSAMPLE_RATIO,
            importance_sample_ratio=m.IMPORTANCE_SAMPLE_RATIO,
        )


class _QuietTransformers:
    """transformers warns that only Swin is a "supported" Mask2Former backbone; the ResNet
    backbone works (it is the paper's 44 M configuration), so silence warnings while building."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self.level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(self.level)


def _build_hf_model(hf_config) -> nn.Module:
    from transformers import Mask2FormerForUniversalSegmentation

    with _QuietTransformers():
        return Mask2FormerForUniversalSegmentation(hf_config)


def _gt_masks_tensor(instances: Instances, height: int, width: int) -> torch.Tensor:
    """(N, height, width) float masks from BitMasks or polygons (rasterised at the image size)."""
    if not instances.has("gt_masks"):
        # Detectron2's mapper sets no gt_masks on an image without annotations (a valid negative)
        if len(instances) == 0:
            return torch.zeros((0, height, width), dtype=torch.float32)
        raise ValueError("HFMask2Former: training instances have no gt_masks (is the data set annotated with masks?)")
    gm = instances.gt_masks
    if isinstance(gm, BitMasks):
        t = gm.tensor
    elif isinstance(gm, PolygonMasks):
        if len(gm) == 0:
            return torch.zeros((0, height, width), dtype=torch.float32)
        t = torch.stack([torch.from_numpy(polygons_to_bitmask(p, height, width)) for p in gm.polygons])
    elif isinstance(gm, torch.Tensor):
        t = gm
    else:
        raise TypeError(f"gt_masks of type {type(gm).__name__} is not supported (BitMasks or PolygonMasks)")
    return t.to(torch.float32)


@META_ARCH_REGISTRY.register()
class HFMask2Former(NormalizedInputModel, nn.Module):
    """Mask2Former instance segmentation (transformers implementation); see the module doc."""

    @configurable
    def __init__(
        self,
        *,
        hf_config,
        image_input: ImageInput,
        size_divisibility: int,
        test_topk_per_image: int,
        deep_supervision: bool = True,
    ):
        super().__init__()
        self.hf = _build_hf_model(hf_config)
        self.num_classes = int(hf_config.num_labels)
        self.test_topk_per_image = int(test_topk_per_image)
        self.deep_supervision = bool(deep_supervision)
        self.init_input(image_input, size_divisibility)

    @classmethod
    def from_config(cls, cfg) -> Dict:
        m = cfg.MODEL.MASK2FORMER
        return {
            "hf_config": build_hf_mask2former_config(cfg),
            **normalized_input_config(cfg),
            "size_divisibility": m.SIZE_DIVISIBILITY,
            "test_topk_per_image": m.TEST_TOPK_PER_IMAGE,
            "deep_supervision": m.DEEP_SUPERVISION,
        }

    def complexity_forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The network alone on a normalised image batch (for parameter/FLOP counting)."""
        out = self.hf(pixel_values=images)
        return out.class_queries_logits, out.masks_queries_logits

    # ------------------------------------------------------------------ deploy interface
    def deploy_output_names(self) -> List[str]:
        return ["class_logits", "mask_logits"]

    def deploy_forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.complexity_forward(images)

    def deploy_postprocess(self, outputs: Sequence[torch.Tensor], image_sizes: Sequence[Tuple[int, int]],
                           original_sizes: Sequence[Tuple[int, int]]) -> List[Dict[str, Instances]]:
        cls_logits, mask_logits = outputs
        padded = (4 * mask_logits.shape[-2], 4 * mask_logits.shape[-1])  # masks are at 1/4 of the padded input
        return [
            {"instances": self.instance_inference(cls_logits[i], mask_logits[i], padded, tuple(image_sizes[i]),
                                                  tuple(int(v) for v in original_sizes[i]))}
            for i in range(cls_logits.shape[0])
        ]

    def forward(self, batched_inputs: List[Dict]):
        images = self.preprocess_image(batched_inputs)
        out = self.hf(pixel_values=images.tensor, output_auxiliary_logits=self.training and self.deep_supervision)
        if self.training:
            return self.losses(out, batched_inputs, images)
        return self.inference(out, batched_inputs, images)

    def losses(self, out, batched_inputs: List[Dict], images: ImageList) -> Dict[str, torch.Tensor]:
        if any("instances" not in x for x in batched_inputs):
            raise ValueError("HFMask2Former: training inputs need 'instances' (use an instance dataset mapper)")
        H, W = images.tensor.shape[-2:]
        mask_labels, class_labels = [], []
        for x, (h, w) in zip(batched_inputs, images.image_sizes):
            inst = x["instances"].to(self.device)
            masks = _gt_masks_tensor(inst, h, w).to(self.device)
            padded = masks.new_zeros((masks.shape[0], H, W))
            padded[:, : masks.shape[1], : masks.shape[2]] = masks
            mask_labels.append(padded)
            class_labels.append(inst.gt_classes.to(torch.int64))
        return self.hf.get_loss_dict(
            masks_queries_logits=out.masks_queries_logits,
            class_queries_logits=out.class_queries_logits,
            mask_labels=mask_labels,
            class_labels=class_labels,
            auxiliary_predictions=out.auxiliary_logits if self.deep_supervision else None,
        )

    @torch.no_grad()
    def inference(self, out, batched_inputs: List[Dict], images: ImageList) -> List[Dict[str, Instances]]:
        H, W = images.tensor.shape[-2:]
        results = []
        for i, (x, (h, w)) in enumerate(zip(batched_inputs, images.image_sizes)):
            height, width = int(x.get("height", h)), int(x.get("width", w))
            results.append({"instances": self.instance_inference(
                out.class_queries_logits[i], out.masks_queries_logits[i], (H, W), (h, w), (height, width)
            )})
        return results

    def instance_inference(
        self,
        cls_logits: torch.Tensor,
        mask_logits: torch.Tensor,
        padded_size: Tuple[int, int],
        image_size: Tuple[int, int],
        out_size: Tuple[int, int],
    ) -> Instances:
        """Top-k (query, class) pairs of one image -> Instances at ``out_size``."""
        num_queries, C = cls_logits.shape[0], self.num_classes
        scores = F.softmax(cls_logits.float(), dim=-1)[:, :C]
        k = min(self.test_topk_per_image, num_queries * C)
        top_scores, top_idx = scores.flatten().topk(k, sorted=True)
        labels = top_idx % C
        queries = torch.div(top_idx, C, rounding_mode="floor")
        m = mask_logits[queries].float().unsqueeze(0)
        # prediction is at 1/4 of the padded input: upsample, drop padding, resize to original
        m = F.interpolate(m, size=padded_size, mode="bilinear", align_corners=False)
        m = m[:, :, : image_size[0], : image_size[1]]
        m = F.interpolate(m, size=out_size, mode="bilinear", align_corners=False)[0]
        binary = m > 0
        prob = m.sigmoid()
        mask_score = (prob * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
        result = Instances(out_size)
        result.pred_masks = binary
        result.pred_boxes = BitMasks(binary).get_bounding_boxes() if k else Boxes(m.new_zeros((0, 4)))
        result.scores = top_scores * mask_score
        result.pred_classes = labels
        return result
