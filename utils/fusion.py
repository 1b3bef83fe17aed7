"""Fusion pipeline: two images in, one fused 8-bit image out.

encode(IR), encode(VIS) -> strategy -> decode (paper Fig. 3). Images are processed in tiles with
a halo: every output pixel depends only on inputs within ``configs.RECEPTIVE_RADIUS`` (8)
pixels plus the strategy's own radius, and reflection padding happens only at true image
borders, so tiled and untiled results are identical.

Speed (run_scripts/benchmark.py): on CPU the network is memory-bound when untiled; 192-pixel
tiles keep a tile's activations in cache, the channels-last layout lets oneDNN use its fastest
convolutions, and the two encoders run as one batch of 2. Together about 2.5x the plain eager
loop. On CUDA images are tiled only when very large.

Everything here works on numpy float32 arrays and imports no torch: the network is a call
``(N,C,h,w) array -> (1,C,h,w) array`` with a ``halo`` and ``channels``, :class:`TorchNetwork`
(which imports torch when built) or ``utils.onnx_backend.OnnxNetwork`` (which never does).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from configs import OUTPUT_MODES, RADIUS_STRATEGIES, RECEPTIVE_RADIUS, STRATEGY_NAMES, FuseConfig
from utils.images import as_rgb, load_image, rgb_to_ycbcr, save_image, to_uint8, ycbcr_to_rgb
from utils.log import progress_bar

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
    strategy: str = FuseConfig.strategy  # the defaults are the command line's (configs.FuseConfig)
    l1_radius: int = FuseConfig.l1_radius
    output_mode: str = FuseConfig.output_mode
    tile: int = FuseConfig.tile
    device: str = "cpu"

    def __post_init__(self):
        if self.strategy not in STRATEGY_NAMES:
            raise ValueError(f"unknown fusion strategy {self.strategy!r}; choose from {sorted(STRATEGY_NAMES)}")
        if self.output_mode not in OUTPUT_MODES:
            raise ValueError(f"unknown output mode {self.output_mode!r}; choose from {OUTPUT_MODES}")

    def pixels(self) -> dict:
        """The settings that decide the fused pixels (tile size and device do not: tiling is exact)."""
        return {"strategy": self.strategy, "l1_radius": self.l1_radius if self.strategy in RADIUS_STRATEGIES else None,
                "output_mode": self.output_mode}


def prepare_model(model, device="cpu"):
    """The DenseFuse ``model`` on ``device`` in eval mode with channels-last weights (faster
    convolutions)."""
    import torch
    return model.to(device).eval().to(memory_format=torch.channels_last)


class TorchNetwork:
    """The network call of the PyTorch path: N source tiles (N,C,h,w) float32 array -> fused
    tile (1,C,h,w) float32 array, on the model's device.

    All sources go through the encoder as one batch, in channels-last layout; the strategy gets
    the N feature maps in source order. ``halo``: how far an output pixel sees (for exact tiling).
    The onnxruntime path (``utils.onnx_backend.OnnxNetwork``) offers the same call, so everything
    else in this module serves both.
    """

    def __init__(self, model, strategy: str = "add", radius: int = 1):
        from models.fusion import get_strategy, strategy_radius
        self.model, self.fn = model, get_strategy(strategy, radius)
        self.halo = RECEPTIVE_RADIUS + strategy_radius(strategy, radius)
        self.channels = model.model_args()["channels"]
        self.device = next(model.parameters()).device

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch
        with torch.inference_mode():
            t = torch.from_numpy(x).to(self.device).contiguous(memory_format=torch.channels_last)
            return self.model.fuse(t, self.fn).float().cpu().numpy()


def is_network(model) -> bool:
    """Whether ``model`` is a network call already (a ``halo``), not a DenseFuse to wrap."""
    return hasattr(model, "halo")


def network_for(model, settings: FuseSettings):
    """A network call for ``settings``: a DenseFuse model is wrapped in :class:`TorchNetwork`;
    a network call (an ``OnnxNetwork``) is returned as it is."""
    return model if is_network(model) else TorchNetwork(model, settings.strategy, settings.l1_radius)


def channels_of(model) -> int:
    """Input (= output) channels of a DenseFuse model or a network call: 1 gray, 3 RGB."""
    return model.channels if is_network(model) else model.model_args()["channels"]


def auto_tile(device: str, pixels: int, net=None) -> int:
    """Tile size for ``tile=0``: the network's own ``auto_tile`` when it has one (``OnnxNetwork``);
    else :data:`CPU_TILE` on CPU and, on GPU, tiles only for huge images."""
    if own := getattr(net, "auto_tile", None):
        return own
    if str(device).startswith("cpu"):
        return CPU_TILE
    return AUTO_TILE_SIZE if pixels > AUTO_TILE_PIXELS else -1


def fuse_tiled(net, x: np.ndarray, tile: int) -> np.ndarray:
    """``net(x)`` for a (N,C,H,W) stack of sources, computed tile by tile; exact because each
    tile carries a halo of ``net.halo`` pixels (reflection padding only at true image borders)."""
    h, w = x.shape[-2:]
    if h <= tile and w <= tile:
        return net(x)
    out = None
    halo = net.halo
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, yb, xa, xb = max(0, y0 - halo), min(h, y1 + halo), max(0, x0 - halo), min(w, x1 + halo)
            part = net(x[..., ya:yb, xa:xb])
            if out is None:
                out = np.empty((1, part.shape[1], h, w), dtype=np.float32)
            out[..., y0:y1, x0:x1] = part[..., y0 - ya:y1 - ya, x0 - xa:x1 - xa]
    return out


def postprocess(y: np.ndarray, mode: str, limits: tuple[float, float] | None = None) -> np.ndarray:
    """Map one decoded float32 image, (H,W) or (H,W,3), to [0, 1] for 8-bit saving: the output
    mode (``minmax`` or ``clip``) of :func:`models.fusion.apply_output_mode`, which does it for
    batches of tensors; here in numpy, for the torch-free path. The same float32 operations, so
    the same bits (a test compares them). ``limits`` ``(lo, hi)``: stretch by these instead of the
    image's own extremes, then clip (the sequence mode of ``utils.sequences``: one stretch for
    every frame of a video, so frames do not flicker)."""
    y = np.asarray(y, np.float32)
    if mode not in OUTPUT_MODES:
        raise ValueError(f"unknown output mode {mode!r}; choose from {OUTPUT_MODES}")
    if limits is not None:
        lo, hi = np.float32(limits[0]), np.float32(limits[1])
        return np.clip((y - lo) / (hi - lo), np.float32(0), np.float32(1)) if hi > lo else np.clip(y, 0, 1)
    lo, hi = y.min(), y.max()
    if mode == "minmax" and hi > lo:
        return (y - lo) / (hi - lo)
    return np.clip(y, np.float32(0), np.float32(1))  # clip, and minmax of a constant image


def fuse_sources(model, sources: list[np.ndarray], settings: FuseSettings = FuseSettings()) -> np.ndarray:
    """Fuse N >= 2 registered float32 [0,1] images, in order, through the network as they are:
    (H,W) gray images for a gray network, (H,W,3) RGB ones for an RGB network. Returns the raw
    float32 decoder output, (H,W) or (H,W,3). ``model``: a DenseFuse (best from
    :func:`prepare_model`) or a network call such as ``OnnxNetwork``."""
    if len(sources) < 2:
        raise ValueError(f"fusion needs at least 2 images, got {len(sources)}")
    if len({im.shape for im in sources}) > 1:
        raise ValueError(f"image sizes differ: {', '.join(str(im.shape[1::-1]) for im in sources)}")
    s = settings
    net = network_for(model, s)
    c = sources[0].shape[2] if sources[0].ndim == 3 else 1
    if c != net.channels:
        raise ValueError(f"a {net.channels}-channel network cannot fuse {c}-channel images")
    stack = np.stack(sources)
    x = stack[:, None] if c == 1 else np.ascontiguousarray(stack.transpose(0, 3, 1, 2))
    tile = auto_tile(s.device, sources[0].shape[0] * sources[0].shape[1], net) if s.tile == 0 else s.tile
    out = (fuse_tiled(net, x, tile) if tile > 0 else net(x))[0]
    check_output(out, sources)
    return out[0] if c == 1 else out.transpose(1, 2, 0)


class FusionError(ValueError):
    """The network gave an output no image can be made of (the weights overflow)."""


def check_output(out: np.ndarray, sources: list[np.ndarray]) -> None:
    """Refuse a decoder output that is not finite, or constant for sources that are not: weights
    that overflow would otherwise give an all-black (or all-white) image and exit 0."""
    if not np.isfinite(out).all():
        raise FusionError(f"the network's output is not finite ({int((~np.isfinite(out)).sum())} NaN/inf values): "
                          f"the weights overflow")
    if out.min() == out.max() and any(im.min() != im.max() for im in sources):
        raise FusionError(f"the network's output is constant ({float(out.min()):g}) for images that are not: "
                          f"the weights are broken or overflow")


def fuse_chroma(chroma: list[np.ndarray]) -> np.ndarray:
    """Fuse the Cb (or Cr) planes of N colour sources, [0,1] with 0.5 neutral: the weighted mean
    with weights |C - 0.5|, equal weights where every source is neutral. The rule of exposure and
    multi-focus fusion since DeepFuse (K. R. Prabhakar et al., ICCV 2017, Eq. 5: |C - 128| on
    0-255): the most saturated source's colour dominates, and a gray source (0.5) adds none."""
    c = np.stack(chroma).astype(np.float64)
    w = np.abs(c - 0.5)
    total = w.sum(0)
    mean = c.mean(0)
    fused = np.divide((w * c).sum(0), total, out=mean, where=total > 0)
    return fused.astype(np.float32)


def fuse_gray(model, ir: np.ndarray, vis: np.ndarray, settings: FuseSettings = FuseSettings()) -> np.ndarray:
    """Fuse two (H,W) float32 [0,1] gray images (:func:`fuse_sources` of ``[ir, vis]``)."""
    if ir.shape != vis.shape:
        raise ValueError(f"image sizes differ: IR {ir.shape[::-1]} vs visible {vis.shape[::-1]}")
    return fuse_sources(model, [ir, vis], settings)


def fuse_images(model, *sources: np.ndarray, settings: FuseSettings = FuseSettings()) -> np.ndarray:
    """Fuse N >= 2 images (float32 [0,1], gray (H,W) or colour (H,W,3); IR and visible, or any
    registered set) to uint8, (H,W) or (H,W,3).

    An RGB network fuses RGB directly (gray sources replicated to three channels). A gray network
    fuses luma and the colour comes from the sources, in YCbCr (BT.601 full range): none colour,
    a gray output; exactly one colour (the infrared/visible case), its Cb/Cr are kept; two or
    more, Cb and Cr are fused by :func:`fuse_chroma`.
    """
    return finish_image(*fuse_decoded(model, *sources, settings=settings), settings.output_mode)


def fuse_decoded(model, *sources: np.ndarray, settings: FuseSettings = FuseSettings()):
    """The two halves of :func:`fuse_images` before the output mode: the network's raw float32
    output (the luma plane for a gray network and colour sources) and the YCbCr image (with
    fused chroma) it goes into, or None when the output is the network's own (gray or RGB)."""
    colour = [im.ndim == 3 for im in sources]
    if channels_of(model) == 3:
        return fuse_sources(model, [as_rgb(im) for im in sources], settings), None
    if not any(colour):
        return fuse_sources(model, list(sources), settings), None
    ycc = [rgb_to_ycbcr(im) if c else None for im, c in zip(sources, colour, strict=True)]
    luma = [y[..., 0] if y is not None else im for y, im in zip(ycc, sources, strict=True)]
    out = next(y for y in ycc if y is not None).copy()
    if sum(colour) > 1:
        neutral = np.full(sources[0].shape[:2], 0.5, np.float32)  # a gray source's Cb and Cr
        for k in (1, 2):
            out[..., k] = fuse_chroma([y[..., k] if y is not None else neutral for y in ycc])
    return fuse_sources(model, luma, settings), out


def finish_image(raw: np.ndarray, ycc: np.ndarray | None, mode: str,
                 limits: tuple[float, float] | None = None) -> np.ndarray:
    """:func:`fuse_decoded`'s output as a uint8 image: the output mode (or fixed ``limits``,
    :func:`postprocess`) applied to ``raw``, put into ``ycc``'s luma when there is one."""
    if ycc is None:
        return to_uint8(postprocess(raw, mode, limits))
    ycc = ycc.copy()
    ycc[..., 0] = postprocess(raw, mode, limits)
    return to_uint8(ycbcr_to_rgb(ycc))


def fuse_pairs(model, pairs, out_dir, settings: FuseSettings = FuseSettings(),
               desc: str | None = None, images=None, progress: bool = True) -> None:
    """Fuse every pair and write ``<out_dir>/<pair name>.png`` (atomically), with a progress bar
    on a terminal (if ``progress``). ``images``: an optional callable ``pair -> (its sources)`` giving
    images already decoded (run_infer.py decodes each input once, for its check, and reuses it)."""
    out_dir = Path(out_dir)
    read = images or (lambda pair: tuple(load_image(f) for f in pair.sources))
    for pair in progress_bar(pairs, desc=desc or out_dir.name, unit="pair", leave=desc is not None,
                             disable=None if progress else True):
        try:
            fused = fuse_images(model, *read(pair), settings=settings)
        except FusionError as e:
            raise FusionError(f"pair {pair.name} ({' + '.join(map(str, pair.sources))}): {e}") from None
        try:
            save_image(out_dir / f"{pair.name}.png", fused)
        except OSError as e:  # a full disk: the atomic write left no partial file, nor lost an old one
            raise FusionError(f"cannot write {out_dir / f'{pair.name}.png'}: {e.strerror or e}") from None
