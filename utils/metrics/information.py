"""Information measures: MI of gray levels; feature MI (FMI, the densefuse profile)."""
from __future__ import annotations

import numpy as np
from scipy import fft

from utils.metrics.common import LEVELS, as_f64, entropy_of_counts, levels


def mutual_information_pair(x: np.ndarray, f: np.ndarray) -> float:
    """MI(X, F) in bits from the 256x256 joint histogram of gray levels: H(X) + H(F) - H(X, F)."""
    x, f = as_f64(x, f)
    joint = np.bincount((levels(x) * LEVELS + levels(f)).ravel(), minlength=LEVELS * LEVELS)
    joint = joint.reshape(LEVELS, LEVELS)
    return (entropy_of_counts(joint.sum(1)) + entropy_of_counts(joint.sum(0))
            - entropy_of_counts(joint.ravel()))


def mutual_information(a, b, f) -> float:
    """MI: MI(A,F)+MI(B,F), 256x256 joint histogram of levels 0-255, bits; range [0, 16].

    MI = MI(A,F) + MI(B,F), bits (log2), 256-bin histograms. Range [0, 16]."""
    return mutual_information_pair(a, f) + mutual_information_pair(b, f)


# Feature mutual information (Haghighat et al. 2011; the "fast FMI" of Haghighat & Razian 2014)

def _windows_colmajor(x: np.ndarray, w: int) -> np.ndarray:
    """All w x w windows as rows of length w*w, each in MATLAB column-major order."""
    v = np.lib.stride_tricks.sliding_window_view(x, (w, w))
    return np.ascontiguousarray(v.swapaxes(-1, -2)).reshape(-1, w * w)


def _fmi_windows(a: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Normalised feature MI of each pair of windows (rows), vectorised from ``fmi.m``."""
    out = np.ones(len(a))
    same = np.all(a == f, axis=1)
    a, f = a[~same], f[~same]
    if not len(a):
        return out

    def pdf(x):
        lo, hi = x.min(1, keepdims=True), x.max(1, keepdims=True)
        x = np.where(hi == lo, 1.0, (x - lo) / np.where(hi == lo, 1, hi - lo))
        return x / x.sum(1, keepdims=True)

    pa, pf = pdf(a), pdf(f)
    ca, cf = np.cumsum(pa, 1), np.cumsum(pf, 1)
    bins = a.shape[1]
    ta, tf = pa - pa.mean(1, keepdims=True), pf - pf.mean(1, keepdims=True)
    num = (ta * tf).sum(1)
    den = np.sqrt((ta * ta).sum(1) * (tf * tf).sum(1))
    c = np.where(num == 0, 0.0, num / np.where(den == 0, 1, den))
    idx = np.arange(1, bins + 1)
    sd_a = np.sqrt(np.maximum((idx ** 2 * pa).sum(1) - (idx * pa).sum(1) ** 2, 0))
    sd_f = np.sqrt(np.maximum((idx ** 2 * pf).sum(1) - (idx * pf).sum(1) ** 2, 0))
    outer = cf[:, :, None] * ca[:, None, :]                     # F_i * A_j
    upper = np.minimum(cf[:, :, None], ca[:, None, :])          # Frechet upper bound
    lower = np.maximum(cf[:, :, None] + ca[:, None, :] - 1, 0)  # Frechet lower bound
    pos = c >= 0
    bound = np.where(pos[:, None, None], upper, lower)
    cov = (bound - outer).sum((1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = cov / (sd_f * sd_a)
        mix = np.where(pos & ((c == 0) | (sd_a == 0) | (sd_f == 0)), 0.0,
                       np.where(~pos & ((sd_a == 0) | (sd_f == 0)), 0.0, c / corr))
    # Joint pdf = mix * (2-D differences of the bound copula) + (1 - mix) * independent.
    d = np.diff(np.pad(bound, ((0, 0), (1, 0), (1, 0))), axis=1)
    d = np.diff(d, axis=2)
    jpdf = mix[:, None, None] * d + (1 - mix[:, None, None]) * pf[:, :, None] * pa[:, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        # MATLAB's real(-p*log2(p)) for p < 0 is -p*log2|p|
        jterms = np.where(jpdf != 0, -jpdf * np.log2(np.abs(jpdf)), 0.0)
        h_joint = jterms.sum((1, 2))
        h_a = np.where(pa > 0, -pa * np.log2(np.where(pa > 0, pa, 1)), 0).sum(1)
        h_f = np.where(pf > 0, -pf * np.log2(np.where(pf > 0, pf, 1)), 0).sum(1)
    mi = h_a + h_f - h_joint
    out[~same] = np.where(mi == 0, 0.0, 2 * mi / (h_a + h_f))
    return out


def _features(x: np.ndarray, feature: str) -> np.ndarray:
    if feature == "none":
        return x
    if feature == "dct":
        return fft.dctn(x, type=2, norm="ortho")  # MATLAB dct2
    if feature == "wavelet":
        import pywt
        ca, (ch, cv, cd) = pywt.dwt2(x, "dmey", mode="symmetric")  # MATLAB dwt2 default 'sym'
        m = np.block([[ca, ch], [cv, cd]])
        lo, hi = m.min(), m.max()
        return np.ones_like(m) if hi == lo else (m - lo) / (hi - lo)
    raise ValueError(f"unknown FMI feature {feature!r}")


def fmi(a, b, f, feature: str = "wavelet", w: int = 3, chunk: int = 2000) -> float:
    """Feature mutual information (Haghighat, Aghagolzadeh & Seyedarabi 2011), fast version
    of ``fmi.m``: features (``wavelet``: single-level ``dmey`` DWT [cA cH; cV cD] rescaled to
    [0,1]; ``dct``: whole-image orthonormal DCT-II; ``none``), then for every w x w window
    (w = 3, column-major order) the normalised MI 2 I / (H_A + H_F) of the window PDFs with a
    Nelsen-copula joint PDF; the map of (FMI_AF + FMI_BF)/2 is averaged. Range [0, 1].
    Windows are processed ``chunk`` at a time: ~2000 keeps the (chunk, 9, 9) temporaries in
    cache (about twice as fast as 20000).
    PyWavelets' ``dmey`` has 62 taps where MATLAB's is zero-padded to 102: values near image
    borders differ slightly from MATLAB's."""
    a, b, f = as_f64(a, b, f)
    fa, fb, ff = (_windows_colmajor(_features(x, feature), w) for x in (a, b, f))
    total = 0.0
    for i in range(0, len(ff), chunk):
        s = slice(i, i + chunk)
        total += float(np.sum(_fmi_windows(fa[s], ff[s]) + _fmi_windows(fb[s], ff[s])) / 2)
    return total / len(ff)

