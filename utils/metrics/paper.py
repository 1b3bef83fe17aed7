"""The ``densefuse`` profile: the eight metrics of the DenseFuse paper's Table III, computed the
way the authors' MATLAB evaluation (``analysis_*.m``) does. Inputs are gray levels 0-255 like
every profile's; each function says on which range the authors' code ran it (most on [0, 1],
MATLAB ``im2double``)."""
from __future__ import annotations

from utils.metrics.gradient import nabf, qabf_analysis
from utils.metrics.information import fmi
from utils.metrics.similarity import mef_ssim, scd, ssim_pair
from utils.metrics.statistics import entropy


def en(a, b, f) -> float:
    """En: entropy of F, 256 bins, bits (log2).

    As :func:`utils.metrics.statistics.entropy` (``analysis_entropy.m`` works on 8-bit levels)."""
    return entropy(f)


def qabf_paper(a, b, f) -> float:
    """Qabf: ``analysis_Qabf.m`` on [0,1]; differs from the standard Qabf only where gradient magnitudes are equal.

    See :func:`utils.metrics.gradient.qabf_analysis`."""
    return qabf_analysis(a / 255.0, b / 255.0, f / 255.0)


def scd_paper(a, b, f) -> float:
    """SCD: corr(F-B,A)+corr(F-A,B) on [0,1] (the same value as on 0-255: correlation is scale-free)."""
    return scd(a / 255.0, b / 255.0, f / 255.0)


def fmi_w(a, b, f) -> float:
    """FMI_w: Haghighat fast-FMI, 3x3 windows, single-level dmey DWT features [cA cH; cV cD] rescaled to [0,1].

    See :func:`utils.metrics.information.fmi`; PyWavelets' ``dmey`` has 62 taps where MATLAB's is
    zero-padded to 102, so values near image borders differ slightly from MATLAB's."""
    return fmi(a / 255.0, b / 255.0, f / 255.0, "wavelet")


def fmi_dct(a, b, f) -> float:
    """FMI_dct: Haghighat fast-FMI, 3x3 windows, whole-image orthonormal DCT-II features, on [0,1]."""
    return fmi(a / 255.0, b / 255.0, f / 255.0, "dct")


def ssim_a(a, b, f) -> float:
    """SSIM_a: (SSIM(F,A)+SSIM(F,B))/2 on [0,1] (L = 1), 11x11 Gaussian sigma 1.5, mean of the valid map."""
    return (ssim_pair(a / 255.0, f / 255.0, 1.0) + ssim_pair(b / 255.0, f / 255.0, 1.0)) / 2


def mef_ssim_paper(a, b, f) -> float:
    """MS_SSIM: MEF-SSIM of Ma, Zeng & Wang (not Wang's MS-SSIM), 3 scales, the two sources as the sequence, 0-255.

    What the authors' ``analysis_ms_ssim`` reports as "MS-SSIM"; see
    :func:`utils.metrics.similarity.mef_ssim`."""
    return mef_ssim(a, b, f)


def nabf_paper(a, b, f) -> float:
    """Nabf: Kumar's modified artefact measure on [0,1], where every weight is 0.001; lower is better.

    The g >= 2 threshold of :func:`utils.metrics.gradient.nabf` assumes 0-255 and never fires on
    the [0, 1] images the authors passed it."""
    return nabf(a / 255.0, b / 255.0, f / 255.0)


DENSEFUSE = {"En": en, "Qabf": qabf_paper, "SCD": scd_paper, "FMI_w": fmi_w, "FMI_dct": fmi_dct,
             "SSIM_a": ssim_a, "MS_SSIM": mef_ssim_paper, "Nabf": nabf_paper}
