"""The input side shared by meta-architectures fed by Detectron2's default test mapper.

Such a model normalises each image as ``(x - PIXEL_MEAN) / PIXEL_STD``, zero-pads the batch to its
size divisibility (:meth:`NormalizedInputModel.preprocess_image`) and, at test time, receives
images resized by ``ResizeShortestEdge(INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST)``. That is also
its deploy contract (:meth:`NormalizedInputModel.deploy_contract`), so one mixin gives the model
both. A model whose inference is split into ``network(images) -> raw`` and
``postprocess(raw, image_sizes, original_sizes)`` gets the whole deploy interface from
:class:`SplitInferenceDeploy` and only names its outputs (``deploy_output_names``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor

from .. import compat  # noqa: F401  (NumPy-2 / Pillow shim before detectron2)
from detectron2.structures import ImageList

from ..deploy.interface import PreprocessContract

__all__ = ["ImageInput", "NormalizedInputModel", "SplitInferenceDeploy", "normalized_input_config"]


@dataclass(frozen=True)
class ImageInput:
    """What the model needs to know of its input: normalisation, channel order, test resize."""

    pixel_mean: Tuple[float, ...]
    pixel_std: Tuple[float, ...]
    input_format: str = "BGR"
    test_resize: Tuple[int, int] = (800, 1333)  # the test mapper's shortest edge, max size


def normalized_input_config(cfg) -> Dict:
    """``{"image_input": ImageInput}`` read from ``cfg``, for a model's ``from_config``
    (``size_divisibility`` comes from the model's own config node)."""
    return {"image_input": ImageInput(
        tuple(float(v) for v in cfg.MODEL.PIXEL_MEAN), tuple(float(v) for v in cfg.MODEL.PIXEL_STD), cfg.INPUT.FORMAT,
        (int(cfg.INPUT.MIN_SIZE_TEST), int(cfg.INPUT.MAX_SIZE_TEST)),
    )}


class NormalizedInputModel:
    """Mixin for an ``nn.Module``: normalisation buffers, zero-padded batches, the deploy contract."""

    def init_input(self, image_input: ImageInput, size_divisibility: int) -> None:
        """Call from ``__init__`` after ``super().__init__()``."""
        self.register_buffer("pixel_mean", torch.tensor(image_input.pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(image_input.pixel_std).view(-1, 1, 1), False)
        self.size_divisibility = int(size_divisibility)
        self.input_format = image_input.input_format
        self.test_resize = (int(image_input.test_resize[0]), int(image_input.test_resize[1]))

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalise, then zero-pad to a multiple of ``size_divisibility``."""
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(images, self.size_divisibility)

    def deploy_contract(self) -> PreprocessContract:
        return PreprocessContract.detectron2_test_mapper(
            self.input_format, self.test_resize, self.size_divisibility, self.pixel_mean.flatten().tolist(),
            self.pixel_std.flatten().tolist(),
        )


class SplitInferenceDeploy(NormalizedInputModel):
    """The deploy interface of a model with ``network`` / ``postprocess``; the model adds
    ``deploy_output_names`` (one name per tensor ``network`` returns)."""

    def deploy_forward(self, images: Tensor) -> Tuple[Tensor, ...]:
        return tuple(self.network(images))

    def deploy_postprocess(self, outputs: Sequence[Tensor], image_sizes: Sequence[Tuple[int, int]],
                           original_sizes: Sequence[Tuple[int, int]]) -> List[Dict]:
        return self.postprocess(outputs, [tuple(s) for s in image_sizes],
                                [tuple(int(v) for v in s) for s in original_sizes])
