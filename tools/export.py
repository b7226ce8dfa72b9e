#!/usr/bin/env python
"""Export any 2D model of the toolkit (TorchScript, ONNX, OpenVINO IR, INT8 IR) and check every
runtime against PyTorch on real images.

    python tools/export.py --config-file configs/Endoscapes-InstanceSegmentation/lmsfa_n_640.yaml \\
        --output output/export/lmsfa_n_640 --format torchscript onnx openvino [--int8] \\
        [--size H W | --dynamic] [--check-dataset endoscapes_seg50_val --num-check-images 8] \\
        [--calibration-dataset endoscapes_seg50_train --calibration-images 300] \\
        [--evaluate endoscapes_seg50_val] [--time] [--opts MODEL.WEIGHTS model_final.pth]
    python tools/export.py --config-file CFG --output DIR --check-only [--opts ...]   # re-check saved files

Everything goes through the deploy interface (``medseg_core.deploy``): the network exported is
the model's ``deploy_forward`` behind the contract's normalisation (input ``images``: float32
(B, C, H, W) raw pixel values in the contract's channel order, resized and padded at the
bottom/right as ``export.json``'s ``contract`` says); its outputs are ``deploy_output_names()``;
post-processing (``deploy_postprocess``: NMS, masks at the original size) stays in PyTorch for
every runtime. The fused model (``fuse()``, where the model has one) is exported unless
``--no-fuse``.

Input shape: by default static, the padded size of the first check image (an 854 x 480 frame at
640: 384 x 640, what a video of that camera needs); ``--size H W`` another static size (frames
are padded up to it); ``--dynamic`` free batch / height / width (multiples of the size
divisibility; OpenVINO then compiles once per shape it sees).

Check, per runtime (PyTorch fused, TorchScript, ONNX Runtime, OpenVINO; INT8 reported): on real
images, the max |raw output difference| against the PyTorch network and the post-processed
agreement (instances: matched fraction, max score / box difference, min and mean mask IoU of
matched detections; semantic: arg-max pixel agreement). ``ok`` requires all of them within
tolerance (``--atol``, ``--min-matched``, ``--score-atol``, ``--min-mask-iou``,
``--min-pixel-agreement``): masks that disagree fail even with a generous ``--atol``. The
tool exits with status 1 when any FP32 runtime fails. The INT8 IR is not held to FP32
tolerances: its agreement is reported and its accuracy measured with ``--evaluate`` (the
config's evaluators on a registered data set, e.g. COCO segm AP FP32 vs INT8), printed next to
its network speed-up (``--time``: batch-1 latency of each runtime on the check batch, timed in
turns, ``--threads`` threads).
"""
from __future__ import annotations

import argparse
import copy
import glob
import json
import logging
import os
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence, Set

import torch

import medseg_core  # noqa: F401  (NumPy-2 / Pillow shim before detectron2)
from medseg_core.errors import here

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
logger = logging.getLogger("medseg.export")
FORMATS = ("torchscript", "onnx", "openvino")
FILES = {"torchscript": "model.ts", "onnxruntime": "model.onnx", "openvino": "model.xml",
         "openvino-int8": "model_int8.xml"}


def check_frames(cfg, fmt: str, dataset: str = "", files: Sequence[str] = (), num: int = 4) -> List:
    """Real frames (arrays in ``fmt``): ``files`` or the first ``num`` images of a data set."""
    from detectron2.data import DatasetCatalog

    import medseg_core.data  # noqa: F401  (registers the data sets)
    from medseg_core.data.mappers import read_image_checked

    if not files:
        ds = dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "")
        if not ds or ds not in DatasetCatalog.list():
            raise SystemExit(here() + f"no real images to check on: data set {ds!r} is not registered; "
                             "give --check-dataset NAME or --input FILES")
        files = [r["file_name"] for r in DatasetCatalog.get(ds)[:num]]
    return [read_image_checked(f, fmt) for f in files]


def dataset_files(name: str, num: int) -> List[str]:
    from detectron2.data import DatasetCatalog

    import medseg_core.data  # noqa: F401

    if name not in DatasetCatalog.list():
        raise SystemExit(here() + f"calibration data set {name!r} is not registered")
    recs = DatasetCatalog.get(name)
    step = max(1, len(recs) // max(num, 1))  # spread over the set (videos are stored in order)
    return [r["file_name"] for r in recs[::step][:num]]


def time_runtimes(runtimes: Dict[str, object], batch: torch.Tensor, warmup: int, runs: int, repeats: int) -> Dict:
    """Median network latency (ms) of every runtime on ``batch``, timed in turns."""
    from medseg_core.profiling import measure_latency

    times: Dict[str, List[float]] = {k: [] for k in runtimes}
    for rep in range(repeats):
        order = list(runtimes.items()) if rep % 2 == 0 else list(reversed(runtimes.items()))
        for k, rt in order:
            times[k] += measure_latency(lambda r=rt: r(batch), torch.device("cpu"), warmup, runs).times_ms
    return {k: statistics.median(v) for k, v in times.items()}


def exported_runtimes(args: argparse.Namespace) -> Set[str]:
    """The runtimes whose files these options write (ONNX is the route to OpenVINO, FP32 IR the route to INT8)."""
    wanted = {"torchscript"} & set(args.format)
    if {"onnx", "openvino"} & set(args.format) or args.int8:
        wanted.add("onnxruntime")
    if "openvino" in args.format or args.int8:
        wanted.add("openvino")
    if args.int8:
        wanted.add("openvino-int8")
    return wanted


def reference_name(args: argparse.Namespace) -> str:
    return "pytorch" if args.no_fuse else "pytorch-fused"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--output", default="", help="output folder (default output/export/<config name>)")
    p.add_argument("--format", nargs="+", default=["torchscript", "onnx", "openvino"], choices=FORMATS)
    p.add_argument("--int8", action="store_true", help="also an NNCF INT8 OpenVINO IR (needs openvino)")
    p.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="static input size (default: the padded "
                   "size of the first check image)")
    p.add_argument("--dynamic", action="store_true", help="free batch, height and width")
    p.add_argument("--no-fuse", action="store_true", help="export the unfused model")
    p.add_argument("--check-only", action="store_true", help="re-check the files already in --output")
    p.add_argument("--check-dataset", default="", help="registered data set whose first images check the export")
    p.add_argument("--input", nargs="*", default=[], help="image files (or globs) to check on instead")
    p.add_argument("--num-check-images", type=int, default=4)
    p.add_argument("--calibration-dataset", default="", help="INT8 calibration images (default: DATASETS.TRAIN[0])")
    p.add_argument("--calibration-images", type=int, default=300)
    p.add_argument("--evaluate", default="", help="registered data set: the config's evaluators for every runtime")
    p.add_argument("--eval-max-images", type=int, default=0, help="evaluate on the first N images only (0 = all)")
    p.add_argument("--evaluate-runtimes", nargs="+", default=[], metavar="RUNTIME",
                   choices=("pytorch", "pytorch-fused", "torchscript", "onnxruntime", "openvino", "openvino-int8"),
                   help="with --evaluate: only these runtimes (default: every exported one)")
    p.add_argument("--time", action="store_true", help="network latency of every runtime, timed in turns")
    p.add_argument("--threads", type=int, default=1, help="threads of every runtime (torch, ORT, OpenVINO)")
    p.add_argument("--atol", type=float, default=1e-3, help="max |raw output difference|")
    p.add_argument("--min-matched", type=float, default=0.95, help="min fraction of matched detections")
    p.add_argument("--score-atol", type=float, default=1e-3, help="max score difference of matched detections")
    p.add_argument("--min-mask-iou", type=float, default=0.9, help="min mask IoU of every matched detection")
    p.add_argument("--min-pixel-agreement", type=float, default=0.99, help="semantic: min arg-max agreement")
    p.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    logging.getLogger("medseg_core.deploy").setLevel(logging.INFO)
    from medseg_core.atomic import atomic_write_json
    from medseg_core.config import load_config
    from medseg_core.deploy import DeployNetwork
    from medseg_core.deploy.export import (
        Tolerances, check_runtime, export_onnx, export_openvino, export_torchscript, make_export_friendly,
    )
    from medseg_core.deploy.predictor import Predictor, build_deployable, build_runtime

    if args.dynamic and args.size:
        raise SystemExit(here() + f"give --size or --dynamic, not both")
    if args.evaluate_runtimes and not args.evaluate:
        raise SystemExit(here() + f"--evaluate-runtimes needs --evaluate DATASET")
    wanted = exported_runtimes(args)
    missing = [] if args.check_only else sorted(set(args.evaluate_runtimes) - wanted - {reference_name(args)})
    if missing:
        raise SystemExit(here() + f"--evaluate-runtimes {' '.join(missing)}: not exported with these options "
                         f"(exported: {', '.join(sorted(wanted))})")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config_file, list(args.opts) + ["MODEL.DEVICE", "cpu"])
    out_dir = args.output or os.path.join(REPO, "output", "export", os.path.splitext(os.path.basename(args.config_file))[0])
    meta_path = os.path.join(out_dir, "export.json")
    if args.check_only and not os.path.isfile(meta_path):
        raise SystemExit(f"{meta_path}: no export.json to re-check (export first, without --check-only)")
    os.makedirs(out_dir, exist_ok=True)

    model = build_deployable(cfg, fuse=not args.no_fuse)
    contract = model.deploy_contract()
    names = model.deploy_output_names()
    files = [f for pat in args.input for f in (sorted(glob.glob(pat)) or [pat])]
    frames = check_frames(cfg, contract.input_format, args.check_dataset, files, args.num_check_images)
    reference = build_runtime("pytorch", model)  # the (fused) model in PyTorch: every runtime is checked against it
    if args.check_only:
        old = json.load(open(meta_path))
        size_hw = None if old["input"]["dynamic"] else tuple(old["input"]["shape"][-2:])
        paths = {k: os.path.join(out_dir, v) for k, v in old["files"].items()}
    else:
        size_hw = None if args.dynamic else tuple(args.size) if args.size else None
        if size_hw is None and not args.dynamic:
            t = contract.image_tensor(frames[0], contract.input_format)
            size_hw = contract.padded_size(*t.shape[-2:])
        paths = {}
    example = contract.pad_batch([contract.image_tensor(frames[0], contract.input_format)], size_hw)

    timings: Dict[str, float] = {}
    replaced, substitution = 0, 0.0
    if not args.check_only:
        net = DeployNetwork(copy.deepcopy(model)).eval()
        replaced = make_export_friendly(net)
        with torch.no_grad():
            substitution = max(float((a - b).abs().max()) for a, b in zip(reference(example), net(example)))
        steps = [("torchscript", lambda: export_torchscript(net, example, os.path.join(out_dir, FILES["torchscript"])))]
        steps.append(("onnxruntime", lambda: export_onnx(net, example, os.path.join(out_dir, FILES["onnxruntime"]),
                                                         names, args.dynamic, divisibility=contract.size_divisibility)))
        steps.append(("openvino", lambda: export_openvino(paths["onnxruntime"], os.path.join(out_dir, FILES["openvino"]))))
        for kind, fn in steps:
            if kind not in wanted:
                continue
            t0 = time.perf_counter()
            paths[kind] = fn()
            timings[kind] = time.perf_counter() - t0
            logger.info("exported %s in %.1fs -> %s", kind, timings[kind], paths[kind])
        if args.int8:
            from medseg_core.deploy.quantize import calibration_batches, quantize_openvino

            calib = args.calibration_dataset or (cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else "")
            batches = calibration_batches(contract, dataset_files(calib, args.calibration_images), size_hw)
            t0 = time.perf_counter()
            paths["openvino-int8"] = quantize_openvino(paths["openvino"], batches, os.path.join(out_dir, FILES["openvino-int8"]))
            timings["openvino-int8"] = time.perf_counter() - t0
            logger.info("INT8 calibrated on %d images of %s in %.0fs", len(batches), calib, timings["openvino-int8"])

    runtimes = {reference_name(args): reference}
    for kind, path in paths.items():
        runtimes[kind] = build_runtime(kind, model, artifact=path, threads=args.threads, example=example,
                                       dynamic=size_hw is None)
    tol = Tolerances(args.atol, args.min_matched, args.score_atol, args.min_mask_iou, args.min_pixel_agreement)
    checks = {k: check_runtime(model, reference, rt, frames, contract.input_format, tol, names)
              for k, rt in runtimes.items() if rt is not reference}
    if "openvino-int8" in checks:
        checks["openvino-int8"]["ok"] = None  # reported; INT8 accuracy is measured by --evaluate
    latency = time_runtimes(runtimes, example, 5, 20, 3) if args.time else {}
    evaluation = {}
    if args.evaluate:
        from medseg_core.deploy.evaluate import evaluate_predictor

        for k, rt in runtimes.items():
            if args.evaluate_runtimes and k not in args.evaluate_runtimes:
                continue
            t0 = time.perf_counter()
            evaluation[k] = evaluate_predictor(Predictor(model, rt), cfg, args.evaluate, args.eval_max_images)
            logger.info("%s evaluated on %s in %.0fs", k, args.evaluate, time.perf_counter() - t0)

    meta = {
        "config_file": os.path.abspath(args.config_file), "opts": list(args.opts),
        "weights": cfg.MODEL.WEIGHTS or "(none: randomly initialised)",
        "model": type(model).__name__, "fused": not args.no_fuse,
        "files": {k: os.path.basename(v) for k, v in paths.items()},
        "onnx": {"opset": 18, "exporter": "torch.onnx.export(dynamo=True)", "torch": torch.__version__},
        "contract": contract.as_dict(),
        "input": {"name": "images", "layout": "NCHW", "dtype": "float32", "dynamic": size_hw is None,
                  "shape": ["batch", contract.channels, f"{contract.size_divisibility}*h", f"{contract.size_divisibility}*w"]
                  if size_hw is None else [1, contract.channels, *size_hw]},
        "outputs": [{"name": n, "example_shape": list(t.shape)} for n, t in zip(names, reference(example))],
        "postprocess": f"{type(model).__name__}.deploy_postprocess in PyTorch (medseg_core.deploy)",
        "adaptive_pools_replaced_by_means": replaced, "substitution_max_abs_diff": substitution,
        "export_seconds": timings, "check_images": len(frames), "checks": checks,
        "network_latency_ms": latency, "threads": args.threads, "evaluation": evaluation,
    }
    if args.check_only:
        old.update({k: meta[k] for k in ("checks", "network_latency_ms", "evaluation", "check_images")})
        meta = old
    atomic_write_json(meta_path, meta, indent=2)

    print(f"\n{type(model).__name__} ({os.path.basename(args.config_file)}), fused={not args.no_fuse}, input "
          f"{meta['input']['shape']}, checked on {len(frames)} real image(s) against PyTorch")
    head = f"  {'runtime':<15} {'max raw diff':>12} {'matched':>8} {'min mask IoU':>12} {'pixel agr.':>10}"
    head += f" {'net ms':>8}" if latency else ""
    head += f" {'x ref':>6}" if latency else ""
    print(head + "  status")
    ref_ms = latency.get(next(iter(runtimes))) if latency else None
    ok = True
    for k in runtimes:
        c = checks.get(k)
        a = c["agreement"] if c else {}
        line = (f"  {k:<15} {c['max_abs_diff'] if c else 0.0:>12.3e} {a.get('matched_fraction', float('nan')):>8.3f} "
                f"{a.get('min_mask_iou', float('nan')):>12.4f} {a.get('pixel_agreement', float('nan')):>10.4f}")
        if latency:
            line += f" {latency[k]:>8.2f} {ref_ms / latency[k]:>6.2f}"
        status = "reference" if c is None else ("reported" if c["ok"] is None else "OK" if c["ok"] else
                                                 "FAIL: " + "; ".join(c["failed"]))
        if c is not None and c["ok"] is False:
            ok = False
        print(line + "  " + status)
    for k, res in evaluation.items():
        flat = {f"{task}/{m}": v for task, d in res.items() if isinstance(d, dict) for m, v in d.items()
                if m in ("AP", "AP50", "mIoU", "IoU", "Dice")}
        print(f"  {args.evaluate} {k}: " + ", ".join(f"{m} {v:.2f}" for m, v in flat.items()))
    print(f"  files: {', '.join(paths.values()) or '-'}; details in {meta_path}")
    return 0 if ok else 1


if __name__ == "__main__":
    from medseg_core.cli_errors import run_cli

    run_cli(main)
