"""Helpers shared by the metric modules: float64 conversion, histograms, windows, correlation."""
from __future__ import annotations

import math

import numpy as np
from scipy import signal

LEVELS = 256


def as_f64(*imgs):
    out = [np.asarray(x, dtype=np.float64) for x in imgs]
    for x in out[1:]:
        if x.shape != out[0].shape:
            raise ValueError(f"shapes differ: {out[0].shape} vs {x.shape}")
    return out


def levels(x: np.ndarray) -> np.ndarray:
    """Integer gray levels 0..255 (rounded, clipped) for histogram-based metrics."""
    return np.clip(np.rint(x), 0, LEVELS - 1).astype(np.int64)


def entropy_of_counts(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def corr(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation (MATLAB corr2); 0 when either image is constant."""
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else 0.0


def gaussian(n: int, sigma: float) -> np.ndarray:
    """MATLAB fspecial('gaussian', n, sigma): normalised n x n Gaussian."""
    r = (n - 1) / 2.0
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    g = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    return g / g.sum()


def filter_valid(img: np.ndarray, win: np.ndarray) -> np.ndarray:
    """MATLAB filter2(win, img, 'valid') (correlation)."""
    return signal.fftconvolve(img, win[::-1, ::-1], mode="valid")


def box_valid(x: np.ndarray, n: int) -> np.ndarray:
    """Mean over every n x n window (valid part only)."""
    return filter_valid(x, np.full((n, n), 1.0 / (n * n)))


