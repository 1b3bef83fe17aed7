"""Validation during training: reconstructions of a few fixed IR/visible pairs (loss and PSNR
on 8-bit levels) and one fused image, logged to TensorBoard each epoch."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def load_validation(val_path: str | None, max_pairs: int = 2, gray: bool = True):
    """A few fixed (IR, VIS) pairs for validation, gray or RGB (gray files replicated); [] if the
    folder is absent."""
    from utils.images import ImageReadError, as_rgb, load_image
    from utils.pairs import PairError, find_pairs
    if not val_path or not Path(val_path).is_dir():
        return []
    try:
        _, pairs = find_pairs(val_path)
        images = [(load_image(p.ir, gray=gray), load_image(p.vis, gray=gray)) for p in pairs[:max_pairs]]
        if gray:
            return images
        return [tuple(as_rgb(im) for im in pair) for pair in images]
    except (PairError, ImageReadError) as e:
        from utils.log import log
        log.warning(f"no validation images ({e})")
        return []


def to_levels(x: torch.Tensor) -> torch.Tensor:
    """[0,1] -> 8-bit levels as the files would store them (for PSNR on 0-255)."""
    return torch.floor(x.clamp(0, 1) * 255.0 + 0.5)


@torch.no_grad()
def validate(model, criterion, pairs, device, writer, epoch) -> tuple[float, float] | None:
    """(mean loss, mean PSNR on 0-255) of the validation reconstructions; logs images."""
    from utils.fusion import FuseSettings, fuse_images
    from utils.images import to_uint8
    if not pairs:
        return None
    model.eval()
    losses, psnrs, tiles = [], [], []
    for ir, vis in pairs:
        for img in (ir, vis):
            x = torch.from_numpy(img[None] if img.ndim == 2 else img.transpose(2, 0, 1).copy())[None].to(device)
            y = model(x)
            losses.append(float(criterion(y, x)[0]))
            mse = float(torch.mean((to_levels(y) - to_levels(x)) ** 2))
            psnrs.append(10 * math.log10(255.0 ** 2 / max(mse, 1e-12)))
            out = y[0].clamp(0, 1).cpu().numpy()
            tiles.append(np.concatenate([img, out[0] if img.ndim == 2 else out.transpose(1, 2, 0)], axis=1))
    formats = "HW" if tiles[0].ndim == 2 else "HWC"  # colour images in colour
    for i, t in enumerate(tiles):
        writer.add_image(f"reconstruction/{i}", to_uint8(t), epoch, dataformats=formats)
    fused = fuse_images(model, *pairs[0], settings=FuseSettings("add", output_mode="minmax", device=str(device)))
    writer.add_image("fused/add_minmax", fused, epoch, dataformats="HW" if fused.ndim == 2 else "HWC")
    writer.add_scalar("val/psnr", float(np.mean(psnrs)), epoch)
    writer.add_scalar("val/loss", float(np.mean(losses)), epoch)
    model.train()
    return float(np.mean(losses)), float(np.mean(psnrs))
