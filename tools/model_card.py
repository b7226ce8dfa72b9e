#!/usr/bin/env python
"""Print a model's size and cost: parameters (unfused and fused) and GFLOPs in its paper's
convention and in fvcore's, at the config's TEST.COMPLEXITY_INPUT_SHAPE.

    python tools/model_card.py --config-file configs/Endoscapes-InstanceSegmentation/lmsfa_n_640.yaml
    python tools/model_card.py --config-file CFG --fused --json [KEY VALUE ...]
    # a Markdown card: architecture, size, data, and (with a checkpoint) metrics and latency,
    # each number with the command that reproduces it
    python tools/model_card.py --config-file CFG --markdown [--weights W] [--output card.md]

Conventions (MODEL.FLOPS_CONVENTION, see medseg_core/complexity.py): "thop2x" = 2 x legacy-thop
ops (Ultralytics / LMSF-A "GFLOPs"), "thop" = legacy-thop ops (MACs), "fvcore" = fvcore MACs.
FLOPs are of the unfused model (as papers report them) unless --fused is given.
"""
import argparse
import json
import sys

import medseg_core  # noqa: F401  (compatibility shim before detectron2)
from medseg_core.complexity import model_complexity
from medseg_core.config import load_config


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE", help="model config (YAML)")
    p.add_argument("--fused", action="store_true", help="count FLOPs of the fused (deploy) model")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--no-fvcore", action="store_true", help="skip the (slower) fvcore count")
    p.add_argument("--markdown", action="store_true",
                   help="write a Markdown model card (architecture, size, data, metrics, latency)")
    p.add_argument("--weights", metavar="FILE", help="--markdown: checkpoint whose metrics and latency to measure")
    p.add_argument("--output", metavar="FILE", help="--markdown: write the card here instead of stdout")
    p.add_argument("--no-eval", action="store_true", help="--markdown: skip evaluating the checkpoint")
    p.add_argument("--no-latency", action="store_true", help="--markdown: skip timing the checkpoint")
    p.add_argument("--latency-runs", type=int, default=20, metavar="N", help="--markdown: timed runs (>= 20)")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="--markdown: torch threads while timing")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ...")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.markdown:
        return write_markdown_card(args)
    if args.weights or args.output:
        print("error: --weights and --output go with --markdown", file=sys.stderr)
        return 2
    cfg = load_config(args.config_file, list(args.opts) + ["MODEL.DEVICE", "cpu"])
    card = model_complexity(cfg, fused=args.fused, with_fvcore=not args.no_fvcore)
    card = {"config_file": args.config_file, "meta_architecture": cfg.MODEL.META_ARCHITECTURE, **card}
    if args.json:
        card = {k: v for k, v in card.items() if k != "thop_ops_by_type"} | {
            "thop_gops_by_type": card["thop_ops_by_type"]
        }
        print(json.dumps(card, indent=2))
        return 0
    shape = "x".join(str(s) for s in card["input_shape"])
    which = "fused" if card["fused"] else "unfused"
    lines = [
        f"config             {card['config_file']}",
        f"meta-architecture  {card['meta_architecture']}",
        f"params             {card['params']:,} ({card['params'] / 1e6:.3f} M)",
        f"params (fused)     {card['params_fused']:,} ({card['params_fused'] / 1e6:.3f} M)"
        + ("" if card["has_fuse"] else "  [model has no fuse()]"),
        f"GFLOPs paper       {card['gflops_paper']:.2f}  ({card['convention']}, {which}, input {shape})",
        f"GFLOPs thop2x      {card['gflops_thop2x']:.2f}  (2 x legacy-thop ops)",
        f"GMACs thop         {card['gmacs_thop']:.2f}",
    ]
    if card.get("gflops_fvcore") is not None:
        lines.append(f"GFLOPs fvcore      {card['gflops_fvcore']:.2f}")
    print("\n".join(lines))
    return 0


def write_markdown_card(args: argparse.Namespace) -> int:
    import os

    import torch

    from medseg_core.model_card import build_card, card_markdown

    if args.weights and not os.path.isfile(args.weights):
        print(f"error: {args.weights}: checkpoint does not exist", file=sys.stderr)
        return 2
    if args.latency_runs < 20:
        print(f"error: --latency-runs {args.latency_runs}: at least 20 timed runs", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    opts = list(args.opts)
    cfg = load_config(args.config_file, opts + ["MODEL.DEVICE", "cpu"])
    card = build_card(cfg, args.config_file, opts, weights=args.weights, evaluate=not args.no_eval,
                      latency=not args.no_latency, latency_runs=args.latency_runs,
                      with_fvcore=not args.no_fvcore)
    text = card_markdown(card)
    if args.output:
        from medseg_core.atomic import atomic_write_text

        atomic_write_text(args.output, text)
        print(f"model card written to {args.output}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    from medseg_core.cli_errors import run_cli

    run_cli(main)
