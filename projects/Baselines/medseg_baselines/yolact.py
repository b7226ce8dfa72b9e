"""YOLACT (Bolya et al., "YOLACT: Real-time Instance Segmentation", ICCV 2019) as a Detectron2
meta-architecture, written from the paper.

* Backbone: ResNet-50 + FPN P3-P7 (:mod:`.fpn_p3p7`, ``MODEL.BACKBONE.NAME
  build_resnet_fpn_p3p7_backbone``), 256 channels.
* Anchors (Sec. 6): 3 per location, aspect ratios [1, 1/2, 2], P3 anchors of 24 px side and
  each level double the previous ([24, 48, 96, 192, 384] at the paper's 550 px input),
  centred on the cells: Detectron2's ``DefaultAnchorGenerator`` from ``MODEL.ANCHOR_GENERATOR``
  (``OFFSET 0.5``). (The reference code ends up with square anchors of side scale x sqrt(ratio)
  through a kept bug; the paper's aspect ratios are used here.)
* Protonet on P3 (k = 32 prototypes at 1/4 of the input) and a prediction head shared over the
  levels with per-anchor c + 1 class logits, 4 box deltas and k tanh coefficients
  (:mod:`.yolact_head`); semantic segmentation head on P3 for the auxiliary loss.
* Losses (:mod:`.yolact_loss`): OHEM softmax classification, smooth-L1 boxes, box-cropped mask
  BCE per box area, semantic segmentation BCE.
* Inference: softmax scores, boxes decoded from the anchors, **Fast NMS** per class
  (:mod:`.fast_nms`; top 200 per class, IoU t = 0.5, 100 detections), masks assembled as
  sigma(P c^T) at the prototype resolution, resampled once to the original image size (padding
  removed), cropped to the predicted box and thresholded at 0.5 (Sec. 3.3: "we crop the final
  mask with the predicted bounding box").

Deploy split: :meth:`YOLACT.network` (normalised padded images -> flat tuple of tensors:
per-level class logits, box deltas, coefficients, then the prototypes), :meth:`YOLACT.postprocess`
(that tuple -> ``[{"instances": Instances}]`` at the original sizes), and
:meth:`YOLACT.complexity_forward` (the network only, for parameter/FLOP counting); with
:class:`~medseg_core.modeling.normalized_input.SplitInferenceDeploy` they are the deploy interface
(export, runtimes, benchmark, demo).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor, nn

import medseg_core  # noqa: F401  (compatibility shim before detectron2)

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes, Instances

from medseg_core.errors import ConfigError
from medseg_core.modeling.normalized_input import ImageInput, SplitInferenceDeploy, normalized_input_config

from .fast_nms import fast_nms
from .instance_masks import crop_to_boxes, gt_mask_tensor, resample_to_original, training_instances
from .yolact_head import ProtoNet, SemanticSegHead, YOLACTPredictionHead
from .yolact_loss import ImageTargets, YOLACTLoss

__all__ = ["YOLACT"]


def _flatten(x: Tensor, per_anchor: int) -> Tensor:
    """(B, A * K, H, W) -> (B, H * W * A, K): location-major, as Detectron2's anchors."""
    b, _, h, w = x.shape
    return x.view(b, -1, per_anchor, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, per_anchor)


@META_ARCH_REGISTRY.register()
class YOLACT(SplitInferenceDeploy, nn.Module):
    """YOLACT instance segmentation; see the module docstring."""

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        anchor_generator: nn.Module,
        in_features: Sequence[str],
        proto_in_feature: str,
        num_classes: int,
        num_prototypes: int,
        proto_channels: int,
        head_channels: int,
        criterion: YOLACTLoss,
        box2box: Box2BoxTransform,
        image_input: ImageInput,
        size_divisibility: int = 32,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        topk_per_class: int = 200,
        detections_per_image: int = 100,
        mask_thresh: float = 0.5,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.anchor_generator = anchor_generator
        self.in_features, self.proto_in_feature = list(in_features), proto_in_feature
        self.num_classes = int(num_classes)
        shapes = backbone.output_shape()
        channels = {shapes[f].channels for f in self.in_features}
        if len(channels) != 1:
            raise ConfigError(f"MODEL.YOLACT.IN_FEATURES {self.in_features}: levels differ in channels {channels}")
        num_anchors = anchor_generator.num_cell_anchors
        if len(set(num_anchors)) != 1:
            raise ConfigError(f"MODEL.ANCHOR_GENERATOR: the shared head needs the same anchors per level, got {num_anchors}")
        self.protonet = ProtoNet(shapes[proto_in_feature].channels, proto_channels, num_prototypes)
        self.head = YOLACTPredictionHead(channels.pop(), head_channels, num_anchors[0], num_classes, num_prototypes)
        self.sem_head = SemanticSegHead(shapes[proto_in_feature].channels, num_classes)
        self.criterion, self.box2box = criterion, box2box
        self.init_input(image_input, max(int(size_divisibility), getattr(backbone, "size_divisibility", 0) or 0))
        self.score_thresh, self.nms_thresh = float(score_thresh), float(nms_thresh)
        self.topk_per_class, self.detections_per_image = int(topk_per_class), int(detections_per_image)
        self.mask_thresh = float(mask_thresh)

    @classmethod
    def from_config(cls, cfg) -> Dict:
        y = cfg.MODEL.YOLACT
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        missing = [f for f in list(y.IN_FEATURES) + [y.PROTO_IN_FEATURE] if f not in shapes]
        if missing:
            raise ConfigError(f"MODEL.YOLACT: features {missing} not produced by the backbone ({sorted(shapes)})")
        return dict(
            backbone=backbone,
            anchor_generator=build_anchor_generator(cfg, [shapes[f] for f in y.IN_FEATURES]),
            in_features=y.IN_FEATURES, proto_in_feature=y.PROTO_IN_FEATURE,
            num_classes=y.NUM_CLASSES, num_prototypes=y.NUM_PROTOTYPES,
            proto_channels=y.PROTO_CHANNELS, head_channels=y.HEAD_CHANNELS,
            criterion=YOLACTLoss(
                y.NUM_CLASSES, y.IOU_THRESHOLDS, y.BBOX_REG_WEIGHTS, y.NEG_POS_RATIO,
                y.LOSS_CLS_WEIGHT, y.LOSS_BOX_WEIGHT, y.LOSS_MASK_WEIGHT, y.LOSS_SEM_WEIGHT, y.MASKS_TO_TRAIN,
            ),
            box2box=Box2BoxTransform(weights=tuple(y.BBOX_REG_WEIGHTS)),
            **normalized_input_config(cfg), size_divisibility=y.SIZE_DIVISIBILITY, score_thresh=y.SCORE_THRESH_TEST,
            nms_thresh=y.NMS_THRESH_TEST, topk_per_class=y.TOPK_PER_CLASS,
            detections_per_image=y.DETECTIONS_PER_IMAGE, mask_thresh=y.MASK_THRESH,
        )

    # ------------------------------------------------------------------ network
    def _heads(self, feats: Dict[str, Tensor]) -> Tuple[Tensor, ...]:
        cls, box, coef = self.head([feats[f] for f in self.in_features])
        return (*cls, *box, *coef, self.protonet(feats[self.proto_in_feature]))

    def network(self, images: Tensor) -> Tuple[Tensor, ...]:
        """Normalised (B, 3, H, W) -> (cls_l..., box_l..., coef_l..., prototypes) raw outputs."""
        return self._heads(self.backbone(images))

    def complexity_forward(self, images: Tensor) -> Tuple[Tensor, ...]:
        """The network alone (for parameter/FLOP counting)."""
        return self.network(images)

    def deploy_output_names(self) -> List[str]:
        """The order of :meth:`network`: per level class logits, box deltas, coefficients; prototypes."""
        return [f"{kind}_{f}" for kind in ("cls", "box", "coef") for f in self.in_features] + ["prototypes"]

    def forward(self, batched_inputs: List[Dict]):
        images = self.preprocess_image(batched_inputs)
        if not self.training:
            raw = self.network(images.tensor)
            sizes = [(int(x.get("height", h)), int(x.get("width", w))) for x, (h, w) in zip(batched_inputs, images.image_sizes)]
            return self.postprocess(raw, images.image_sizes, sizes)
        feats = self.backbone(images.tensor)
        raw = self._heads(feats)
        sem = self.sem_head(feats[self.proto_in_feature])
        return self.losses(raw, sem, self.prepare_targets(batched_inputs, images.tensor.shape[-2:]))

    # ------------------------------------------------------------------ training
    def prepare_targets(self, batched_inputs: List[Dict], padded_hw) -> List[ImageTargets]:
        return [
            ImageTargets(boxes=inst.gt_boxes.tensor.float(), classes=inst.gt_classes.long(),
                         masks=gt_mask_tensor(inst, padded_hw, self.device, where))
            for where, inst in training_instances(batched_inputs, self.device)
        ]

    def _split(self, raw: Sequence[Tensor]):
        levels = (len(raw) - 1) // 3
        return raw[:levels], raw[levels:2 * levels], raw[2 * levels:3 * levels], raw[-1]

    def anchors_for(self, level_sizes: List[Tuple[int, int]]) -> Tensor:
        """(sum H_l W_l A, 4) anchors of the given level sizes, in the order of :func:`_flatten`."""
        dummies = [torch.empty((0, 0, h, w), device=self.device) for h, w in level_sizes]
        return torch.cat([b.tensor for b in self.anchor_generator(dummies)])

    def losses(self, raw: Sequence[Tensor], sem: Tensor, targets: List[ImageTargets]) -> Dict[str, Tensor]:
        cls, box, coef, protos = self._split(raw)
        anchors = self.anchors_for([tuple(c.shape[-2:]) for c in cls])
        k = protos.shape[1]
        return self.criterion(
            torch.cat([_flatten(c, self.num_classes + 1) for c in cls], 1),
            torch.cat([_flatten(b, 4) for b in box], 1),
            torch.cat([_flatten(c, k) for c in coef], 1),
            protos, sem, anchors, targets,
        )

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def postprocess(
        self, raw: Sequence[Tensor], image_sizes: List[Tuple[int, int]], original_sizes: List[Tuple[int, int]]
    ) -> List[Dict[str, Instances]]:
        """Raw network outputs -> per image ``{"instances": Instances}`` at ``original_sizes``.

        ``image_sizes``: each image's (h, w) inside the padded input; ``original_sizes``: the
        (H, W) to return masks and boxes at.
        """
        cls, box, coef, protos = self._split(raw)
        anchors = self.anchors_for([tuple(c.shape[-2:]) for c in cls])
        k = protos.shape[1]
        scores_all = torch.cat([_flatten(c, self.num_classes + 1) for c in cls], 1).float().softmax(-1)
        deltas_all = torch.cat([_flatten(b, 4) for b in box], 1).float()
        coefs_all = torch.cat([_flatten(c, k) for c in coef], 1).float()
        proto_stride = (cls[0].shape[-1] * self.anchor_generator.strides[0]) // protos.shape[-1]
        results = []
        for i, ((h, w), (H, W)) in enumerate(zip(image_sizes, original_sizes)):
            boxes = Boxes(self.box2box.apply_deltas(deltas_all[i], anchors))
            boxes.clip((h, w))
            idx, classes, scores = fast_nms(
                boxes.tensor, scores_all[i, :, : self.num_classes], self.score_thresh, self.nms_thresh,
                self.topk_per_class, self.detections_per_image,
            )
            bx = boxes.tensor[idx] * torch.tensor([W / w, H / h, W / w, H / h], device=idx.device)
            probs = torch.sigmoid(coefs_all[i, idx] @ protos[i].float().reshape(k, -1)).reshape(-1, *protos.shape[-2:])
            masks = crop_to_boxes(resample_to_original(probs, proto_stride, (h, w), (H, W)), bx)
            inst = Instances((H, W))
            inst.pred_boxes = Boxes(bx)
            inst.scores = scores
            inst.pred_classes = classes
            inst.pred_masks = masks > self.mask_thresh
            results.append({"instances": inst})
        return results
