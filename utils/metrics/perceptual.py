"""Human-perception measures with a contrast sensitivity function (CSF): Qcb (Chen & Blum) and
Qcv (Chen & Varshney), as Zheng Liu's reference MATLAB code (``metricChenBlum.m``,
``metricChen.m``; the code VIFB ships) computes them.

Both filter in the frequency domain the way that code does: ``fftshift(fft2(x)) .* S`` with S on
MATLAB's ``freqspace`` grid, then ``ifft2(ifftshift(...))``. For an even side the grid is not
symmetric about zero, so the filtered image is complex; the code keeps it complex, and so do we
(Qcb takes the modulus of the complex contrast, Qcv the real part of its result).
"""
from __future__ import annotations

import functools

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage

from utils.metrics.common import as_f64, normalize_levels

QCB = {"f0": 15.3870, "f1": 1.3456, "a": 0.7622, "k": 1.0, "h": 1.0, "p": 3.0, "q": 2.0, "Z": 1e-4,
       "cut": 30.0, "sigma1": 2.0, "sigma2": 4.0}
QCV = {"window": 16, "alpha": 5.0, "cut": 8.0}
SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)


def _radius(shape: tuple[int, int], cut: float) -> np.ndarray:
    """|(u, v)| on MATLAB's ``freqspace(shape, 'meshgrid')`` grid, u scaled by W/cut, v by H/cut."""
    h, w = shape
    u = (np.arange(w) - w // 2) * (2.0 / w) * (w / cut)
    v = (np.arange(h) - h // 2) * (2.0 / h) * (h / cut)
    return np.hypot(u[None, :], v[:, None])


def _csf_filter(x: np.ndarray, response: np.ndarray) -> np.ndarray:
    """ifft2(ifftshift(fftshift(fft2(x)) .* response)), complex as in MATLAB (the two shifts
    cancel into ifftshift of the response)."""
    return sp_fft.ifft2(sp_fft.fft2(x) * np.fft.ifftshift(response))


def _gaussian31(sigma: float) -> np.ndarray:
    """Liu's ``gaussian2d``: 31x31 samples of the 2-D Gaussian density (not renormalised)."""
    y, x = np.mgrid[-15:16, -15:16]
    return np.exp(-(x * x + y * y) / (2 * sigma * sigma)) / (2 * np.pi * sigma * sigma)


@functools.lru_cache(maxsize=8)
def _gaussian31_spectrum(sigma: float, size: tuple[int, int]) -> np.ndarray:
    """FFT of :func:`_gaussian31` zero-padded to ``size``: the same for the three images of a pair."""
    return sp_fft.fft2(_gaussian31(sigma), size)


def _contrast_response(x: np.ndarray, p=QCB) -> np.ndarray:
    """Masked local band-limited contrast k|C|^p / (h|C|^q + Z), C = (G1*x)/(G2*x) - 1, the two
    filter2 'same' (zero borders) from one FFT of x."""
    h, w = x.shape
    size = (sp_fft.next_fast_len(h + 30), sp_fft.next_fast_len(w + 30))
    spectrum = sp_fft.fft2(x, size)

    def same(sigma):
        full = sp_fft.ifft2(spectrum * _gaussian31_spectrum(sigma, size))
        return full[15:15 + h, 15:15 + w]

    g1, g2 = same(p["sigma1"]), same(p["sigma2"])
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.abs(np.where(g2 == 0, 0, g1 / np.where(g2 == 0, 1, g2)) - np.where(g2 == 0, 0, 1))
    return p["k"] * c ** p["p"] / (p["h"] * c ** p["q"] + p["Z"])


def _ratio(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """min/max of two non-negative maps, 1 where both are 0 (the code's 0/0)."""
    hi = np.maximum(x, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(hi == 0, 1.0, np.minimum(x, y) / np.where(hi == 0, 1, hi))


def qcb(a, b, f) -> float:
    """Qcb: Chen-Blum as Liu's code: levels stretched to 0-255, DoG CSF (f0 15.387, f1 1.3456,
    a 0.7622, grid x side/30), contrast of 31x31 Gaussians sigma 2/4, p 3, q 2, Z 1e-4; map mean, [0, 1].

    Chen & Blum, "A new automated quality assessment algorithm for image fusion", IVC 27 (2009).
    Each image is stretched to 0-255 and rounded (``normalize1``), filtered with the DoG contrast
    sensitivity function S(r) = exp(-(r/f0)^2) - a exp(-(r/f1)^2) on the freqspace grid scaled by
    side/30, then local contrast C = (G_2 * I)/(G_4 * I) - 1 with unnormalised 31x31 Gaussians
    (sigma 2 and 4, zero borders) and the masked response C' = |C|^3 / (|C|^2 + 1e-4). The map
    lambda_A Q_AF + lambda_B Q_BF (Q = min/max of the responses, lambda = C'^2 share) is averaged.
    Scale-free. Where the code divides 0/0 (flat regions, constant images) Q = 1 and the lambdas
    are 1/2 here; the MATLAB code returns NaN there."""
    a, b, f = as_f64(a, b, f)
    r = _radius(f.shape, QCB["cut"])
    s = np.exp(-(r / QCB["f0"]) ** 2) - QCB["a"] * np.exp(-(r / QCB["f1"]) ** 2)
    ca, cb, cf = (_contrast_response(_csf_filter(normalize_levels(x), s)) for x in (a, b, f))
    qa, qb = _ratio(ca, cf), _ratio(cb, cf)
    wa, wb = ca * ca, cb * cb
    tot = wa + wb
    with np.errstate(divide="ignore", invalid="ignore"):
        la = np.where(tot == 0, 0.5, wa / np.where(tot == 0, 1, tot))
    return float(np.mean(la * qa + (1 - la) * qb))


def _mannos_sakrison(shape: tuple[int, int]) -> np.ndarray:
    r = _radius(shape, QCV["cut"])
    return 2.6 * (0.0192 + 0.144 * r) * np.exp(-(0.144 * r) ** 1.1)


def _block_sums(x: np.ndarray, n: int) -> np.ndarray:
    """Sum over each n x n block, the image zero-padded to whole blocks (MATLAB ``blkproc``)."""
    h, w = x.shape
    pad = np.pad(x, ((0, -h % n), (0, -w % n)))
    return pad.reshape(pad.shape[0] // n, n, pad.shape[1] // n, n).sum(axis=(1, 3))


def qcv(a, b, f) -> float:
    """Qcv: Chen-Varshney as Liu's code: levels stretched to 0-255, 16x16 blocks, saliency sum of
    Sobel |g|^5, Mannos-Sakrison CSF (grid x side/8), block mean of D^2; lower is better, >= 0.

    Chen & Varshney, "A human perception inspired quality metric for image fusion based on
    regional information", Information Fusion 8 (2007). Images stretched to 0-255 and rounded;
    per 16x16 block (edge blocks zero-padded, as ``blkproc``) the saliency lambda = sum of the
    Sobel magnitude (zero borders) to the power alpha = 5 and the distortion D = mean over the
    256 padded pixels of (CSF-filtered (source - F))^2 (complex square, as the code); Qcv =
    sum(lambda_A D_A + lambda_B D_B) / sum(lambda_A + lambda_B), real part. 0 iff F equals both
    sources' content; no upper bound. Sources without any edge: equal weights instead of 0/0."""
    a, b, f = as_f64(a, b, f)
    a, b, f = normalize_levels(a), normalize_levels(b), normalize_levels(f)
    n, csf = QCV["window"], _mannos_sakrison(f.shape)

    def saliency(x):
        gx = ndimage.correlate(x, SOBEL_X, mode="constant")  # filter2 'same', zero borders
        gy = ndimage.correlate(x, SOBEL_X.T, mode="constant")
        return _block_sums(np.hypot(gx, gy) ** QCV["alpha"], n)

    def distortion(x):
        d = _csf_filter(x - f, csf)
        return _block_sums(d * d, n) / (n * n)

    la, lb = saliency(a), saliency(b)
    da, db = distortion(a), distortion(b)
    tot = float(np.sum(la + lb))
    if tot == 0:
        return float(np.real(np.mean(da + db)) / 2)
    return float(np.real(np.sum(la * da + lb * db)) / tot)
