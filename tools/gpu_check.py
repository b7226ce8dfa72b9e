#!/usr/bin/env python
"""Exercise every GPU code path of the toolkit in at most 8 minutes; one Markdown + JSON report.

    python tools/gpu_check.py --output output/gpu_check [--budget-minutes 8] [--sections ...]

Self-contained: it trains and measures on the generated smoke-test sets only (no data set, no
weights, no network access), so a GPU machine needs the repository and its Python packages
and nothing else. Sections, in this order (each with its own time budget; a section that cannot
finish in the time left is skipped and says so):

* ``env``: GPU, driver-visible memory, torch / CUDA / cuDNN versions, bf16 support;
* ``amp_train``: AMP (FP16 + GradScaler) training for a few dozen iterations of each family's
  instant config (LMSF-A, YOLOv8-seg, Mask R-CNN, Swin Mask R-CNN, Mask2Former, LGMSNet,
  LightMedSeg) through the shared trainer, then its GPU evaluation: losses finite, it/s, peak
  memory, the main metric;
* ``precision``: each trained network (``complexity_forward``) under FP16 and bf16 autocast
  against FP32 (max |diff| / max |FP32| per output), and fused against unfused in FP32;
* ``fps``: batch-1 latency at 640 x 640 of every instance model, network only and end to end
  (the model's pre- and post-processing included), FP32 and FP16 (``medseg_core.profiling``);
* ``ddp_nccl``: a world-size-1 NCCL process group, the trainer's DDP wrapper forced on with
  synchronised BatchNorm (torch's ``SyncBatchNorm``), AMP, a few iterations and evaluation;
* ``export``: LMSF-A's fused network traced to TorchScript and exported to ONNX from the GPU,
  both run again and compared with PyTorch on the GPU;
* ``lmsfa_640``: LMSF-A trained at 640 (batch 16, AMP, full augmentation) for as long as its
  budget allows; the mean loss of the last 20 iterations must be below that of the first 20.

On the workplace's GPU machines (Python 3.12 with PyTorch but without Detectron2 and some of our
dependencies), build the missing wheels here with ``bash dev/gpu_carry.sh`` and run, carrying
``.gpu_carry`` (about 7 MB)::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu_carry/*.whl &&
    P=$PWD/projects; export PYTHONPATH=$PWD:$P/LMSFA:$P/LGMS:$P/LightMedSeg:$P/Baselines:/tmp/site &&
    python3 tools/gpu_check.py --output $OUT/gpu_check --work-dir /tmp/gpu_check_work

Without CUDA it checks its arguments, says that there is nothing to check, and exits 0 (with
``--cpu-dry-run`` it runs the same sections on the CPU instead: gloo for NCCL, bf16 for FP16,
to test this script where no GPU is; those numbers mean nothing). Exit status 1 when any check
failed. The report is rewritten after every section, so a run cut short
still leaves one.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import os
import platform
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QS = os.path.join(REPO, "configs", "quick_schedules")

# family -> instant config; the instance models are also timed at 640
FAMILIES = {
    "LMSF-A": ("lmsfa_instant_test.yaml", True),
    "YOLOv8-seg": ("yolov8seg_instant_test.yaml", True),
    "Mask R-CNN": ("mask_rcnn_R50_FPN_scratch_gn_instant_test.yaml", True),
    "Swin Mask R-CNN": ("mask_rcnn_swin_t_FPN_instant_test.yaml", True),
    "Mask2Former": ("mask2former_R50_instant_test.yaml", True),
    "LGMSNet": ("lgmsnet_instant_test.yaml", False),
    "LightMedSeg": ("lightmedseg_instant_test.yaml", False),
}
# section -> (budget in seconds, least time worth starting it with)
SECTIONS = {
    "env": (10, 1),
    "amp_train": (150, 40),
    "precision": (25, 5),
    "fps": (70, 15),
    "ddp_nccl": (35, 15),
    "export": (60, 20),
    "lmsfa_640": (90, 30),
}
AMP_ITERS = 30
# max |low precision - FP32| / max |FP32| allowed per network output
# (measured in CPU dry runs, bf16: LMSF-A 0.09 / 0.12, YOLOv8-seg 0.007, LGMSNet and LightMedSeg 0.012): a NaN, an
# overflow or a wrong kernel is far outside these, rounding is inside
TOLERANCE = {"fp16": 5e-2, "bf16": 0.25, "fused": 1e-3, "torchscript": 1e-3, "onnx": 1e-3}

logger = logging.getLogger("gpu_check")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default=os.path.join(REPO, "output", "gpu_check"), help="report folder")
    p.add_argument("--budget-minutes", type=float, default=8.0, help="whole run, start-up included (default 8)")
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS), help="sections to run")
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES),
                   help="model families of amp_train / precision / fps")
    p.add_argument("--work-dir", default="", help="checkpoints and exports of the run (default OUTPUT/work)")
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="without CUDA, run the sections on the CPU (to test this script; numbers mean nothing)")
    return p


def check_args(args: argparse.Namespace) -> None:
    from medseg_core.errors import here

    if not 0.5 <= args.budget_minutes <= 60:
        raise SystemExit(here() + f"--budget-minutes must be within 0.5 .. 60, got {args.budget_minutes:g}")
    out = os.path.abspath(args.output)
    if os.path.exists(out) and not os.path.isdir(out):
        raise SystemExit(here() + f"--output {out} exists and is not a folder")


# ------------------------------------------------------------------------------- report
class Report:
    """Results of every section, written as JSON and Markdown after each one."""

    def __init__(self, out_dir: str, budget_s: float, started: float):
        self.out_dir, self.budget_s, self.started = out_dir, budget_s, started
        self.data: Dict[str, Any] = {"budget_s": budget_s, "sections": {}}
        self.failures: List[str] = []

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def section(self, name: str, result: Dict[str, Any]) -> None:
        self.data["sections"][name] = result
        self.failures += [f"{name}: {f}" for f in result.get("failures", [])]
        self.data["elapsed_s"] = round(time.monotonic() - self.started, 1)
        self.data["failures"] = self.failures
        self.write()

    def write(self) -> None:
        from medseg_core.atomic import atomic_write_json, atomic_write_text

        # atomic: a run killed while writing still leaves the previous section's report
        atomic_write_json(os.path.join(self.out_dir, "gpu_check.json"), self.data, indent=2, default=str)
        atomic_write_text(os.path.join(self.out_dir, "gpu_check.md"), render_markdown(self.data))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def _table(rows: List[Dict[str, Any]]) -> str:
    if not rows:
        return "(none)\n"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def render_markdown(data: Dict[str, Any]) -> str:
    out = ["# GPU check", ""]
    env = data["sections"].get("env", {})
    if env:
        out += [f"{env.get('gpu', '?')}, torch {env.get('torch')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}; "
                f"run {data.get('elapsed_s', '?')} s of a {data['budget_s']:.0f} s budget.", ""]
    fails = data.get("failures", [])
    out += [f"**{'FAILED: ' + str(len(fails)) + ' check(s)' if fails else 'All checks passed'}**", ""]
    out += [f"- {f}" for f in fails] + ([""] if fails else [])
    for name, sec in data["sections"].items():
        if name == "env":
            continue
        out += [f"## {name}", ""]
        if sec.get("skipped"):
            out += [f"skipped: {sec['skipped']}", ""]
            continue
        if sec.get("note"):
            out += [sec["note"], ""]
        out.append(_table(sec.get("rows", [])))
    return "\n".join(out)


# ------------------------------------------------------------------------------- helpers
DEVICE = "cuda"  # "cpu" in a --cpu-dry-run
LOW = "fp16"  # the low-precision autocast dtype of training and timing; "bf16" on the CPU


def _cuda() -> bool:
    return DEVICE == "cuda"


def _cfg(config: str, *opts: Any, output_dir: str):
    from medseg_core.config import load_config

    workers = 4 if _cuda() else 0
    base = ["MODEL.DEVICE", DEVICE, "OUTPUT_DIR", output_dir, "DATALOADER.NUM_WORKERS", workers, "SEED", "0"]
    return load_config(os.path.join(QS, config), base + [str(o) for o in opts])


def _train(trainer, max_iter: int, deadline: float) -> Dict[str, Any]:
    """TrainerBase.train's loop, stopped early (evaluation and hooks still run) at ``deadline``."""
    from detectron2.utils.events import EventStorage

    import torch

    if _cuda():
        torch.cuda.reset_peak_memory_stats()
    trainer.max_iter = max_iter
    t0, stopped = time.monotonic(), False
    with EventStorage(trainer.start_iter) as trainer.storage:
        trainer.before_train()
        for trainer.iter in range(trainer.start_iter, max_iter):
            trainer.before_step()
            trainer.run_step()
            if time.monotonic() > deadline and trainer.iter + 1 < max_iter:
                trainer.max_iter, stopped = trainer.iter + 1, True  # the after-train evaluation still runs
            trainer.after_step()
            if stopped:
                break
        trainer.iter += 1
        train_s = time.monotonic() - t0
        trainer.after_train()
        losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    return {
        "iters": len(losses), "stopped_by_budget": stopped, "it_per_s": len(losses) / max(train_s, 1e-9),
        "losses": losses, "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if _cuda() else float("nan"),
        "results": getattr(trainer, "_last_eval_results", None) or {},
    }


def _main_metric(results: Dict[str, Any]) -> str:
    for task, key in (("segm", "AP"), ("sem_seg", "per_image_IoU@model_res"), ("sem_seg", "mIoU"), ("volume", "mDice")):
        if isinstance(results.get(task), dict) and key in results[task]:
            return f"{task} {key} {results[task][key]:.2f}"
    return ""


def _record_failure(row: Dict[str, Any], failures: List[str], e: BaseException, family: str = "") -> None:
    """Note an exception in the result row and the section's failures: one family failing must
    not hide the others."""
    row["error"] = f"{type(e).__name__}: {e}"[:300]
    failures.append(f"{family}: {row['error']}" if family else row["error"])


def _rel_diff(ref, got) -> float:
    import torch

    ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    got = [got] if isinstance(got, torch.Tensor) else list(got)
    worst = 0.0
    for a, b in zip(ref, got):
        a, b = a.detach().float().cpu(), b.detach().float().cpu()
        worst = max(worst, float((a - b).abs().max()) / max(float(a.abs().max()), 1e-6))
    return worst


def _network_input(cfg, model, size: Sequence[int]):
    """A normalised network input: an image of random pixels, or a z-scored random volume."""
    import torch

    if len(size) != 3:
        return torch.randn(1, *size, device=DEVICE)
    x = torch.rand(1, *size, device=DEVICE) * 255
    mean, std = getattr(model, "pixel_mean", None), getattr(model, "pixel_std", None)
    if mean is not None:
        x = (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    return x


def _network_and_input(cfg, model, size: Sequence[int]):
    """The network alone and an input for it: ``complexity_forward`` on a normalised input where
    the model has it, else the deploy interface's ``DeployNetwork`` (normalisation + network, as
    exported) on raw 0..255 pixels (Detectron2's Mask R-CNN, through its adapter)."""
    import torch

    if callable(getattr(model, "complexity_forward", None)):
        return model.complexity_forward, _network_input(cfg, model, size)
    from medseg_core.deploy import DeployNetwork, as_deployable

    return DeployNetwork(as_deployable(model, cfg)).eval(), torch.rand(1, *size, device=DEVICE) * 255


def _image_640():
    """A smoke validation frame resized to 640 x 640, as a mapped input dict (uint8 CHW)."""
    import cv2
    import numpy as np
    import torch
    from detectron2.data import DatasetCatalog

    d = DatasetCatalog.get("smoke_peld_val")[0]
    img = cv2.resize(cv2.imread(d["file_name"])[:, :, ::-1], (640, 640), interpolation=cv2.INTER_LINEAR)
    return {"image": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), "height": 640, "width": 640,
            "file_name": d["file_name"], "image_id": d.get("image_id", 0)}


# ------------------------------------------------------------------------------- sections
def section_env(ctx: Dict[str, Any], budget: float) -> Dict[str, Any]:
    import torch

    if not _cuda():
        return {"gpu": "none (CPU dry run)", "torch": torch.__version__, "cuda": None, "cudnn": None, "rows": []}
    props = torch.cuda.get_device_properties(0)
    return {
        "gpu": torch.cuda.get_device_name(0), "memory_gb": round(props.total_memory / 2**30, 1),
        "capability": f"{props.major}.{props.minor}", "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(), "bf16": torch.cuda.is_bf16_supported(),
        "python": platform.python_version(), "rows": [],
    }


def section_amp_train(ctx: Dict[str, Any], budget: float) -> Dict[str, Any]:
    from medseg_core.engine.trainer import MedSegTrainer

    rows, failures = [], []
    families = ctx["families"]
    end = time.monotonic() + budget
    for i, fam in enumerate(families):
        config = FAMILIES[fam][0]
        share = (end - time.monotonic()) / (len(families) - i)
        t0 = time.monotonic()
        row: Dict[str, Any] = {"family": fam, "config": config}
        try:
            out_dir = os.path.join(ctx["work"], "amp_" + os.path.splitext(config)[0])
            cfg = _cfg(config, "SOLVER.AMP.ENABLED", "True", "SOLVER.MAX_ITER", AMP_ITERS,
                       "SOLVER.CHECKPOINT_PERIOD", 100000, "TEST.EVAL_PERIOD", 0, output_dir=out_dir)
            trainer = MedSegTrainer(cfg)
            trainer.resume_or_load(resume=False)
            res = _train(trainer, AMP_ITERS, t0 + 0.8 * share)
            losses = res["losses"]
            finite = all(math.isfinite(v) for v in losses)
            row.update(iters=res["iters"], first_loss=losses[0], last_loss=losses[-1], it_per_s=res["it_per_s"],
                       peak_mem_gb=res["peak_mem_gb"], metric=_main_metric(res["results"]),
                       budget_stop=res["stopped_by_budget"], ok=finite and bool(res["results"]))
            if not row["ok"]:
                failures.append(f"{fam}: " + ("non-finite loss" if not finite else "no evaluation results"))
            trainer.checkpointer.save("model_final")
            ctx["trained"][fam] = (cfg, trainer.eval_model(), os.path.join(out_dir, "model_final.pth"))
        except Exception as e:  # noqa: BLE001 - one family failing must not hide the others
            row["ok"] = False
            _record_failure(row, failures, e, fam)
            logger.error("amp_train %s failed:\n%s", fam, traceback.format_exc())
        row["seconds"] = time.monotonic() - t0
        rows.append(row)
    return {"rows": rows, "failures": failures,
            "note": f"FP16 autocast + GradScaler, up to {AMP_ITERS} iterations of each instant config on the "
                    "smoke sets, "
                    "then the trainer's evaluation on the GPU (numbers mean nothing clinically)."}


def section_precision(ctx: Dict[str, Any], budget: float) -> Dict[str, Any]:
    import torch

    from medseg_core.profiling import prepare_for_inference

    rows, failures = [], []
    for fam, (cfg, model, _) in ctx["trained"].items():
        row: Dict[str, Any] = {"family": fam}
        try:
            shape = tuple(cfg.TEST.COMPLEXITY_INPUT_SHAPE)
            net, x = _network_and_input(cfg, prepare_for_inference(model, fuse=False)[0], shape)
            with torch.no_grad():
                ref = net(x)
                for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
                    if name == "fp16" and not _cuda():
                        continue
                    with torch.autocast(DEVICE, dtype=dtype):
                        row[name] = _rel_diff(ref, net(x))
                fused, was_fused = prepare_for_inference(model, fuse=True)
                if was_fused:
                    row["fused"] = _rel_diff(ref, _network_and_input(cfg, fused, shape)[0](x))
            for key in ("fp16", "bf16", "fused"):
                if key in row and not row[key] <= TOLERANCE[key]:
                    failures.append(f"{fam}: {key} differs from FP32 by {row[key]:.3g} (> {TOLERANCE[key]:g})")
        except Exception as e:  # noqa: BLE001
            _record_failure(row, failures, e, fam)
        rows.append(row)
    return {"rows": rows, "failures": failures,
            "note": "max |out - FP32| / max |FP32| over the network outputs (complexity_forward, else the deploy "
                    "network) at the config's "
                    f"complexity input shape; tolerances {TOLERANCE['fp16']:g} (fp16), {TOLERANCE['bf16']:g} (bf16), "
                    f"{TOLERANCE['fused']:g} (fused FP32)."}


def section_fps(ctx: Dict[str, Any], budget: float) -> Dict[str, Any]:
    import torch

    from medseg_core.deploy import as_deployable
    from medseg_core.profiling import profile_model

    rows, failures = [], []
    instance = [f for f in ctx["trained"] if FAMILIES[f][1]]
    end = time.monotonic() + budget
    image = _image_640()
    for i, fam in enumerate(instance):
        if time.monotonic() > end:
            rows.append({"family": fam, "skipped": "time budget"})
            continue
        cfg, model, _ = ctx["trained"][fam]
        row: Dict[str, Any] = {"family": fam}
        warmup, runs = (10, 30) if _cuda() else (1, 20)
        try:
            # the network alone through the deploy interface where the model has no complexity_forward
            network = model if callable(getattr(model, "complexity_forward", None)) else as_deployable(model, cfg)
            for mode in ("network", "model"):
                for precision in ("fp32", LOW):
                    if time.monotonic() > end:
                        break
                    r = profile_model(network if mode == "network" else model, image, warmup=warmup, runs=runs,
                                      precision=precision, mode=mode)
                    row[f"{'net' if mode == 'network' else 'e2e'}_{precision}_fps"] = r.fps
            with torch.no_grad():
                out = model.eval()([{k: (v.to(DEVICE) if k == "image" else v) for k, v in image.items()}])[0]
            row["detections"] = len(out["instances"]) if "instances" in out else ""
        except Exception as e:  # noqa: BLE001
            _record_failure(row, failures, e, fam)
        rows.append(row)
    return {"rows": rows, "failures": failures,
            "note": "batch 1, 640 x 640, median of 30 CUDA-synchronised runs after 10 warm-ups; 'net' = network only "
                    "(complexity_forward), 'e2e' = the model's whole forward incl. pre/post-processing (NMS, masks "
                    "at the "
                    "image size); fused where the model supports it. Weights: the amp_train ones (few iterations), so "
                    "the detection count (and e2e time) is not that of a trained model."}


def section_ddp_nccl(ctx: Dict[str, Any], budget: float) -> Dict[str, Any]:
    import torch
    import torch.distributed as dist

    from medseg_core.engine.launch import find_free_port, init_distributed
    from medseg_core.engine.trainer import MedSegTrainer

    class AlwaysDDPTrainer(MedSegTrainer):
        """The trainer's own DDP wrapper and SyncBN conversion, also at world size 1."""

        @classmethod
        def build_model(cls, cfg):
            from detectron2.modeling import build_model

            from medseg_core.modeling.distributed import convert_sync_batchnorm

            return convert_sync_batchnorm(build_model(cfg), torch.device(DEVICE))

        @classmethod
        def create_ddp_model(cls, cfg, model):
            ids = [torch.cuda.current_device()] if _cuda() else None
            return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    rows, failures = [], []
    init_distributed("nccl" if _cuda() else "gloo", f"tcp://127.0.0.1:{find_free_port()}", 1, 0, 0, 1)
    try:
        out_dir = os.path.join(ctx["work"], "ddp_nccl")
        cfg = _cfg(FAMILIES["LMSF-A"][0], "SOLVER.AMP.ENABLED", "True", "SOLVER.MAX_ITER", 8,
                   "SOLVER.ACCUMULATE_STEPS", 2,
                   "MODEL.SYNC_BATCHNORM", "True", "SOLVER.CHECKPOINT_PERIOD", 4, output_dir=out_dir)
        trainer = AlwaysDDPTrainer(cfg)
        trainer.resume_or_load(resume=False)
        res = _train(trainer, 8, time.monotonic() + 0.8 * budget)
        n_sync = sum("SyncBatchNorm" in type(m).__name__ for m in trainer.model.modules())
        ok = all(math.isfinite(v) for v in res["losses"]) and bool(res["results"]) and n_sync > 0
        ok &= os.path.isfile(os.path.join(out_dir, "model_final.pth"))
        rows.append({"backend": dist.get_backend(), "world_size": dist.get_world_size(), "sync_bn_layers": n_sync,
                     "iters": res["iters"], "last_loss": res["losses"][-1], "metric": _main_metric(res["results"]),
                     "ok": ok})
        if not ok:
            failures.append("DDP training / evaluation / checkpoint did not complete")
    finally:
        dist.destroy_process_group()
    return {"rows": rows, "failures": failures,
            "note": "NCCL process group of one rank; LMSF-A instant config with the trainer's DistributedDataParallel "
                    "(forced on), torch SyncBatchNorm, AMP, gradient accumulation 2 (no_sync), gathered evaluation, "
                    "rank-0 checkpoint."}


def export_round_trip(model, cfg, example, out_dir: str) -> Dict[str, float]:
    """Export the fused network of ``model`` on the GPU through ``medseg_core.deploy`` (its
    ``DeployNetwork``: normalisation + network) and compare each export with PyTorch."""
    import torch

    from medseg_core.deploy import DeployNetwork, as_deployable
    from medseg_core.deploy.export import export_onnx, export_torchscript, make_export_friendly
    from medseg_core.deploy.runtimes import OnnxRuntime

    deployable = as_deployable(model, cfg)
    net = DeployNetwork(deployable).eval()
    make_export_friendly(net)
    with torch.no_grad():
        ref = list(net(example))
    out: Dict[str, float] = {}
    ts_path = export_torchscript(net, example, os.path.join(out_dir, "model.ts"))
    ts = torch.jit.load(ts_path, map_location=example.device)
    with torch.no_grad():
        out["torchscript"] = _rel_diff(ref, ts(example))
    onnx_path = export_onnx(net, example, os.path.join(out_dir, "model.onnx"), deployable.deploy_output_names(),
                            dynamic=False)
    import onnxruntime as ort

    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    out["onnx"] = _rel_diff(ref, OnnxRuntime(onnx_path, providers=providers)(example))
    out["onnx_provider"] = providers[0]  # type: ignore[assignment]
    return out


def section_export(ctx: Dict[str, Any], budget: float) -> Dict[str, Any]:
    import torch

    from medseg_core.profiling import prepare_for_inference

    if "LMSF-A" not in ctx["trained"]:
        return {"skipped": "LMSF-A was not trained in amp_train"}
    cfg, model, _ = ctx["trained"]["LMSF-A"]
    fused, _ = prepare_for_inference(model, fuse=True)
    example = torch.full((1, 3, 640, 640), 114.0, device=DEVICE)
    example[:, :, 80:560] = _image_640()["image"][:, 80:560].float().to(DEVICE)
    out_dir = os.path.join(ctx["work"], "export")
    os.makedirs(out_dir, exist_ok=True)
    row: Dict[str, Any] = {"model": "LMSF-A (fused)", "input": "1x3x640x640"}
    failures = []
    try:
        row.update(export_round_trip(fused, cfg, example, out_dir))
        for key in ("torchscript", "onnx"):
            if not row[key] <= TOLERANCE[key]:
                failures.append(f"{key} differs from PyTorch by {row[key]:.3g} (> {TOLERANCE[key]:g})")
    except Exception as e:  # noqa: BLE001
        _record_failure(row, failures, e)
    return {"rows": [row], "failures": failures,
            "note": "max |export - PyTorch| / max |PyTorch| over the network outputs; TorchScript runs on the GPU, "
                    "ONNX in onnxruntime (the CUDA provider where installed)."}


def section_lmsfa_640(ctx: Dict[str, Any], budget: float) -> Dict[str, Any]:
    from medseg_core.engine.trainer import MedSegTrainer

    out_dir = os.path.join(ctx["work"], "lmsfa_640")
    cfg = _cfg(FAMILIES["LMSF-A"][0], "INPUT.YOLO.IMAGE_SIZE", 640, "SOLVER.IMS_PER_BATCH", 16,
               "SOLVER.AMP.ENABLED", "True",
               "SOLVER.MAX_ITER", 1000, "SOLVER.WARMUP_ITERS", 20, "SOLVER.CHECKPOINT_PERIOD", 100000,
               "DATALOADER.NUM_WORKERS", max(2, min(12, (os.cpu_count() or 4) - 2)), "TEST.EVAL_PERIOD", 0,
               output_dir=out_dir)
    trainer = MedSegTrainer(cfg)
    trainer.resume_or_load(resume=False)
    res = _train(trainer, 1000, time.monotonic() + 0.85 * budget)
    losses = res["losses"]
    k = min(20, len(losses) // 3)
    first, last = (sum(losses[:k]) / k, sum(losses[-k:]) / k) if k else (float("nan"), float("nan"))
    ok = k > 0 and last < first
    row = {"iters": res["iters"], "it_per_s": res["it_per_s"], "peak_mem_gb": res["peak_mem_gb"],
           f"mean_loss_first_{k}": first, f"mean_loss_last_{k}": last, "metric": _main_metric(res["results"]), "ok": ok}
    return {"rows": [row], "failures": [] if ok else [f"loss did not fall ({first:.3g} -> {last:.3g})"],
            "note": "LMSF-A at 640, batch 16, FP16 AMP, the paper's augmentation, smoke set, until the budget ends."}


def _watchdog(report: Report) -> None:
    """End the process at the budget whatever a section is doing (a step that hangs or runs
    long), after writing the report so far; exit status 1."""
    import threading

    def fire():
        where = report.data.get("running")
        report.data["aborted"] = f"budget of {report.budget_s:.0f} s reached inside section {where}"
        report.failures.append(report.data["aborted"])
        report.data["failures"] = report.failures
        report.write()
        print(f"gpu_check: {report.data['aborted']}; report in {report.out_dir}", file=sys.stderr, flush=True)
        os._exit(1)

    timer = threading.Timer(max(report.left() - 3.0, 1.0), fire)
    timer.daemon = True
    timer.start()


RUNNERS: Dict[str, Callable[[Dict[str, Any], float], Dict[str, Any]]] = {
    "env": section_env, "amp_train": section_amp_train, "precision": section_precision, "fps": section_fps,
    "ddp_nccl": section_ddp_nccl, "export": section_export, "lmsfa_640": section_lmsfa_640,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    started = time.monotonic()
    args = get_parser().parse_args(argv)
    check_args(args)
    import torch

    global DEVICE, LOW
    if not torch.cuda.is_available():
        if not args.cpu_dry_run:
            print(f"gpu_check: no CUDA device is visible (torch {torch.__version__}, CUDA build {torch.version.cuda}): "
                  "nothing to check; run this on a GPU machine.")
            return 0
        DEVICE, LOW = "cpu", "bf16"
        print("gpu_check: CPU dry run (tests this script; its numbers mean nothing)")
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    import medseg_core  # noqa: F401
    from medseg_core.projects import load_projects

    load_projects()
    out_dir = os.path.abspath(args.output)
    report = Report(out_dir, 60 * args.budget_minutes, started)
    _watchdog(report)
    work = os.path.abspath(args.work_dir) if args.work_dir else os.path.join(out_dir, "work")
    ctx: Dict[str, Any] = {"families": args.families, "trained": {}, "work": work}
    for name in SECTIONS:
        if name not in args.sections:
            continue
        budget, least = SECTIONS[name]
        left = report.left() - 10  # keep time to write the report
        if left < least:
            report.section(name, {"skipped": f"time budget ({left:.0f} s left, needs {least} s)"})
            continue
        t0 = time.monotonic()
        report.data["running"] = name
        logger.info("section %s (budget %.0f s)", name, min(budget, left))
        try:
            result = RUNNERS[name](ctx, min(budget, left))
        except Exception as e:  # noqa: BLE001 - report and go on with the next section
            logger.error("section %s failed:\n%s", name, traceback.format_exc())
            result = {"rows": [], "failures": [f"{type(e).__name__}: {e}"[:300]]}
        result["seconds"] = round(time.monotonic() - t0, 1)
        report.data.pop("running", None)
        report.section(name, result)
    print(render_markdown(report.data))
    print(f"report: {os.path.join(out_dir, 'gpu_check.md')} and gpu_check.json")
    return 1 if report.failures else 0


if __name__ == "__main__":
    from medseg_core.cli_errors import run_cli

    run_cli(main)
