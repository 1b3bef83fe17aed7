"""A benchmark child (run_scripts/benchmark.py, startup section): what a deploying user would write
instead of run_infer.py (numpy, Pillow, onnxruntime; no torch): the whole image in one
session.run, the same min-max stretch and rounding."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, what in (("graph", "a 2-source fusion graph from run_scripts.export_onnx"), ("ir", "infrared image"),
                       ("vis", "visible image"), ("out", "fused PNG to write")):
        p.add_argument(name, help=what)
    p.add_argument("threads", type=int, help="onnxruntime intra-op threads (as many as torch uses)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np
    import onnxruntime as ort
    from PIL import Image
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
    session = ort.InferenceSession(args.graph, opts, providers=["CPUExecutionProvider"])
    ir, vis = (np.asarray(Image.open(p), np.float32)[None, None] / 255 for p in (args.ir, args.vis))
    y = session.run(None, {"source0": ir, "source1": vis})[0][0, 0]
    y = (y - y.min()) / (y.max() - y.min())
    Image.fromarray(np.floor(y * 255 + 0.5).astype(np.uint8)).save(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
