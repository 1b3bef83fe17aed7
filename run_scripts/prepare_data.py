"""Prepare training images once: decode, resize and store them as uint8 samples in one
memory-mapped file, so that training never waits on JPEG decoding (docs/performance.md).

    python -m run_scripts.prepare_data --image_path /data/coco2014/train -o data_prepared/coco256
    python run_train.py --image_path data_prepared/coco256          # trains from the prepared samples

Parallel over processes, with a progress bar; a killed run continues where it stopped when
started again with the same arguments; a file that does not decode is named and skipped once,
here, not at every training start.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from utils.cli import DefaultsFormatter


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=DefaultsFormatter)
    p.add_argument("--image_path", required=True, help="folder of training images (searched recursively)")
    p.add_argument("-o", "--output", required=True, help="folder for the prepared data (samples.u8, index.json)")
    p.add_argument("--image_size", type=int, default=256, help="side of the stored square samples (the paper: 256)")
    p.add_argument("--gray", action=argparse.BooleanOptionalAction, default=True,
                   help="gray samples for the paper's network; --no-gray: RGB for run_train.py --no-gray")
    p.add_argument("--resize", choices=("bilinear", "nearest"), default="bilinear",
                   help="bilinear = antialiased, as run_train.py's folder loader; nearest = the official "
                        "repository's imresize(interp='nearest') (aliases when shrinking; utils/prepared.py)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding processes")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not 16 <= args.image_size <= 8192:
        print(f"error: --image_size must be between 16 and 8192, got {args.image_size}", file=sys.stderr)
        return 2
    root = Path(args.image_path)
    if not root.is_dir():
        print(f"error: {root}: folder not found", file=sys.stderr)
        return 2
    from utils.prepared import PreparedError, prepare
    try:
        index = prepare(root, Path(args.output), args.image_size, args.gray, args.resize, args.workers)
    except PreparedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"{args.output}: {index['count']} samples of {args.image_size}x{args.image_size} "
          f"{'gray' if args.gray else 'RGB'} ({args.resize}); {len(index['skipped'])} file(s) skipped. "
          f"Train with: python run_train.py --image_path {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
