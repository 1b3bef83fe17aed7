"""No-reference image-fusion metrics with written-down conventions.

Inputs: A = infrared, B = visible, F = fused, as float64 NumPy arrays of gray levels **0-255**
(the 8-bit files as read, never uint8 arithmetic), all of one shape (H, W). Each function returns
a Python float.

Each metric's convention (range, log base, window, sum vs mean, constants) is the first line of
its function's docstring: the one source of ``CONVENTIONS``, of ``run_eval.py``'s printout and of
the table in docs/metrics.md (``conventions_markdown``; a test keeps that file in step). The
modules: ``statistics`` (F alone), ``information`` (MI, FMI), ``similarity`` (CC, SCD, PSNR,
SSIM, MS-SSIM, VIF, MEF-SSIM), ``gradient`` (Qabf, Nabf), ``paper`` (the densefuse profile).

Profile ``standard`` reproduces the conventions of the MATLAB toolbox most recent infrared-visible
fusion papers use (VIFB, X. Zhang et al., CVPRW 2020, and its descendants). Profile ``densefuse``
reproduces the eight metrics of the DenseFuse paper's Table III as the authors' MATLAB code
computed them (``utils/metrics/paper.py``). Libraries used: pytorch-msssim (SSIM, MS-SSIM),
SciPy (filters, DCT), PyWavelets (``dmey``); written here only what none provides.
"""
from __future__ import annotations

from functools import wraps

from utils.metrics.gradient import QABF, nabf, qabf, qabf_analysis, qabf_max
from utils.metrics.information import (
    cross_entropy,
    fmi,
    mutual_information,
    mutual_information_pair,
    nmi,
    qncie,
    tsallis_entropy,
)
from utils.metrics.paper import DENSEFUSE
from utils.metrics.perceptual import qcb, qcv
from utils.metrics.similarity import (
    correlation_coefficient,
    mef_ssim,
    mef_ssim_scale,
    ms_ssim_metric,
    mse,
    psnr,
    qy,
    rmse,
    scd,
    ssim_metric,
    ssim_pair,
    vif,
    vif_pair,
)
from utils.metrics.statistics import average_gradient, edge_intensity, entropy, spatial_frequency, standard_deviation
from utils.metrics.vifb import VIFB


def fused_only(fn):
    """A metric of F alone as a profile entry ``(a, b, f) -> fn(f)``; keeps ``fn``'s docstring."""
    @wraps(fn)
    def metric(a, b, f):
        return fn(f)
    return metric


STANDARD = {
    "EN": fused_only(entropy),
    "SD": fused_only(standard_deviation),
    "SF": fused_only(spatial_frequency),
    "AG": fused_only(average_gradient),
    "MI": mutual_information,
    "SCD": scd,
    "CC": correlation_coefficient,
    "VIF": vif,
    "Qabf": qabf,
    "SSIM": ssim_metric,
    "MS-SSIM": ms_ssim_metric,
    "PSNR": psnr,
    "EI": fused_only(edge_intensity),
    "CE": cross_entropy,
    "NMI": nmi,
    "QNCIE": qncie,
    "TE": tsallis_entropy,
    "Nabf": nabf,
    "Qy": qy,
    "Qcb": qcb,
    "Qcv": qcv,
    "MSE": mse,
    "RMSE": rmse,
}

PROFILES = {"standard": STANDARD, "densefuse": DENSEFUSE, "vifb": VIFB}

#: Profiles whose metrics take the images as stored, (H, W) or (H, W, 3), instead of their luma.
COLOUR_AS_STORED = frozenset({"vifb"})

#: Metrics where a smaller value is better (distortions, artefacts, divergences); all others:
#: larger is better. The names are shared by every profile.
LOWER_IS_BETTER = frozenset({"CE", "MSE", "RMSE", "Qcv", "Nabf"})


def higher_is_better(name: str) -> bool:
    return name not in LOWER_IS_BETTER


def convention(fn) -> str:
    """The first line of ``fn``'s docstring without its ``NAME:`` prefix: the metric's convention."""
    first = fn.__doc__.strip().split("\n\n")[0]
    return " ".join(first.split(":", 1)[1].split()).rstrip(".")


#: profile -> metric -> one-line convention, for tables and --help.
CONVENTIONS = {profile: {name: convention(fn) for name, fn in table.items()} for profile, table in PROFILES.items()}


def conventions_markdown(profile: str) -> str:
    """The conventions table of ``profile`` as Markdown (docs/metrics.md holds these)."""
    rows = [f"| {name} | {text} |" for name, text in CONVENTIONS[profile].items()]
    return "\n".join(["| metric | convention |", "|---|---|", *rows])


__all__ = ["COLOUR_AS_STORED", "CONVENTIONS", "DENSEFUSE", "LOWER_IS_BETTER", "PROFILES", "QABF", "STANDARD", "VIFB",
           "average_gradient", "conventions_markdown", "correlation_coefficient", "cross_entropy", "edge_intensity",
           "entropy", "fmi", "higher_is_better", "mef_ssim", "mef_ssim_scale", "ms_ssim_metric", "mse",
           "mutual_information", "mutual_information_pair", "nabf", "nmi", "psnr", "qabf", "qabf_analysis",
           "qabf_max", "qcb", "qcv", "qncie", "qy", "rmse", "scd", "spatial_frequency", "ssim_metric", "ssim_pair",
           "standard_deviation", "tsallis_entropy", "vif", "vif_pair"]
