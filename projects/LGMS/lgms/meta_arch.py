"""Meta-architecture of the 2D models of this project: Detectron2's ``SemanticSegmentor`` plus
the model-resolution output that the paper's metrics need.

The encoder is a ``Backbone`` and the decoder a ``SEM_SEG_HEADS_REGISTRY`` head (so the
U-Net-shaped baselines share this meta-architecture; docs/lgmsnet.md); this class wires them
exactly like ``SemanticSegmentor``
(normalise with ``MODEL.PIXEL_MEAN/STD``, pad the batch to the backbone's
``size_divisibility`` -- 32 for LGMSNet, whose stride-16 GMS block unfolds 2x2 patches -- with
the ignore value for targets, so any input size works) and returns, per image:

* ``"sem_seg"``: (K, height, width) class scores at the *original* image size (Detectron2's
  convention; padding cropped, then bilinear resize). For a binary one-logit model K = 2 and
  the scores are the logits ``[0, z]``.
* ``"sem_seg_model_res"``: (K, h, w) the same scores at the *model's* input resolution, i.e.
  the size of ``inputs["image"]`` after the mapper's resize (256x256 with
  ``INPUT.FIXED_SIZE``), padding cropped, no interpolation. LGMSNet's authors score IoU/F1 on
  this grid (against masks resized with nearest neighbour), so the evaluator uses it for the
  ``per_image_*@model_res`` metrics.

``complexity_forward(images)`` runs the network only (backbone + head layers, no
normalisation, padding or post-processing) on an already normalised (B, C, H, W) tensor, for
parameter/FLOP counting by ``medseg_core.complexity``.

Deploy interface (:mod:`medseg_core.deploy`): ``deploy_forward`` = the same network on a
normalised batch (``logits``: 1 or K channels at stride 1), ``deploy_postprocess`` = the class
scores of :meth:`forward` (``sem_seg`` at the original size and ``sem_seg_model_res``), the
contract = the "semantic" test mapper's resize (``INPUT.FIXED_SIZE``, else Detectron2's
shortest-edge resize) with padding to the backbone's size divisibility by PIXEL_MEAN (the
normalised image is padded with 0).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch

from medseg_core import compat  # noqa: F401

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList

from medseg_core.deploy import PreprocessContract

from .gms import explicit_attention

__all__ = ["LGMSSemanticSegmentor"]


@META_ARCH_REGISTRY.register()
class LGMSSemanticSegmentor(SemanticSegmentor):
    """``SemanticSegmentor`` that also returns ``sem_seg_model_res`` (module docstring)."""

    @configurable
    def __init__(self, *, input_format: str = "RGB", test_resize: Tuple = ("none", ()), **kwargs) -> None:
        super().__init__(**kwargs)
        self.input_format = input_format
        self.test_resize = (str(test_resize[0]), tuple(int(v) for v in test_resize[1]))

    @classmethod
    def from_config(cls, cfg) -> Dict:
        ret = super().from_config(cfg)
        fh, fw = cfg.INPUT.FIXED_SIZE
        if fh > 0 and fw > 0:  # the "semantic" test mapper's resize (medseg_core/data/mappers.py)
            resize = ("fixed", (fh, fw))
        elif cfg.INPUT.MIN_SIZE_TEST > 0:
            resize = ("shortest_edge", (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST))
        else:
            resize = ("none", ())
        ret.update(input_format=cfg.INPUT.FORMAT, test_resize=resize)
        return ret

    def forward(self, batched_inputs: List[Dict]) -> List[Dict] | Dict[str, torch.Tensor]:
        images = [x["image"].to(self.device) for x in batched_inputs]
        if images[0].shape[0] != self.pixel_mean.shape[0]:
            raise ValueError(
                f"{batched_inputs[0].get('file_name', 'input')}: image has {images[0].shape[0]} channels "
                f"but MODEL.PIXEL_MEAN has {self.pixel_mean.shape[0]}"
            )
        images = [(x - self.pixel_mean) / self.pixel_std for x in images]
        images = ImageList.from_tensors(images, self.backbone.size_divisibility)
        features = self.backbone(images.tensor)

        targets = None
        if "sem_seg" in batched_inputs[0]:
            targets = [x["sem_seg"].to(self.device) for x in batched_inputs]
            targets = ImageList.from_tensors(
                targets, self.backbone.size_divisibility, self.sem_seg_head.ignore_value
            ).tensor
        results, losses = self.sem_seg_head(features, targets)
        if self.training:
            return losses

        out = []
        for result, inp, (h, w) in zip(results, batched_inputs, images.image_sizes):
            height, width = inp.get("height", h), inp.get("width", w)
            out.append({
                "sem_seg": sem_seg_postprocess(result, (h, w), height, width),
                "sem_seg_model_res": result[:, :h, :w],
            })
        return out

    # ------------------------------------------------------------------ deploy interface
    def deploy_contract(self) -> PreprocessContract:
        mean = tuple(self.pixel_mean.flatten().tolist())
        return PreprocessContract(
            input_format=self.input_format, resize=self.test_resize[0], resize_size=self.test_resize[1],
            size_divisibility=max(1, int(self.backbone.size_divisibility or 1)), pad_value=mean,
            pixel_mean=mean, pixel_std=tuple(self.pixel_std.flatten().tolist()),
        )

    def deploy_output_names(self) -> List[str]:
        return ["logits"]

    def deploy_forward(self, images: torch.Tensor) -> Tuple[torch.Tensor]:
        return (self.sem_seg_head.layers(self.backbone(images)),)

    def deploy_postprocess(self, outputs: Sequence[torch.Tensor], image_sizes: Sequence[Tuple[int, int]],
                           original_sizes: Sequence[Tuple[int, int]]) -> List[Dict]:
        scores = self.sem_seg_head.as_class_scores(outputs[0])
        return [
            {"sem_seg": sem_seg_postprocess(r, (h, w), H, W), "sem_seg_model_res": r[:, :h, :w]}
            for r, (h, w), (H, W) in zip(scores, image_sizes, original_sizes)
        ]

    def complexity_forward(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone + head layers on a normalised (B, C, H, W) batch: the network's raw logits.

        Attention runs on its explicit path (matmul, ``nn.Softmax``, matmul; same function) so
        that thop-style hooks and fvcore's tracer count it as the authors' code is counted.
        """
        with explicit_attention(self):
            return self.sem_seg_head.layers(self.backbone(images))
