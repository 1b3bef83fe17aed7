"""Edge-based measures: Qabf (Xydeas & Petrovic), its variant in the DenseFuse authors' code, Nabf."""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage, signal

from utils.metrics.common import as_f64

QABF = {"tg": 0.9994, "kg": -15.0, "dg": 0.5, "ta": 0.9879, "ka": -22.0, "da": 0.8, "L": 1.0}
SOBEL_Y = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=np.float64)
SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)


def _sobel(img: np.ndarray):
    """Gradient magnitude and angle, MATLAB conv2(img, h, 'same') with zero borders;
    angle atan(gy/gx), pi/2 where gx = 0."""
    # convolve2d sums in conv2's order: analysis_Qabf.m's tie test (equal magnitudes) depends on it
    gx = signal.convolve2d(img, SOBEL_X, mode="same", boundary="fill")
    gy = signal.convolve2d(img, SOBEL_Y, mode="same", boundary="fill")
    g = np.sqrt(gx * gx + gy * gy)
    with np.errstate(divide="ignore", invalid="ignore"):
        ang = np.where(gx == 0, np.pi / 2, np.arctan(gy / np.where(gx == 0, 1, gx)))
    return g, ang


def _edge_preservation(gs, angs, gf, angf, equal_is_one: bool = True, p=QABF):
    """Q^{SF} of Xydeas & Petrovic: sigmoid(strength ratio) x sigmoid(orientation agreement).
    Strength ratio min/max of the two magnitudes; where they are equal (both 0 included) it is 1,
    or, with ``equal_is_one=False``, the magnitude itself (the quirk of the DenseFuse authors'
    ``analysis_Qabf.m``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        G = np.where(gs == gf, 1.0 if equal_is_one else gf, np.minimum(gs, gf) / np.maximum(gs, gf))
    A = 1 - np.abs(angs - angf) / (np.pi / 2)
    qg = p["tg"] / (1 + np.exp(p["kg"] * (G - p["dg"])))
    qa = p["ta"] / (1 + np.exp(p["ka"] * (A - p["da"])))
    return qg * qa


def _qabf(a, b, f, equal_is_one: bool) -> float:
    """Edge preservation of A and B in F, weighted by the source gradient strengths w = g^L."""
    a, b, f = as_f64(a, b, f)
    ga, aa = _sobel(a)
    gb, ab = _sobel(b)
    gf, af = _sobel(f)
    qaf = _edge_preservation(ga, aa, gf, af, equal_is_one)
    qbf = _edge_preservation(gb, ab, gf, af, equal_is_one)
    wa, wb = ga ** QABF["L"], gb ** QABF["L"]
    den = float(np.sum(wa + wb))
    return float(np.sum(qaf * wa + qbf * wb) / den) if den > 0 else 0.0


def qabf(a, b, f) -> float:
    """Qabf: Xydeas-Petrovic, Sobel, L = 1, any range (scale-free); [0, 0.9748].

    Q^{AB/F} (Xydeas & Petrovic 2000): edge-preservation of A and B in F weighted by the
    source gradient strengths w = g^L. Sobel 3x3 gradients (MATLAB conv2 'same', zero borders),
    constants Gamma_g 0.9994, kappa_g -15, sigma_g 0.5, Gamma_a 0.9879, kappa_a -22, sigma_a 0.8,
    L = 1. Scale-free (same on 0-1 or 0-255). Range [0, 0.9748] (the product of the two sigmoids
    at G = A = 1); 0 when neither source has an edge."""
    return _qabf(a, b, f, equal_is_one=True)


def qabf_max() -> float:
    """Largest value :func:`qabf` can take (edges perfectly preserved)."""
    p = QABF
    return p["tg"] / (1 + math.exp(p["kg"] * (1 - p["dg"]))) * p["ta"] / (1 + math.exp(p["ka"] * (1 - p["da"])))


def qabf_analysis(a, b, f) -> float:
    """Qabf as the authors' ``analysis_Qabf.m`` computes it, any range (they used [0, 1]).

    Like :func:`qabf`, except that where the source and fused gradient magnitudes are equal the
    strength ratio is the magnitude itself instead of 1 (a quirk of that code; it matters only
    on flat areas and for F equal to a source)."""
    return _qabf(a, b, f, equal_is_one=False)


NABF = {"td": 2.0, "wt_min": 0.001, "lg": 1.5, "nrg": 0.9999, "kg": 19.0, "sg": 0.5, "nra": 0.9995, "ka": 22.0,
        "sa": 0.5}


def _kumar_sobel(x: np.ndarray):
    """Kumar's ``sobel_fn``: correlation with Sobel kernels / 8 on a reflect-extended image."""
    kv = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64) / 8
    kh = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=np.float64) / 8
    # ndimage's "mirror" is NumPy's "reflect": the edge pixel is not repeated
    return ndimage.correlate(x, kv, mode="mirror"), ndimage.correlate(x, kh, mode="mirror")


def nabf(a, b, f) -> float:
    """Nabf: Kumar's modified artefact measure, Sobel/8 on reflected borders, w = g^1.5 where
    g >= 2 else 0.001, gray levels 0-255; lower is better, [0, 1].

    N_abf, the modified fusion-artefact measure of B. K. Shreyamsha Kumar (SIViP 2013):
    sum over pixels where g_F > g_A and g_F > g_B of (1-Q^AF) w_A + (1-Q^BF) w_B, divided by
    sum(w_A + w_B); Q = sqrt(Q_g Q_a) with Petrovic's constants (0.9999, 19, 0.5; 0.9995, 22,
    0.5), w = g^1.5 where g >= 2 else 0.001, Sobel/8 on a reflect-extended image. Lower is
    better, range [0, 1]. NOT scale-free: the threshold g >= 2 assumes 0-255; the DenseFuse
    authors applied it to [0, 1] images, where every weight is 0.001."""
    a, b, f = as_f64(a, b, f)
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

