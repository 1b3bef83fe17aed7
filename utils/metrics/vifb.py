"""The ``vifb`` profile: VIFB's 13 metrics as its MATLAB code (xingchenzhang/VIFB, ``metrics/``,
``metricsX(imgVI, imgIR, fused)``) computes them, so that our numbers can stand next to a VIFB
table.

VIFB reads the 8-bit files with ``imread`` and passes them on as stored: a colour fused image is
scored channel by channel and the channel scores averaged (with a gray infrared image used for
every channel), a gray fused image against sources reduced by ``rgb2gray`` (rounded to 8 bits).
So this profile takes the images as stored, (H, W) or (H, W, 3), levels 0-255 (``COLOUR_AS_STORED``
tells the evaluator), where the other profiles score luma. Several VIFB definitions differ from
the published ones; each docstring says how, and docs/metrics.md relates the numbers.
"""
from __future__ import annotations

import math
from functools import wraps

import numpy as np

from utils.metrics.common import as_f64, entropy_of_counts, matlab_round
from utils.metrics.gradient import qabf_analysis
from utils.metrics.information import cross_entropy
from utils.metrics.perceptual import qcb, qcv
from utils.metrics.similarity import ssim_pair
from utils.metrics.statistics import average_gradient, edge_intensity, entropy, spatial_frequency, standard_deviation

#: MATLAB ``rgb2gray``: the luma row of the inverse NTSC matrix (not exactly 0.299/0.587/0.114).
RGB2GRAY = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])


def rgb2gray(x: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2gray`` of 8-bit levels: weighted sum rounded half away from zero; gray as is."""
    return matlab_round(x @ RGB2GRAY) if x.ndim == 3 else x


def per_channel(fn):
    """VIFB's wrapper of every metric: a colour F is scored channel by channel (sources' channel k,
    a gray source for every k) and the mean returned; a gray F against ``rgb2gray`` sources."""
    @wraps(fn)
    def metric(a, b, f):
        if f.ndim == 2:
            return fn(rgb2gray(a), rgb2gray(b), f)
        return float(np.mean([fn(_channel(a, k), _channel(b, k), f[..., k]) for k in range(f.shape[2])]))
    return metric


def _channel(x: np.ndarray, k: int) -> np.ndarray:
    return x[..., k] if x.ndim == 3 else x


def _sse_root(x: np.ndarray, f: np.ndarray) -> float:
    """VIFB's ``mse``: sqrt(sum (X - F)^2) / (H*W), the root of the sum, not of the mean."""
    x, f = as_f64(x, f)
    return math.sqrt(float(np.sum((x - f) ** 2))) / x.size


@per_channel
def ce_vifb(a, b, f) -> float:
    """CE: (KL(h_VI||h_F)+KL(h_IR||h_F))/2, 256-bin histograms, bits, bins empty in either skipped; lower is better.

    ``metricsCross_entropy.m``: the standard CE (:func:`utils.metrics.information.cross_entropy`)."""
    return cross_entropy(a, b, f)


@per_channel
def en_vifb(a, b, f) -> float:
    """EN: entropy of F, 256 bins of floor(level), bits (log2).

    ``metricsEntropy.m``: the standard EN on 8-bit images."""
    return entropy(np.floor(f))


def _mi_nats(x: np.ndarray, f: np.ndarray) -> float:
    """VIFB's ``mutinf``: each image min-max stretched to 0-255 and rounded (int16), natural log."""
    def stretch(v):
        lo, hi = v.min(), v.max()
        return np.zeros_like(v) if hi == lo else matlab_round((v - lo) / (hi - lo) * 255)
    x, f = (stretch(v).astype(np.int64) for v in as_f64(x, f))
    joint = np.bincount((x * 256 + f).ravel(), minlength=256 * 256).reshape(256, 256)
    bits = entropy_of_counts(joint.sum(1)) + entropy_of_counts(joint.sum(0)) - entropy_of_counts(joint.ravel())
    return bits * math.log(2)


@per_channel
def mi_vifb(a, b, f) -> float:
    """MI: MI(VI,F)+MI(IR,F) in nats (natural log), each image min-max stretched to 0-255 first.

    ``metricsMutinf.m``: the standard MI x ln 2 when every image spans 0-255; range [0, 2 ln 256]."""
    return _mi_nats(a, f) + _mi_nats(b, f)


@per_channel
def psnr_vifb(a, b, f) -> float:
    """PSNR: 20 log10(255/sqrt(M)), M = mean over sources of sqrt(sum (X-F)^2)/(H*W), dB; inf if F equals both.

    ``metricsPsnr.m``: its ``mse`` is the root of the summed squared error over H*W, so this PSNR
    is far above the standard one (by about 10 log10(H*W / RMSE) dB)."""
    m = (_sse_root(a, f) + _sse_root(b, f)) / 2
    return math.inf if m == 0 else 20 * math.log10(255 / math.sqrt(m))


@per_channel
def ag_vifb(a, b, f) -> float:
    """AG: sum of sqrt((Fx^2+Fy^2)/2) / ((H-1)(W-1)), MATLAB gradient, per channel.

    ``metricsAvg_gradient.m``: the standard AG."""
    return average_gradient(f)


@per_channel
def ei_vifb(a, b, f) -> float:
    """EI: mean Sobel magnitude of F, replicated borders, per channel.

    ``metricsEdge_intensity.m``: the standard EI."""
    return edge_intensity(f)


@per_channel
def qabf_vifb(a, b, f) -> float:
    """Qabf: Xydeas-Petrovic on 255 x the levels (im2double of doubles is a no-op), the magnitude
    itself as strength ratio where source and fused magnitudes are equal.

    ``metricsQabf.m``: :func:`utils.metrics.gradient.qabf_analysis` on levels x 255; equal source
    and fused gradient magnitudes, always 0 or >= 255 there, saturate the strength sigmoid."""
    return qabf_analysis(255.0 * a, 255.0 * b, 255.0 * f)


@per_channel
def sd_vifb(a, b, f) -> float:
    """SD: population standard deviation of F, per channel (``metricsVariance.m`` returns the SD).

    ``metricsVariance.m``: despite its name it returns sqrt of the variance, the standard SD."""
    return standard_deviation(f)


def sf_vifb(a, b, f) -> float:
    """SF: standard SF of F; a colour F as its three channels side by side (MATLAB's 2-D view of the array).

    ``metricsSpatial_frequency.m`` has no channel loop: ``[m, n] = size(fused)`` folds the channels
    into the columns, so a colour F is scored as [R G B] of width 3W (one difference per row
    crosses each channel seam)."""
    (f,) = as_f64(f)
    return spatial_frequency(np.concatenate([f[..., k] for k in range(f.shape[2])], axis=1) if f.ndim == 3 else f)


@per_channel
def rmse_vifb(a, b, f) -> float:
    """RMSE: mean over sources of sqrt(sum (X-F)^2)/(H*W) (root of the sum, not of the mean); lower is better.

    ``metricsRmse.m``: the standard RMSE / sqrt(H*W) when both errors are equal."""
    return (_sse_root(a, f) + _sse_root(b, f)) / 2


@per_channel
def ssim_vifb(a, b, f) -> float:
    """SSIM: SSIM(VI,F)+SSIM(IR,F), the sum (range [-2, 2]), 11x11 Gaussian sigma 1.5, L = 255, valid map mean.

    ``metricsSsim.m``: twice the standard SSIM."""
    return ssim_pair(a, f) + ssim_pair(b, f)


@per_channel
def qcb_vifb(a, b, f) -> float:
    """Qcb: Chen-Blum as the standard Qcb (VIFB ships Liu's code unchanged).

    ``metricsQcb.m``."""
    return qcb(a, b, f)


@per_channel
def qcv_vifb(a, b, f) -> float:
    """Qcv: Chen-Varshney as the standard Qcv (window 16, alpha 5); lower is better.

    ``metricsQcv.m``."""
    return qcv(a, b, f)


VIFB = {"CE": ce_vifb, "EN": en_vifb, "MI": mi_vifb, "PSNR": psnr_vifb, "AG": ag_vifb, "EI": ei_vifb,
        "Qabf": qabf_vifb, "SD": sd_vifb, "SF": sf_vifb, "RMSE": rmse_vifb, "SSIM": ssim_vifb, "Qcb": qcb_vifb,
        "Qcv": qcv_vifb}
