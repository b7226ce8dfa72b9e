#!/usr/bin/env python
"""Batch-1 latency of several configs in several runtimes, end to end or stage by stage, in one run.

    python tools/benchmark.py --configs configs/Endoscapes-InstanceSegmentation/lmsfa_n_640.yaml \\
        configs/Endoscapes-InstanceSegmentation/yolov8seg_n_640.yaml --weights A.pth B.pth \\
        --modes e2e network stages --runtimes pytorch-fused openvino openvino-int8 --threads 1 --clock cpu \\
        [--image frame.jpg] [--size H W] [--warmup 10 --runs 50 --repeats 3] [--json out.json] \\
        --opts MODEL.LMSFA.TEST_CONF_THRESH 0.25

Everything goes through the deploy interface (``medseg_core.deploy``): one real frame (``--image``,
default the first image of the config's first test set) is read as an OpenCV BGR array, as a
camera or video frame would be, and every row times the same frame.

Modes (one row per config x runtime x precision x mode):

* ``e2e``: :class:`medseg_core.deploy.Predictor` on the frame array -- the contract's resize
  (letterbox) and padding, the network in the runtime, the model's post-processing (decoding,
  NMS, masks at the original size, ``Instances``): what a user's ``predictor(frame)`` costs.
  Detections (hence post-processing) depend on the weights and the score threshold: give
  ``--weights`` and a deployment threshold (``--opts MODEL.LMSFA.TEST_CONF_THRESH 0.25``); the
  JSON records both and the number of detections.
* ``network``: the runtime alone on the padded frame (``--size H W`` pads / shrinks it to
  another static size instead).
* ``stages``: the e2e path split: ``pre`` (resize + pad), ``net`` (runtime), ``post``
  (``deploy_postprocess`` on the runtime's outputs), each timed as its own row; then the
  ``post`` stage is profiled (``torch.profiler``) and the share of each step the model labels
  inside it (``record_function``: LMSF-A ``decode``, ``nms``, ``masks``, ``instances``) is
  printed below the table.

Runtimes: ``pytorch`` (unfused), ``pytorch-fused``, ``torchscript``, ``onnxruntime``,
``openvino``, ``openvino-int8`` (NNCF, calibrated on ``--int8-calibration-images`` images of
``DATASETS.TRAIN[0]``), ``tensorrt`` (CUDA only). File runtimes are exported into a temporary
folder at the frame's padded size first. Precision: fp32; fp16 / bf16 autocast for the PyTorch
runtimes (fp16 on a GPU only).

Timing: :func:`medseg_core.profiling.measure_latency` (no grad, warm-up, >= 20 timed runs,
CUDA-synchronised). ``--clock wall`` (default) or, with ``--threads 1``, ``--clock cpu``: the
calling thread's CPU time per call (steadier when other processes share the cores; with one
thread PyTorch, ONNX Runtime and OpenVINO all run the inference on the calling thread, so its CPU
time is the whole cost). Every row is
measured ``--repeats`` times, rows taking turns (order reversed on every other repeat) so that
drifting load hits all alike; statistics pool all timed runs. ``--reference`` (default: the
last config) adds each row's latency ratio to the reference config's row of the same runtime,
precision and mode, per repeat and pooled. Timings are never asserted in tests.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

import medseg_core  # noqa: F401  (NumPy-2 / Pillow shim before detectron2)
from medseg_core.errors import here

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
logger = logging.getLogger("medseg.benchmark")

MODES = ("e2e", "network", "stages")
RUNTIME_CHOICES = ("pytorch", "pytorch-fused", "torchscript", "onnxruntime", "openvino", "openvino-int8", "tensorrt")
TORCH_RUNTIMES = ("pytorch", "pytorch-fused", "tensorrt")


@dataclass
class Row:
    config: str
    name: str
    runtime: str
    precision: str
    mode: str
    input_shape: List[int]
    params: int
    times_ms: List[float] = field(default_factory=list)
    repeat_medians_ms: List[float] = field(default_factory=list)
    extra: Dict = field(default_factory=dict)

    def key(self) -> Tuple[str, str, str]:
        return self.runtime, self.precision, self.mode

    def stats(self) -> Dict[str, float]:
        t = sorted(self.times_ms)
        q4 = statistics.quantiles(t, n=4, method="inclusive")
        q20 = statistics.quantiles(t, n=20, method="inclusive")
        med = statistics.median(t)
        return {
            "median_ms": med, "mean_ms": statistics.fmean(t), "iqr_ms": q4[2] - q4[0],
            "p10_ms": q20[1], "p90_ms": q20[17], "min_ms": t[0], "max_ms": t[-1],
            "throughput_fps": 1000.0 / med if med > 0 else float("inf"), "runs": len(t),
        }


@dataclass
class Job:
    row: Row
    fn: Callable[[], object]
    device: torch.device
    amp: Optional[torch.dtype]
    fused: bool


def _amp(device: torch.device, precision: str, runtime: str) -> Optional[torch.dtype]:
    from medseg_core.profiling import autocast_dtype

    if precision == "fp32":
        return None
    if runtime not in ("pytorch", "pytorch-fused"):
        raise ValueError(here() + f"{precision} autocast applies to the PyTorch runtimes only, not {runtime}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(here() + f"fp16 is timed on a GPU only (use fp32 or bf16 on the CPU)")
    return autocast_dtype(device, precision)


def read_frame(cfg, image: str):
    """The benchmark frame as a BGR array (``image`` or the config's first test image)."""
    from detectron2.data import DatasetCatalog

    import medseg_core.data  # noqa: F401  (registers the data sets)
    from medseg_core.data.mappers import read_image_checked

    if not image:
        ds = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else ""
        if ds not in DatasetCatalog.list():
            raise SystemExit(here() + f"the config's test set {ds!r} is not registered; give --image FILE")
        image = DatasetCatalog.get(ds)[0]["file_name"]
    return read_image_checked(image, "BGR"), image


def fit_within(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Shrink a (C, h, w) image (bilinear, aspect kept) when it exceeds ``size``; else unchanged."""
    h, w = image.shape[-2:]
    r = min(size[0] / h, size[1] / w)
    if r >= 1:
        return image
    nh, nw = max(1, int(h * r)), max(1, int(w * r))
    out = torch.nn.functional.interpolate(image[None].float(), size=(nh, nw), mode="bilinear", align_corners=False)
    return out[0].round().clamp(0, 255).to(image.dtype)


def _int8_artifact(cfg, model, runtime_fp32, workdir: str, size_hw, num: int) -> str:
    from detectron2.data import DatasetCatalog

    from medseg_core.deploy.quantize import calibration_batches, quantize_openvino

    ds = cfg.DATASETS.TRAIN[0]
    recs = DatasetCatalog.get(ds)
    files = [r["file_name"] for r in recs[:: max(1, len(recs) // num)][:num]]
    batches = calibration_batches(model.deploy_contract(), files, size_hw)
    return quantize_openvino(runtime_fp32.path, batches, os.path.join(workdir, "model_int8.xml"))


def build_jobs(args) -> Tuple[List[Job], Dict]:
    from medseg_core.complexity import count_parameters
    from medseg_core.config import load_config
    from medseg_core.deploy.predictor import Predictor, build_deployable, build_runtime

    weights = list(args.weights or [])
    if weights and len(weights) != len(args.configs):
        raise SystemExit(here() + f"give one --weights entry per config (or none)")
    jobs: List[Job] = []
    info: Dict = {"weights": {}, "image": None, "detections": {}, "post_steps_ms": {}}
    for ci, cfg_file in enumerate(args.configs):
        opts = list(args.opts)
        if weights and weights[ci] not in ("", "none"):
            opts += ["MODEL.WEIGHTS", weights[ci]]
        if args.device:
            opts += ["MODEL.DEVICE", args.device]
        cfg = load_config(cfg_file, opts)
        name = os.path.splitext(os.path.basename(cfg_file))[0]
        info["weights"][name] = cfg.MODEL.WEIGHTS or "random initialisation"
        frame, info["image"] = read_frame(cfg, args.image)
        model = build_deployable(cfg)
        params = count_parameters(model)
        device = next(iter(model.buffers())).device
        contract = model.deploy_contract()
        tensor = contract.image_tensor(frame, "BGR")
        e2e_hw = contract.padded_size(*tensor.shape[-2:])
        net_hw = tuple(args.size) if args.size else e2e_hw
        net_batch = contract.pad_batch([fit_within(tensor, net_hw)], net_hw).to(device)
        e2e_batch = contract.pad_batch([tensor], e2e_hw).to(device)
        workdir = tempfile.mkdtemp(prefix=f"medseg-bench-{name}-")
        info.setdefault("workdirs", []).append(workdir)
        built: Dict[Tuple[str, Tuple[int, int]], object] = {}

        def runtime(kind: str, hw: Tuple[int, int], example: torch.Tensor):
            key = (kind, hw)
            if key not in built:
                sub = os.path.join(workdir, f"{kind}-{hw[0]}x{hw[1]}")
                t0 = time.perf_counter()
                if kind == "openvino-int8":
                    fp32 = runtime("openvino", hw, example)
                    os.makedirs(sub, exist_ok=True)
                    art = _int8_artifact(cfg, model, fp32, sub, hw, args.int8_calibration_images)
                    built[key] = build_runtime(kind, model, artifact=art, threads=args.threads, example=example,
                                               dynamic=False)
                else:
                    built[key] = build_runtime(kind, model, sub, example.cpu() if kind != "tensorrt" else example,
                                               threads=args.threads, dynamic=False)
                if kind not in ("pytorch", "pytorch-fused"):
                    logger.info("%s: %s built at %dx%d in %.0fs", name, kind, hw[0], hw[1], time.perf_counter() - t0)
            return built[key]

        for kind in args.runtimes:
            dev = device if kind in TORCH_RUNTIMES else torch.device("cpu")
            for precision in args.precision:
                if precision != "fp32" and kind not in ("pytorch", "pytorch-fused"):
                    continue
                amp = _amp(dev, precision, kind)
                fused = kind != "pytorch"
                for mode in args.modes:
                    if mode == "network":
                        rt = runtime(kind, net_hw, net_batch)
                        x = net_batch.to(dev)
                        jobs.append(Job(Row(cfg_file, name, kind, precision, "network", list(x.shape), params),
                                        (lambda r=rt, x=x: r(x)), dev, amp, fused))
                        continue
                    rt = runtime(kind, e2e_hw, e2e_batch)
                    pred = Predictor(model, rt)
                    with torch.no_grad(), torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
                        n_det = _count(pred(frame, "BGR"))
                    info["detections"][f"{name}/{kind}/{precision}"] = n_det
                    shape = [1, *frame.shape[:2]]
                    if mode == "e2e":
                        jobs.append(Job(Row(cfg_file, name, kind, precision, "e2e", shape, params,
                                            extra={"detections": n_det}),
                                        (lambda p=pred, f=frame: p(f, "BGR")), dev, amp, fused))
                        continue
                    batch, sizes, originals = pred.prepare([frame], "BGR")
                    batch = batch.to(dev)
                    with torch.no_grad(), torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
                        raw = rt(batch)
                    post = (lambda m=model, r=raw, s=sizes, o=originals: m.deploy_postprocess(r, s, o))
                    for stage, fn in (("pre", lambda p=pred, f=frame: p.prepare([f], "BGR")),
                                      ("net", lambda r=rt, b=batch: r(b)), ("post", post)):
                        jobs.append(Job(Row(cfg_file, name, kind, precision, f"stage:{stage}", shape, params,
                                            extra={"detections": n_det}), fn, dev, amp, fused))
                    info["post_steps_ms"][f"{name}/{kind}/{precision}"] = profile_steps(post, args.runs)
    return jobs, info


def _count(pred: Dict) -> int:
    if "instances" in pred:
        return len(pred["instances"])
    return -1


def profile_steps(fn: Callable[[], object], runs: int) -> Dict[str, float]:
    """Share (%) of every ``record_function`` label that ``fn`` runs in its profiled time
    (torch.profiler measures wall clock, which a shared machine inflates at random: shares of the
    same calls are comparable, absolute profiled times are not; the ``stage:post`` row gives the
    stage's own latency)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                fn()
    labels = {e.key: e.cpu_time_total for e in prof.key_averages()
              if getattr(e, "is_user_annotation", "::" not in e.key) and e.cpu_time_total > 0}
    total = sum(labels.values())
    return {k: 100.0 * v / total for k, v in sorted(labels.items(), key=lambda kv: -kv[1])} if total else {}


# ------------------------------------------------------------------------- report
def add_ratios(rows: List[Row], reference: str) -> None:
    refs = {r.key(): r for r in rows if r.name == reference}
    for r in rows:
        ref = refs.get(r.key())
        if ref is None:
            continue
        r.extra["ratio_to_reference"] = statistics.median(r.times_ms) / statistics.median(ref.times_ms)
        r.extra["ratio_per_repeat"] = [a / b for a, b in zip(r.repeat_medians_ms, ref.repeat_medians_ms)]


def format_table(rows: List[Row], reference: str) -> str:
    head = (f"{'config':<28} {'runtime':<14} {'prec':<5} {'mode':<11} {'input':<9} {'params':>9} "
            f"{'median ms':>10} {'IQR':>7} {'p10':>8} {'p90':>8} {'FPS':>7} {'x ' + reference[:14]:>17}")
    lines = [head, "-" * len(head)]
    for r in rows:
        s = r.stats()
        ratio = r.extra.get("ratio_to_reference")
        lines.append(
            f"{r.name:<28} {r.runtime:<14} {r.precision:<5} {r.mode:<11} {'x'.join(map(str, r.input_shape[-2:])):<9} "
            f"{r.params:>9,} {s['median_ms']:>10.2f} {s['iqr_ms']:>7.2f} {s['p10_ms']:>8.2f} {s['p90_ms']:>8.2f} "
            f"{s['throughput_fps']:>7.2f} {('%.3f' % ratio) if ratio is not None else '-':>17}"
        )
    return "\n".join(lines)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", required=True, help="config files to time")
    p.add_argument("--weights", nargs="*", default=[], help="one checkpoint per config ('none' for random weights)")
    p.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="network mode: static input size "
                   "(default: the frame's padded size)")
    p.add_argument("--image", default="", help="frame to time on (default: the first image of the config's test set)")
    p.add_argument("--modes", nargs="+", default=["e2e", "network"], choices=MODES)
    p.add_argument("--runtimes", nargs="+", default=["pytorch-fused"], choices=RUNTIME_CHOICES)
    p.add_argument("--precision", nargs="+", default=None, choices=["fp32", "fp16", "bf16"],
                   help="default: fp32 on the CPU; fp32 fp16 on a GPU (autocast, PyTorch runtimes)")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads of every runtime (0 = torch's default)")
    p.add_argument("--device", default="", help="cpu or cuda (default: the config's MODEL.DEVICE)")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="wall clock (default), or the "
                   "thread's CPU time (needs --threads 1; steadier on a shared machine)")
    p.add_argument("--int8-calibration-images", type=int, default=100, help="openvino-int8: calibration images")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--runs", type=int, default=50, help="timed runs per row and repeat (>= 20)")
    p.add_argument("--repeats", type=int, default=3, help="measure every row this many times, taking turns")
    p.add_argument("--reference", default="", help="config name the ratios refer to (default: the last config)")
    p.add_argument("--json", default="", help="write the results here (default output/benchmark/<time>.json)")
    p.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="KEY VALUE overrides for every config")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    if args.clock == "cpu" and args.threads != 1:
        raise ValueError(here() + f"--clock cpu needs --threads 1 (CPU time is a latency only when one "
                         "thread does all the work)")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.repeats < 1:
        raise SystemExit(here() + f"--repeats must be >= 1")
    if args.precision is None:
        gpu = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        args.precision = ["fp32", "fp16"] if gpu else ["fp32"]
    from medseg_core.profiling import device_description, measure_latency

    jobs, info = build_jobs(args)
    reference = args.reference or os.path.splitext(os.path.basename(args.configs[-1]))[0]
    for rep in range(args.repeats):
        for job in (jobs if rep % 2 == 0 else list(reversed(jobs))):
            r = job.row
            times = measure_latency(job.fn, job.device, warmup=args.warmup, runs=args.runs, amp_dtype=job.amp,
                                    fused=job.fused, mode=r.mode, clock=args.clock).times_ms
            r.times_ms += times
            r.repeat_medians_ms.append(statistics.median(times))
            logger.info("repeat %d/%d %s %s %s %s: %.2f ms", rep + 1, args.repeats, r.name, r.runtime, r.precision,
                        r.mode, statistics.median(times))
    rows = [j.row for j in jobs]
    add_ratios(rows, reference)
    dev = jobs[0].device if jobs else torch.device("cpu")
    jobs.clear()  # release the runtimes before their exported files go
    for d in info.pop("workdirs", []):
        shutil.rmtree(d, ignore_errors=True)

    header = (f"device: {device_description(dev)}; torch {torch.__version__}, {torch.get_num_threads()} intra-op "
              f"threads; batch 1; frame {info['image']}; {args.warmup} warm-up + {args.runs} timed runs x "
              f"{args.repeats} repeats per row; {'wall-clock' if args.clock == 'wall' else 'thread-CPU-time'} latencies")
    print(header)
    print(format_table(rows, reference))
    for r in rows:
        if r.name != reference and "ratio_per_repeat" in r.extra:
            print(f"  {r.name} / {reference} ({r.runtime}, {r.precision}, {r.mode}): pooled "
                  f"{r.extra['ratio_to_reference']:.3f}, per repeat "
                  + ", ".join(f"{x:.3f}" for x in r.extra["ratio_per_repeat"]))
    if info["detections"]:
        print("  detections on the frame: " + ", ".join(f"{k} {v}" for k, v in info["detections"].items() if v >= 0))
    for k, steps in info["post_steps_ms"].items():
        if steps:
            print(f"  post-processing steps of {k} (share of the profiled stage:post): "
                  + ", ".join(f"{s} {v:.0f}%" for s, v in steps.items()))
    out = args.json or os.path.join(REPO, "output", "benchmark", time.strftime("%Y%m%d-%H%M%S") + ".json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    result = {
        "device": device_description(dev), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "python": platform.python_version(), "argv": list(argv) if argv is not None else sys.argv[1:],
        "warmup": args.warmup, "runs": args.runs, "repeats": args.repeats, "reference": reference,
        "clock": args.clock, "image": info["image"], "weights": info["weights"], "detections": info["detections"],
        "post_steps_ms": info["post_steps_ms"],
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "rows": [dict(config=r.config, name=r.name, runtime=r.runtime, precision=r.precision, mode=r.mode,
                      input_shape=r.input_shape, params=r.params, repeat_medians_ms=r.repeat_medians_ms,
                      **r.stats(), **r.extra) for r in rows],
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    from medseg_core.cli_errors import run_cli

    run_cli(main)
