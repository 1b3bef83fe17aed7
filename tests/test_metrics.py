"""Metric conventions pinned by closed forms, independent implementations and golden values."""
import json
import math
import os

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from tests.conftest import ROOT
from utils import metrics as M
from utils.metrics.common import gaussian

RNG = np.random.default_rng(0)


def img(h=64, w=72, seed=0):
    r = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    return np.clip(np.rint(128 + 60 * np.sin(x / 5 + seed) * np.cos(y / 7) + r.normal(0, 12, (h, w))), 0, 255)


A, B = img(seed=1), img(seed=2)
F = np.floor((A + B) / 2 + 0.5)


def test_entropy_closed_forms():
    assert M.entropy(np.full((10, 10), 77.0)) == 0.0
    two = np.zeros((10, 10))
    two[:5] = 200
    assert M.entropy(two) == pytest.approx(1.0)
    assert M.entropy(np.arange(256.0).reshape(16, 16)) == pytest.approx(8.0)


def test_mi_of_image_with_itself_is_its_entropy():
    assert M.mutual_information_pair(A, A) == pytest.approx(M.entropy(A), abs=1e-12)
    assert M.mutual_information(A, A, A) == pytest.approx(2 * M.entropy(A), abs=1e-12)


def test_sd_is_population_std_and_float_not_uint8():
    assert M.standard_deviation(A) == pytest.approx(np.std(A), rel=1e-12)
    x = np.array([[0.0, 255.0]])
    assert M.standard_deviation(x) == 127.5  # uint8 arithmetic would wrap


def test_sf_and_ag_closed_forms():
    ramp = np.tile(np.arange(8.0) * 3, (5, 1))  # horizontal slope 3, no vertical change
    assert M.spatial_frequency(ramp) == pytest.approx(math.sqrt(5 * 7 * 9 / 40))
    assert M.average_gradient(ramp) == pytest.approx(40 * 3 / math.sqrt(2) / (4 * 7))


def test_correlations():
    assert M.correlation_coefficient(A, A, A) == pytest.approx(1.0)
    assert M.correlation_coefficient(A, B, F) == pytest.approx(
        (np.corrcoef(A.ravel(), F.ravel())[0, 1] + np.corrcoef(B.ravel(), F.ravel())[0, 1]) / 2)
    assert -2 <= M.scd(A, B, F) <= 2
    assert M.scd(A, B, A + B) == pytest.approx(2.0)  # F - B = A exactly


def test_psnr():
    assert M.psnr(A, A, A) == math.inf
    assert M.psnr(A, A, A + 2) == pytest.approx(10 * math.log10(255 ** 2 / 4))


def test_ssim_matches_scikit_image_and_is_one_on_equal():
    assert M.ssim_metric(A, A, A) == pytest.approx(1.0, abs=1e-9)
    ref = structural_similarity(F, A, data_range=255, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    assert M.ssim_pair(A, F) == pytest.approx(ref, abs=2e-3)


def test_ms_ssim_equal_images_and_size_limit():
    big = img(170, 180, 3)
    assert M.ms_ssim_metric(big, big, big) == pytest.approx(1.0, abs=1e-9)
    edge = img(161, 161, 4)
    assert M.ms_ssim_metric(edge, edge, edge) == pytest.approx(1.0, abs=1e-9)  # the smallest it takes
    from utils.metrics.common import TooSmall
    with pytest.raises(TooSmall, match="at least 161x161 pixels, got 160x161"):
        M.ms_ssim_metric(*(img(161, 160, 4),) * 3)


def test_qabf_bounds_and_maximum():
    assert M.qabf(A, B, F) <= M.qabf_max() <= 0.9874
    assert M.qabf(A, A, A) == pytest.approx(M.qabf_max(), abs=1e-12)
    assert M.qabf(A, B, F) == pytest.approx(M.qabf(B, A, F))  # symmetric in the sources
    # scale-free up to float ties in the "equal magnitude" test
    assert M.qabf(A, B, F) == pytest.approx(M.qabf(A / 255, B / 255, F / 255), rel=1e-3)


def test_vif_identity_and_symmetry():
    assert M.vif_pair(A, A) == pytest.approx(1.0, abs=1e-6)
    assert M.vif(A, B, F) == pytest.approx(M.vif(B, A, F))
    assert 0 < M.vif(A, B, F) < 2


@pytest.mark.parametrize("name", list(M.STANDARD))
def test_standard_metrics_symmetric_in_sources(name):
    big = [img(170, 176, s) for s in (4, 5)]
    fused = np.floor((big[0] + big[1]) / 2 + 0.5)
    fn = M.STANDARD[name]
    assert fn(*big, fused) == pytest.approx(fn(big[1], big[0], fused), rel=1e-9)


# ---- densefuse profile: vectorised code vs straightforward ports of the MATLAB loops ----------

def fmi_loop(a, f):
    """Per-window port of fmi.m (one source), used only as an independent reference."""
    l, vals = 9, []
    for p in range(1, a.shape[0] - 1):
        for q in range(1, a.shape[1] - 1):
            aw, fw = a[p - 1:p + 2, q - 1:q + 2].T.ravel(), f[p - 1:p + 2, q - 1:q + 2].T.ravel()
            if np.array_equal(aw, fw):
                vals.append(1.0)
                continue
            def pdf(x):
                x = np.ones(9) if x.max() == x.min() else (x - x.min()) / (x.max() - x.min())
                return x / x.sum()
            pa, pf = pdf(aw), pdf(fw)
            ca, cf = np.cumsum(pa), np.cumsum(pf)
            ta, tf = pa - pa.mean(), pf - pf.mean()
            c = 0.0 if (ta * tf).sum() == 0 else (ta * tf).sum() / math.sqrt((ta ** 2).sum() * (tf ** 2).sum())
            i = np.arange(1, l + 1)
            sa, sf = math.sqrt((i * i * pa).sum() - (i * pa).sum() ** 2), math.sqrt((i * i * pf).sum() - (i * pf).sum() ** 2)
            if c >= 0:
                cop = lambda x, y: 0.5 * (x + y - abs(x - y))
                phi = 0 if (c == 0 or sa == 0 or sf == 0) else c / (sum(cop(cf[m], ca[n]) - cf[m] * ca[n] for m in range(l) for n in range(l)) / (sf * sa))
            else:
                cop = lambda x, y: 0.5 * (x + y - 1 + abs(x + y - 1))
                phi = 0 if (sa == 0 or sf == 0) else c / (sum(cop(cf[m], ca[n]) - cf[m] * ca[n] for m in range(l) for n in range(l)) / (sf * sa))
            H = lambda m, n: cop(cf[m], ca[n]) if m >= 0 and n >= 0 else 0.0
            hj = 0.0
            for m in range(l):
                for n in range(l):
                    jp = phi * (H(m, n) - H(m - 1, n) - H(m, n - 1) + H(m - 1, n - 1)) + (1 - phi) * pf[m] * pa[n]
                    if jp != 0:
                        hj += -jp * math.log2(abs(jp))
            ha = -sum(x * math.log2(x) for x in pa if x > 0)
            hf = -sum(x * math.log2(x) for x in pf if x > 0)
            mi = ha + hf - hj
            vals.append(0.0 if mi == 0 else 2 * mi / (ha + hf))
    return np.array(vals)


def test_fmi_vectorised_equals_loop_port():
    a, b, f = img(9, 11, 1) / 255, img(9, 11, 2) / 255, img(9, 11, 3) / 255
    a[:3, :3] = 0.5  # a flat window and a window equal to F's
    f[5:8, 5:8] = a[5:8, 5:8]
    ref = (fmi_loop(a, f).mean() + fmi_loop(b, f).mean()) / 2
    assert M.fmi(a, b, f, "none") == pytest.approx(ref, rel=1e-9)


def test_fmi_bounds_and_identity():
    a, b = A[:32, :32] / 255, B[:32, :32] / 255
    assert M.fmi(a, a, a, "dct") == 1.0
    for feature in ("wavelet", "dct"):
        assert 0 <= M.fmi(a, b, (a + b) / 2, feature) <= 1


def mef_loop(a, b, f):
    """Per-window port of mef_ssim (one scale), used only as an independent reference."""
    n, bd, eps = 11, 5, np.finfo(float).eps
    g = gaussian(11, 1.5)
    seq = np.stack([a, b], -1)
    out = []
    for i in range(bd, a.shape[0] - bd):
        for j in range(bd, a.shape[1] - bd):
            blocks = seq[i - bd:i + bd + 1, j - bd:j + bd + 1]
            mu = blocks.reshape(-1, 2).mean(0)
            ed = np.sqrt(np.maximum(((blocks - mu) ** 2).reshape(-1, 2).sum(0), 0)) + 0.001
            vec = blocks.reshape(-1, 2)
            R = (np.linalg.norm(vec.sum(1) - vec.sum(1).mean()) + eps) / (np.linalg.norm(vec - mu, axis=0).sum() + eps)
            R = min(max(R, eps), 1 - eps)
            p = min(math.tan(math.pi / 2 * R), 10)
            w = (ed / n) ** p + eps
            w = w / w.sum()
            r = sum(w[k] * (blocks[..., k] - mu[k]) / ed[k] for k in range(2))
            if np.linalg.norm(r) > 0:
                r = r / np.linalg.norm(r) * ed.max()
            fb = f[i - bd:i + bd + 1, j - bd:j + bd + 1]
            m1, m2 = (g * r).sum(), (g * fb).sum()
            s1, s2 = (g * (r - m1) ** 2).sum(), (g * (fb - m2) ** 2).sum()
            s12 = (g * (r - m1) * (fb - m2)).sum()
            C = (0.03 * 255) ** 2
            out.append((2 * s12 + C) / (s1 + s2 + C))
    return float(np.mean(out))


def test_mef_ssim_vectorised_equals_loop_port():
    a, b, f = img(20, 23, 1), img(20, 23, 2), img(20, 23, 3)
    assert M.mef_ssim_scale(a, b, f) == pytest.approx(mef_loop(a, b, f), rel=1e-7)


def test_mef_ssim_of_a_source_sequence_of_one_image():
    big = img(48, 50, 7)
    assert M.mef_ssim(big, big, big) == pytest.approx(1.0, abs=1e-6)


def test_nabf_zero_without_artefacts_and_bounded():
    assert M.nabf(A, B, np.minimum(A, B) * 0) == 0.0  # no fused edge stronger than both sources
    assert 0 <= M.nabf(A, B, F) <= 1
    noisy = F + RNG.normal(0, 30, F.shape)
    assert M.nabf(A, B, noisy) > M.nabf(A, B, F)


def test_qabf_analysis_quirk_only_where_gradients_equal():
    assert M.qabf_analysis(A / 255, B / 255, F / 255) == pytest.approx(M.qabf(A, B, F), rel=1e-3)


# ---- golden values on the bundled TNO pairs, F = (A + B) / 2 ----------------------------------

GOLDEN = ROOT / "tests" / "expected" / "tno_average.json"
PAIRS = ["1", "5", "15"]


def golden_rows(names=PAIRS):
    from utils.evaluation import load_levels
    from utils.pairs import find_pairs
    _, pairs = find_pairs(ROOT / "data_test" / "Tno")
    rows = {}
    for p in pairs:
        if p.name not in names:
            continue
        a, b = load_levels(p.ir)[0], load_levels(p.vis)[0]
        f = np.floor((a + b) / 2 + 0.5)  # the plain average, as 8-bit
        rows[p.name] = {f"{prof}:{k}": fn(a, b, f) for prof, table in M.PROFILES.items()
                        for k, fn in table.items()}
    return rows


@pytest.mark.parametrize("names", [PAIRS[:1], pytest.param(PAIRS, marks=pytest.mark.slow)], ids=["pair 1", "all"])
def test_golden_values_on_tno_average(names):
    """Regenerate only on purpose: DENSEFUSE_REGENERATE_GOLDEN=1 python3 -m pytest -m slow -k golden
    tests/test_metrics.py (the default run checks one pair: FMI's loops make each pair seconds)."""
    rows = golden_rows(names)
    if os.environ.get("DENSEFUSE_REGENERATE_GOLDEN") == "1" and names == PAIRS:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(rows, indent=1, sort_keys=True))
        pytest.skip("golden values regenerated")
    expected = {k: v for k, v in json.loads(GOLDEN.read_text()).items() if k in names}
    assert set(expected) == set(rows) == set(names)
    for pair, vals in expected.items():
        for k, v in vals.items():
            # Platform-sensitive in the last bits: float64 FFTs, filters and sums whose order depends on
            # the CPU's SIMD width and the SciPy/PyTorch builds move them by ~1e-12 relative; 1e-6
            # leaves room for that and still catches any change of a metric's definition.
            assert rows[pair][k] == pytest.approx(v, rel=1e-6, abs=1e-9), f"pair {pair} {k}"


def test_conventions_come_from_the_functions_and_docs_hold_them():
    """One source: the first docstring line of each profile entry is its convention, and
    docs/metrics.md holds exactly the generated tables (regenerate with conventions_markdown)."""
    for profile, table in M.PROFILES.items():
        for name, fn in table.items():
            assert fn.__doc__.strip().startswith(f"{name}: "), (profile, name)
            assert M.CONVENTIONS[profile][name] and "\n" not in M.CONVENTIONS[profile][name]
        assert M.conventions_markdown(profile) in (ROOT / "docs" / "metrics.md").read_text(), profile


def test_cli_choices_in_configs_match_the_library():
    """configs.py lists the choices so that --help needs no torch; they must be the real ones:
    every listed output mode is one apply_output_mode computes, and an unlisted one is refused."""
    import torch

    import configs
    from models.fusion import STRATEGIES, apply_output_mode, takes_radius
    from utils.fusion import postprocess
    assert sorted(configs.STRATEGY_NAMES) == sorted(STRATEGIES)
    assert sorted(configs.RADIUS_STRATEGIES) == sorted(s for s in STRATEGIES if takes_radius(s))
    assert sorted(configs.PROFILE_NAMES) == sorted(M.PROFILES)
    y = torch.tensor([[[-0.5, 0.25], [0.75, 1.5]]])
    for mode in configs.OUTPUT_MODES:
        out = apply_output_mode(y, mode)
        assert float(out.min()) >= 0 and float(out.max()) <= 1, mode
    with pytest.raises(ValueError, match="unknown output mode"):
        apply_output_mode(y, "stretch")
    with pytest.raises(ValueError, match="unknown output mode"):
        postprocess(y[0].numpy(), "stretch")


@pytest.mark.parametrize("shape", [(37, 53), (20, 30, 3)])
def test_the_numpy_output_modes_are_the_torch_ones_bit_for_bit(shape):
    """utils.fusion.postprocess (numpy, for the torch-free path) and models.fusion.apply_output_mode
    (torch batches) compute the same float32 operations: the same bits, a constant image included."""
    import torch

    from models.fusion import apply_output_mode
    from utils.fusion import postprocess
    y = np.random.default_rng(0).normal(0.5, 0.6, shape).astype(np.float32)
    for image in (y, np.full(shape, 1.7, np.float32), np.full(shape, 0.3, np.float32)):
        for mode in ("minmax", "clip"):
            ref = apply_output_mode(torch.from_numpy(image)[None], mode)[0].numpy()
            got = postprocess(image, mode)
            assert got.dtype == np.float32 and np.array_equal(got, ref), mode


def test_qabf_and_its_paper_variant_share_their_gradients():
    """They differ only where source and fused gradient magnitudes are equal: on images with no
    exact ties they agree to float rounding; F equal to A is where they part."""
    f = F + np.random.default_rng(3).uniform(-0.4, 0.4, F.shape)
    assert M.qabf_analysis(A, B, f) == pytest.approx(M.qabf(A, B, f), rel=1e-12)
    # On [0, 1] (as the authors ran it) tied magnitudes are small, so the quirk shows.
    a, b = A / 255, B / 255
    assert M.qabf_analysis(a, b, a) < M.qabf(a, b, a) - 0.05
