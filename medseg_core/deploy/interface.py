"""The deploy interface: what a 2D meta-architecture tells the export, runtime, benchmark and demo
code about itself, so that those tools never look at the model's type.

A model is *deployable* when it has these four methods (:class:`DeployableModel`):

``deploy_contract() -> PreprocessContract``
    How a frame becomes the network input: resize rule, channel order, padding value and size
    divisibility, normalisation (see :class:`PreprocessContract`).
``deploy_output_names() -> list[str]``
    Names of the raw network outputs, in the order ``deploy_forward`` returns them (they become
    the output names of the exported graphs).
``deploy_forward(images) -> tuple[Tensor, ...]``
    The network alone on a *normalised*, padded (B, C, H, W) float batch: only dense tensor
    operations, so that it traces and exports (no NMS, no data-dependent shapes).
``deploy_postprocess(outputs, image_sizes, original_sizes) -> list[dict]``
    Raw outputs (from PyTorch or any runtime) -> Detectron2 results per image
    (``{"instances": Instances}`` or ``{"sem_seg": (K, H, W)}``) at the original size.
    ``image_sizes[i]`` is the (h, w) of image i inside the padded batch (after the resize),
    ``original_sizes[i]`` the (H, W) of the frame it came from.

A meta-architecture whose inference is already split into ``network(images) -> raw`` and
``postprocess(raw, image_sizes, original_sizes)`` adopts it in a few lines::

    from medseg_core.deploy import PreprocessContract

    class MyMetaArch(nn.Module):
        def deploy_contract(self):
            return PreprocessContract(input_format=self.input_format, resize="longest",
                                      resize_size=(self.test_size,), size_divisibility=32,
                                      pad_value=(114.0,) * 3, pixel_mean=tuple(self.pixel_mean.flatten().tolist()),
                                      pixel_std=tuple(self.pixel_std.flatten().tolist()))

        def deploy_output_names(self):
            return ["cls", "box", "masks"]

        def deploy_forward(self, images):
            return tuple(self.network(images))

        def deploy_postprocess(self, outputs, image_sizes, original_sizes):
            return self.postprocess(outputs, image_sizes, original_sizes)

``resize_size`` comes from the config in ``from_config`` (the test mapper's own setting), and the
contract must describe exactly what that mapper does: ``tests/test_deploy.py`` checks, for every
model family, that the contract applied to an array gives the mapper's tensor for the same file.
Models that cannot carry these methods themselves (Detectron2's own ``GeneralizedRCNN``) get an
adapter registered with :func:`register_deploy_adapter`; :func:`as_deployable` returns the model
or its adapter. Everything else -- :class:`DeployNetwork` (normalisation in the graph), the
runtimes, export, INT8 and the predictor -- is shared and works from these four methods.

Detectron2 convention kept throughout: images are (C, H, W) in ``input_format`` channel order,
raw pixel values 0..255; the padded batch is padded at the bottom/right.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from .. import compat  # noqa: F401  (NumPy-2 / Pillow shim before detectron2)

__all__ = [
    "PreprocessContract", "DeployableModel", "DeployNetwork", "as_deployable", "register_deploy_adapter",
    "RESIZE_RULES", "resize_longest",
]

RESIZE_RULES = ("longest", "shortest_edge", "fixed", "none")


def resize_longest(image: np.ndarray, size: int) -> Tuple[np.ndarray, float]:
    """Resize so that the longest side is ``size`` (Ultralytics' letterbox resize): OpenCV area
    filter when shrinking, bilinear when enlarging. Returns the image and the ratio."""
    import cv2

    h, w = image.shape[:2]
    r = size / max(h, w)
    if r == 1:
        return image, 1.0
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    interp = cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
    out = cv2.resize(image, (nw, nh), interpolation=interp)
    if out.ndim == 2 and image.ndim == 3:  # cv2 drops a single channel axis
        out = out[..., None]
    return out, r


@dataclass(frozen=True)
class PreprocessContract:
    """The pre-processing a deployed network expects (it is written into ``export.json``).

    Attributes:
        input_format: channel order of the network input ("RGB" or "BGR"; ``INPUT.FORMAT``).
        resize: "longest" (longest side to ``resize_size[0]``, OpenCV area/bilinear: the YOLO
            letterbox), "shortest_edge" (Detectron2's ``ResizeShortestEdge(short, max_size)``,
            ``resize_size = (short, max_size)``), "fixed" (``resize_size = (H, W)``, Detectron2's
            ``Resize``) or "none".
        resize_size: see ``resize``.
        size_divisibility: the padded batch's H and W are multiples of this.
        pad_value: raw pixel value of the padding, per channel (114 for YOLO's gray letterbox;
            PIXEL_MEAN for models that pad the normalised image with 0).
        pixel_mean, pixel_std: normalisation ``(x - mean) / std``; applied by
            :class:`DeployNetwork`, i.e. inside every exported graph, whose input is therefore
            raw pixel values.
    """

    input_format: str
    resize: str
    resize_size: Tuple[int, ...]
    size_divisibility: int
    pad_value: Tuple[float, ...]
    pixel_mean: Tuple[float, ...]
    pixel_std: Tuple[float, ...]

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_RULES:
            raise ValueError(f"PreprocessContract: resize = {self.resize!r}; choose one of {list(RESIZE_RULES)}")
        need = {"longest": 1, "shortest_edge": 2, "fixed": 2, "none": 0}[self.resize]
        if len(self.resize_size) != need:
            raise ValueError(f"PreprocessContract: resize {self.resize!r} takes {need} size value(s), "
                             f"got {tuple(self.resize_size)}")
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"PreprocessContract: input_format = {self.input_format!r}; 'RGB' or 'BGR'")
        if not (len(self.pad_value) == len(self.pixel_mean) == len(self.pixel_std)):
            raise ValueError("PreprocessContract: pad_value, pixel_mean and pixel_std need one value per channel")
        if self.size_divisibility < 1:
            raise ValueError(f"PreprocessContract: size_divisibility = {self.size_divisibility}; must be >= 1")

    @classmethod
    def detectron2_test_mapper(cls, input_format: str, test_resize: Tuple[int, int], size_divisibility: int,
                               pixel_mean: Sequence[float], pixel_std: Sequence[float]) -> "PreprocessContract":
        """The contract of Detectron2's default test mapper: ``ResizeShortestEdge(MIN_SIZE_TEST,
        MAX_SIZE_TEST)`` (no resize when MIN_SIZE_TEST is 0), then the normalised image padded with
        0 -- raw ``pixel_mean`` -- to ``size_divisibility``."""
        mean = tuple(float(v) for v in pixel_mean)
        short, longest = int(test_resize[0]), int(test_resize[1])
        return cls(
            input_format=input_format, resize="shortest_edge" if short > 0 else "none",
            resize_size=(short, longest) if short > 0 else (), size_divisibility=max(1, int(size_divisibility or 1)),
            pad_value=mean, pixel_mean=mean, pixel_std=tuple(float(v) for v in pixel_std),
        )

    @property
    def channels(self) -> int:
        return len(self.pixel_mean)

    # ------------------------------------------------------------------ frame -> tensor
    def resize_image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) uint8 in ``input_format`` -> the resized (h, w, C) array (the test mapper's resize)."""
        if self.resize == "longest":
            return resize_longest(image, int(self.resize_size[0]))[0]
        if self.resize == "none":
            return image
        from detectron2.data import transforms as T

        if self.resize == "shortest_edge":
            aug = T.ResizeShortestEdge(int(self.resize_size[0]), int(self.resize_size[1]), "choice")
        else:
            aug = T.Resize((int(self.resize_size[0]), int(self.resize_size[1])))
        return aug.get_transform(image).apply_image(image)

    def image_tensor(self, image: np.ndarray, image_format: str = "BGR") -> Tensor:
        """One frame (H, W, 3) uint8 in ``image_format`` -> the resized (C, h, w) uint8 tensor in
        ``input_format``: what the model's test mapper returns as ``"image"`` for the same image."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != self.channels:
            raise ValueError(f"frame: expected an (H, W, {self.channels}) uint8 array, got {image.dtype} "
                             f"array of shape {image.shape}")
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"frame: image_format must be 'RGB' or 'BGR', got {image_format!r}")
        if image_format != self.input_format:
            image = image[:, :, ::-1]
        image = self.resize_image(np.ascontiguousarray(image))
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))

    def padded_size(self, h: int, w: int) -> Tuple[int, int]:
        d = self.size_divisibility
        return -(-h // d) * d, -(-w // d) * d

    def pad_batch(self, images: Sequence[Tensor], size_hw: Optional[Tuple[int, int]] = None) -> Tensor:
        """(C, h, w) images -> (B, C, H, W) float32 padded at the bottom/right with ``pad_value``,
        to ``size_hw`` (a static export) or to the batch maximum rounded up to ``size_divisibility``."""
        hs, ws = [int(x.shape[-2]) for x in images], [int(x.shape[-1]) for x in images]
        if size_hw is None:
            H, W = self.padded_size(max(hs), max(ws))
        else:
            H, W = int(size_hw[0]), int(size_hw[1])
            if max(hs) > H or max(ws) > W:
                raise ValueError(f"an image is {max(hs)}x{max(ws)} after the resize, larger than the network's "
                                 f"fixed input size {H}x{W} (export with --dynamic or a larger --size)")
        pad = torch.tensor(self.pad_value, dtype=torch.float32).view(1, -1, 1, 1)
        out = pad.expand(len(images), -1, H, W).clone()
        for i, x in enumerate(images):
            out[i, :, : x.shape[-2], : x.shape[-1]] = x
        return out

    def as_dict(self) -> Dict:
        d = dataclasses.asdict(self)
        d["normalization"] = "(x - pixel_mean) / pixel_std, inside the exported graph (its input is raw 0..255)"
        d["padding"] = "bottom/right"
        return d


@runtime_checkable
class DeployableModel(Protocol):
    """The four methods of the deploy interface (module docstring)."""

    def deploy_contract(self) -> PreprocessContract: ...

    def deploy_output_names(self) -> List[str]: ...

    def deploy_forward(self, images: Tensor) -> Tuple[Tensor, ...]: ...

    def deploy_postprocess(self, outputs: Sequence[Tensor], image_sizes: Sequence[Tuple[int, int]],
                           original_sizes: Sequence[Tuple[int, int]]) -> List[Dict]: ...


_ADAPTERS: Dict[type, Callable] = {}


def register_deploy_adapter(model_type: type) -> Callable[[Callable], Callable]:
    """Decorator: ``factory(model, cfg) -> DeployableModel`` for models of exactly ``model_type``
    (and its subclasses that do not implement the interface themselves)."""

    def deco(factory: Callable) -> Callable:
        _ADAPTERS[model_type] = factory
        return factory

    return deco


def as_deployable(model: nn.Module, cfg=None) -> DeployableModel:
    """``model`` itself when it implements the interface, else its registered adapter (which may
    read ``cfg`` for settings the model does not keep, e.g. the test resize)."""
    if isinstance(model, DeployableModel):
        return model
    for t in type(model).__mro__:
        if t in _ADAPTERS:
            return _ADAPTERS[t](model, cfg)
    raise TypeError(
        f"{type(model).__name__} does not implement the deploy interface (deploy_contract, deploy_output_names, "
        "deploy_forward, deploy_postprocess; see medseg_core/deploy/interface.py) and has no registered adapter"
    )


class DeployNetwork(nn.Module):
    """Raw padded images (B, C, H, W) float32, 0..255 -> the model's raw outputs: the normalisation of
    the contract followed by ``deploy_forward``. This module is what every runtime runs / exports."""

    def __init__(self, model: DeployableModel) -> None:
        super().__init__()
        self.model = model
        c = model.deploy_contract()
        self.register_buffer("mean", torch.tensor(c.pixel_mean, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("std", torch.tensor(c.pixel_std, dtype=torch.float32).view(1, -1, 1, 1), False)

    def forward(self, images: Tensor) -> Tuple[Tensor, ...]:
        out = self.model.deploy_forward((images - self.mean) / self.std)
        return (out,) if isinstance(out, Tensor) else tuple(out)
