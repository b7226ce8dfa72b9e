"""Deploy-interface adapter for Detectron2's own ``GeneralizedRCNN`` (Mask R-CNN, Swin Mask R-CNN).

Detectron2's class cannot carry the interface methods, so :class:`DeployableRCNN` wraps it
(registered with :func:`~medseg_core.deploy.register_deploy_adapter` on ``import
medseg_core.deploy``; ``as_deployable(model, cfg)`` returns it). It lives in the core because
``GeneralizedRCNN`` is Detectron2's own class: a Mask R-CNN config needs no project. The split follows what can run as a static graph:

* ``deploy_forward``: the backbone + FPN on the normalised padded batch -> the feature maps
  (``p2 .. p6``): the dense bulk of the compute, exported to every runtime;
* ``deploy_postprocess``: the RPN (anchors, top-k, NMS), the ROI box and mask heads and
  Detectron2's ``detector_postprocess`` (boxes scaled and masks pasted at the original size), in
  PyTorch: their shapes depend on the proposals, and Detectron2's ROIAlign has no exportable
  form here.
The contract is the "instance" test mapper's: ``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)``,
``INPUT.FORMAT``, padding the normalised image with 0 (raw PIXEL_MEAN) to the backbone's size
divisibility.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor, nn

from .. import compat  # noqa: F401  (NumPy-2 / Pillow shim before detectron2)
from detectron2.modeling import GeneralizedRCNN
from detectron2.structures import ImageList

from .interface import PreprocessContract, register_deploy_adapter

__all__ = ["DeployableRCNN"]


class DeployableRCNN(nn.Module):
    """``GeneralizedRCNN`` seen through the deploy interface (module docstring)."""

    def __init__(self, model: GeneralizedRCNN, test_resize: Tuple[int, int]) -> None:
        super().__init__()
        if getattr(model.backbone, "padding_constraints", {}).get("square_size", 0):
            raise ValueError("DeployableRCNN: backbones that pad to a square (padding_constraints.square_size) "
                             "are not supported by the deploy contract")
        self.model = model
        self.test_resize = (int(test_resize[0]), int(test_resize[1]))
        shapes = model.backbone.output_shape()
        self.feature_names = list(shapes)
        self.feature_stride = int(shapes[self.feature_names[0]].stride)

    def deploy_contract(self) -> PreprocessContract:
        m = self.model
        return PreprocessContract.detectron2_test_mapper(
            m.input_format, self.test_resize, m.backbone.size_divisibility, m.pixel_mean.flatten().tolist(),
            m.pixel_std.flatten().tolist(),
        )

    def deploy_output_names(self) -> List[str]:
        return list(self.feature_names)

    def deploy_forward(self, images: Tensor) -> Tuple[Tensor, ...]:
        feats = self.model.backbone(images)
        return tuple(feats[k] for k in self.feature_names)

    @torch.no_grad()
    def deploy_postprocess(self, outputs: Sequence[Tensor], image_sizes: Sequence[Tuple[int, int]],
                           original_sizes: Sequence[Tuple[int, int]]) -> List[Dict]:
        features = dict(zip(self.feature_names, outputs))
        b, s = outputs[0].shape[0], self.feature_stride
        # the RPN and ROI heads read only the image sizes of the batch, never its pixels
        padded = outputs[0].new_zeros(()).expand(b, 3, s * outputs[0].shape[-2], s * outputs[0].shape[-1])
        sizes = [tuple(int(v) for v in hw) for hw in image_sizes]
        images = ImageList(padded, sizes)
        proposals, _ = self.model.proposal_generator(images, features, None)
        results, _ = self.model.roi_heads(images, features, proposals, None)
        originals = [{"height": int(h), "width": int(w)} for h, w in original_sizes]
        return GeneralizedRCNN._postprocess(results, originals, sizes)


@register_deploy_adapter(GeneralizedRCNN)
def _rcnn_adapter(model: GeneralizedRCNN, cfg) -> DeployableRCNN:
    if cfg is None:
        raise ValueError("DeployableRCNN: the adapter needs the config (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST)")
    return DeployableRCNN(model, (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST))
