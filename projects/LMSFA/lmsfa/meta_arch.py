"""The ``LMSFA`` meta-architecture: backbone + neck + segmentation head, YOLOv8-seg training and
inference (paper §III, Fig. 1).

* **Pre-processing**: images in RGB (``INPUT.FORMAT``) are padded at the bottom/right to a
  multiple of 32 with raw value 114 (YOLO's gray), then normalised with
  ``MODEL.PIXEL_MEAN`` 0 / ``MODEL.PIXEL_STD`` 255 (YOLO feeds RGB / 255).
* **Training**: returns ``{"loss_box", "loss_seg", "loss_cls", "loss_dfl"}`` of
  :class:`~lmsfa.losses.YOLOSegLoss`. Ground-truth masks (full-resolution BitMasks or
  polygons) are reduced to the prototype grid by 4x4 area pooling and a 0.5 threshold.
* **Inference**: :mod:`lmsfa.postprocess` (vectorised decoding, multi-label NMS, masks only for
  kept detections) and returns ``[{"instances": Instances(pred_boxes, scores, pred_classes,
  pred_masks)}]`` at the original image size. Masks are assembled here at full resolution,
  NOT through Detectron2's ``detector_postprocess`` (which would paste full-image masks into
  the boxes as if they were ROI masks; docs/lmsfa.md, "Evaluation protocols").
* ``fuse()`` folds Conv+BN and RepVGGDW branches (:func:`lmsfa.fuse.fuse_model`);
  ``complexity_forward(images)`` runs backbone + head only, for parameter/FLOP counting.
* Deploy interface (:mod:`medseg_core.deploy`): ``deploy_forward`` = the network's flat raw
  outputs (``box_s8 .. box_s32, cls_s8 .. cls_s32, coef_s8 .. coef_s32, protos``),
  ``deploy_postprocess`` = :meth:`LMSFA.inference` on them, the contract = the "yolo" test
  mapper's longest-side resize to ``INPUT.YOLO.IMAGE_SIZE`` and gray (114) padding to 32.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import medseg_core  # noqa: F401  (NumPy-2 / Pillow shim before detectron2)
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.structures import BitMasks, Boxes, ImageList, Instances, PolygonMasks
from torch import Tensor, nn
from torch.profiler import record_function

from medseg_core.deploy import PreprocessContract

from .dfl import make_anchors
from .fuse import fuse_model
from .heads import IN_FEATURES, HeadOutputs, build_lmsfa_head
from .losses import SegTargets, YOLOSegLoss
from .postprocess import assemble_masks, decode_boxes, flatten_levels, multilabel_nms
from medseg_core.errors import ConfigError, here

__all__ = ["LMSFA"]


@META_ARCH_REGISTRY.register()
class LMSFA(nn.Module):
    """LMSF-A / YOLOv8-seg instance segmentation (see the module docstring)."""

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        head: nn.Module,
        criterion: YOLOSegLoss,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        input_format: str = "RGB",
        pad_value: float = 114.0,
        reg_max: int = 16,
        conf_thresh: float = 0.001,
        nms_iou: float = 0.7,
        max_det: int = 300,
        multi_label: bool = True,
        agnostic_nms: bool = False,
        max_nms: int = 30000,
        test_size: int = 640,
        mask_output: str = "full",
    ) -> None:
        super().__init__()
        # "boxes": pred_masks as CroppedMasks (memory ~ box areas; TEST.MASK_OUTPUT, the demo)
        self.mask_output = mask_output
        self.backbone, self.head, self.criterion = backbone, head, criterion
        self.input_format = input_format
        self.pad_value = float(pad_value)
        self.reg_max = reg_max
        self.conf_thresh, self.nms_iou, self.max_det = conf_thresh, nms_iou, max_det
        self.multi_label, self.agnostic_nms, self.max_nms = multi_label, agnostic_nms, max_nms
        self.test_size = int(test_size)  # longest side of the test letterbox (the "yolo" test mapper)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        if self.pixel_mean.shape != self.pixel_std.shape:
            raise ConfigError(
                here() + f"MODEL.PIXEL_MEAN and MODEL.PIXEL_STD differ in length "
                f"({pixel_mean} vs {pixel_std})"
            )

    @classmethod
    def from_config(cls, cfg) -> Dict:
        a = cfg.MODEL.LMSFA
        backbone = build_backbone(cfg)
        head = build_lmsfa_head(cfg, backbone.output_shape())
        criterion = YOLOSegLoss(
            num_classes=a.NUM_CLASSES, reg_max=a.REG_MAX,
            box_gain=a.LOSS_BOX_WEIGHT, cls_gain=a.LOSS_CLS_WEIGHT, dfl_gain=a.LOSS_DFL_WEIGHT,
            seg_gain=a.LOSS_SEG_WEIGHT, tal_topk=a.TAL_TOPK, tal_alpha=a.TAL_ALPHA, tal_beta=a.TAL_BETA,
            scale_by_batch=a.LOSS_SCALE_BY_BATCH,
        )
        return dict(
            backbone=backbone, head=head, criterion=criterion,
            pixel_mean=cfg.MODEL.PIXEL_MEAN, pixel_std=cfg.MODEL.PIXEL_STD,
            input_format=cfg.INPUT.FORMAT, pad_value=a.PAD_VALUE, reg_max=a.REG_MAX,
            conf_thresh=a.TEST_CONF_THRESH, nms_iou=a.TEST_NMS_IOU, max_det=a.TEST_MAX_DET,
            multi_label=a.TEST_MULTI_LABEL, agnostic_nms=a.TEST_AGNOSTIC_NMS, max_nms=a.TEST_MAX_NMS,
            test_size=cfg.INPUT.YOLO.IMAGE_SIZE,
            mask_output=cfg.TEST.MASK_OUTPUT,
        )

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------ network
    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        """Pad raw images with PAD_VALUE to a multiple of 32, then normalise."""
        images = []
        for x in batched_inputs:
            img = x["image"]
            if img.dim() != 3 or img.shape[0] != self.pixel_mean.shape[0]:
                raise ValueError(
                    here() + f"{x.get('file_name', 'input')}: expected a "
                    f"({self.pixel_mean.shape[0]}, H, W) image tensor, got {tuple(img.shape)}"
                )
            images.append(img.to(self.device, non_blocking=True).float())
        div = getattr(self.backbone, "size_divisibility", 32) or 32
        il = ImageList.from_tensors(images, div, pad_value=self.pad_value)
        return ImageList((il.tensor - self.pixel_mean) / self.pixel_std, il.image_sizes)

    def network(self, x: Tensor) -> HeadOutputs:
        feats = self.backbone(x)
        return self.head([feats[k] for k in IN_FEATURES])

    def complexity_forward(self, images: Tensor) -> Tuple[Tensor, ...]:
        """Backbone + neck + head on a normalised (B, 3, H, W) tensor; flat tuple of outputs."""
        out = self.network(images)
        return (*out.box, *out.cls, *out.coef, out.protos)

    # ------------------------------------------------------------------ deploy interface
    def deploy_contract(self) -> PreprocessContract:
        c = self.pixel_mean.numel()
        return PreprocessContract(
            input_format=self.input_format, resize="longest", resize_size=(self.test_size,),
            size_divisibility=int(getattr(self.backbone, "size_divisibility", 32) or 32),
            pad_value=(self.pad_value,) * c, pixel_mean=tuple(self.pixel_mean.flatten().tolist()),
            pixel_std=tuple(self.pixel_std.flatten().tolist()),
        )

    def deploy_output_names(self) -> List[str]:
        strides = self.head.strides
        return [f"{kind}_s{s}" for kind in ("box", "cls", "coef") for s in strides] + ["protos"]

    def deploy_forward(self, images: Tensor) -> Tuple[Tensor, ...]:
        return self.complexity_forward(images)

    def deploy_postprocess(self, outputs: Sequence[Tensor], image_sizes: Sequence[Tuple[int, int]],
                           original_sizes: Sequence[Tuple[int, int]]) -> List[Dict[str, Instances]]:
        lv = len(self.head.strides)
        if len(outputs) != 3 * lv + 1:
            raise ValueError(f"LMSFA.deploy_postprocess: expected {3 * lv + 1} raw outputs "
                             f"({', '.join(self.deploy_output_names())}), got {len(outputs)}")
        out = HeadOutputs(box=list(outputs[:lv]), cls=list(outputs[lv:2 * lv]), coef=list(outputs[2 * lv:3 * lv]),
                          protos=outputs[-1], strides=list(self.head.strides))
        sizes = [{"height": int(h), "width": int(w)} for h, w in original_sizes]
        return self.inference(out, [tuple(map(int, s)) for s in image_sizes], sizes)

    def fuse(self) -> "LMSFA":
        """Fold Conv+BN and RepVGGDW branches for deployment (call in eval mode)."""
        fuse_model(self)
        return self

    def forward(self, batched_inputs: List[Dict]):
        images = self.preprocess_image(batched_inputs)
        outputs = self.network(images.tensor)
        if self.training:
            targets = self.prepare_targets(batched_inputs, images.tensor.shape[-2:], outputs.protos.shape[-2:])
            return self.losses(outputs, targets)
        return self.inference(outputs, images.image_sizes, batched_inputs)

    # ------------------------------------------------------------------ training
    def prepare_targets(
        self, batched_inputs: List[Dict], input_hw: Tuple[int, int], proto_hw: Tuple[int, int]
    ) -> SegTargets:
        """Pad every image's instances to M = max count; masks pooled to the prototype grid."""
        H, W = int(input_hw[0]), int(input_hw[1])
        hp, wp = int(proto_hw[0]), int(proto_hw[1])
        if H % hp or W % wp or H // hp != W // wp:
            raise ValueError(here() + f"prototypes {hp}x{wp} are not a fixed stride of the input {H}x{W}")
        ratio = H // hp
        insts = []
        for x in batched_inputs:
            if "instances" not in x:
                raise ValueError(
                    here() + f"{x.get('file_name', 'input')}: training input has no 'instances' "
                    "(use a mapper that keeps annotations, e.g. INPUT.DATASET_MAPPER_NAME 'yolo')"
                )
            insts.append(x["instances"])
        b = len(insts)
        m = max(len(i) for i in insts)
        dev = self.device
        boxes = torch.zeros((b, m, 4), device=dev)
        classes = torch.zeros((b, m), dtype=torch.long, device=dev)
        valid = torch.zeros((b, m), dtype=torch.bool, device=dev)
        masks = torch.zeros((b, m, hp, wp), device=dev)
        for i, inst in enumerate(insts):
            k = len(inst)
            if k == 0:
                continue
            boxes[i, :k] = inst.gt_boxes.tensor.to(dev)
            classes[i, :k] = inst.gt_classes.to(dev)
            valid[i, :k] = True
            if not inst.has("gt_masks"):
                raise ValueError(
                    here() + f"{batched_inputs[i].get('file_name', 'input')}: instances have no "
                    "gt_masks (instance segmentation needs mask annotations)"
                )
            gm = inst.gt_masks
            h, w = inst.image_size
            if isinstance(gm, PolygonMasks):
                gm = BitMasks.from_polygon_masks(gm, h, w)
            bm = gm.tensor.to(dev, torch.float32) if isinstance(gm, BitMasks) else torch.as_tensor(gm, device=dev).float()
            bm = F.pad(bm, (0, W - bm.shape[-1], 0, H - bm.shape[-2]))
            masks[i, :k] = (F.avg_pool2d(bm[:, None], ratio)[:, 0] >= 0.5).float()
        return SegTargets(boxes, classes, valid, masks)

    def losses(self, outputs: HeadOutputs, targets: SegTargets) -> Dict[str, Tensor]:
        pred_dist = flatten_levels(outputs.box)
        pred_cls = flatten_levels(outputs.cls)
        pred_coef = flatten_levels(outputs.coef)
        anchor_points, stride_tensor = make_anchors(outputs.box, outputs.strides)
        return self.criterion(pred_dist, pred_cls, pred_coef, outputs.protos, anchor_points, stride_tensor, targets)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def inference(
        self, outputs: HeadOutputs, image_sizes: List[Tuple[int, int]], batched_inputs: Optional[List[Dict]] = None
    ) -> List[Dict[str, Instances]]:
        # record_function labels: the steps tools/benchmark.py --modes stages attributes time to
        with record_function("decode"):
            scores = flatten_levels(outputs.cls).sigmoid()
            # boxes and coefficients only where a class can pass the threshold (same NMS input order)
            anchors = (scores > self.conf_thresh).any(-1).any(0).nonzero()[:, 0]
            scores = scores[:, anchors]
            boxes, _, _ = decode_boxes(outputs.box, outputs.strides, self.reg_max, anchors)
            coef = flatten_levels(outputs.coef)[:, anchors]
        with record_function("nms"):
            dets = multilabel_nms(
                boxes, scores, coef, self.conf_thresh, self.nms_iou, self.max_det,
                self.multi_label, self.agnostic_nms, self.max_nms,
            )
        results = []
        # padded input width / prototype width (4 for the YOLOv8 Proto)
        proto_stride = (outputs.box[0].shape[-1] * outputs.strides[0]) // outputs.protos.shape[-1]
        for i, det in enumerate(dets):
            h_in, w_in = image_sizes[i]
            src = batched_inputs[i] if batched_inputs is not None else {}
            H, W = int(src.get("height", h_in)), int(src.get("width", w_in))
            with record_function("instances"):
                scale = torch.tensor([W / w_in, H / h_in, W / w_in, H / h_in], device=det.boxes.device)
                bx = det.boxes * scale
                bx[:, 0::2] = bx[:, 0::2].clamp(0, W)
                bx[:, 1::2] = bx[:, 1::2].clamp(0, H)
                inst = Instances((H, W))
                inst.pred_boxes = Boxes(bx)
                inst.scores = det.scores
                inst.pred_classes = det.classes
            with record_function("masks"):
                inst.pred_masks = assemble_masks(
                    det.coef, outputs.protos[i], bx, (h_in, w_in), (H, W), proto_stride=proto_stride,
                    cropped=self.mask_output == "boxes",
                )
            results.append({"instances": inst})
        return results
