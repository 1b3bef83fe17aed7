"""Convert the DenseFuse authors' released weights into a project checkpoint.

    python -m run_scripts.convert_official densefuse_gray_tf_ckpt.zip --ssim_weight 100 -o official_l100.pt
    python -m run_scripts.convert_official densefuse_gray.model -o official_pytorch.pt

The result takes [0, 1] inputs like every project checkpoint (see utils/official.py). It is
for your own use: the official weights carry no licence, so never commit or redistribute it.
run_infer.py and run_eval.py also read the official files directly, without converting.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from configs import SSIM_WEIGHTS
from utils.cli import DefaultsFormatter


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsFormatter)
    p.add_argument("weights", help="official TF checkpoint (zip, folder, prefix, .index) or .model")
    p.add_argument("-o", "--output", required=True, help="project checkpoint to write (.pt)")
    p.add_argument("--ssim_weight", type=int, choices=SSIM_WEIGHTS, default=None,
                   help="which lambda to take from a release holding several (default 100)")
    args = p.parse_args(argv)
    from utils.checkpoint import WeightsError, load_model, save_checkpoint
    out = Path(args.output)
    if out.exists():
        print(f"error: {out} exists; not overwriting it", file=sys.stderr)
        return 2
    try:
        model, info = load_model(args.weights, ssim_weight=args.ssim_weight)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    config = {"source": str(args.weights), **{k: v for k, v in info.items() if k != "kind"}, "kind": info["kind"]}
    save_checkpoint(out, model, config, epoch=0, step=0)
    print(f"{out}: {info['kind']}" + (f", lambda={info.get('ssim_weight')}" if info.get("ssim_weight") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
