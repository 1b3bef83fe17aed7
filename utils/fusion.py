"""Fusion pipeline: two images in, one fused 8-bit image out.

encode(IR), encode(VIS) -> strategy -> decode (paper Fig. 3). Images are processed in tiles with
a halo: every output pixel depends only on inputs within ``DenseFuse.RECEPTIVE_RADIUS`` (8)
pixels plus the strategy's own radius, and reflection padding happens only at true image
borders, so tiled and untiled results are identical.

Speed (run_scripts/benchmark.py): on CPU the network is memory-bound when untiled; 192-pixel
tiles keep a tile's activations in cache, the channels-last layout lets oneDNN use its fastest
convolutions, and the two encoders run as one batch of 2. Together about 2.5x the plain eager
loop. On CUDA images are tiled only when very large.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from configs import OUTPUT_MODES
from models.densefuse import DenseFuse
from models.fusion import STRATEGIES, get_strategy, strategy_radius, takes_radius
from utils.images import load_image, rgb_to_gray, rgb_to_ycbcr, save_image, to_uint8, ycbcr_to_rgb

#: CPU tile size: the fastest measured on a 2-core Xeon (96-256 are all within 10 %).
CPU_TILE = 192
#: On GPU, images with more pixels than this are tiled: an untiled 3840x2160 pair needs
#: >10 GB of activations; 1024x1024 tiles need a few hundred MB.
AUTO_TILE_PIXELS = 1600 * 1600
AUTO_TILE_SIZE = 1024


@dataclass(frozen=True)
class FuseSettings:
    """How to fuse: everything from the command line to the pipeline, in one object.

    ``strategy`` (``models.fusion.STRATEGIES``), ``l1_radius`` (block radius of strategies that
    take one), ``output_mode`` (:data:`OUTPUT_MODES`), ``tile`` (0 = automatic, -1 = never,
    > 0 = that size), ``device`` (a resolved device name such as ``cpu`` or ``cuda:0``).
    """
    strategy: str = "add"
    l1_radius: int = 1
    output_mode: str = "minmax"
    tile: int = 0
    device: str = "cpu"

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown fusion strategy {self.strategy!r}; choose from {sorted(STRATEGIES)}")
        if self.output_mode not in OUTPUT_MODES:
            raise ValueError(f"unknown output mode {self.output_mode!r}; choose from {OUTPUT_MODES}")

    def pixels(self) -> dict:
        """The settings that decide the fused pixels (tile size and device do not: tiling is exact)."""
        return {"strategy": self.strategy, "l1_radius": self.l1_radius if takes_radius(self.strategy) else None,
                "output_mode": self.output_mode}


def prepare_model(model: DenseFuse, device: torch.device | str = "cpu") -> DenseFuse:
    """The model on ``device`` in eval mode with channels-last weights (faster convolutions)."""
    return model.to(device).eval().to(memory_format=torch.channels_last)


def fuse_tensors(model: DenseFuse, ir: torch.Tensor, vis: torch.Tensor, strategy) -> torch.Tensor:
    """(1,1,H,W) x2 -> (1,1,H,W) float, no post-processing. Both images go through the
    encoder as one batch of two, in channels-last layout."""
    x = torch.cat([ir, vis]).contiguous(memory_format=torch.channels_last)
    f = model.encode(x)
    return model.decode(strategy(f[:1], f[1:]))


def auto_tile(device: torch.device | str, pixels: int) -> int:
    """Tile size for ``tile=0``: always :data:`CPU_TILE` on CPU; on GPU only for huge images."""
    if torch.device(device).type == "cpu":
        return CPU_TILE
    return AUTO_TILE_SIZE if pixels > AUTO_TILE_PIXELS else -1


def fuse_tiled(model: DenseFuse, ir: torch.Tensor, vis: torch.Tensor, strategy,
               tile: int, halo: int) -> torch.Tensor:
    """:func:`fuse_tensors` computed tile by tile; exact when ``halo`` covers the receptive field."""
    _, _, h, w = ir.shape
    if h <= tile and w <= tile:
        return fuse_tensors(model, ir, vis, strategy)
    out = torch.empty((ir.shape[0], 1, h, w), dtype=ir.dtype, device=ir.device)
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, yb, xa, xb = max(0, y0 - halo), min(h, y1 + halo), max(0, x0 - halo), min(w, x1 + halo)
            part = fuse_tensors(model, ir[..., ya:yb, xa:xb], vis[..., ya:yb, xa:xb], strategy)
            out[..., y0:y1, x0:x1] = part[..., y0 - ya:y1 - ya, x0 - xa:x1 - xa]
    return out


def postprocess(y: np.ndarray, mode: str) -> np.ndarray:
    """Map the decoder's float output to [0, 1] for 8-bit saving.

    ``minmax``: stretch min..max to 0..1, as the official release's ``scipy.misc.imsave`` did
    (needed for ``add``, whose summed features give a brighter, out-of-range image; it also
    changes the contrast of every output). ``clip``: keep values, clip to [0, 1] (right for
    ``mean``/``l1_norm``/``max``, which stay in the input's range). A constant image under
    ``minmax`` is returned clipped.
    """
    if mode == "minmax":
        lo, hi = float(y.min()), float(y.max())
        if hi > lo:
            return ((y - lo) / (hi - lo)).astype(np.float32)
        return np.clip(y, 0.0, 1.0)
    if mode == "clip":
        return np.clip(y, 0.0, 1.0)
    raise ValueError(f"unknown output mode {mode!r}; choose from {OUTPUT_MODES}")


@torch.inference_mode()
def fuse_gray(model: DenseFuse, ir: np.ndarray, vis: np.ndarray, settings: FuseSettings = FuseSettings()) -> np.ndarray:
    """Fuse two (H,W) float32 [0,1] gray images; returns the raw (H,W) float32 decoder output.

    The model should come from :func:`prepare_model` (any model works; that one is fastest).
    """
    if ir.shape != vis.shape:
        raise ValueError(f"image sizes differ: IR {ir.shape[::-1]} vs visible {vis.shape[::-1]}")
    s = settings
    fn = get_strategy(s.strategy, s.l1_radius)
    t_ir = torch.from_numpy(np.ascontiguousarray(ir))[None, None].to(s.device)
    t_vis = torch.from_numpy(np.ascontiguousarray(vis))[None, None].to(s.device)
    tile = auto_tile(s.device, ir.size) if s.tile == 0 else s.tile
    if tile > 0:
        halo = DenseFuse.RECEPTIVE_RADIUS + strategy_radius(s.strategy, s.l1_radius)
        out = fuse_tiled(model, t_ir, t_vis, fn, tile, halo)
    else:
        out = fuse_tensors(model, t_ir, t_vis, fn)
    return out[0, 0].float().cpu().numpy()


def fuse_images(model: DenseFuse, ir: np.ndarray, vis: np.ndarray,
                settings: FuseSettings = FuseSettings()) -> np.ndarray:
    """Fuse an IR and a visible image (float32 [0,1], gray (H,W) or colour (H,W,3)) to uint8.

    A colour visible image is fused in YCbCr (BT.601 full range): its Y channel is fused with the
    IR image and its Cb/Cr are kept, giving a colour result. A colour IR image is reduced to luma.
    """
    if ir.ndim == 3:
        ir = rgb_to_gray(ir)
    if vis.ndim == 2:
        return to_uint8(postprocess(fuse_gray(model, ir, vis, settings), settings.output_mode))
    ycc = rgb_to_ycbcr(vis)
    ycc[..., 0] = postprocess(fuse_gray(model, ir, ycc[..., 0], settings), settings.output_mode)
    return to_uint8(ycbcr_to_rgb(ycc))


def fuse_pairs(model: DenseFuse, pairs, out_dir, settings: FuseSettings = FuseSettings(),
               desc: str | None = None, images=None) -> None:
    """Fuse every pair and write ``<out_dir>/<pair name>.png`` (atomically), with a progress bar
    on a terminal. ``images``: an optional callable ``pair -> (ir, vis)`` giving images already
    decoded (run_infer.py decodes each input once, for its check, and reuses it here)."""
    out_dir = Path(out_dir)
    read = images or (lambda pair: (load_image(pair.ir), load_image(pair.vis)))
    for pair in tqdm(pairs, desc=desc or out_dir.name, unit="pair", leave=desc is not None, disable=None):
        save_image(out_dir / f"{pair.name}.png", fuse_images(model, *read(pair), settings))
