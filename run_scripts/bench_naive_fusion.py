"""A benchmark child (run_scripts/benchmark.py, startup section): the plain script a user would
write, the contestant run_infer.py is timed against as a whole process: the paper's Fig. 3 in
eager NCHW float32, two encoder calls, add, decode, min-max stretch, 8-bit rounding."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, what in (("weights", "a gray state_dict (the shipped file)"), ("ir", "infrared image"),
                       ("vis", "visible image"), ("out", "fused PNG to write")):
        p.add_argument(name, help=what)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np
    import torch
    from PIL import Image

    from models.densefuse import DenseFuse
    model = DenseFuse().eval()
    model.load_state_dict(torch.load(args.weights, weights_only=True))
    ir, vis = (torch.from_numpy(np.asarray(Image.open(p), np.float32) / 255)[None, None] for p in (args.ir, args.vis))
    with torch.no_grad():
        y = model.decode(model.encode(ir) + model.encode(vis))[0, 0].numpy()
    y = (y - y.min()) / (y.max() - y.min())
    Image.fromarray(np.floor(y * 255 + 0.5).astype(np.uint8)).save(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
