#!/usr/bin/env python
"""Draw the predictions of any 2D model of the toolkit on images or videos (Detectron2 demo style).

    # images: files, globs or folders; one overlay per image in --output
    python demo/demo.py --config-file configs/Endoscapes-InstanceSegmentation/lmsfa_n_640.yaml \\
        --input "images/*.jpg" --output out/ --opts MODEL.WEIGHTS output/endoscapes/lmsfa/model_final.pth

    # ground truth | prediction side by side, from a registered data set or a COCO file
    python demo/demo.py --config-file CFG --gt-dataset endoscapes_seg50_val --output out/ --opts MODEL.WEIGHTS W
    python demo/demo.py --config-file CFG --annotations my.json --image-root imgs/ --output out/ --opts ...

    # video file or stream URL, or a camera (--webcam INDEX); writes an .mp4 with the overlays,
    # decoding, inference and drawing/writing in three threads; logs live FPS and latency
    python demo/demo.py --config-file CFG --video-input clip.mp4 --output out/ --opts MODEL.WEIGHTS W
    python demo/demo.py --config-file CFG --webcam 0 --max-frames 300 --output cam.mp4 --opts MODEL.WEIGHTS W

    # any runtime of medseg_core.deploy (files from tools/export.py)
    python demo/demo.py --config-file CFG --video-input clip.mp4 --runtime openvino \
        --runtime-file output/export/lmsfa/model_int8.xml --num-threads 1 --output out/ --opts MODEL.WEIGHTS W

Instance models (LMSF-A, YOLOv8-seg, Mask R-CNN, Mask2Former) are drawn with one fixed colour per
class and "class score" labels (the paper's colours for the four PELD classes: adipose purple,
bone red, ligamentum flavum yellow, nerve green); semantic models (LGMSNet, U-Net, CMUNeXt) as a
class overlay. Each image is pre-processed by the model's own test mapper (see
``demo/predictor.py``). Class names come from ``--gt-dataset`` / ``--annotations`` or the
config's first test set when it is registered. Overlays are written as PNG.
"""
from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
import time
from typing import Dict, List, Optional, Sequence


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import medseg_core  # noqa: E402,F401  (NumPy-2 / Pillow shim before detectron2)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov")

logger = logging.getLogger("medseg.demo")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE", help="path to the config file")
    p.add_argument("--input", nargs="+", default=[], help="image files, globs (quote them) or folders")
    p.add_argument("--video-input", default="", help="path to a video file, or a stream URL (rtsp://, http://)")
    p.add_argument("--webcam", type=int, default=None, metavar="INDEX", help="camera index (OpenCV VideoCapture)")
    p.add_argument("--max-frames", type=int, default=0, help="video / camera: stop after this many frames (0 = all)")
    p.add_argument("--runtime", default="pytorch", choices=["pytorch", "pytorch-fused", "torchscript", "onnxruntime",
                   "openvino", "openvino-int8"], help="runtime of the network (medseg_core.deploy)")
    p.add_argument("--runtime-file", default="", help="exported file for --runtime (tools/export.py); without it "
                   "the network is exported to a temporary folder first")
    p.add_argument("--output", default="", help="output folder (or one image / .mp4 file for a single input); "
                   "without it predictions are only summarised")
    p.add_argument("--overwrite", action="store_true", help="replace earlier outputs of the same name (default: "
                   "keep them and add _2, _3, ...); inputs are never overwritten")
    p.add_argument("--confidence-threshold", type=float, default=0.5, help="minimum score of drawn instances")
    p.add_argument("--gt-dataset", default="", help="registered data set: ground truth | prediction side by side "
                   "(all its images, or the --input files found in it)")
    p.add_argument("--annotations", default="", help="COCO instance .json: ground truth | prediction side by side")
    p.add_argument("--image-root", default="", help="image folder of --annotations (default: the file's folder)")
    p.add_argument("--max-images", type=int, default=0, help="at most this many images (0 = all)")
    p.add_argument("--fuse", action="store_true", help="fuse Conv+BN / re-parameterised branches first (model.fuse())")
    p.add_argument("--num-threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p


SCORE_THRESH_KEYS = ("SCORE_THRESH_TEST", "TEST_CONF_THRESH")


def setup_cfg(args):
    """The config with every model score threshold raised to ``--confidence-threshold`` (as
    Detectron2's demo does): LMSF-A keeps 0.001 for AP evaluation, and assembling full-size masks
    for hundreds of detections the demo would not draw costs seconds per image."""
    from detectron2.config import CfgNode

    from medseg_core.config import load_config

    cfg = load_config(args.config_file, args.opts, freeze=False)

    def raise_thresholds(node):
        for key, val in node.items():
            if isinstance(val, CfgNode):
                raise_thresholds(val)
            elif key in SCORE_THRESH_KEYS and isinstance(val, float):
                node[key] = max(val, float(args.confidence_threshold))

    raise_thresholds(cfg.MODEL)
    cfg.TEST.MASK_OUTPUT = "boxes"  # masks stay cropped to their boxes until drawn (bounded memory)
    cfg.freeze()
    return cfg


def expand_inputs(patterns: Sequence[str]) -> List[str]:
    """Files, globs and folders -> sorted, de-duplicated image paths; a pattern matching nothing fails."""
    out: List[str] = []
    for pat in patterns:
        if os.path.isdir(pat):
            found = [os.path.join(pat, f) for f in sorted(os.listdir(pat)) if f.lower().endswith(IMAGE_EXTS)]
        else:
            found = sorted(glob.glob(os.path.expanduser(pat)))
        if not found:
            from medseg_core.errors import InputNotFoundError

            raise InputNotFoundError(f"{pat}: no image matches this --input")
        out += found
    seen, unique = set(), []
    for f in out:
        a = os.path.abspath(f)
        if a not in seen:
            seen.add(a)
            unique.append(f)
    return unique


def register_annotations(json_file: str, image_root: str) -> str:
    from medseg_core.data import register_coco_instances_checked

    name = "demo_annotations"
    register_coco_instances_checked(name, json_file, image_root or os.path.dirname(os.path.abspath(json_file)))
    return name


def plan_outputs(args, sources: Sequence[str], ext: str = ".png") -> List[str]:
    """One distinct output per input, decided before the model is built (never an input file)."""
    from medseg_core.output_paths import is_file_target, plan_output_paths

    paths = plan_output_paths(sources, args.output, ext, overwrite=args.overwrite, file_exts=IMAGE_EXTS + VIDEO_EXTS)
    folder = os.path.dirname(os.path.abspath(paths[0])) if is_file_target(args.output, IMAGE_EXTS + VIDEO_EXTS) \
        else args.output
    os.makedirs(folder, exist_ok=True)
    return paths


def summarize(predictions: Dict, threshold: float) -> str:
    if "instances" in predictions:
        inst = predictions["instances"]
        n = int((inst.scores >= threshold).sum()) if inst.has("scores") else len(inst)
        return f"{n} instances (score >= {threshold})"
    if "sem_seg" in predictions:
        labels = predictions["sem_seg"].argmax(0)
        present = sorted(int(c) for c in labels.unique())
        return f"semantic classes present: {present}"
    return f"outputs {sorted(predictions)}"


def run_images(demo, args, records: List[Dict], progress, paths: Sequence[Optional[str]]) -> List[str]:
    from PIL import Image

    written = []
    for rec, path in progress(list(zip(records, paths)), desc="images", unit="img"):
        start = time.perf_counter()
        if "annotations" in rec or "sem_seg_file_name" in rec:
            predictions, vis = demo.run_on_dataset_dict(rec)
        else:
            predictions, vis = demo.run_on_file(rec["file_name"])
        msg = f"{rec['file_name']}: {summarize(predictions, demo.confidence_threshold)} in {time.perf_counter() - start:.2f}s"
        if path:
            Image.fromarray(vis).save(path)
            written.append(path)
            msg += f" -> {path}"
        logger.info(msg)
    return written


def run_video(demo, args, progress, path: Optional[str] = None) -> Optional[str]:
    """Video file, stream or camera through the threaded pipeline (decode | predict | draw + write);
    ``path``: the planned .mp4 output (none: predictions are only timed)."""
    import cv2

    from medseg_core.deploy.video import read_frames

    source = args.webcam if args.webcam is not None else args.video_input
    video = cv2.VideoCapture(source)
    if not video.isOpened():
        from medseg_core.errors import InputNotFoundError

        raise InputNotFoundError(f"{source}: cannot open the video / camera")
    width, height = int(video.get(cv2.CAP_PROP_FRAME_WIDTH)), int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = video.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(video.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    if total and args.max_frames > 0:
        total = min(total, args.max_frames)
    writer = None
    if path:
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height), True)
        if not writer.isOpened():
            raise RuntimeError(f"{path}: OpenCV cannot write an mp4v video here")
    bar = progress(total=total, desc="frames", unit="frame")

    def on_frame(stats) -> None:
        bar.update(1)
        if stats.count % 10 == 0:
            last = stats.frames[-1]
            bar.set_postfix_str(f"{stats.live_fps:.1f} FPS, latency {last.latency_ms:.0f} ms")

    pipeline = demo.video_pipeline(writer.write if writer is not None else (lambda vis: None), on_frame=on_frame)
    try:
        stats = pipeline.run(read_frames(video, args.max_frames))
    finally:
        bar.close()
        video.release()
        if writer is not None:
            writer.release()
    s = stats.summary()
    if s["frames"]:
        logger.info("%s: %d frames, %.2f frames/s incl. decoding and drawing; latency per frame median %.0f ms "
                    "(max %.0f), inference median %.0f ms%s", source, s["frames"], s["fps"], s["median_latency_ms"],
                    s["max_latency_ms"], s["median_inference_ms"], f" -> {path}" if path else "")
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    import torch
    from tqdm import tqdm

    from detectron2.data import DatasetCatalog

    import medseg_core.data  # noqa: F401  (registers the built-in and generated data sets)
    from medseg_core.errors import UsageError, here
    from predictor import VisualizationDemo

    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    video = bool(args.video_input) or args.webcam is not None
    if not (args.input or video or args.gt_dataset or args.annotations):
        raise UsageError(here() + "give --input, --video-input, --webcam, --gt-dataset or --annotations")
    if video and (args.input or args.gt_dataset or args.annotations):
        raise UsageError(here() + "--video-input / --webcam cannot be combined with image inputs or ground truth")
    if args.video_input and args.webcam is not None:
        raise UsageError(here() + "give --video-input or --webcam, not both")
    cfg = setup_cfg(args)

    gt_name = args.gt_dataset
    if args.annotations:
        if gt_name:
            raise UsageError(here() + "give either --gt-dataset or --annotations, not both")
        gt_name = register_annotations(args.annotations, args.image_root)
    elif gt_name and gt_name not in DatasetCatalog.list():
        raise UsageError(here() + f"--gt-dataset {gt_name!r} is not registered "
                         f"(known: {', '.join(sorted(DatasetCatalog.list()))})")

    def progress(it=None, **kw):
        return tqdm(it, file=sys.stderr, dynamic_ncols=True, **kw)

    def build_demo():
        return VisualizationDemo(cfg, args.confidence_threshold, dataset_name=gt_name or None, fuse=args.fuse,
                                 runtime=args.runtime, runtime_file=args.runtime_file, threads=args.num_threads)

    if video:
        name = f"webcam{args.webcam}" if args.webcam is not None else args.video_input.rstrip("/")
        video_path = plan_outputs(args, [name], ".mp4")[0] if args.output else None
        run_video(build_demo(), args, progress, video_path)
        return 0

    files = expand_inputs(args.input) if args.input else []
    if gt_name:
        dicts = DatasetCatalog.get(gt_name)
        if files:
            by_path = {os.path.abspath(d["file_name"]): d for d in dicts}
            by_name = {os.path.basename(d["file_name"]): d for d in dicts}
            records = []
            for f in files:
                rec = by_path.get(os.path.abspath(f)) or by_name.get(os.path.basename(f))
                if rec is None:
                    logger.warning("%s: not in %s, drawn without ground truth", f, gt_name)
                    rec = {"file_name": f}
                records.append(rec)
        else:
            records = list(dicts)
    else:
        records = [{"file_name": f} for f in files]
    if args.max_images > 0:
        records = records[: args.max_images]
    paths = plan_outputs(args, [r["file_name"] for r in records]) if args.output and records else [None] * len(records)
    written = run_images(build_demo(), args, records, progress, paths)
    if args.output:
        logger.info("wrote %d overlay(s) to %s", len(written), args.output)
    return 0


if __name__ == "__main__":
    from medseg_core.cli_errors import run_cli

    run_cli(main)
