"""Fusion strategies: pure functions on N >= 2 feature maps, each (B,64,H,W) -> (B,64,H,W).

Paper Sec. III-C, written for any number of sources (the paper fuses two; multi-focus and
multi-exposure users bring more). A strategy is called as ``fn(phi_1, ..., phi_N)`` with the
maps in source order. ``STRATEGIES`` maps the names accepted by ``--strategy`` to functions. A
strategy that reads a neighbourhood of each pixel takes it as a ``radius`` keyword (the L1-norm
block average): :func:`get_strategy` binds it and :func:`strategy_radius` widens the tile halo
by it, so the function's own signature is the one place that says so.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial, reduce
from inspect import signature

import torch
import torch.nn.functional as F

Strategy = Callable[..., torch.Tensor]


def _at_least_two(features: tuple) -> None:
    if len(features) < 2:
        raise ValueError(f"a fusion strategy needs at least 2 feature maps, got {len(features)}")


def add(*features: torch.Tensor) -> torch.Tensor:
    """Paper's addition strategy (Eq. 2): f = sum_k phi_k, a plain sum as in the official TF code.
    The decoded image is then brighter than any source, which is why the official release
    stretched its outputs (``--output_mode minmax``)."""
    _at_least_two(features)
    return reduce(torch.add, features)


def mean(*features: torch.Tensor) -> torch.Tensor:
    """sum_k phi_k / N: what most PyTorch ports call "addition"; keeps the intensity scale.
    (For N = 2 the factor is 0.5, so this is bit-for-bit (phi_1 + phi_2) / 2.)"""
    _at_least_two(features)
    return reduce(torch.add, features) * (1.0 / len(features))


def maximum(*features: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum of the feature maps."""
    _at_least_two(features)
    return reduce(torch.maximum, features)


def l1_activity(f: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Activity map of the L1-norm strategy (paper Eqs. 3-4), (B,C,H,W) -> (B,1,H,W).

    C(x,y) = sum_c |phi^c(x,y)|, then block-averaged over a (2r+1)x(2r+1) window. At image
    borders the window is cut to the pixels inside the image (mean of the valid pixels), so the
    result does not depend on any padding value; ``radius=0`` skips averaging (official code).
    """
    act = f.abs().sum(dim=1, keepdim=True)
    if radius > 0:
        act = F.avg_pool2d(act, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)
    return act


def l1_weights(*features: torch.Tensor, radius: int = 1) -> list[torch.Tensor]:
    """The weight maps of the L1-norm strategy (paper Eq. 5), one (B,1,H,W) map per source:
    w_k = C_k / sum_j C_j from :func:`l1_activity`, 1/N where every activity is 0.

    The last weight is 1 - (the others), so the weights sum to 1 exactly and for two sources
    this is the paper's w_ir, w_vis = C_ir / (C_ir + C_vis), 1 - w_ir.
    """
    _at_least_two(features)
    acts = [l1_activity(f, radius) for f in features]
    total = reduce(torch.add, acts)
    safe = total.clamp_min(torch.finfo(total.dtype).tiny)
    weights = [torch.where(total > 0, a / safe, 1.0 / len(acts)) for a in acts[:-1]]
    return [*weights, 1.0 - reduce(torch.add, weights)]


def l1_norm(*features: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Paper's L1-norm strategy (Eqs. 3-5): f = sum_k w_k phi_k with the weights of
    :func:`l1_weights`, which sum to 1 at every pixel."""
    return reduce(torch.add, (w * f for w, f in zip(l1_weights(*features, radius=radius), features, strict=True)))


STRATEGIES: dict[str, Strategy] = {
    "add": add,
    "mean": mean,
    "l1_norm": l1_norm,
    "max": maximum,
}


def takes_radius(name: str) -> bool:
    """Whether strategy ``name`` reads a (2r+1)x(2r+1) neighbourhood (has a ``radius`` parameter)."""
    return "radius" in signature(STRATEGIES[name]).parameters


def get_strategy(name: str, radius: int = 1) -> Strategy:
    """The strategy called ``name``, with the block radius bound where it takes one."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown fusion strategy {name!r}; choose from {sorted(STRATEGIES)}")
    return partial(STRATEGIES[name], radius=radius) if takes_radius(name) else STRATEGIES[name]


def apply_output_mode(y: torch.Tensor, mode: str | None) -> torch.Tensor:
    """Map decoded images to [0, 1], each image of the batch ``y`` (B, ...) on its own.

    ``minmax``: stretch each image's min..max to 0..1, as the official release's
    ``scipy.misc.imsave`` did (needed for ``add``, whose summed features give a brighter,
    out-of-range image; it also changes the contrast of every output); a constant image is
    clipped instead. ``clip``: keep values, clip to [0, 1] (right for ``mean``/``l1_norm``/``max``,
    which stay in the sources' range). ``None``: the raw output. float32 arithmetic as numpy's,
    so the 8-bit images are those of the official stretch.
    """
    if mode is None:
        return y
    if mode == "clip":
        return y.clamp(0.0, 1.0)
    if mode != "minmax":
        raise ValueError(f"unknown output mode {mode!r}; choose from minmax, clip")
    dims = tuple(range(1, y.dim()))
    lo, hi = y.amin(dims, keepdim=True), y.amax(dims, keepdim=True)
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))  # no 0/0 where an image is constant
    return torch.where(hi > lo, (y - lo) / span, y.clamp(0.0, 1.0))


def strategy_radius(name: str, radius: int = 1) -> int:
    """How many pixels of neighbourhood a strategy reads (for exact tiling)."""
    return radius if takes_radius(name) else 0
