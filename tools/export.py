#!/usr/bin/env python
"""Export a model's network to TorchScript and ONNX and check both against PyTorch on real images.

    python tools/export.py --config-file configs/Endoscapes-InstanceSegmentation/lmsfa_n_640.yaml \\
        --output output/export/lmsfa_n_640 [--size 640 640 | --dynamic] [--format torchscript onnx] \\
        [--check-dataset endoscapes_seg50_val --num-check-images 8] [--opts MODEL.WEIGHTS model_final.pth]

What is exported (for every 2D model of the toolkit that has ``complexity_forward``):

* the **fused** network (``model.fuse()`` when the model has it; ``--no-fuse`` keeps it unfused):
  backbone + neck + head up to the raw outputs of ``complexity_forward`` -- for LMSF-A / YOLOv8-seg
  the per-level DFL box logits, class logits and mask coefficients and the prototypes
  (``box_s8 .. box_s32, cls_s8 .. cls_s32, coef_s8 .. coef_s32, protos``);
* the input normalisation ``(x - PIXEL_MEAN) / PIXEL_STD`` is inside the graph: the input
  ``images`` is a float32 (B, 3, H, W) batch of raw pixel values in ``INPUT.FORMAT`` channel
  order, resized by the model's test mapper and padded at the bottom/right (LMSF-A: with 114 to
  a multiple of 32; models that pad after normalising: with PIXEL_MEAN);
* ``--size H W`` (default: the largest image the test mapper produces, 640 x 640 for LMSF-A at
  640) fixes the input shape; ``--dynamic`` makes batch, height and width free (height and width
  must stay multiples of 32).

NMS and mask assembly are NOT in the graph: they stay in PyTorch (``LMSFA.inference``; for the
onnxruntime path :func:`lmsfa_postprocess` feeds the ONNX outputs to that same code). Reasons:
ONNX NonMaxSuppression is single-class per call, the multi-label candidate set and the
per-detection mask crop/resize at the original image size are data-dependent shapes that
runtimes handle poorly, and keeping one post-processing implementation guarantees that the
exported model gives the same detections as the evaluated one.

Formats (no pickled Python objects): TorchScript (``torch.jit.trace`` then ``torch.jit.save``:
a zip of TorchScript code and tensors, loaded with ``torch.jit.load``) and ONNX (protobuf,
opset 18, ``torch.onnx.export(dynamo=True)``, weights inside the file), plus ``export.json``
describing the input/outputs/pre-processing and the check results.

Export-friendly substitution: ``nn.AdaptiveAvgPool2d`` whose output size is 1 along the pooled
axes (EMA attention's ``(None, 1)``, ``(1, None)`` and ``(1, 1)`` pools) is replaced by the
equivalent mean over those axes; the ONNX exporter otherwise bakes the example's pooling
window into the graph, which is wrong for any other input size.

Check: the network runs in PyTorch, in the saved TorchScript file and in onnxruntime (CPU) on
real images (``--check-dataset`` or ``--input``; default the config's first test set); the max
absolute difference of every output is reported and must stay below ``--atol`` (default 1e-3)
or the tool exits with status 1. For LMSF-A the detections after post-processing are compared
too (count, max box / score difference, mask pixel agreement).
"""
from __future__ import annotations

import argparse
import copy
import glob
import json
import logging
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

import medseg_core  # noqa: F401  (NumPy-2 / Pillow shim before detectron2)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONNX_OPSET = 18
logger = logging.getLogger("medseg.export")

__all__ = [
    "build_eval_model", "ExportableNetwork", "make_export_friendly", "output_names", "pad_batch",
    "export_torchscript", "export_onnx", "OnnxNetwork", "lmsfa_postprocess", "default_input_size",
    "check_images", "main",
]


# ---------------------------------------------------------------------------------- model
def build_eval_model(cfg, fuse: bool = True) -> nn.Module:
    """Model of ``cfg`` in eval mode with its weights (``load_weights_for_eval``: weights-only
    loading, the weight-EMA copy when present), fused when ``fuse`` and the model has ``fuse()``."""
    from detectron2.modeling import build_model

    from medseg_core.engine.trainer import load_weights_for_eval
    from medseg_core.projects import load_projects

    load_projects()
    model = build_model(cfg)
    model.eval()
    if cfg.MODEL.WEIGHTS:
        load_weights_for_eval(cfg, model, cfg.MODEL.WEIGHTS)
    if fuse and hasattr(model, "fuse"):
        model.fuse()
    return model


class _AxisMean(nn.Module):
    """Mean over ``dims`` keeping them: an adaptive average pool to size 1 along those axes."""

    def __init__(self, dims: Tuple[int, ...]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(self.dims, keepdim=True)


def make_export_friendly(module: nn.Module) -> int:
    """Replace every ``nn.AdaptiveAvgPool2d`` that pools whole axes to 1 by an axis mean (same
    values); returns how many were replaced. Other adaptive pools are left as they are."""
    replaced = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.AdaptiveAvgPool2d):
            size = child.output_size if isinstance(child.output_size, (tuple, list)) else (child.output_size,) * 2
            if all(s in (None, 1) for s in size) and any(s == 1 for s in size):
                setattr(module, name, _AxisMean(tuple(d for d, s in zip((-2, -1), size) if s == 1)))
                replaced += 1
        else:
            replaced += make_export_friendly(child)
    return replaced


class ExportableNetwork(nn.Module):
    """Raw padded images (B, 3, H, W) float32 -> the model's ``complexity_forward`` tensors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not hasattr(model, "complexity_forward"):
            raise ValueError(
                f"tools/export.py: {type(model).__name__} has no complexity_forward(images) (the network-only "
                "forward the export needs)"
            )
        self.model = model
        self.register_buffer("mean", model.pixel_mean.detach().clone().view(1, -1, 1, 1), False)
        self.register_buffer("std", model.pixel_std.detach().clone().view(1, -1, 1, 1), False)

    def forward(self, images: Tensor) -> Tuple[Tensor, ...]:
        out = self.model.complexity_forward((images - self.mean) / self.std)
        return (out,) if isinstance(out, Tensor) else tuple(out)


def output_names(cfg, num: int) -> List[str]:
    """Names of the exported outputs: LMSF-A's head layout, else ``output0 ..``."""
    if cfg.MODEL.META_ARCHITECTURE == "LMSFA" and (num - 1) % 3 == 0:
        levels = (num - 1) // 3
        strides = [8 * 2 ** i for i in range(levels)]
        return [f"{kind}_s{s}" for kind in ("box", "cls", "coef") for s in strides] + ["protos"]
    return [f"output{i}" for i in range(num)]


def size_divisibility(model: nn.Module) -> int:
    div = getattr(getattr(model, "backbone", None), "size_divisibility", 0) or getattr(model, "size_divisibility", 0)
    return int(div) or 32


def raw_pad_value(model: nn.Module) -> Tensor:
    """Per-channel raw pixel value of the padding: LMSF-A pads raw images (114); Detectron2-style
    models pad the normalised image with 0, i.e. the raw image with PIXEL_MEAN."""
    if hasattr(model, "pad_value"):
        return torch.full((model.pixel_mean.numel(),), float(model.pad_value))
    return model.pixel_mean.detach().flatten().cpu().clone()


def pad_batch(images: Sequence[Tensor], pad_value: Tensor, size_hw: Optional[Tuple[int, int]] = None,
              divisibility: int = 32) -> Tensor:
    """(C, h, w) images -> (B, C, H, W) float32, padded at the bottom/right to ``size_hw`` (fixed
    export) or to the batch maximum rounded up to ``divisibility`` (dynamic export)."""
    hs, ws = [int(x.shape[-2]) for x in images], [int(x.shape[-1]) for x in images]
    if size_hw is None:
        H = -(-max(hs) // divisibility) * divisibility
        W = -(-max(ws) // divisibility) * divisibility
    else:
        H, W = int(size_hw[0]), int(size_hw[1])
        if max(hs) > H or max(ws) > W:
            raise ValueError(
                f"tools/export.py: a mapped image is {max(hs)}x{max(ws)}, larger than the fixed export size {H}x{W} "
                "(use --size or --dynamic)"
            )
    out = pad_value.view(1, -1, 1, 1).expand(len(images), -1, H, W).clone().float()
    for i, x in enumerate(images):
        out[i, :, : x.shape[-2], : x.shape[-1]] = x.float()
    return out


def default_input_size(cfg) -> Tuple[int, int]:
    """Largest (H, W) the test mapper produces: the YOLO letterbox square, the fixed resize, or
    the complexity-counting shape."""
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name == "yolo" and hasattr(cfg.INPUT, "YOLO"):
        s = int(cfg.INPUT.YOLO.IMAGE_SIZE)
        return s, s
    fh, fw = cfg.INPUT.FIXED_SIZE
    if fh > 0 and fw > 0:
        return int(fh), int(fw)
    shape = tuple(cfg.TEST.COMPLEXITY_INPUT_SHAPE)
    return int(shape[-2]), int(shape[-1])


# ---------------------------------------------------------------------------------- export
def export_torchscript(net: nn.Module, example: Tensor, path: str) -> str:
    with torch.no_grad():
        traced = torch.jit.trace(net, (example,), check_trace=False, strict=False)
    torch.jit.save(traced, path)
    return path


def export_onnx(net: nn.Module, example: Tensor, path: str, names: Sequence[str], dynamic: bool,
                opset: int = ONNX_OPSET, divisibility: int = 32) -> str:
    """ONNX through ``torch.export`` (dynamo exporter); dynamic H/W are multiples of ``divisibility``."""
    kwargs = {}
    if dynamic:
        d = torch.export.Dim
        hmax = max(2, 4096 // divisibility)
        kwargs["dynamic_shapes"] = ({
            0: d("batch", min=1, max=256),
            2: divisibility * d("h_blocks", min=1, max=hmax),
            3: divisibility * d("w_blocks", min=1, max=hmax),
        },)
    with torch.no_grad():
        torch.onnx.export(
            net, (example,), path, dynamo=True, opset_version=opset, input_names=["images"],
            output_names=list(names), external_data=False, verbose=False, **kwargs,
        )
    return path


class OnnxNetwork:
    """An exported network in onnxruntime (CPU by default): ``__call__(images) -> [Tensor]``."""

    def __init__(self, path: str, threads: int = 0, providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads > 0:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(path, opts, providers=list(providers))
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, images: Tensor) -> List[Tensor]:
        arr = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        return [torch.from_numpy(o) for o in self.session.run(None, {self.input_name: arr})]


def lmsfa_postprocess(model: nn.Module, outputs: Sequence[Tensor], image_sizes: Sequence[Tuple[int, int]],
                      batched_inputs: Optional[List[Dict]] = None) -> List[Dict]:
    """LMSF-A's own post-processing (decode, multi-label NMS, masks for kept detections at the
    original size) applied to exported network outputs (the flat ``complexity_forward`` order)."""
    from lmsfa.heads.base import HeadOutputs

    n = len(outputs)
    if (n - 1) % 3:
        raise ValueError(f"tools/export.py: expected 3 x levels + 1 LMSF-A outputs, got {n}")
    lv = (n - 1) // 3
    out = HeadOutputs(
        box=list(outputs[:lv]), cls=list(outputs[lv:2 * lv]), coef=list(outputs[2 * lv:3 * lv]),
        protos=outputs[-1], strides=[8 * 2 ** i for i in range(lv)],
    )
    return model.inference(out, list(image_sizes), batched_inputs)


# ---------------------------------------------------------------------------------- check
def check_images(cfg, dataset: str = "", files: Sequence[str] = (), num: int = 4) -> List[Dict]:
    """Model inputs (test mapper) of real images: ``files`` or the first ``num`` of a data set."""
    from detectron2.data import DatasetCatalog

    import medseg_core.data  # noqa: F401  (registers the data sets)
    from medseg_core.data.mappers import build_dataset_mapper

    if files:
        records = [{"file_name": f, "image_id": os.path.basename(f)} for f in files]
        ds = dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "")
    else:
        ds = dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "")
        if not ds or ds not in DatasetCatalog.list():
            raise ValueError(
                f"tools/export.py: no real images to check on: data set {ds!r} is not registered; "
                "give --check-dataset NAME or --input FILES"
            )
        records = DatasetCatalog.get(ds)[:num]
    mapper = build_dataset_mapper(cfg, False, ds if ds in DatasetCatalog.list() else None)
    out = []
    for r in records:
        r = {k: v for k, v in r.items() if k not in ("annotations", "sem_seg")}
        out.append(mapper(r))
    return out


def _max_abs(a: Sequence[Tensor], b: Sequence[Tensor]) -> List[float]:
    if len(a) != len(b):
        raise ValueError(f"tools/export.py: {len(a)} vs {len(b)} outputs")
    return [float((x.float() - y.float()).abs().max()) if x.numel() else 0.0 for x, y in zip(a, b)]


def _compare_detections(ref: List[Dict], got: List[Dict], iou_match: float = 0.9) -> Dict[str, float]:
    """Match every PyTorch detection to the same-class exported one of highest box IoU (order
    can differ where scores tie, and candidates right at the confidence threshold may flip)."""
    from torchvision.ops import box_iou

    n_ref = sum(len(r["instances"]) for r in ref)
    n_got = sum(len(g["instances"]) for g in got)
    matched, score_d, box_d, mask_d = 0, [0.0], [0.0], [0.0]
    for r, g in zip(ref, got):
        r, g = r["instances"], g["instances"]
        if not len(r) or not len(g):
            continue
        iou = box_iou(r.pred_boxes.tensor, g.pred_boxes.tensor)
        iou[r.pred_classes[:, None] != g.pred_classes[None, :]] = -1
        best, j = iou.max(1)
        ok = best >= iou_match
        matched += int(ok.sum())
        if ok.any():
            i, j = ok.nonzero()[:, 0], j[ok]
            score_d.append(float((r.scores[i] - g.scores[j]).abs().max()))
            box_d.append(float((r.pred_boxes.tensor[i] - g.pred_boxes.tensor[j]).abs().max()))
            mask_d.append(float((r.pred_masks[i] != g.pred_masks[j]).float().mean(dim=(1, 2)).max()))
    return {
        "detections_pytorch": n_ref, "detections_onnx": n_got,
        "matched_fraction": matched / max(n_ref, 1),
        "matched_max_score_abs_diff": max(score_d), "matched_max_box_abs_diff": max(box_d),
        "matched_max_mask_pixel_disagreement": max(mask_d),
    }


def run_check(cfg, model: nn.Module, net: nn.Module, inputs: List[Dict], size_hw: Optional[Tuple[int, int]],
              ts_path: Optional[str], onnx_path: Optional[str], names: Sequence[str]) -> Dict:
    """Per image: max |PyTorch - exported| per output; LMSF-A detections through post-processing."""
    div = size_divisibility(model)
    pad = raw_pad_value(model)
    ts = torch.jit.load(ts_path) if ts_path else None
    ort_net = OnnxNetwork(onnx_path) if onnx_path else None
    per_image = []
    worst = {"torchscript": 0.0, "onnx": 0.0}
    det = []
    for x in inputs:
        images = pad_batch([x["image"]], pad, size_hw, div)
        with torch.no_grad():
            ref = list(net(images))
        row = {"file_name": x.get("file_name", ""), "input_shape": list(images.shape)}
        for kind, runner in (("torchscript", ts), ("onnx", ort_net)):
            if runner is None:
                continue
            with torch.no_grad():
                got = list(runner(images))
            diffs = _max_abs(ref, got)
            row[kind] = dict(zip(names, diffs))
            worst[kind] = max(worst[kind], max(diffs))
            if kind == "onnx" and cfg.MODEL.META_ARCHITECTURE == "LMSFA":
                sizes = [tuple(int(s) for s in x["image"].shape[-2:])]
                with torch.no_grad():
                    det.append((lmsfa_postprocess(model, ref, sizes, [x]), lmsfa_postprocess(model, got, sizes, [x])))
        per_image.append(row)
    out = {"per_image": per_image, "max_abs_diff": {k: v for k, v in worst.items()
                                                    if (k == "torchscript" and ts) or (k == "onnx" and ort_net)}}
    if det:
        out["onnx_detections"] = _compare_detections([d[0][0] for d in det], [d[1][0] for d in det])
    return out


# ---------------------------------------------------------------------------------- CLI
def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--output", default="", help="output folder (default output/export/<config name>)")
    p.add_argument("--format", nargs="+", default=["torchscript", "onnx"], choices=["torchscript", "onnx"])
    p.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="fixed input size (default: the "
                   "largest image the test mapper produces)")
    p.add_argument("--dynamic", action="store_true", help="free batch, height and width (multiples of 32)")
    p.add_argument("--opset", type=int, default=ONNX_OPSET, help=f"ONNX opset (default {ONNX_OPSET})")
    p.add_argument("--no-fuse", action="store_true", help="export the unfused model")
    p.add_argument("--check-dataset", default="", help="registered data set whose first images check the export")
    p.add_argument("--input", nargs="*", default=[], help="image files (or globs) to check on instead")
    p.add_argument("--num-check-images", type=int, default=4)
    p.add_argument("--atol", type=float, default=1e-3, help="max abs difference allowed on every output")
    p.add_argument("--num-threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    from medseg_core.config import load_config

    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    if args.dynamic and args.size:
        raise SystemExit("tools/export.py: give --size or --dynamic, not both")
    cfg = load_config(args.config_file, list(args.opts) + ["MODEL.DEVICE", "cpu"])
    out_dir = args.output or os.path.join(REPO, "output", "export", os.path.splitext(os.path.basename(args.config_file))[0])
    os.makedirs(out_dir, exist_ok=True)

    model = build_eval_model(cfg, fuse=not args.no_fuse)
    net = ExportableNetwork(copy.deepcopy(model)).eval()
    replaced = make_export_friendly(net)
    size_hw = None if args.dynamic else tuple(args.size) if args.size else default_input_size(cfg)
    div = size_divisibility(model)
    files = [f for pat in args.input for f in (sorted(glob.glob(pat)) or [pat])]
    inputs = check_images(cfg, args.check_dataset, files, args.num_check_images)
    example = pad_batch([inputs[0]["image"]], raw_pad_value(model), size_hw, div)
    with torch.no_grad():
        names = output_names(cfg, len(net(example)))
        ref_model = list(ExportableNetwork(model).eval()(example))
        ref_net = list(net(example))
    substitution_diff = max(_max_abs(ref_model, ref_net))

    paths: Dict[str, str] = {}
    timings: Dict[str, float] = {}
    if "torchscript" in args.format:
        t = time.perf_counter()
        paths["torchscript"] = export_torchscript(net, example, os.path.join(out_dir, "model.ts"))
        timings["torchscript"] = time.perf_counter() - t
    if "onnx" in args.format:
        t = time.perf_counter()
        paths["onnx"] = export_onnx(net, example, os.path.join(out_dir, "model.onnx"), names, args.dynamic, args.opset, div)
        timings["onnx"] = time.perf_counter() - t
    for k, p in paths.items():
        logger.info("exported %s in %.1fs -> %s", k, timings[k], p)

    check = run_check(cfg, model, net, inputs, size_hw, paths.get("torchscript"), paths.get("onnx"), names)
    shapes = [list(t.shape) for t in ref_net]
    meta = {
        "config_file": os.path.abspath(args.config_file),
        "opts": list(args.opts),
        "weights": cfg.MODEL.WEIGHTS or "(none: randomly initialised)",
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "fused": not args.no_fuse,
        "files": {k: os.path.basename(v) for k, v in paths.items()},
        "onnx": {"opset": args.opset, "exporter": "torch.onnx.export(dynamo=True)", "torch": torch.__version__},
        "adaptive_pools_replaced_by_means": replaced,
        "substitution_max_abs_diff": substitution_diff,
        "input": {
            "name": "images", "layout": "NCHW", "dtype": "float32", "channel_order": cfg.INPUT.FORMAT,
            "values": "raw pixel values 0..255 (normalisation (x - mean) / std is inside the graph)",
            "pixel_mean": list(map(float, cfg.MODEL.PIXEL_MEAN)), "pixel_std": list(map(float, cfg.MODEL.PIXEL_STD)),
            "shape": ["batch", 3, f"{div}*h", f"{div}*w"] if args.dynamic else [1, 3, size_hw[0], size_hw[1]],
            "resize": f"the '{cfg.INPUT.DATASET_MAPPER_NAME or 'default'}' test mapper of the config",
            "padding": "bottom/right, raw value " + ", ".join(f"{v:g}" for v in raw_pad_value(model).tolist()),
        },
        "outputs": [{"name": n, "example_shape": s} for n, s in zip(names, shapes)],
        "postprocess": "in PyTorch: LMSFA.inference (tools/export.py:lmsfa_postprocess) for LMSF-A; "
                       "crop + resize of the scores for semantic models",
        "export_seconds": timings,
        "check": check,
        "atol": args.atol,
    }
    with open(os.path.join(out_dir, "export.json"), "w") as f:
        json.dump(meta, f, indent=2)

    print(f"\n{cfg.MODEL.META_ARCHITECTURE} ({os.path.basename(args.config_file)}), fused={not args.no_fuse}, "
          f"input {meta['input']['shape']}, checked on {len(inputs)} real image(s)")
    ok = True
    for kind, diff in check["max_abs_diff"].items():
        good = diff <= args.atol
        ok &= good
        print(f"  {kind:<12} max |PyTorch - exported| over all outputs = {diff:.3e}  ({'OK' if good else 'FAIL'} at atol {args.atol:g})")
    if "onnx_detections" in check:
        print("  onnx detections after LMSF-A post-processing:", json.dumps(check["onnx_detections"]))
    print(f"  files: {', '.join(paths.values())}; details in {os.path.join(out_dir, 'export.json')}")
    return 0 if ok else 1


if __name__ == "__main__":
    from medseg_core.cli_errors import run_cli

    run_cli(main)
