"""No-reference image-fusion metrics with written-down conventions.

Inputs: A = infrared, B = visible, F = fused, as float64 NumPy arrays of gray levels **0-255**
(the 8-bit files as read, never uint8 arithmetic), all of one shape (H, W). Each function returns
a Python float.

Profile ``standard`` reproduces the conventions of the MATLAB toolbox most recent infrared-visible
fusion papers use (VIFB, X. Zhang et al., CVPRW 2020, and its descendants). Profile ``densefuse``
reproduces the eight metrics of the DenseFuse paper's Table III as the authors' MATLAB code
computed them (see ``DENSEFUSE`` below). Libraries used: pytorch-msssim (SSIM, MS-SSIM),
SciPy (filters, DCT), PyWavelets (``dmey``); written here only what none provides.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from pytorch_msssim import ms_ssim, ssim
from scipy import fft, signal

LEVELS = 256


def _as_f64(*imgs):
    out = [np.asarray(x, dtype=np.float64) for x in imgs]
    for x in out[1:]:
        if x.shape != out[0].shape:
            raise ValueError(f"shapes differ: {out[0].shape} vs {x.shape}")
    return out


def _levels(x: np.ndarray) -> np.ndarray:
    """Integer gray levels 0..255 (rounded, clipped) for histogram-based metrics."""
    return np.clip(np.rint(x), 0, LEVELS - 1).astype(np.int64)


def _entropy_of_counts(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


# ---- statistics of F alone ------------------------------------------------------------------

def entropy(f: np.ndarray) -> float:
    """EN: Shannon entropy of the 256-bin gray-level histogram of F, in bits (log2).
    Range [0, 8]; 0 for a constant image, 1 for a two-level 50/50 image."""
    (f,) = _as_f64(f)
    return _entropy_of_counts(np.bincount(_levels(f).ravel(), minlength=LEVELS))


def standard_deviation(f: np.ndarray) -> float:
    """SD: population standard deviation (divide by H*W) of F on 0-255."""
    (f,) = _as_f64(f)
    return float(np.std(f, ddof=0))


def spatial_frequency(f: np.ndarray) -> float:
    """SF = sqrt(RF^2 + CF^2), RF^2 = sum of squared horizontal first differences / (H*W),
    CF^2 likewise vertical (the toolbox divides by H*W, not by the number of differences)."""
    (f,) = _as_f64(f)
    n = f.size
    rf2 = np.sum(np.diff(f, axis=1) ** 2) / n
    cf2 = np.sum(np.diff(f, axis=0) ** 2) / n
    return float(math.sqrt(rf2 + cf2))


def average_gradient(f: np.ndarray) -> float:
    """AG = sum over all pixels of sqrt((Fx^2 + Fy^2) / 2) / ((H-1)(W-1)), with Fx, Fy from
    MATLAB's ``gradient`` (central differences inside, one-sided at the borders; np.gradient)."""
    (f,) = _as_f64(f)
    gy, gx = np.gradient(f)
    h, w = f.shape
    return float(np.sum(np.sqrt((gx ** 2 + gy ** 2) / 2.0)) / ((h - 1) * (w - 1)))


# ---- agreement of F with each source ------------------------------------------------------------

def mutual_information_pair(x: np.ndarray, f: np.ndarray) -> float:
    """MI(X, F) in bits from the 256x256 joint histogram of gray levels: H(X) + H(F) - H(X, F)."""
    x, f = _as_f64(x, f)
    joint = np.bincount((_levels(x) * LEVELS + _levels(f)).ravel(), minlength=LEVELS * LEVELS)
    joint = joint.reshape(LEVELS, LEVELS)
    return (_entropy_of_counts(joint.sum(1)) + _entropy_of_counts(joint.sum(0))
            - _entropy_of_counts(joint.ravel()))


def mutual_information(a, b, f) -> float:
    """MI = MI(A,F) + MI(B,F), bits (log2), 256-bin histograms. Range [0, 16]."""
    return mutual_information_pair(a, f) + mutual_information_pair(b, f)


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation (MATLAB corr2); 0 when either image is constant."""
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else 0.0


def correlation_coefficient(a, b, f) -> float:
    """CC = (corr(A,F) + corr(B,F)) / 2, Pearson correlation. Range [-1, 1]."""
    a, b, f = _as_f64(a, b, f)
    return (_corr(a, f) + _corr(b, f)) / 2.0


def scd(a, b, f) -> float:
    """SCD (Aslantas & Bendes 2015) = corr(F - B, A) + corr(F - A, B). Range [-2, 2]."""
    a, b, f = _as_f64(a, b, f)
    return _corr(f - b, a) + _corr(f - a, b)


def psnr(a, b, f) -> float:
    """PSNR = 10 log10(255^2 / MSE), MSE = (MSE(F,A) + MSE(F,B)) / 2, in dB (no +48 dB offset).
    ``inf`` when F equals both sources."""
    a, b, f = _as_f64(a, b, f)
    mse = (np.mean((f - a) ** 2) + np.mean((f - b) ** 2)) / 2.0
    return math.inf if mse == 0 else float(10 * math.log10(255.0 ** 2 / mse))


def _torch(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))[None, None]


def ssim_pair(x: np.ndarray, f: np.ndarray, data_range: float = 255.0) -> float:
    """SSIM (Wang et al. 2004) via pytorch-msssim: 11x11 Gaussian window, sigma 1.5, K1 0.01,
    K2 0.03, L = ``data_range``; mean of the SSIM map over the valid (unpadded) region."""
    x, f = _as_f64(x, f)
    return float(ssim(_torch(f), _torch(x), data_range=data_range, size_average=True))


def ssim_metric(a, b, f) -> float:
    """SSIM = (SSIM(F,A) + SSIM(F,B)) / 2 on 0-255 (L = 255). Range [-1, 1]; 1 iff equal."""
    return (ssim_pair(a, f) + ssim_pair(b, f)) / 2.0


def ms_ssim_metric(a, b, f) -> float:
    """MS-SSIM (Wang, Simoncelli & Bovik 2003), pytorch-msssim defaults: 5 scales, weights
    (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 11x11 Gaussian sigma 1.5, L = 255; mean of
    MS-SSIM(F,A) and MS-SSIM(F,B). Needs both sides > 160 pixels."""
    a, b, f = _as_f64(a, b, f)
    if min(f.shape) <= 160:
        raise ValueError(f"MS-SSIM needs images larger than 160 pixels per side, got {f.shape}")
    vals = [float(ms_ssim(_torch(f), _torch(x), data_range=255.0)) for x in (a, b)]
    return sum(vals) / 2.0


def _gaussian(n: int, sigma: float) -> np.ndarray:
    """MATLAB fspecial('gaussian', n, sigma): normalised n x n Gaussian."""
    r = (n - 1) / 2.0
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    g = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    return g / g.sum()


def _filter_valid(img: np.ndarray, win: np.ndarray) -> np.ndarray:
    """MATLAB filter2(win, img, 'valid') (correlation)."""
    return signal.fftconvolve(img, win[::-1, ::-1], mode="valid")


def vif_pair(ref: np.ndarray, dist: np.ndarray, sigma_nsq: float = 2.0) -> float:
    """Pixel-domain VIF (Sheikh & Bovik 2006, ``vifp_mscale``): 4 scales, Gaussian windows of
    size 2^(5-s)+1 with sigma size/5, valid filtering and 2x decimation, sigma_n^2 = 2 on 0-255."""
    ref, dist = _as_f64(ref, dist)
    num = den = 0.0
    eps = 1e-10
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        win = _gaussian(n, n / 5.0)
        if scale > 1:
            ref = _filter_valid(ref, win)[::2, ::2]
            dist = _filter_valid(dist, win)[::2, ::2]
        mu1, mu2 = _filter_valid(ref, win), _filter_valid(dist, win)
        s1 = _filter_valid(ref * ref, win) - mu1 * mu1
        s2 = _filter_valid(dist * dist, win) - mu2 * mu2
        s12 = _filter_valid(ref * dist, win) - mu1 * mu2
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
    """VIF = VIFp(A,F) + VIFp(B,F) (sources as reference), see :func:`vif_pair`."""
    return vif_pair(a, f) + vif_pair(b, f)


# ---- edge-based: Qabf (and Nabf in the densefuse profile) ---------------------------------------

QABF = {"tg": 0.9994, "kg": -15.0, "dg": 0.5, "ta": 0.9879, "ka": -22.0, "da": 0.8, "L": 1.0}
SOBEL_Y = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=np.float64)
SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)


def _sobel(img: np.ndarray):
    """Gradient magnitude and angle, MATLAB conv2(img, h, 'same') with zero borders;
    angle atan(gy/gx), pi/2 where gx = 0."""
    gx = signal.convolve2d(img, SOBEL_X, mode="same", boundary="fill")
    gy = signal.convolve2d(img, SOBEL_Y, mode="same", boundary="fill")
    g = np.sqrt(gx * gx + gy * gy)
    with np.errstate(divide="ignore", invalid="ignore"):
        ang = np.where(gx == 0, np.pi / 2, np.arctan(gy / np.where(gx == 0, 1, gx)))
    return g, ang


def _edge_preservation(gs, angs, gf, angf, p=QABF):
    """Q^{SF} of Xydeas & Petrovic: sigmoid(strength ratio) x sigmoid(orientation agreement).
    Strength ratio min/max of the two magnitudes (1 where they are equal, both 0 included)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        G = np.where(gs == gf, 1.0, np.minimum(gs, gf) / np.maximum(gs, gf))
    A = 1 - np.abs(angs - angf) / (np.pi / 2)
    qg = p["tg"] / (1 + np.exp(p["kg"] * (G - p["dg"])))
    qa = p["ta"] / (1 + np.exp(p["ka"] * (A - p["da"])))
    return qg * qa


def qabf(a, b, f) -> float:
    """Q^{AB/F} (Xydeas & Petrovic 2000): edge-preservation of A and B in F weighted by the
    source gradient strengths w = g^L. Sobel 3x3 gradients, constants Gamma_g 0.9994,
    kappa_g -15, sigma_g 0.5, Gamma_a 0.9879, kappa_a -22, sigma_a 0.8, L = 1. Scale-free (same
    on 0-1 or 0-255). Range [0, 0.9748] (the product of the two sigmoids at G = A = 1)."""
    a, b, f = _as_f64(a, b, f)
    ga, aa = _sobel(a)
    gb, ab = _sobel(b)
    gf, af = _sobel(f)
    qaf = _edge_preservation(ga, aa, gf, af)
    qbf = _edge_preservation(gb, ab, gf, af)
    wa, wb = ga ** QABF["L"], gb ** QABF["L"]
    den = float(np.sum(wa + wb))
    return float(np.sum(qaf * wa + qbf * wb) / den) if den > 0 else 0.0


def qabf_max() -> float:
    """Largest value :func:`qabf` can take (edges perfectly preserved)."""
    p = QABF
    return p["tg"] / (1 + math.exp(p["kg"] * (1 - p["dg"]))) * p["ta"] / (1 + math.exp(p["ka"] * (1 - p["da"])))


STANDARD = {
    "EN": lambda a, b, f: entropy(f),
    "SD": lambda a, b, f: standard_deviation(f),
    "SF": lambda a, b, f: spatial_frequency(f),
    "AG": lambda a, b, f: average_gradient(f),
    "MI": mutual_information,
    "SCD": scd,
    "CC": correlation_coefficient,
    "VIF": vif,
    "Qabf": qabf,
    "SSIM": ssim_metric,
    "MS-SSIM": ms_ssim_metric,
    "PSNR": psnr,
}

#: One line per metric for tables and the README.
CONVENTIONS = {
    "EN": "entropy of F, 256-bin histogram, bits (log2)",
    "SD": "population std of F, 0-255",
    "SF": "sqrt(RF^2+CF^2), sums of squared differences / (H*W), 0-255",
    "AG": "mean sqrt((Fx^2+Fy^2)/2), MATLAB gradient, / ((H-1)(W-1)), 0-255",
    "MI": "MI(A,F)+MI(B,F), 256x256 joint histogram, bits",
    "SCD": "corr(F-B,A)+corr(F-A,B)",
    "CC": "(corr(A,F)+corr(B,F))/2",
    "VIF": "VIFp(A,F)+VIFp(B,F), pixel domain, 4 scales, sigma_n^2=2, 0-255",
    "Qabf": "Xydeas-Petrovic, Sobel, L=1, max 0.9748",
    "SSIM": "(SSIM(F,A)+SSIM(F,B))/2, 11x11 Gaussian sigma 1.5, L=255, mean map",
    "MS-SSIM": "Wang MS-SSIM, 5 scales, mean over the two sources, L=255",
    "PSNR": "10 log10(255^2/MSE), MSE mean of MSE(F,A), MSE(F,B), dB",
}


# ---- the DenseFuse paper's evaluation (authors' MATLAB code) ------------------------------------

def qabf_analysis(a, b, f) -> float:
    """Qabf as the authors' ``analysis_Qabf.m`` computes it: like :func:`qabf`, except that
    where the source and fused gradient magnitudes are equal the strength ratio is set to the
    magnitude itself instead of 1 (a quirk of that code; it matters only on flat areas and for
    F equal to a source). Used on [0, 1] images."""
    a, b, f = _as_f64(a, b, f)
    ga, aa = _sobel(a)
    gb, ab = _sobel(b)
    gf, af = _sobel(f)

    def q(gs, angs):
        with np.errstate(divide="ignore", invalid="ignore"):
            G = np.where(gs > gf, gf / np.where(gs == 0, 1, gs),
                         np.where(gs == gf, gf, gs / np.where(gf == 0, 1, gf)))
        A = 1 - np.abs(angs - af) / (np.pi / 2)
        p = QABF
        return p["tg"] / (1 + np.exp(p["kg"] * (G - p["dg"]))) * p["ta"] / (1 + np.exp(p["ka"] * (A - p["da"])))

    den = float(np.sum(ga + gb))
    return float(np.sum(q(ga, aa) * ga + q(gb, ab) * gb) / den) if den > 0 else 0.0


NABF = {"td": 2.0, "wt_min": 0.001, "lg": 1.5, "nrg": 0.9999, "kg": 19.0, "sg": 0.5, "nra": 0.9995, "ka": 22.0,
        "sa": 0.5}


def _kumar_sobel(x: np.ndarray):
    """Kumar's ``sobel_fn``: correlation with Sobel kernels / 8 on a reflect-extended image."""
    xe = np.pad(x, 1, mode="reflect")
    kv = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64) / 8
    kh = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=np.float64) / 8
    return signal.correlate2d(xe, kv, mode="valid"), signal.correlate2d(xe, kh, mode="valid")


def nabf(a, b, f) -> float:
    """N_abf, the modified fusion-artefact measure of B. K. Shreyamsha Kumar (SIViP 2013):
    sum over pixels where g_F > g_A and g_F > g_B of (1-Q^AF) w_A + (1-Q^BF) w_B, divided by
    sum(w_A + w_B); Q = sqrt(Q_g Q_a) with Petrovic's constants (0.9999, 19, 0.5; 0.9995, 22,
    0.5), w = g^1.5 where g >= 2 else 0.001, Sobel/8 on a reflect-extended image. Lower is
    better, range [0, 1]. NOT scale-free: the threshold g >= 2 assumes 0-255; the DenseFuse
    authors applied it to [0, 1] images, where every weight is 0.001."""
    a, b, f = _as_f64(a, b, f)
    p = NABF
    gva, gha = _kumar_sobel(a)
    gvb, ghb = _kumar_sobel(b)
    gvf, ghf = _kumar_sobel(f)
    ga, gb, gf = np.hypot(gva, gha), np.hypot(gvb, ghb), np.hypot(gvf, ghf)

    def angle(gv, gh):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where((gv == 0) & (gh == 0), 0.0, np.arctan(gv / gh))  # atan(x/0) = +-pi/2

    def preservation(gs, angs, angf):
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.where((gs == 0) | (gf == 0), 0.0, np.minimum(gs, gf) / np.maximum(gs, gf))
        al = np.abs(np.abs(angs - angf) - np.pi / 2) * 2 / np.pi
        qg = p["nrg"] / (1 + np.exp(-p["kg"] * (g - p["sg"])))
        qa = p["nra"] / (1 + np.exp(-p["ka"] * (al - p["sa"])))
        return np.sqrt(qg * qa)

    af = angle(gvf, ghf)
    qaf = preservation(ga, angle(gva, gha), af)
    qbf = preservation(gb, angle(gvb, ghb), af)
    wa = np.where(ga >= p["td"], ga ** p["lg"], p["wt_min"])
    wb = np.where(gb >= p["td"], gb ** p["lg"], p["wt_min"])
    na = (gf > ga) & (gf > gb)
    return float(np.sum(na * ((1 - qaf) * wa + (1 - qbf) * wb)) / np.sum(wa + wb))


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
    a, b, f = _as_f64(a, b, f)
    fa, fb, ff = (_windows_colmajor(_features(x, feature), w) for x in (a, b, f))
    total = 0.0
    for i in range(0, len(ff), chunk):
        s = slice(i, i + chunk)
        total += float(np.sum(_fmi_windows(fa[s], ff[s]) + _fmi_windows(fb[s], ff[s])) / 2)
    return total / len(ff)


def _box_valid(x: np.ndarray, n: int) -> np.ndarray:
    return _filter_valid(x, np.full((n, n), 1.0 / (n * n)))


def mef_ssim_scale(a: np.ndarray, b: np.ndarray, f: np.ndarray, k: float = 0.03) -> float:
    """One scale of MEF-SSIM (Ma, Zeng & Wang, TIP 2015) for a two-image sequence (A, B) and
    fused F on 0-255, as ``mef_ssim`` computes it with an 11x11 Gaussian (sigma 1.5) and an
    11x11 box for the patch statistics; vectorised: every per-window quantity is a local moment."""
    n, eps = 11, np.finfo(np.float64).eps
    g = _gaussian(n, 1.5)
    seq = (a, b)
    mu = [_box_valid(x, n) for x in seq]
    var = [_box_valid(x * x, n) - m * m for x, m in zip(seq, mu, strict=True)]
    ed = [np.sqrt(np.maximum(n * n * v, 0)) + 0.001 for v in var]
    s = a + b
    ms = _box_valid(s, n)
    numer = np.sqrt(np.maximum(n * n * (_box_valid(s * s, n) - ms * ms), 0))
    denom = (ed[0] - 0.001) + (ed[1] - 0.001)
    R = np.clip((numer + eps) / (denom + eps), eps, 1 - eps)
    p = np.minimum(np.tan(np.pi / 2 * R), 10)
    wm = [(e / n) ** p + eps for e in ed]
    norm = wm[0] + wm[1]
    c = [w / norm / e for w, e in zip(wm, ed, strict=True)]  # r = sum_k c_k (X_k - mu_k)
    max_ed = np.maximum(ed[0], ed[1])
    # |r|^2 over the box, and Gaussian moments of r and F
    box = {(i, j): _box_valid(seq[i] * seq[j], n) * n * n for i in range(2) for j in range(i, 2)}
    r2 = sum(c[i] * c[j] * (box[(min(i, j), max(i, j))] - n * n * mu[i] * mu[j])
             for i in range(2) for j in range(2))
    scale = np.where(r2 > 0, max_ed / np.sqrt(np.maximum(r2, 1e-300)), 1.0)
    G = {key: _filter_valid(val, g) for key, val in
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
    a, b, f = _as_f64(a, b, f)
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


def _unit(fn):
    """Apply a metric to images rescaled from 0-255 to [0, 1] (MATLAB im2double)."""
    return lambda a, b, f: fn(a / 255.0, b / 255.0, f / 255.0)


DENSEFUSE = {
    "En": lambda a, b, f: entropy(f),
    "Qabf": _unit(qabf_analysis),
    "SCD": _unit(scd),
    "FMI_w": _unit(lambda a, b, f: fmi(a, b, f, "wavelet")),
    "FMI_dct": _unit(lambda a, b, f: fmi(a, b, f, "dct")),
    "SSIM_a": _unit(lambda a, b, f: (ssim_pair(a, f, 1.0) + ssim_pair(b, f, 1.0)) / 2),
    "MS_SSIM": mef_ssim,
    "Nabf": _unit(nabf),
}

CONVENTIONS.update({
    "En": "entropy of F, 256 bins, bits",
    "FMI_w": "Haghighat fast-FMI, 3x3 windows, dmey DWT features, [0,1]",
    "FMI_dct": "Haghighat fast-FMI, 3x3 windows, whole-image DCT features, [0,1]",
    "SSIM_a": "(SSIM(F,A)+SSIM(F,B))/2 on [0,1] (L=1)",
    "MS_SSIM": "MEF-SSIM of Ma et al. (not Wang's MS-SSIM), 3 scales, sources as sequence",
    "Nabf": "Kumar's modified artefact measure on [0,1] (all weights 0.001), lower is better",
})

PROFILES = {"standard": STANDARD, "densefuse": DENSEFUSE}
