"""Similarity of F to the sources: CC, SCD, PSNR, SSIM, MS-SSIM, VIF, MEF-SSIM."""
from __future__ import annotations

import math

import numpy as np
import torch
from pytorch_msssim import ms_ssim, ssim

from utils.metrics.common import as_f64, box_valid, corr, filter_valid, gaussian


def correlation_coefficient(a, b, f) -> float:
    """CC: (corr(A,F)+corr(B,F))/2, Pearson correlation, any range; [-1, 1].

    CC = (corr(A,F) + corr(B,F)) / 2, Pearson correlation. Range [-1, 1]."""
    a, b, f = as_f64(a, b, f)
    return (corr(a, f) + corr(b, f)) / 2.0


def scd(a, b, f) -> float:
    """SCD: corr(F-B,A)+corr(F-A,B) (Aslantas & Bendes 2015), any range; [-2, 2].

    SCD (Aslantas & Bendes 2015) = corr(F - B, A) + corr(F - A, B). Range [-2, 2]."""
    a, b, f = as_f64(a, b, f)
    return corr(f - b, a) + corr(f - a, b)


def psnr(a, b, f) -> float:
    """PSNR: 10 log10(255^2/MSE), MSE mean of MSE(F,A) and MSE(F,B), 0-255, dB; inf if F equals both.

    PSNR = 10 log10(255^2 / MSE), MSE = (MSE(F,A) + MSE(F,B)) / 2, in dB (no +48 dB offset).
    ``inf`` when F equals both sources."""
    a, b, f = as_f64(a, b, f)
    mse = (np.mean((f - a) ** 2) + np.mean((f - b) ** 2)) / 2.0
    return math.inf if mse == 0 else float(10 * math.log10(255.0 ** 2 / mse))


def _torch(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))[None, None]


def ssim_pair(x: np.ndarray, f: np.ndarray, data_range: float = 255.0) -> float:
    """SSIM (Wang et al. 2004) via pytorch-msssim: 11x11 Gaussian window, sigma 1.5, K1 0.01,
    K2 0.03, L = ``data_range``; mean of the SSIM map over the valid (unpadded) region."""
    x, f = as_f64(x, f)
    return float(ssim(_torch(f), _torch(x), data_range=data_range, size_average=True))


def ssim_metric(a, b, f) -> float:
    """SSIM: (SSIM(F,A)+SSIM(F,B))/2, 11x11 Gaussian sigma 1.5, K1 0.01, K2 0.03, L = 255, mean of the valid map.

    SSIM = (SSIM(F,A) + SSIM(F,B)) / 2 on 0-255 (L = 255). Range [-1, 1]; 1 iff equal."""
    return (ssim_pair(a, f) + ssim_pair(b, f)) / 2.0


def ms_ssim_metric(a, b, f) -> float:
    """MS-SSIM: Wang's MS-SSIM, 5 scales, mean over the two sources, L = 255; sides > 160 px.

    MS-SSIM (Wang, Simoncelli & Bovik 2003), pytorch-msssim defaults: 5 scales, weights
    (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 11x11 Gaussian sigma 1.5, L = 255; mean of
    MS-SSIM(F,A) and MS-SSIM(F,B). Needs both sides > 160 pixels."""
    a, b, f = as_f64(a, b, f)
    if min(f.shape) <= 160:
        raise ValueError(f"MS-SSIM needs images larger than 160 pixels per side, got {f.shape}")
    vals = [float(ms_ssim(_torch(f), _torch(x), data_range=255.0)) for x in (a, b)]
    return sum(vals) / 2.0


def vif_pair(ref: np.ndarray, dist: np.ndarray, sigma_nsq: float = 2.0) -> float:
    """Pixel-domain VIF (Sheikh & Bovik 2006, ``vifp_mscale``): 4 scales, Gaussian windows of
    size 2^(5-s)+1 with sigma size/5, valid filtering and 2x decimation, sigma_n^2 = 2 on 0-255."""
    ref, dist = as_f64(ref, dist)
    num = den = 0.0
    eps = 1e-10
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        win = gaussian(n, n / 5.0)
        if scale > 1:
            ref = filter_valid(ref, win)[::2, ::2]
            dist = filter_valid(dist, win)[::2, ::2]
        mu1, mu2 = filter_valid(ref, win), filter_valid(dist, win)
        s1 = filter_valid(ref * ref, win) - mu1 * mu1
        s2 = filter_valid(dist * dist, win) - mu2 * mu2
        s12 = filter_valid(ref * dist, win) - mu1 * mu2
        s1[s1 < 0] = 0
        s2[s2 < 0] = 0
        g = s12 / (s1 + eps)
        sv = s2 - g * s12
        low1 = s1 < eps
        g[low1], sv[low1], s1[low1] = 0, s2[low1], 0
        low2 = s2 < eps
        g[low2], sv[low2] = 0, 0
        neg = g < 0
        sv[neg], g[neg] = s2[neg], 0
        sv[sv <= eps] = eps
        num += np.sum(np.log10(1 + g * g * s1 / (sv + sigma_nsq)))
        den += np.sum(np.log10(1 + s1 / sigma_nsq))
    return float(num / den) if den > 0 else 1.0


def vif(a, b, f) -> float:
    """VIF: VIFp(A,F)+VIFp(B,F), pixel domain, 4 scales, sigma_n^2 = 2 on 0-255.

    VIF = VIFp(A,F) + VIFp(B,F) (sources as reference), see :func:`vif_pair`."""
    return vif_pair(a, f) + vif_pair(b, f)


def mef_ssim_scale(a: np.ndarray, b: np.ndarray, f: np.ndarray, k: float = 0.03) -> float:
    """One scale of MEF-SSIM (Ma, Zeng & Wang, TIP 2015) for a two-image sequence (A, B) and
    fused F on 0-255, as ``mef_ssim`` computes it with an 11x11 Gaussian (sigma 1.5) and an
    11x11 box for the patch statistics; vectorised: every per-window quantity is a local moment."""
    n, eps = 11, np.finfo(np.float64).eps
    g = gaussian(n, 1.5)
    seq = (a, b)
    mu = [box_valid(x, n) for x in seq]
    var = [box_valid(x * x, n) - m * m for x, m in zip(seq, mu, strict=True)]
    ed = [np.sqrt(np.maximum(n * n * v, 0)) + 0.001 for v in var]
    s = a + b
    ms = box_valid(s, n)
    numer = np.sqrt(np.maximum(n * n * (box_valid(s * s, n) - ms * ms), 0))
    denom = (ed[0] - 0.001) + (ed[1] - 0.001)
    R = np.clip((numer + eps) / (denom + eps), eps, 1 - eps)
    p = np.minimum(np.tan(np.pi / 2 * R), 10)
    wm = [(e / n) ** p + eps for e in ed]
    norm = wm[0] + wm[1]
    c = [w / norm / e for w, e in zip(wm, ed, strict=True)]  # r = sum_k c_k (X_k - mu_k)
    max_ed = np.maximum(ed[0], ed[1])
    # |r|^2 over the box, and Gaussian moments of r and F
    box = {(i, j): box_valid(seq[i] * seq[j], n) * n * n for i in range(2) for j in range(i, 2)}
    r2 = sum(c[i] * c[j] * (box[(min(i, j), max(i, j))] - n * n * mu[i] * mu[j])
             for i in range(2) for j in range(2))
    scale = np.where(r2 > 0, max_ed / np.sqrt(np.maximum(r2, 1e-300)), 1.0)
    G = {key: filter_valid(val, g) for key, val in
         {"a": a, "b": b, "aa": a * a, "bb": b * b, "ab": a * b, "f": f, "ff": f * f,
          "af": a * f, "bf": b * f}.items()}
    gx = [G["a"], G["b"]]
    gxx = {(0, 0): G["aa"], (1, 1): G["bb"], (0, 1): G["ab"], (1, 0): G["ab"]}
    gxf = [G["af"], G["bf"]]
    m_r = sum(c[k] * (gx[k] - mu[k]) for k in range(2))
    e_r2 = sum(c[i] * c[j] * (gxx[(i, j)] - mu[j] * gx[i] - mu[i] * gx[j] + mu[i] * mu[j])
               for i in range(2) for j in range(2))
    e_rf = sum(c[k] * (gxf[k] - mu[k] * G["f"]) for k in range(2))
    s1 = scale ** 2 * (e_r2 - m_r ** 2)
    s12 = scale * (e_rf - m_r * G["f"])
    s2 = G["ff"] - G["f"] ** 2
    C = (k * 255) ** 2  # the MEF-SSIM index has no luminance term
    return float(np.mean((2 * s12 + C) / (s1 + s2 + C)))


def _mef_downsample(x: np.ndarray) -> np.ndarray:
    """MATLAB imfilter(x, ones(2)/4, 'symmetric', 'same') then x(1:2:end, 1:2:end)."""
    xe = np.pad(x, ((0, 1), (0, 1)), mode="symmetric")
    y = (xe[:-1, :-1] + xe[1:, :-1] + xe[:-1, 1:] + xe[1:, 1:]) / 4
    return y[::2, ::2]


def mef_ssim(a, b, f, levels: int = 3) -> float:
    """MEF-SSIM of Ma, Zeng & Wang (TIP 2015), 3 scales with weights (0.0448, 0.2856, 0.3001)
    normalised, product of per-scale scores; sources (A, B) as the exposure sequence, all on
    0-255. This is what the DenseFuse authors' ``analysis_ms_ssim`` reports as "MS-SSIM"."""
    a, b, f = as_f64(a, b, f)
    if min(f.shape) / 2 ** (levels - 1) < 11:
        raise ValueError(f"MEF-SSIM needs images of at least {11 * 2 ** (levels - 1)} pixels per side")
    weights = np.array([0.0448, 0.2856, 0.3001])[:levels]
    weights = weights / weights.sum()
    q = []
    for level in range(levels):
        q.append(mef_ssim_scale(a, b, f))
        if level < levels - 1:
            a, b, f = _mef_downsample(a), _mef_downsample(b), _mef_downsample(f)
    # MATLAB's prod(Q.^w) turns complex for a negative scale score; we return NaN there.
    with np.errstate(invalid="ignore"):
        return float(np.prod(np.power(np.array(q), weights)))

