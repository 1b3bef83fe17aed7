"""Fusion strategies: pure functions on two (B,64,H,W) feature maps -> (B,64,H,W).

Paper Sec. III-C. ``STRATEGIES`` maps the names accepted by ``--strategy`` to functions. A
strategy that reads a neighbourhood of each pixel takes it as a ``radius`` keyword (the L1-norm
block average): :func:`get_strategy` binds it and :func:`strategy_radius` widens the tile halo
by it, so the function's own signature is the one place that says so.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from inspect import signature

import torch
import torch.nn.functional as F

Strategy = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def add(f_ir: torch.Tensor, f_vis: torch.Tensor) -> torch.Tensor:
    """Paper's addition strategy (Eq. 2): f = phi_ir + phi_vis, a plain sum as in the
    official TF code. The decoded image is then brighter than either source, which is why the
    official release stretched its outputs (``--output_mode minmax``)."""
    return f_ir + f_vis


def mean(f_ir: torch.Tensor, f_vis: torch.Tensor) -> torch.Tensor:
    """(phi_ir + phi_vis) / 2: what most PyTorch ports call "addition"; keeps the intensity scale."""
    return (f_ir + f_vis) * 0.5


def maximum(f_ir: torch.Tensor, f_vis: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum of the two feature maps."""
    return torch.maximum(f_ir, f_vis)


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


def l1_weights(f_ir: torch.Tensor, f_vis: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """The IR weight map of the L1-norm strategy (paper Eq. 5), (B,1,H,W): w_ir = C_ir / (C_ir + C_vis)
    from :func:`l1_activity`, 0.5 where both activities are 0; the visible weight is 1 - w_ir."""
    a_ir, a_vis = l1_activity(f_ir, radius), l1_activity(f_vis, radius)
    total = a_ir + a_vis
    return torch.where(total > 0, a_ir / total.clamp_min(torch.finfo(total.dtype).tiny), 0.5)


def l1_norm(f_ir: torch.Tensor, f_vis: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Paper's L1-norm strategy (Eqs. 3-5): f = w_ir phi_ir + w_vis phi_vis with the weights of
    :func:`l1_weights`, which sum to 1 at every pixel."""
    w_ir = l1_weights(f_ir, f_vis, radius)
    return w_ir * f_ir + (1.0 - w_ir) * f_vis


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


def strategy_radius(name: str, radius: int = 1) -> int:
    """How many pixels of neighbourhood a strategy reads (for exact tiling)."""
    return radius if takes_radius(name) else 0
