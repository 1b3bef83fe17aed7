"""Statistics of the fused image F alone: EN, SD, SF, AG, EI (gray levels 0-255)."""
from __future__ import annotations

import math

import numpy as np

from utils.metrics.common import LEVELS, as_f64, entropy_of_counts, levels


def entropy(f: np.ndarray) -> float:
    """EN: entropy of F, 256-bin histogram of gray levels 0-255, bits (log2); range [0, 8].

    EN: Shannon entropy of the 256-bin gray-level histogram of F, in bits (log2).
    Range [0, 8]; 0 for a constant image, 1 for a two-level 50/50 image."""
    (f,) = as_f64(f)
    return entropy_of_counts(np.bincount(levels(f).ravel(), minlength=LEVELS))


def standard_deviation(f: np.ndarray) -> float:
    """SD: population standard deviation of F (divide by H*W), gray levels 0-255.

    SD: population standard deviation (divide by H*W) of F on 0-255."""
    (f,) = as_f64(f)
    return float(np.std(f, ddof=0))


def spatial_frequency(f: np.ndarray) -> float:
    """SF: sqrt(RF^2+CF^2), sums of squared first differences / (H*W), gray levels 0-255.

    SF = sqrt(RF^2 + CF^2), RF^2 = sum of squared horizontal first differences / (H*W),
    CF^2 likewise vertical (the toolbox divides by H*W, not by the number of differences)."""
    (f,) = as_f64(f)
    n = f.size
    rf2 = np.sum(np.diff(f, axis=1) ** 2) / n
    cf2 = np.sum(np.diff(f, axis=0) ** 2) / n
    return float(math.sqrt(rf2 + cf2))


def average_gradient(f: np.ndarray) -> float:
    """AG: sum of sqrt((Fx^2+Fy^2)/2) / ((H-1)(W-1)), Fx, Fy from MATLAB's gradient, 0-255.

    AG = sum over all pixels of sqrt((Fx^2 + Fy^2) / 2) / ((H-1)(W-1)), with Fx, Fy from
    MATLAB's ``gradient`` (central differences inside, one-sided at the borders; np.gradient)."""
    (f,) = as_f64(f)
    gy, gx = np.gradient(f)
    h, w = f.shape
    return float(np.sum(np.sqrt((gx ** 2 + gy ** 2) / 2.0)) / ((h - 1) * (w - 1)))



def edge_intensity(f: np.ndarray) -> float:
    """EI: mean Sobel gradient magnitude of F, 3x3 Sobel, replicated borders, gray levels 0-255.

    Edge intensity as VIFB computes it: sqrt(gx^2 + gy^2) of MATLAB's ``fspecial('sobel')`` and
    its transpose (``imfilter`` with 'replicate'), averaged over every pixel. 0 for a constant
    image; a vertical step of height d gives 4d on the two columns beside it. (IVIF_ZOO pads with
    zeros, which adds spurious edges along the image border.)"""
    from scipy import ndimage
    (f,) = as_f64(f)
    return float(np.mean(np.hypot(ndimage.sobel(f, 0, mode="nearest"), ndimage.sobel(f, 1, mode="nearest"))))
