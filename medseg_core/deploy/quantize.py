"""INT8 post-training quantisation of an exported network with NNCF (OpenVINO IR in, INT8 IR out).

Calibration runs the FP32 IR on real images prepared exactly as at deployment (the contract's
resize, channel order and padding; every image padded to one common shape so that activation
statistics are collected on one graph shape), then NNCF inserts INT8 quantise/dequantise pairs
(weights per output channel, activations per tensor) with the ``MIXED`` preset (symmetric
weights, asymmetric activations: SiLU outputs are mostly positive) and fast bias correction.
The raw outputs of the head convolutions stay FP32 (they are not the input of a quantisable
op), so decoding and NMS see FP32 values. Accuracy is measured afterwards with the project's
evaluator (``tools/export.py --int8 --evaluate DATASET``): quantisation itself never looks at labels.
"""
from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..extras import require_extra
from .interface import PreprocessContract

__all__ = ["calibration_batches", "quantize_openvino"]

logger = logging.getLogger(__name__)


def calibration_batches(contract: PreprocessContract, files: Sequence[str],
                        size_hw: Optional[Tuple[int, int]] = None) -> List[np.ndarray]:
    """Raw (1, C, H, W) float32 batches of ``files``, all padded to ``size_hw`` (default: the
    padded size of the largest resized image)."""
    from ..data.mappers import read_image_checked

    tensors = [contract.image_tensor(read_image_checked(f, contract.input_format), contract.input_format)
               for f in files]
    if not tensors:
        raise ValueError("INT8 calibration: no calibration images")
    if size_hw is None:
        size_hw = contract.padded_size(max(int(t.shape[-2]) for t in tensors), max(int(t.shape[-1]) for t in tensors))
    return [contract.pad_batch([t], size_hw).numpy() for t in tensors]


def quantize_openvino(xml_path: str, batches: Sequence[np.ndarray], out_xml: str, preset: str = "mixed",
                      fast_bias_correction: bool = True) -> str:
    """NNCF INT8 quantisation of the IR ``xml_path`` calibrated on ``batches``; saves ``out_xml``."""
    require_extra("deploy", "INT8 quantisation")
    import nncf
    import openvino as ov

    presets = {"mixed": nncf.QuantizationPreset.MIXED, "performance": nncf.QuantizationPreset.PERFORMANCE}
    if preset not in presets:
        raise ValueError(f"INT8 preset {preset!r}: choose one of {sorted(presets)}")
    model = ov.Core().read_model(xml_path)
    data = nncf.Dataset(list(batches))
    q = nncf.quantize(model, data, preset=presets[preset], subset_size=len(batches),
                      fast_bias_correction=fast_bias_correction)
    ov.save_model(q, out_xml, compress_to_fp16=False)
    logger.info("INT8 IR calibrated on %d images -> %s", len(batches), out_xml)
    return out_xml
