"""Export DenseFuse to ONNX: the whole fusion graph, or the encoder or decoder alone.

    python -m run_scripts.export_onnx weights/densefuse_gray_l100_daf2d5f7.pth -o densefuse_add.onnx
    python -m run_scripts.export_onnx WEIGHTS -o fuse_l1.onnx --strategy l1_norm --sources 3
    python -m run_scripts.export_onnx WEIGHTS -o encoder.onnx --part encoder

The fusion graph takes ``source0 .. source{N-1}``, each float32 (1, C, H, W) in [0, 1] (C = 1 for
the gray networks), and returns ``fused`` (1, C, H, W), the decoder's output before any 8-bit
conversion (``run_infer.py --output_mode`` applies it: stretch for add, clip otherwise). Height
and width are dynamic. Every strategy exports. The file records the strategy, network arguments and
weights' SHA-256 in its metadata; ``run_infer.py --backend onnxruntime --weights FILE.onnx`` fuses
with it. Needs ``pip install onnx onnxscript`` (and onnxruntime to run the file).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from configs import SSIM_WEIGHTS, STRATEGY_NAMES
from utils.cli import DefaultsFormatter

#: The oldest opset torch.onnx.export(dynamo=True) writes (it silently wrote 18 when asked for less).
MIN_OPSET = 18


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=DefaultsFormatter)
    p.add_argument("weights", help="any weights run_infer.py takes: a shipped file, a run_train.py checkpoint, "
                                   "exported weights, or an official release")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.add_argument("--part", choices=("fusion", "encoder", "decoder"), default="fusion",
                   help="fusion = N images in, fused image out; encoder = image (B,C,H,W) -> features "
                        "(B,64,H,W); decoder = features -> image")
    p.add_argument("--strategy", choices=STRATEGY_NAMES, default="add", help="feature fusion baked into the graph")
    p.add_argument("--l1_radius", type=int, default=1, help="l1_norm block-average radius (window 2r+1)")
    p.add_argument("--sources", type=int, default=2, help="number of source images the fusion graph takes")
    p.add_argument("--ssim_weight", type=int, choices=SSIM_WEIGHTS, default=None,
                   help="lambda of the network to take from an official TF release holding several")
    p.add_argument("--opset", type=int, default=18,
                   help="ONNX opset, 18 or newer (PyTorch's exporter writes no older one; up to what the "
                        "installed onnx package knows)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return p


def problem_with(args) -> str | None:
    """What is wrong with the arguments before anything is loaded or written, or None."""
    from utils.files import same_file
    out = Path(args.output)
    if out.is_dir():
        return f"{out} is a folder"
    if Path(args.weights).exists() and same_file(out, args.weights):
        return f"{out} is the input weights file; give another --output"
    if out.exists() and not args.overwrite:
        return f"{out} exists; pass --overwrite to replace it"
    if args.sources < 2:
        return f"--sources must be at least 2, got {args.sources}"
    if not 0 <= args.l1_radius <= 1000:
        return f"--l1_radius must be between 0 and 1000, got {args.l1_radius}"
    if args.opset < MIN_OPSET:
        return f"--opset {args.opset}: PyTorch's exporter writes opset {MIN_OPSET} or newer"
    return None


def export(args) -> dict:
    """Load the weights and write the graph; WeightsError or OSError on failure."""
    from utils.checkpoint import load_model
    from utils.onnx_graph import export_onnx
    model, info = load_model(Path(args.weights), args.ssim_weight)
    provenance = {"weights": Path(args.weights).name, "weights_sha256": info.get("sha256"),
                  "ssim_weight": info.get("ssim_weight")}
    return export_onnx(model, Path(args.output), part=args.part, strategy=args.strategy, radius=args.l1_radius,
                       sources=args.sources, provenance=provenance, opset=args.opset)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if problem := problem_with(args):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from utils.errors import WeightsError
    try:
        meta = export(args)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only folder, a full disk: the atomic write left no partial file
        print(f"error: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
        return 2
    what = (f"fusion graph, {meta['sources']} sources, strategy {meta['strategy']}" if args.part == "fusion"
            else args.part)
    print(f"{args.output}: {what}, channels {meta['model_args']['channels']}, opset {meta['opset']} (checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
