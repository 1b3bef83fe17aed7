"""The metrics beyond the paper's (VIFB's and IVIF_ZOO's lists) and the vifb profile: closed forms,
degenerate images, and straightforward per-pixel / per-window ports of the reference MATLAB code."""
import math
import os
import shutil
import subprocess

import numpy as np
import pytest

from tests.test_metrics import img
from utils import metrics as M
from utils.metrics.common import gaussian, normalize_levels
from utils.metrics.vifb import rgb2gray

A, B = img(seed=1), img(seed=2)
F = np.floor((A + B) / 2 + 0.5)


# ---- closed forms -----------------------------------------------------------------------------

def test_cross_entropy_of_a_known_histogram():
    a = np.zeros((4, 4))
    a[:2] = 255                      # levels 0 and 255, half each
    f = np.zeros((4, 4))
    f[:1] = 255                      # a quarter 255, three quarters 0
    expected = 0.5 * math.log2(0.5 / 0.25) + 0.5 * math.log2(0.5 / 0.75)
    assert M.cross_entropy(a, a, f) == pytest.approx(expected, abs=1e-12)
    assert M.cross_entropy(a, a, a) == 0.0


def test_edge_intensity_of_a_step():
    f = np.zeros((10, 12))
    f[:, 6:] = 50.0
    # Sobel of a step of 50: 4 * 50 on the two columns beside the edge, 0 elsewhere (replicated borders)
    assert M.edge_intensity(f) == pytest.approx(2 * 10 * 200 / f.size)
    assert M.edge_intensity(np.full((8, 8), 77.0)) == 0.0


def test_mse_rmse_psnr_agree():
    f = A + 3.0
    assert M.mse(A, A, f) == pytest.approx(9.0) and M.rmse(A, A, f) == pytest.approx(3.0)
    assert M.psnr(A, B, F) == pytest.approx(20 * math.log10(255 / M.rmse(A, B, F)))
    assert M.mse(A, A, A) == 0.0


def test_nmi_bounds():
    assert M.nmi(A, A, A) == pytest.approx(2.0)
    assert M.nmi(A, B, np.full_like(A, 9.0)) == 0.0  # a constant F shares nothing
    assert 0 < M.nmi(A, B, F) < 2


def test_qncie_equal_and_independent():
    uniform = np.tile(np.arange(256.0), (4, 1))  # NCC(X, X) = H(X) / 8 bits: 1 for a flat histogram
    assert M.qncie(uniform, uniform, uniform) == pytest.approx(1.0)
    assert M.qncie(A, A, A) < 1
    # three images whose joint histograms factorise: NCC = 0 pairwise, R = I
    y, x = np.mgrid[0:64, 0:64]
    a, b, f = 255.0 * (x % 2), 255.0 * (y % 2), 255.0 * ((x // 2 + y // 2) % 2)
    assert M.qncie(a, b, f) == pytest.approx(1 - math.log(3) / math.log(256), abs=1e-12)


def test_tsallis_closed_forms():
    y, x = np.mgrid[0:64, 0:64]
    a, f = 255.0 * (x % 2), 255.0 * (y % 2)  # independent: I_q = 0
    assert M.tsallis_entropy(a, a, f) == pytest.approx(0.0, abs=1e-12)
    # F = A: I_q = (1 - sum p^(2-q)) / (1 - q)
    p = np.bincount(A.astype(int).ravel(), minlength=256) / A.size
    p = p[p > 0]
    one = (1 - np.sum(p ** (2 - 1.85))) / (1 - 1.85)
    assert M.tsallis_entropy(A, A, A) == pytest.approx(2 * one)


@pytest.mark.parametrize("name", ["Qy", "Qcb"])
def test_perfect_fusion_scores_one(name):
    assert M.STANDARD[name](A, A, A) == pytest.approx(1.0)


def test_qcv_zero_when_f_equals_both():
    assert M.qcv(A, A, A) == pytest.approx(0.0, abs=1e-9)
    assert M.qcv(A, B, F) > 0


@pytest.mark.parametrize("profile", ["standard", "vifb"])
def test_constant_and_black_images_give_numbers(profile):
    """Never NaN, and inf only where the convention says so (PSNR of F equal to both sources)."""
    table = M.PROFILES[profile]
    black = np.zeros((170, 172))
    for a, b, f in [(black, black, black), (black + 40, black + 90, black + 200), (A[:48, :48], black[:48, :48],
                                                                                   black[:48, :48] + 7)]:
        for k, fn in table.items():
            if k == "MS-SSIM" and min(f.shape) <= 160:
                continue
            v = fn(a, b, f)
            assert not math.isnan(v), (k, a.mean(), f.mean())
            if math.isinf(v):
                assert k == "PSNR" and np.array_equal(a, f) and np.array_equal(b, f)


# ---- straightforward ports of the reference code ----------------------------------------------

def qy_loop(a, b, f):
    """metricYang.m window by window: 7x7 Gaussian sums, C = 2e-16, NaN windows dropped."""
    w, c = gaussian(7, 1.5), 2e-16
    out = []
    for i in range(a.shape[0] - 6):
        for j in range(a.shape[1] - 6):
            pa, pb, pf = (x[i:i + 7, j:j + 7] for x in (a, b, f))

            def stats(x, y):
                mx, my = np.sum(w * x), np.sum(w * y)
                vx, vy = np.sum(w * (x - mx) ** 2), np.sum(w * (y - my) ** 2)
                cxy = np.sum(w * (x - mx) * (y - my))
                return (2 * mx * my + c) * (2 * cxy + c) / ((mx * mx + my * my + c) * (vx + vy + c)), vx, vy

            s_ab, va, vb = stats(pa, pb)
            s_af, s_bf = stats(pa, pf)[0], stats(pb, pf)[0]
            if va + vb == 0:
                continue
            lam = va / (va + vb)
            out.append(lam * s_af + (1 - lam) * s_bf if s_ab >= 0.75 else max(s_af, s_bf))
    return float(np.mean(out))


def test_qy_equals_window_loop():
    a, b = A[:24, :26], B[:24, :26]
    f = F[:24, :26].copy()
    f[:6, :8] = a[:6, :8]
    a, b = a.copy(), b.copy()
    a[-8:, -8:], b[-8:, -8:] = 100, 100  # a corner flat in both sources: its windows are left out
    assert M.qy(a, b, f) == pytest.approx(qy_loop(a, b, f), rel=1e-9)


def _freq(n):
    return (np.arange(n) - n // 2) * (2.0 / n)


def qcb_port(a, b, f):
    """metricChenBlum.m with explicit fftshift/ifftshift and correlate2d for filter2."""
    from scipy import signal
    h, w = a.shape
    u, v = np.meshgrid(_freq(w) * w / 30, _freq(h) * h / 30)
    r = np.sqrt(u ** 2 + v ** 2)
    sd = np.exp(-(r / 15.3870) ** 2) - 0.7622 * np.exp(-(r / 1.3456) ** 2)
    y, x = np.mgrid[-15:16, -15:16]
    g = [np.exp(-(x * x + y * y) / (2 * s * s)) / (2 * np.pi * s * s) for s in (2, 4)]

    def response(im):
        filt = np.fft.ifft2(np.fft.ifftshift(np.fft.fftshift(np.fft.fft2(normalize_levels(im))) * sd))
        c = np.abs(signal.correlate2d(filt, g[0], mode="same") / signal.correlate2d(filt, g[1], mode="same") - 1)
        return c ** 3 / (c ** 2 + 1e-4)

    c1, c2, cf = response(a), response(b), response(f)
    q1 = np.where(c1 < cf, c1 / cf, cf / c1)
    q2 = np.where(c2 < cf, c2 / cf, cf / c2)
    lam = c1 * c1 / (c1 * c1 + c2 * c2)
    return float(np.mean(lam * q1 + (1 - lam) * q2))


def qcv_port(a, b, f):
    """metricChen.m: per-block loops for the saliency and the distortion, explicit shifts."""
    from scipy import signal
    a, b, f = normalize_levels(a), normalize_levels(b), normalize_levels(f)
    h, w = a.shape
    k = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=float)
    u, v = np.meshgrid(_freq(w) * w / 8, _freq(h) * h / 8)
    r = np.sqrt(u ** 2 + v ** 2)
    csf = 2.6 * (0.0192 + 0.144 * r) * np.exp(-(0.144 * r) ** 1.1)
    num = den = 0
    grads, dists = [], []
    for x in (a, b):
        g = np.hypot(signal.correlate2d(x, k, mode="same"), signal.correlate2d(x, k.T, mode="same"))
        d = np.fft.ifft2(np.fft.ifftshift(np.fft.fftshift(np.fft.fft2(x - f)) * csf))
        grads.append(g)
        dists.append(d)
    for i in range(0, h, 16):
        for j in range(0, w, 16):
            for g, d in zip(grads, dists, strict=True):
                lam = np.sum(g[i:i + 16, j:j + 16] ** 5)
                num += lam * np.sum(d[i:i + 16, j:j + 16] ** 2) / 256  # blkproc pads the edge blocks with zeros
                den += lam
    return float(np.real(num / den))


@pytest.mark.parametrize("shape", [(40, 48), (37, 45)], ids=["even", "odd"])
def test_qcb_and_qcv_equal_their_ports(shape):
    a, b, f = (x[:shape[0], :shape[1]] for x in (A, B, F))
    assert M.qcb(a, b, f) == pytest.approx(qcb_port(a, b, f), rel=1e-9)
    assert M.qcv(a, b, f) == pytest.approx(qcv_port(a, b, f), rel=1e-9)


def test_tsallis_and_qncie_equal_cell_loops():
    a, f = A[:20, :20], F[:20, :20]

    def joint(x, y):
        h = np.zeros((256, 256))
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                h[int(x[i, j]), int(y[i, j])] += 1
        return h / h.sum()

    h = joint(a, f)
    px, pf = h.sum(1), h.sum(0)
    s = sum(h[i, j] ** 1.85 / (px[i] * pf[j]) ** 0.85 for i in range(256) for j in range(256) if px[i] * pf[j] > 0)
    assert M.tsallis_entropy(a, a, f) == pytest.approx(2 * (1 - s) / (1 - 1.85), rel=1e-10)

    def ncc(x, y):
        p = joint(normalize_levels(x), normalize_levels(y))
        ent = [-np.sum(q[q > 0] * np.log(q[q > 0])) / np.log(256) for q in (p.sum(1), p.sum(0), p.ravel())]
        return ent[0] + ent[1] - ent[2]

    b = B[:20, :20]
    r = np.linalg.eigvals(np.array([[1, ncc(a, b), ncc(a, f)], [ncc(a, b), 1, ncc(b, f)],
                                    [ncc(a, f), ncc(b, f), 1]])).real / 3
    assert M.qncie(a, b, f) == pytest.approx(1 + np.sum(r * np.log(r)) / np.log(256), rel=1e-10)


# ---- the vifb profile -------------------------------------------------------------------------

def test_vifb_quirks_closed_forms():
    v = M.VIFB
    f = A + 2.0
    sse = math.sqrt(np.sum((A - f) ** 2))
    assert v["RMSE"](A, A, f) == pytest.approx(sse / A.size)  # root of the sum, over H*W
    assert v["PSNR"](A, A, f) == pytest.approx(20 * math.log10(255 / math.sqrt(sse / A.size)))
    assert v["SSIM"](A, B, F) == pytest.approx(2 * M.ssim_metric(A, B, F))
    # natural log, and each image stretched to 0-255 first: A/2 has the MI of A
    assert v["MI"](A / 2 + 10, B, F) == pytest.approx(v["MI"](A, B, F))
    span = np.linspace(0, 255, A.size).reshape(A.shape).round()
    assert v["MI"](span, span, span) == pytest.approx(2 * math.log(2) * M.entropy(span))


def test_vifb_colour_per_channel_and_sf_side_by_side():
    vi = np.stack([A, B, F], axis=-1)
    f = np.stack([F, A, B], axis=-1)
    ir = B
    for k in ("CE", "Qabf", "SSIM", "Qcb", "EN"):
        per = np.mean([M.VIFB[k].__wrapped__(ir, vi[..., c], f[..., c]) for c in range(3)])
        assert M.VIFB[k](ir, vi, f) == pytest.approx(per), k
    assert M.VIFB["SF"](ir, vi, f) == pytest.approx(M.spatial_frequency(np.concatenate([F, A, B], axis=1)))
    # a gray F against a colour source: MATLAB's rgb2gray, rounded to 8 bits
    assert M.VIFB["CE"](ir, vi, F) == pytest.approx(M.cross_entropy(ir, rgb2gray(vi), F))
    assert rgb2gray(np.full((1, 1, 3), 255.0))[0, 0] == 255


VIFB_DIR = os.environ.get("DENSEFUSE_VIFB_METRICS")


@pytest.mark.slow
@pytest.mark.skipif(not (VIFB_DIR and shutil.which("octave-cli")),
                    reason="set DENSEFUSE_VIFB_METRICS to VIFB's metrics/ folder and install octave + octave-image")
def test_vifb_profile_equals_vifb_matlab_code_in_octave(tmp_path):
    """Runs VIFB's own metricsX.m under GNU Octave (with MATLAB's freqspace and blkproc, missing
    from Octave, written from their documentation) on a gray and a colour pair."""
    from PIL import Image
    (tmp_path / "freqspace.m").write_text(
        "function [f1, f2] = freqspace(n, flag)\n f1 = ((0:n(2)-1) - floor(n(2)/2)) * (2/n(2));\n"
        " f2 = ((0:n(1)-1) - floor(n(1)/2)) * (2/n(1));\n if nargin > 1, [f1, f2] = meshgrid(f1, f2); end\nend\n")
    (tmp_path / "blkproc.m").write_text(
        "function B = blkproc(A, sz, border, fun)\n [h, w] = size(A); H = ceil(h/sz(1)); W = ceil(w/sz(2));\n"
        " P = zeros(H*sz(1), W*sz(2)); P(1:h, 1:w) = A; B = zeros(H, W);\n for i = 1:H, for j = 1:W\n"
        "  B(i,j) = fun(P((i-1)*sz(1)+1:i*sz(1), (j-1)*sz(2)+1:j*sz(2))); end, end\nend\n")
    names = {"CE": "Cross_entropy", "MI": "Mutinf", "PSNR": "Psnr", "EI": "Edge_intensity", "Qabf": "Qabf",
             "SF": "Spatial_frequency", "RMSE": "Rmse", "SSIM": "Ssim", "Qcb": "Qcb", "Qcv": "Qcv", "EN": "Entropy",
             "SD": "Variance", "AG": "Avg_gradient"}
    vi_rgb = np.stack([A, B, F], axis=-1).astype(np.uint8)
    for case, (vi, ir, f) in {"gray": (B, A, F), "colour": (vi_rgb, A, np.stack([F, A, B], axis=-1))}.items():
        for n, x in (("vi", vi), ("ir", ir), ("f", f)):
            Image.fromarray(np.asarray(x, dtype=np.uint8)).save(tmp_path / f"{case}_{n}.png")
        script = (f"pkg load image; warning('off', 'all'); addpath('{tmp_path}'); addpath('{VIFB_DIR}');"
                  f"vi = imread('{tmp_path}/{case}_vi.png'); ir = imread('{tmp_path}/{case}_ir.png');"
                  f"f = imread('{tmp_path}/{case}_f.png');"
                  + "".join(f"printf('{k} %.15g\\n', real(metrics{m}(vi, ir, f)));" for k, m in names.items()))
        out = subprocess.run(["octave-cli", "--eval", script], capture_output=True, text=True, timeout=600).stdout
        matlab = {line.split()[0]: float(line.split()[1]) for line in out.splitlines() if line.split()[:1]}
        ours = {k: M.VIFB[k](np.asarray(ir, float), np.asarray(vi, float), np.asarray(f, float)) for k in names}
        for k in names:
            assert ours[k] == pytest.approx(matlab[k], rel=1e-9, abs=1e-12), (case, k)
