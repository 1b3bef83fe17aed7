"""Similarity of F to the sources: CC, SCD, MSE, RMSE, PSNR, SSIM, MS-SSIM, VIF, MEF-SSIM, Qy."""
from __future__ import annotations

import math

import numpy as np
import torch
from pytorch_msssim import ms_ssim

from utils.metrics.common import as_f64, box_valid, corr, filter_valid, gaussian, need_size


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


def mse(a, b, f) -> float:
    """MSE: (MSE(F,A)+MSE(F,B))/2, mean squared difference, gray levels 0-255; lower is better.

    The mean over pixels of (F - X)^2, averaged over the two sources; 0 iff F equals both.
    IVIF_ZOO reports it on [0, 1] (this value / 255^2)."""
    a, b, f = as_f64(a, b, f)
    return float((np.mean((f - a) ** 2) + np.mean((f - b) ** 2)) / 2.0)


def rmse(a, b, f) -> float:
    """RMSE: sqrt(MSE), MSE as above, gray levels 0-255, so that PSNR = 20 log10(255/RMSE); lower is better.

    VIFB's "RMSE" is another quantity (sqrt of the summed squared error / (H*W), averaged over the
    sources: this value / sqrt(H*W) only when both errors are equal); profile ``vifb`` has it."""
    return math.sqrt(mse(a, b, f))


def _torch(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))[None, None]


def ssim_pair(x: np.ndarray, f: np.ndarray, data_range: float = 255.0) -> float:
    """SSIM (Wang et al. 2004) as MATLAB's reference ``ssim_index``: 11x11 Gaussian window
    (sigma 1.5, float64), K1 0.01, K2 0.03, L = ``data_range``; mean of the SSIM map over the valid
    (unpadded) region. Written here rather than taken from pytorch-msssim, which builds its window
    in float32 (the sixth decimal moves) and is five times slower in float64."""
    x, f = as_f64(x, f)
    w, c1, c2 = gaussian(11, 1.5), (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, mf = filter_valid(x, w), filter_valid(f, w)
    sxx = filter_valid(x * x, w) - mx * mx
    sff = filter_valid(f * f, w) - mf * mf
    sxf = filter_valid(x * f, w) - mx * mf
    return float(np.mean((2 * mx * mf + c1) * (2 * sxf + c2) / ((mx * mx + mf * mf + c1) * (sxx + sff + c2))))


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
    need_size(f.shape, 161, 161, "MS-SSIM (5 scales of an 11x11 window)")
    both = ms_ssim(torch.cat([_torch(f)] * 2), torch.cat([_torch(a), _torch(b)]), data_range=255.0,
                   size_average=False)  # one batch of two: a third faster than two calls
    return float(both.mean())


def vif_pair(ref: np.ndarray, dist: np.ndarray, sigma_nsq: float = 2.0) -> float:
    """Pixel-domain VIF (Sheikh & Bovik 2006, ``vifp_mscale``): 4 scales, Gaussian windows of
    size 2^(5-s)+1 with sigma size/5, valid filtering and 2x decimation, sigma_n^2 = 2 on 0-255."""
    ref, dist = as_f64(ref, dist)
    # The fourth scale's 3x3 window needs 3 rows left after three filter-and-halve steps.
    need_size(ref.shape, 41, 41, "VIF (4 scales, windows 17 down to 3)")
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
    """VIF: VIFp(A,F)+VIFp(B,F), pixel domain, 4 scales, sigma_n^2 = 2 on 0-255; sides >= 41 px.

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
    side = 11 * 2 ** (levels - 1)
    need_size(f.shape, side, side, f"MEF-SSIM ({levels} scales of an 11x11 window)")
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



#: Local statistics below this (gray levels^2) are FFT round-off of a flat window, counted as 0.
FLAT = 1e-9


def _ssim_yang(x: np.ndarray, y: np.ndarray):
    """Liu's ``ssim_yang``: SSIM map on 7x7 Gaussian (sigma 1.5) valid windows, C1 = C2 = 2e-16;
    also the two local variances."""
    win, c = gaussian(7, 1.5), 2e-16
    mx, my = filter_valid(x, win), filter_valid(y, win)
    sxx = filter_valid(x * x, win) - mx * mx
    syy = filter_valid(y * y, win) - my * my
    sxy = filter_valid(x * y, win) - mx * my
    sxx, syy = np.where(sxx < FLAT, 0, sxx), np.where(syy < FLAT, 0, syy)
    sxy = np.where(np.abs(sxy) < FLAT, 0, sxy)
    ssim_map = (2 * mx * my + c) * (2 * sxy + c) / ((mx * mx + my * my + c) * (sxx + syy + c))
    return ssim_map, sxx, syy


def qy(a, b, f) -> float:
    """Qy: Yang's SSIM-based measure, 7x7 Gaussian sigma 1.5 valid windows, C1 = C2 = 2e-16,
    redundancy threshold SSIM(A,B) >= 0.75, gray levels 0-255; [0, 1].

    Yang, Zhang, Wang & Liu, "A novel similarity based quality metric for image fusion",
    Information Fusion 9 (2008), as Liu's ``metricYang.m``: where SSIM(A,B) >= 0.75 (redundant
    windows) lambda SSIM(A,F) + (1-lambda) SSIM(B,F) with lambda = var_A/(var_A + var_B), elsewhere
    max(SSIM(A,F), SSIM(B,F)); the mean over windows. Windows flat in both sources (lambda 0/0,
    NaN in that code) are left out, as MEFB's copy does; local variances below 1e-9 are FFT
    round-off and count 0. 1 when F equals both sources."""
    a, b, f = as_f64(a, b, f)
    s_ab, va, vb = _ssim_yang(a, b)
    s_af, _, _ = _ssim_yang(a, f)
    s_bf, _, _ = _ssim_yang(b, f)
    keep = (va + vb) > 0
    if not keep.any():
        return float(np.mean(np.maximum(s_af, s_bf)))
    lam = va[keep] / (va[keep] + vb[keep])
    redundant = s_ab[keep] >= 0.75
    q = np.where(redundant, lam * s_af[keep] + (1 - lam) * s_bf[keep], np.maximum(s_af[keep], s_bf[keep]))
    return float(np.mean(q))
