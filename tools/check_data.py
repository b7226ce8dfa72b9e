#!/usr/bin/env python
"""Run the pre-training check on registered data sets and say how long it takes.

    python tools/check_data.py --datasets endoscapes_seg50_train endoscapes_seg50_val
    python tools/check_data.py --datasets msd_hippocampus_train --cold   # first run vs second run

Every image, mask, RLE and volume is decoded once (in parallel, cached by path + size + mtime;
see ``medseg_core/data/file_checks.py``), exactly as ``tools/train_net.py`` does before the first
iteration; every bad file is listed. ``--cold`` checks with an empty temporary cache, then again
with that cache (what a second training run over the same data costs). Times are wall-clock
seconds of loading the data set (annotation parsing included).
"""
import argparse
import os
import sys
import tempfile
import time

import medseg_core  # noqa: F401  (compatibility shim before detectron2)
from medseg_core.errors import here


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", required=True, help="registered data set names")
    p.add_argument("--cold", action="store_true", help="start from an empty temporary cache, then run again warm")
    p.add_argument("--workers", type=int, default=0, help="decoding processes (default: the available cores)")
    return p.parse_args(argv)


def _check(names):
    from detectron2.data import DatasetCatalog

    from medseg_core.data import file_checks

    rows = []
    for name in names:
        start = time.perf_counter()
        dicts = DatasetCatalog.get(name)
        seconds = time.perf_counter() - start
        stats = [v for k, v in file_checks._LAST_STATS.items()]
        files = sum(int(s["files"]) for s in stats)
        decoded = sum(int(s["decoded"]) for s in stats)
        workers = max([int(s["workers"]) for s in stats] or [0])
        file_checks._LAST_STATS.clear()
        rows.append((name, len(dicts), files, decoded, workers, seconds))
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.workers:
        os.environ["MEDSEG_CHECK_WORKERS"] = str(args.workers)
    import medseg_core.data  # noqa: F401  (registers the data sets)
    from detectron2.data import DatasetCatalog

    from medseg_core.errors import UsageError

    unknown = [n for n in args.datasets if n not in DatasetCatalog.list()]
    if unknown:
        raise UsageError(here() + f"data sets {unknown} are not registered "
                         f"(known: {', '.join(sorted(DatasetCatalog.list()))})")
    runs = []
    if args.cold:
        with tempfile.TemporaryDirectory(prefix="medseg-check-") as tmp:
            os.environ["MEDSEG_CACHE_DIR"] = tmp
            runs = [("cold", _check(args.datasets)), ("warm", _check(args.datasets))]
    else:
        runs = [("", _check(args.datasets))]
    print(f"{'data set':32s} {'run':5s} {'items':>6s} {'files':>6s} {'decoded':>8s} {'workers':>7s} {'seconds':>8s}")
    for label, rows in runs:
        for name, items, files, decoded, workers, seconds in rows:
            print(f"{name:32s} {label:5s} {items:6d} {files:6d} {decoded:8d} {workers:7d} {seconds:8.2f}")
    return 0


if __name__ == "__main__":
    from medseg_core.cli_errors import run_cli

    run_cli(main)
