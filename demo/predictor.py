"""Predictor and visualiser for the demo, in the style of Detectron2's ``demo/predictor.py``.

:class:`MedSegPredictor` differs from Detectron2's ``DefaultPredictor`` in its pre-processing:
every image goes through the model's OWN registered test mapper
(``medseg_core.data.mappers.build_dataset_mapper(cfg, False, dataset)``), i.e. exactly what the
evaluator feeds the model -- LMSF-A's longest-side resize (its meta-architecture then pads with
gray to a multiple of 32), LGMSNet's fixed 256 x 256 resize, Mask R-CNN's shortest-edge resize --
instead of ``DefaultPredictor``'s shortest-edge resize for every model. Weights are loaded with
``medseg_core.engine.load_weights_for_eval`` (weights-only loading; the weight-EMA copy when the
checkpoint holds one and ``MODEL_EMA.USE_FOR_EVAL`` is on).

Mappers read images from ``dataset_dict["file_name"]``. Files are passed as they are; in-memory
frames (video) are handed to the same mapper through a ``medseg-frame://`` path that Detectron2's
``PathManager`` serves from memory (the frame encoded losslessly as BMP), so frames and files take
the identical pre-processing path (colour conversion to ``INPUT.FORMAT`` included).

:class:`VisualizationDemo` draws the outputs with :mod:`medseg_core.visualization`: instances
with one fixed colour per class (the paper's PELD colours for the four PELD classes) and
"class score" labels, semantic predictions as a class overlay, and ground truth beside the
prediction when a dataset dict with annotations is given. Only 2D models are supported.
"""
from __future__ import annotations

import io
import itertools
import os
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

import medseg_core  # noqa: F401  (NumPy-2 / Pillow shim before detectron2)
from medseg_core.projects import load_projects

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.utils.file_io import PathManager
from iopath.common.file_io import PathHandler

from medseg_core.data.image_io import read_image
from medseg_core.data.mappers import build_dataset_mapper
from medseg_core.engine.trainer import load_weights_for_eval
from medseg_core.visualization import draw_dataset_ground_truth, draw_prediction, side_by_side

__all__ = ["MedSegPredictor", "VisualizationDemo", "FRAME_PREFIX"]

FRAME_PREFIX = "medseg-frame://"


class _FrameHandler(PathHandler):
    """Serves ``medseg-frame://<key>`` from encoded frames held in memory (one at a time)."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: Dict[str, bytes] = {}

    def _get_supported_prefixes(self) -> List[str]:
        return [FRAME_PREFIX]

    def _open(self, path: str, mode: str = "r", buffering: int = -1, **kwargs):
        self._check_kwargs(kwargs)
        if "b" not in mode or "r" not in mode:
            raise ValueError(f"{path}: in-memory frames can only be opened with mode 'rb', not {mode!r}")
        if path not in self.frames:
            raise FileNotFoundError(f"{path}: no such in-memory frame")
        return io.BytesIO(self.frames[path])

    def _exists(self, path: str, **kwargs) -> bool:
        return path in self.frames

    def _isfile(self, path: str, **kwargs) -> bool:
        return path in self.frames


_FRAMES = _FrameHandler()
PathManager.register_handler(_FRAMES, allow_override=True)


def _encode_bmp(image: np.ndarray, fmt: str) -> bytes:
    """Lossless encoding of an HxWx3 (or HxW) uint8 image given in ``fmt`` channel order."""
    import cv2

    if image.dtype != np.uint8:
        raise ValueError(f"demo/predictor.py: frames must be uint8 images, got {image.dtype}")
    img = image
    if img.ndim == 3 and fmt == "RGB":
        img = img[:, :, ::-1]  # cv2 writes BGR
    ok, buf = cv2.imencode(".bmp", np.ascontiguousarray(img))
    if not ok:
        raise ValueError(f"demo/predictor.py: could not encode a frame of shape {image.shape}")
    return buf.tobytes()


class MedSegPredictor:
    """One model in eval mode: image (file, array or dataset dict) -> the model's output dict.

    Args:
        cfg: a full project config (``medseg_core.config.load_config``).
        dataset_name: data set whose mapper type and metadata to use; default
            ``cfg.DATASETS.TEST[0]``.
        fuse: call ``model.fuse()`` (Conv+BN / RepVGGDW folding) when the model has it.
    """

    def __init__(self, cfg, dataset_name: Optional[str] = None, fuse: bool = False) -> None:
        load_projects(cfg)  # the projects this config needs (none other is imported)
        self.cfg = cfg.clone()
        if self.cfg.MODEL.META_ARCHITECTURE == "VolumetricSegmentor" or (
            self.cfg.INPUT.DATASET_MAPPER_NAME == "volume"
        ):
            raise ValueError(
                "demo/predictor.py: the demo draws 2D models only; volumetric models "
                f"({self.cfg.MODEL.META_ARCHITECTURE}) are evaluated with tools/train_net.py --eval-only"
            )
        self.model = build_model(self.cfg)
        self.model.eval()
        if self.cfg.MODEL.WEIGHTS:
            load_weights_for_eval(self.cfg, self.model, self.cfg.MODEL.WEIGHTS)
        if fuse and hasattr(self.model, "fuse"):
            self.model.fuse()
        tests = list(self.cfg.DATASETS.TEST)
        self.dataset_name = dataset_name or (tests[0] if tests else None)
        registered = self.dataset_name in DatasetCatalog.list() if self.dataset_name else False
        self.metadata = MetadataCatalog.get(self.dataset_name if registered else "__medseg_demo_unregistered")
        self.mapper = build_dataset_mapper(self.cfg, False, self.dataset_name if registered else None)
        self.input_format = self.cfg.INPUT.FORMAT
        self._counter = itertools.count()

    def map_inputs(self, image: Optional[np.ndarray] = None, file_name: Optional[str] = None,
                   dataset_dict: Optional[Dict] = None, image_format: str = "BGR") -> Dict:
        """The model's input dict for one image, through the registered test mapper."""
        if dataset_dict is not None:
            d = {k: v for k, v in dataset_dict.items() if k not in ("annotations", "sem_seg")}
            return self.mapper(d)
        if file_name is not None:
            return self.mapper({"file_name": file_name, "image_id": os.path.basename(file_name)})
        if image is None:
            raise ValueError("demo/predictor.py: give an image array, a file name or a dataset dict")
        key = f"{FRAME_PREFIX}{next(self._counter)}.bmp"
        _FRAMES.frames[key] = _encode_bmp(image, image_format)
        try:
            return self.mapper({"file_name": key, "image_id": key, "height": image.shape[0], "width": image.shape[1]})
        finally:
            del _FRAMES.frames[key]

    @torch.no_grad()
    def __call__(self, image: Optional[np.ndarray] = None, file_name: Optional[str] = None,
                 dataset_dict: Optional[Dict] = None, image_format: str = "BGR") -> Dict:
        inputs = self.map_inputs(image, file_name, dataset_dict, image_format)
        return self.model([inputs])[0]


class VisualizationDemo:
    """Predict and draw; mirrors Detectron2's ``VisualizationDemo`` (``run_on_image``,
    ``run_on_video``) and adds ``run_on_dataset_dict`` (ground truth | prediction)."""

    def __init__(self, cfg, confidence_threshold: float = 0.5, dataset_name: Optional[str] = None,
                 fuse: bool = False) -> None:
        self.predictor = MedSegPredictor(cfg, dataset_name=dataset_name, fuse=fuse)
        self.metadata = self.predictor.metadata
        self.confidence_threshold = float(confidence_threshold)

    def draw(self, image_rgb: np.ndarray, predictions: Dict) -> np.ndarray:
        return draw_prediction(image_rgb, predictions, self.metadata, self.confidence_threshold)

    def run_on_image(self, image: np.ndarray, image_format: str = "BGR") -> Tuple[Dict, np.ndarray]:
        """``image`` (H, W, 3) uint8 in ``image_format`` -> (predictions, RGB overlay)."""
        predictions = self.predictor(image=image, image_format=image_format)
        rgb = image[:, :, ::-1] if image_format == "BGR" else image
        return predictions, self.draw(np.ascontiguousarray(rgb), predictions)

    def run_on_file(self, file_name: str) -> Tuple[Dict, np.ndarray]:
        """Image file -> (predictions, RGB overlay); the mapper reads the file itself."""
        predictions = self.predictor(file_name=file_name)
        rgb = read_image(file_name, "RGB", self.predictor.cfg.INPUT.IMAGE_BIT_DEPTH)
        return predictions, self.draw(rgb, predictions)

    def run_on_dataset_dict(self, dataset_dict: Dict, with_gt: bool = True) -> Tuple[Dict, np.ndarray]:
        """Registered record -> (predictions, ground truth | prediction) side by side."""
        predictions = self.predictor(dataset_dict=dataset_dict)
        rgb = read_image(dataset_dict["file_name"], "RGB", self.predictor.cfg.INPUT.IMAGE_BIT_DEPTH)
        pred = self.draw(rgb, predictions)
        if not with_gt:
            return predictions, pred
        return predictions, side_by_side(draw_dataset_ground_truth(rgb, dataset_dict, self.metadata), pred)

    def run_on_video(self, video) -> Iterator[np.ndarray]:
        """Frames of a ``cv2.VideoCapture`` -> BGR overlays, one per frame (sequential)."""
        while video.isOpened():
            ok, frame = video.read()
            if not ok:
                break
            _, vis = self.run_on_image(frame, image_format="BGR")
            yield np.ascontiguousarray(vis[:, :, ::-1])
