#!/usr/bin/env python
"""One command from nothing to a trained, evaluated model and a prediction overlay.

    python tools/quickstart.py                    # generated smoke-test set (says so)
    python tools/quickstart.py --data PATH        # your data: a LabelMe folder (PELD format),
                                                  # a COCO .json, or annotations/ + images/
    python tools/quickstart.py --data PATH --max-iter 2000 --config-file configs/...

It trains the flagship model's tiny CPU config (LMSF-A) for a few iterations, evaluates it with
Detectron2's COCOEvaluator on the validation (and, if present, test) split and writes
ground-truth | prediction overlays to ``OUTPUT/overlays/``. For real training use
``tools/train_net.py`` with a full config (see README).
"""
import argparse
import json
import logging
import os
import sys
import time

import medseg_core  # noqa: F401  (compatibility shim before detectron2)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGSHIP_CONFIG = os.path.join(REPO, "configs", "quick_schedules", "lmsfa_instant_test.yaml")
FALLBACK_CONFIG = os.path.join(REPO, "configs", "quick_schedules", "mask_rcnn_R50_FPN_scratch_bn_instant_test.yaml")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="", help="LabelMe folder, COCO .json, or a folder with annotations/ and images/")
    p.add_argument("--config-file", default="", help="config to train (default: the flagship's tiny CPU config)")
    p.add_argument("--output", default=os.path.join(REPO, "output", "quickstart"), help="output folder")
    p.add_argument("--max-iter", type=int, default=150,
                   help="training iterations (default 150: about a minute on 2 CPU cores with the flagship's "
                        "tiny config, enough to see masks on the smoke set; 0 keeps the config's)")
    p.add_argument("--num-overlays", type=int, default=4, help="prediction overlays to write")
    p.add_argument("--score-thresh", type=float, default=0.25, help="minimum score drawn in overlays")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="extra KEY VALUE config overrides")
    return p.parse_args(argv)


def register_data(args, log):
    from medseg_core.data import SMOKE_NOTICE
    from medseg_core.data.user import register_user_instances

    if not args.data:
        print("=" * 80 + "\n" + SMOKE_NOTICE + "\n" + "=" * 80, flush=True)
        return {"train": "smoke_peld_train", "val": "smoke_peld_val", "test": "smoke_peld_test"}
    names = register_user_instances(args.data, os.path.join(args.output, "data"))
    log.info("Using your data from %s: %s", args.data, names)
    return names


def write_overlays(cfg, model, dataset_name, out_dir, num, score_thresh):
    """Ground truth | prediction PNGs for the first ``num`` images of ``dataset_name``."""
    import torch
    from PIL import Image
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from medseg_core.data.image_io import read_image
    from medseg_core.data.mappers import build_dataset_mapper
    from medseg_core.output_paths import plan_output_paths
    from medseg_core.visualization import draw_dataset_ground_truth, draw_prediction, side_by_side

    os.makedirs(out_dir, exist_ok=True)
    meta = MetadataCatalog.get(dataset_name)
    mapper = build_dataset_mapper(cfg, False, dataset_name)
    written = []
    model.eval()
    dicts = DatasetCatalog.get(dataset_name)[:num]
    # one overlay per image even when two images share a file name (this run's own folder)
    paths = plan_output_paths([d["file_name"] for d in dicts], out_dir, suffix="_gt_vs_pred", overwrite=True)
    for d, path in zip(dicts, paths):
        rgb = read_image(d["file_name"], "RGB", cfg.INPUT.IMAGE_BIT_DEPTH)
        with torch.no_grad():
            out = model([mapper(dict(d))])[0]
        both = side_by_side(draw_dataset_ground_truth(rgb, d, meta), draw_prediction(rgb, out, meta, score_thresh))
        Image.fromarray(both).save(path)
        written.append(path)
    return written


def main(argv=None):
    args = parse_args(argv)
    from detectron2.data import MetadataCatalog
    from detectron2.engine import default_setup
    from detectron2.utils.logger import setup_logger

    from medseg_core.config import load_config, set_num_classes
    from medseg_core.engine import MedSegTrainer

    os.makedirs(args.output, exist_ok=True)
    setup_logger(args.output, name="quickstart")
    log = logging.getLogger("quickstart")
    names = register_data(args, log)
    config_file = args.config_file or (FLAGSHIP_CONFIG if os.path.isfile(FLAGSHIP_CONFIG) else FALLBACK_CONFIG)
    test_sets = [names["val"]] + ([names["test"]] if "test" in names else [])
    opts = ["DATASETS.TRAIN", f"('{names['train']}',)", "DATASETS.TEST", str(tuple(test_sets)),
            "OUTPUT_DIR", args.output] + list(args.opts)
    if args.max_iter:
        opts += ["SOLVER.MAX_ITER", str(args.max_iter)]
    cfg = load_config(config_file, opts, freeze=False)
    set_num_classes(cfg, len(MetadataCatalog.get(names["train"]).thing_classes))
    cfg.freeze()
    print(f"Training {cfg.MODEL.META_ARCHITECTURE} ({os.path.relpath(config_file, REPO)}) for "
          f"{cfg.SOLVER.MAX_ITER} iterations on {names['train']} ({cfg.MODEL.DEVICE})", flush=True)
    default_setup(cfg, argparse.Namespace(config_file=config_file, eval_only=False, opts=opts))
    start = time.time()
    trainer = MedSegTrainer(cfg)
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    overlays = write_overlays(cfg, trainer.eval_model(), test_sets[-1], os.path.join(args.output, "overlays"),
                              args.num_overlays, args.score_thresh)
    summary = {
        "config": os.path.relpath(config_file, REPO), "data": args.data or "generated smoke-test set",
        "train_seconds": round(time.time() - start, 1), "results": results, "overlays": overlays,
    }
    with open(os.path.join(args.output, "quickstart_summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=float)
    print("\nDone. COCO results (segm = mask AP, in %):")
    per_set = results if len(test_sets) > 1 else {test_sets[0]: results}
    for ds, res in per_set.items():
        segm = (res or {}).get("segm", {})
        print(f"  {ds}: segm AP {segm.get('AP', float('nan')):.2f}, AP50 {segm.get('AP50', float('nan')):.2f}")
    print(f"Overlays (ground truth | prediction): {os.path.join(args.output, 'overlays')}")
    if not args.data:
        print("Reminder: these numbers are from a synthetic smoke-test set, not medical data.")
    return 0


if __name__ == "__main__":
    from medseg_core.cli_errors import run_cli

    run_cli(main)
