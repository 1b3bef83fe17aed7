"""Turn a run_train.py checkpoint into a shippable weight file.

    python -m run_scripts.export_weights runs/<run>/checkpoints/best.pt --update_configs

Writes ``weights/<name>_<sha8>.pth``: the model's fp32 state_dict and its ``model_args`` (about 300 KB), named
with the first 8 hex digits of its SHA-256; the name defaults to ``densefuse_gray_l<lambda>``
from the checkpoint's own config. ``--update_configs`` points configs.py's default weights
(SHIPPED_WEIGHTS/SHIPPED_SHA256, lambda = 100) at it, and refuses any other lambda; the full
hash is checked whenever the file is loaded.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from configs import ROOT
from utils.cli import DefaultsFormatter
from utils.files import write_text


def load_run_checkpoint(checkpoint: Path) -> dict:
    from utils.checkpoint import FORMAT, WeightsError, torch_load
    obj = torch_load(checkpoint)
    if not (isinstance(obj, dict) and obj.get("format") == FORMAT):
        raise WeightsError(f"{checkpoint}: not a run_train.py checkpoint")
    return obj


def checkpoint_lambda(obj: dict) -> int | None:
    """The SSIM weight a loaded checkpoint was trained with, or None if its config does not say."""
    weight = obj.get("config", {}).get("ssim_weight")
    return None if weight is None else int(weight)


def export(checkpoint: Path, out_dir: Path, name: str, obj: dict | None = None) -> tuple[Path, str]:
    """``obj``: the checkpoint already loaded, if the caller has it."""
    from utils.checkpoint import WEIGHTS_FORMAT, atomic_torch_save, model_from_state, sha256_file
    obj = obj if obj is not None else load_run_checkpoint(checkpoint)
    model = model_from_state(obj["model"], str(checkpoint), obj.get("model_args"))
    state = {k: v.float().contiguous() for k, v in model.state_dict().items()}
    tmp = out_dir / f".{name}.export.pth"
    atomic_torch_save({"format": WEIGHTS_FORMAT, "model": state, "model_args": model.model_args()}, tmp)
    digest = sha256_file(tmp)
    final = out_dir / f"{name}_{digest[:8]}.pth"
    tmp.replace(final)
    return final, digest


def update_configs(path: Path, digest: str) -> None:
    configs = ROOT / "configs.py"
    text = configs.read_text()
    text = re.sub(r'SHIPPED_WEIGHTS = ROOT / "weights" / "[^"]*"',
                  f'SHIPPED_WEIGHTS = ROOT / "weights" / "{path.name}"', text)
    text = re.sub(r'SHIPPED_SHA256 = "[^"]*"', f'SHIPPED_SHA256 = "{digest}"', text)
    write_text(configs, text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsFormatter)
    p.add_argument("checkpoint", help="a run_train.py checkpoint (.pt)")
    p.add_argument("--out_dir", default=str(ROOT / "weights"), help="where to write the file")
    p.add_argument("--name", help="file name prefix; default densefuse_gray_l<lambda of the checkpoint> "
                                  "(densefuse_rgb_l<lambda> for an RGB network)")
    p.add_argument("--update_configs", action="store_true",
                   help="make the exported file configs.py's default weights (lambda = 100 only)")
    args = p.parse_args(argv)
    from utils.checkpoint import WeightsError
    try:
        obj = load_run_checkpoint(Path(args.checkpoint))
        lam = checkpoint_lambda(obj)
        if args.update_configs and (lam != 100 or obj.get("model_args", {}).get("channels", 1) != 1):
            print(f"error: --update_configs sets the default (lambda = 100) weights, but "
                  f"{args.checkpoint} was trained with lambda = {lam}; export without it and add the "
                  f"file to configs.SHIPPED_BY_LAMBDA", file=sys.stderr)
            return 2
        kind = "gray" if obj.get("model_args", {}).get("channels", 1) == 1 else "rgb"
        name = args.name or f"densefuse_{kind}_l{lam if lam is not None else 'unknown'}"
        path, digest = export(Path(args.checkpoint), Path(args.out_dir), name, obj)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{path}\nsha256 {digest}")
    if args.update_configs:
        update_configs(path, digest)
        print("configs.py updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
