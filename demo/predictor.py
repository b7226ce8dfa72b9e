"""Predictor and visualiser for the demo, in the style of Detectron2's ``demo/predictor.py``.

:class:`MedSegPredictor` is a thin layer over the shared array-first predictor
(:class:`medseg_core.deploy.Predictor`), which goes through the model's deploy interface:

* a frame (NumPy array, e.g. from a video or camera) goes straight to the model's deploy
  contract -- the same resize, channel order and padding as the model's registered test mapper
  (LMSF-A's letterbox, LGMSNet's fixed resize, Mask R-CNN's shortest-edge resize), tested
  against that mapper -- with no encoding or decoding in between;
* a file or a registered dataset dict goes through the registered test mapper
  (``medseg_core.data.mappers.build_dataset_mapper(cfg, False, dataset)``), i.e. exactly what
  the evaluator feeds the model, and the result through the same network and post-processing.
  A frame and the file it was saved to give the same predictions.

The network runs in any runtime of :mod:`medseg_core.deploy.runtimes` (``runtime="pytorch"``
by default; ``onnxruntime``, ``openvino``, ``openvino-int8`` ... with ``runtime_file`` = a file
written by ``tools/export.py``). Weights are loaded with ``medseg_core.engine.load_weights_for_eval``
(weights-only loading; the weight-EMA copy when the checkpoint holds one).

:class:`VisualizationDemo` draws the outputs with :mod:`medseg_core.visualization`: instances
with one fixed colour per class (the paper's PELD colours for the four PELD classes) and
"class score" labels, semantic predictions as a class overlay, and ground truth beside the
prediction when a dataset dict with annotations is given; :meth:`VisualizationDemo.video_pipeline`
is the threaded video / camera path (:class:`medseg_core.deploy.video.VideoPipeline`). Only 2D
models are supported.
"""
from __future__ import annotations

import os
import tempfile
from typing import Callable, Dict, Iterator, Optional, Tuple

import numpy as np
import torch

import medseg_core  # noqa: F401  (NumPy-2 / Pillow shim before detectron2)
from medseg_core.projects import load_projects

from detectron2.data import DatasetCatalog, MetadataCatalog

from medseg_core.data.image_io import read_image
from medseg_core.data.mappers import build_dataset_mapper
from medseg_core.deploy.predictor import Predictor, build_deployable, build_runtime
from medseg_core.deploy.video import PipelineStats, VideoPipeline
from medseg_core.visualization import draw_dataset_ground_truth, draw_prediction, side_by_side

__all__ = ["MedSegPredictor", "VisualizationDemo"]


class MedSegPredictor:
    """One model in eval mode: image (array, file or dataset dict) -> the model's output dict.

    Args:
        cfg: a full project config (``medseg_core.config.load_config``).
        dataset_name: data set whose mapper type and metadata to use; default
            ``cfg.DATASETS.TEST[0]``.
        fuse: call ``model.fuse()`` (Conv+BN / RepVGGDW folding) when the model has it.
        runtime: runtime of the network (``medseg_core.deploy.runtimes``).
        runtime_file: the exported file a file runtime loads; without one the network is exported
            into a temporary folder first (dynamic shapes).
        threads: intra-op threads of ONNX Runtime / OpenVINO (0 = their default).
    """

    def __init__(self, cfg, dataset_name: Optional[str] = None, fuse: bool = False, runtime: str = "pytorch",
                 runtime_file: str = "", threads: int = 0) -> None:
        load_projects(cfg)  # the projects this config needs (none other is imported)
        self.cfg = cfg.clone()
        if self.cfg.MODEL.META_ARCHITECTURE == "VolumetricSegmentor" or (
            self.cfg.INPUT.DATASET_MAPPER_NAME == "volume"
        ):
            raise ValueError(
                "demo/predictor.py: the demo draws 2D models only; volumetric models "
                f"({self.cfg.MODEL.META_ARCHITECTURE}) are evaluated with tools/train_net.py --eval-only"
            )
        self.model = build_deployable(self.cfg, fuse=fuse)
        example = None
        if runtime not in ("pytorch", "pytorch-fused") and not runtime_file:
            c = self.model.deploy_contract()
            side = c.padded_size(max(64, 2 * c.size_divisibility), 1)[0]  # >= 2 blocks: no 0/1 specialisation
            example = c.pad_batch([torch.full((c.channels, side, side), 114, dtype=torch.uint8)])
        self.runtime = build_runtime(runtime, self.model, tempfile.mkdtemp(prefix="medseg-demo-runtime-"),
                                     example, threads=threads, dynamic=True, artifact=runtime_file)
        self.predictor = Predictor(self.model, self.runtime)
        tests = list(self.cfg.DATASETS.TEST)
        self.dataset_name = dataset_name or (tests[0] if tests else None)
        registered = self.dataset_name in DatasetCatalog.list() if self.dataset_name else False
        self.metadata = MetadataCatalog.get(self.dataset_name if registered else "__medseg_demo_unregistered")
        self.mapper = build_dataset_mapper(self.cfg, False, self.dataset_name if registered else None)
        self.input_format = self.cfg.INPUT.FORMAT

    def map_inputs(self, image: Optional[np.ndarray] = None, file_name: Optional[str] = None,
                   dataset_dict: Optional[Dict] = None, image_format: str = "BGR") -> Dict:
        """The model's input dict for one image: files and dataset dicts through the registered
        test mapper, arrays through the deploy contract (the same resize)."""
        if dataset_dict is not None:
            d = {k: v for k, v in dataset_dict.items() if k not in ("annotations", "sem_seg")}
            return self.mapper(d)
        if file_name is not None:
            return self.mapper({"file_name": file_name, "image_id": os.path.basename(file_name)})
        if image is None:
            raise ValueError("demo/predictor.py: give an image array, a file name or a dataset dict")
        return {"image": self.predictor.image_tensor(image, image_format), "height": image.shape[0],
                "width": image.shape[1]}

    @torch.no_grad()
    def __call__(self, image: Optional[np.ndarray] = None, file_name: Optional[str] = None,
                 dataset_dict: Optional[Dict] = None, image_format: str = "BGR") -> Dict:
        if image is not None and file_name is None and dataset_dict is None:
            return self.predictor(image, image_format)
        inputs = self.map_inputs(image, file_name, dataset_dict, image_format)
        h, w = inputs["image"].shape[-2:]
        return self.predictor.predict_image_tensor(inputs["image"], (inputs.get("height", h), inputs.get("width", w)))


class VisualizationDemo:
    """Predict and draw; mirrors Detectron2's ``VisualizationDemo`` (``run_on_image``,
    ``run_on_video``) and adds ``run_on_dataset_dict`` (ground truth | prediction) and the
    threaded :meth:`video_pipeline`."""

    def __init__(self, cfg, confidence_threshold: float = 0.5, dataset_name: Optional[str] = None,
                 fuse: bool = False, runtime: str = "pytorch", runtime_file: str = "", threads: int = 0) -> None:
        self.predictor = MedSegPredictor(cfg, dataset_name=dataset_name, fuse=fuse, runtime=runtime,
                                         runtime_file=runtime_file, threads=threads)
        self.metadata = self.predictor.metadata
        self.confidence_threshold = float(confidence_threshold)

    def draw(self, image_rgb: np.ndarray, predictions: Dict) -> np.ndarray:
        return draw_prediction(image_rgb, predictions, self.metadata, self.confidence_threshold)

    def draw_bgr(self, frame_bgr: np.ndarray, predictions: Dict) -> np.ndarray:
        """BGR frame -> BGR overlay (for OpenCV writers)."""
        vis = self.draw(np.ascontiguousarray(frame_bgr[:, :, ::-1]), predictions)
        return np.ascontiguousarray(vis[:, :, ::-1])

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
            yield self.draw_bgr(frame, self.predictor(image=frame, image_format="BGR"))

    def video_pipeline(self, sink: Callable[[np.ndarray], None], queue_size: int = 4,
                       on_frame: Optional[Callable[[PipelineStats], None]] = None) -> VideoPipeline:
        """Threaded decode | predict | draw + ``sink(bgr_overlay)`` pipeline for BGR frames."""
        return VideoPipeline(self.predictor.predictor, sink, render=self.draw_bgr, image_format="BGR",
                             queue_size=queue_size, on_frame=on_frame)
