"""torch.hub entry points: DenseFuse as a baseline inside your own PyTorch code.

    model = torch.hub.load("path/to/this/checkout", "densefuse", source="local", lam=100)
    fused = torch.hub.load("path/to/this/checkout", "fuse", ir, vis, source="local", strategy="l1_norm")

The weights are the files in ``weights/`` (hash-checked on load); nothing is downloaded.
"""
from __future__ import annotations

import torch

from configs import FuseConfig

dependencies = ["torch", "numpy"]


def densefuse(lam: int = 100, channels: int = 1, pretrained: bool = True):
    """The DenseFuse autoencoder (``encode``/``decode``/``forward``), in eval mode, on the CPU.

    ``lam``: the SSIM weight lambda of the shipped weights (gray: 1, 10, 100, 1000; RGB: 100).
    ``channels``: 1 for the gray network (inputs (B,1,H,W) in [0, 1]), 3 for the RGB one
    ((B,3,H,W)). ``pretrained=False`` gives an untrained network.
    """
    from configs import SHIPPED_BY_LAMBDA, SHIPPED_RGB_BY_LAMBDA
    from models.densefuse import DenseFuse
    from utils.checkpoint import load_model
    for name, value in (("lam", lam), ("channels", channels)):
        if type(value) is not int:  # True would be read as 1 (lam=True gave the lambda = 1 network)
            raise ValueError(f"{name} must be an int, got {value!r}")
    if not pretrained:
        return DenseFuse(channels=channels).eval()
    table = {1: SHIPPED_BY_LAMBDA, 3: SHIPPED_RGB_BY_LAMBDA}.get(channels)
    if table is None:
        raise ValueError(f"channels={channels}: the shipped networks are gray (1) or RGB (3)")
    if lam not in table:
        raise ValueError(f"no shipped {channels}-channel weights for lam={lam}; choose from {sorted(table)}")
    return load_model(table[lam][0])[0]


def fuse(*sources: torch.Tensor, network=None, lam: int = 100, strategy: str = FuseConfig.strategy,
         l1_radius: int = FuseConfig.l1_radius, output_mode: str | None = None) -> torch.Tensor:
    """Fuse two or more registered images: each (B,C,H,W) (or (H,W)) float in [0, 1], same shape and
    device -> the fused tensor of that shape (paper Fig. 3, untiled).

    ``network``: a :func:`densefuse` model, moved to the inputs' device; pass one when fusing
    more than once (each call without it loads and hash-checks the shipped weights of ``lam``).
    Without ``network`` the result carries no autograd graph (the weights were loaded for this
    call only; there is nothing to train); with it, gradients flow as usual when enabled (wrap
    the call in ``torch.no_grad()`` for inference). Not ``model``: that is ``torch.hub.load``'s
    own argument. ``strategy``: add, mean, l1_norm
    or max. ``output_mode``: None returns the decoder's raw output; ``"clip"`` clamps to [0, 1];
    ``"minmax"`` stretches each image to [0, 1] (as the official release did for add).
    Anything else (uint8 or 0-255 tensors, 1-D or 3-D shapes, channels the network does not take,
    images under 2x2, a negative ``l1_radius``) is a ValueError saying what is expected.
    """
    from models.fusion import apply_output_mode
    check_fuse_arguments(sources, l1_radius, output_mode)
    flat = sources[0].dim() == 2
    batch = [s[None, None] if flat else s for s in sources]
    model = network or densefuse(lam)
    channels = model.model_args()["channels"]
    if batch[0].shape[1] != channels:
        raise ValueError(f"this network fuses {channels}-channel images, (B,{channels},H,W)"
                         f"{' or (H,W)' if channels == 1 else ''}; got shape {tuple(sources[0].shape)}")
    with torch.set_grad_enabled(torch.is_grad_enabled() and network is not None):
        out = apply_output_mode(model.to(batch[0].device).fuse(batch, strategy, l1_radius), output_mode)
    return out[0, 0] if flat else out


def check_fuse_arguments(sources, l1_radius, output_mode) -> None:
    """What :func:`fuse` takes, checked as the command line checks it: a ValueError that says
    what is expected instead of an error from deep inside PyTorch (or a silently white image)."""
    if len(sources) < 2:
        raise ValueError(f"fuse needs at least 2 images, got {len(sources)}")
    if not all(isinstance(s, torch.Tensor) for s in sources):
        raise ValueError(f"fuse takes tensors, got {[type(s).__name__ for s in sources]}")
    if len({tuple(s.shape) for s in sources}) > 1:
        raise ValueError(f"image shapes differ: {[tuple(s.shape) for s in sources]}")
    shape, dtype = tuple(sources[0].shape), sources[0].dtype
    if len(shape) not in (2, 4):
        raise ValueError(f"images must be (H,W) or (B,C,H,W) tensors, got shape {shape}")
    if shape[-1] < 2 or shape[-2] < 2 or (len(shape) == 4 and shape[0] < 1):
        raise ValueError(f"images must be at least 2x2 pixels, got shape {shape}")
    if not dtype.is_floating_point:
        raise ValueError(f"images must be float tensors in [0, 1], got {dtype} (divide 8-bit images by 255)")
    if not all(bool(torch.isfinite(s).all()) for s in sources):
        raise ValueError("images hold NaN or inf values")
    lo, hi = min(float(s.min()) for s in sources), max(float(s.max()) for s in sources)
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"images must be in [0, 1], got values from {lo:g} to {hi:g}"
                         + (" (divide 0-255 images by 255)" if hi > 1 else ""))
    if type(l1_radius) is not int or not 0 <= l1_radius <= 1000:
        raise ValueError(f"l1_radius must be an int from 0 to 1000, got {l1_radius!r}")
    if output_mode not in (None, "clip", "minmax"):
        raise ValueError(f"output_mode must be None, 'clip' or 'minmax', got {output_mode!r}")
