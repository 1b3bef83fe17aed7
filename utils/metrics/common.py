"""Helpers shared by the metric modules: float64 conversion, histograms, windows, correlation."""
from __future__ import annotations

import math

import numpy as np
from scipy import signal

LEVELS = 256


class TooSmall(ValueError):
    """The images are smaller than a metric's window or scales need. The evaluator reports the
    metric as not scored on that pair, with this message as the reason, and scores the rest."""


def need_size(shape: tuple[int, ...], h: int, w: int, what: str) -> None:
    """Raise :class:`TooSmall` unless an image of ``shape`` is at least ``h`` x ``w`` (rows x columns)."""
    if shape[0] < h or shape[1] < w:
        raise TooSmall(f"{what} needs images of at least {w}x{h} pixels, got {shape[1]}x{shape[0]}")


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


def _separated(win: np.ndarray):
    """(column, row) with outer(column, row) == win for a rank-1 window of odd sides, else None."""
    if win.shape[0] % 2 == 0 or win.shape[1] % 2 == 0:
        return None
    u, s, vt = np.linalg.svd(win)
    if len(s) > 1 and s[1] > 1e-12 * s[0]:
        return None
    return u[:, 0] * math.sqrt(s[0]), vt[0] * math.sqrt(s[0])


def filter_valid(img: np.ndarray, win: np.ndarray) -> np.ndarray:
    """MATLAB filter2(win, img, 'valid') (correlation). Rank-1 windows (every Gaussian and box
    here) run as two 1-D passes: about twice as fast as an FFT at these sizes, with direct sums."""
    need_size(img.shape, *win.shape, f"a {win.shape[1]}x{win.shape[0]} window")
    sep = _separated(win)
    if sep is None:
        return signal.fftconvolve(img, win[::-1, ::-1], mode="valid")
    from scipy import ndimage
    (ry, rx), (col, row) = (win.shape[0] // 2, win.shape[1] // 2), sep
    out = ndimage.correlate1d(img, col, axis=0, mode="constant")[ry:img.shape[0] - ry]
    return ndimage.correlate1d(out, row, axis=1, mode="constant")[:, rx:img.shape[1] - rx]


def box_valid(x: np.ndarray, n: int) -> np.ndarray:
    """Mean over every n x n window (valid part only)."""
    return filter_valid(x, np.full((n, n), 1.0 / (n * n)))




def matlab_round(x: np.ndarray) -> np.ndarray:
    """MATLAB ``round``: halves away from zero (NumPy's rint rounds them to even)."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def histogram(x: np.ndarray) -> np.ndarray:
    """Probabilities of the 256 gray levels of ``x`` (rounded, clipped to 0-255)."""
    counts = np.bincount(levels(x).ravel(), minlength=LEVELS)
    return counts / counts.sum()


def joint_histogram(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """256 x 256 joint probabilities of the gray levels of ``x`` (rows) and ``y`` (columns)."""
    joint = np.bincount((levels(x) * LEVELS + levels(y)).ravel(), minlength=LEVELS * LEVELS)
    return joint.reshape(LEVELS, LEVELS) / joint.sum()


def normalize_levels(x: np.ndarray) -> np.ndarray:
    """Liu's ``normalize1`` (the reference code of Qcb, Qcv, QNCIE): min-max stretch to 0-255,
    rounded half away from zero. A constant image (0/0 in that code unless all zero) maps to 0."""
    lo, hi = float(x.min()), float(x.max())
    if hi == lo:
        return np.zeros_like(x)
    return matlab_round((x - lo) / (hi - lo) * 255.0)
