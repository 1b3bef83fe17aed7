"""Information measures: MI of gray levels; feature MI (FMI, the densefuse profile)."""
from __future__ import annotations

import numpy as np
from scipy import fft

from utils.metrics.common import (
    LEVELS,
    as_f64,
    entropy_of_counts,
    histogram,
    joint_histogram,
    levels,
    need_size,
    normalize_levels,
)


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
    need_size(x.shape, w, w, f"a {w}x{w} window")
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



# Histogram measures beyond MI: CE, NMI, QNCIE, TE

def _kl_bits(p: np.ndarray, q: np.ndarray) -> float:
    both = (p > 0) & (q > 0)
    return float(np.sum(p[both] * np.log2(p[both] / q[both])))


def cross_entropy(a, b, f) -> float:
    """CE: (KL(h_A||h_F)+KL(h_B||h_F))/2, 256-bin histograms of levels 0-255, bits, bins empty in
    either skipped; lower is better.

    Cross entropy of Bulanon, Burks & Alchanatis (2009) as VIFB computes it: the relative entropy
    sum_k p_X(k) log2(p_X(k)/p_F(k)) of each source's gray-level histogram to F's, over the
    levels present in both (a level missing from F would make it infinite), averaged over the
    two sources. 0 when F's histogram equals both sources'. (IVIF_ZOO's "CE" is something else:
    the binary cross-entropy of sigmoid(F) to sigmoid((A+B)/2), see docs/metrics.md.)"""
    a, b, f = as_f64(a, b, f)
    hf = histogram(f)
    return (_kl_bits(histogram(a), hf) + _kl_bits(histogram(b), hf)) / 2.0


def _normalised_mi(x: np.ndarray, f: np.ndarray) -> float:
    """2 MI(X,F) / (H(X) + H(F)); 1 when both are constant (0/0: they share all there is)."""
    joint = joint_histogram(x, f)
    hx, hf = entropy_of_counts(joint.sum(1)), entropy_of_counts(joint.sum(0))
    if hx + hf == 0:
        return 1.0
    return 2 * (hx + hf - entropy_of_counts(joint.ravel())) / (hx + hf)


def nmi(a, b, f) -> float:
    """NMI: Hossny: 2[MI(A,F)/(H(A)+H(F)) + MI(B,F)/(H(B)+H(F))], 256-bin histograms of levels 0-255; range [0, 2].

    Hossny, Nahavandi & Creighton, "Comments on 'Information measure for performance of image
    fusion'", Electronics Letters 44 (2008): each MI normalised by the two entropies, so the
    value no longer rewards F for merely copying a high-entropy source. Log base cancels. 2 when
    F equals both sources; a term whose images are both constant counts 1 (0/0)."""
    a, b, f = as_f64(a, b, f)
    return _normalised_mi(a, f) + _normalised_mi(b, f)


def _ncc(x: np.ndarray, y: np.ndarray) -> float:
    """Nonlinear correlation coefficient: MI of the 256-level histograms in log base 256, [0, 1]."""
    joint = joint_histogram(x, y)
    mi = entropy_of_counts(joint.sum(1)) + entropy_of_counts(joint.sum(0)) - entropy_of_counts(joint.ravel())
    return mi / np.log2(LEVELS)


def qncie(a, b, f) -> float:
    """QNCIE: Wang's NCIE, 1 + sum (l_i/3) log_256(l_i/3) over eigenvalues l_i of the 3x3 NCC
    matrix, levels min-max stretched as Liu's code; [0.802, 1].

    Wang, Shen & Zhang (2005) nonlinear correlation information entropy as Zheng Liu's
    ``metricWang.m`` computes it: every image stretched to 0-255 and rounded, NCC(X,Y) = MI in
    log base b = 256 from the joint histogram, R the 3x3 matrix of NCC(A,B), NCC(A,F), NCC(B,F)
    with ones on the diagonal, QNCIE = 1 - H_R, H_R = -sum_i (l_i/3) log_b(l_i/3). 1 when all
    three are one image with a flat histogram (NCC(X,X) = H(X)/8 bits), 1 - log_256(3) = 0.802
    (its floor) when pairwise independent. Negative eigenvalues (R need not be positive
    definite) count 0 instead of MATLAB's complex logarithm."""
    a, b, f = (normalize_levels(x) for x in as_f64(a, b, f))
    nab, naf, nbf = _ncc(a, b), _ncc(a, f), _ncc(b, f)
    r = np.linalg.eigvalsh(np.array([[1, nab, naf], [nab, 1, nbf], [naf, nbf, 1]])) / 3
    r = r[r > 0]
    return float(1 + np.sum(r * np.log(r)) / np.log(LEVELS))


TSALLIS_Q = 1.85


def _tsallis_mi(x: np.ndarray, f: np.ndarray, q: float) -> float:
    joint = joint_histogram(x, f)
    outer = np.outer(joint.sum(1), joint.sum(0))
    keep = outer > 0
    return float((1 - np.sum(joint[keep] ** q / outer[keep] ** (q - 1))) / (1 - q))


def tsallis_entropy(a, b, f) -> float:
    """TE: Tsallis MI I_q(A,F)+I_q(B,F), q = 1.85 (Cvejic's), 256x256 joint histograms of levels 0-255.

    Cvejic, Canagarajah & Bull, "Image fusion metric based on mutual information and Tsallis
    entropy", Electronics Letters 42 (2006): I_q(X,F) = (1 - sum p(x,f)^q / (p(x) p(f))^(q-1))
    / (1 - q), tending to Shannon MI (in nats) as q -> 1; 0 for independent images. Liu's code
    (MEFB's TE) stretches the images first and pairs each joint cell with the other image's
    marginal; IVIF_ZOO's "TE" is H(A) + H(B) - H(F) (q = 1). See docs/metrics.md."""
    a, b, f = as_f64(a, b, f)
    return _tsallis_mi(a, f, TSALLIS_Q) + _tsallis_mi(b, f, TSALLIS_Q)
