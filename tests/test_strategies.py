import numpy as np
import pytest
import torch
from scipy import ndimage

from models.fusion import STRATEGIES, get_strategy, l1_activity, l1_norm, l1_weights


@pytest.fixture
def maps():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 64, 9, 13, generator=g), torch.rand(2, 64, 9, 13, generator=g)


def test_closed_forms(maps):
    a, b = maps
    assert torch.equal(STRATEGIES["add"](a, b), a + b)
    assert torch.equal(STRATEGIES["mean"](a, b), (a + b) / 2)
    assert torch.equal(STRATEGIES["max"](a, b), torch.maximum(a, b))


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_symmetric_and_shape(maps, name):
    a, b = maps
    fn = get_strategy(name, 1)
    out = fn(a, b)
    assert out.shape == a.shape
    assert torch.allclose(out, fn(b, a), atol=1e-6)


@pytest.mark.parametrize("name", ["mean", "max", "l1_norm"])
def test_fusing_with_itself_is_identity(maps, name):
    a, _ = maps
    assert torch.allclose(get_strategy(name, 2)(a, a), a, atol=1e-6)


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_l1_activity_matches_scipy_window_mean(maps, radius):
    a, _ = maps
    act = a.abs().sum(1)[0].double().numpy()
    # Independent reference: mean over the valid part of the (2r+1)^2 window.
    ref = ndimage.generic_filter(np.pad(act, radius, constant_values=np.nan), np.nanmean,
                                 size=2 * radius + 1, mode="constant", cval=np.nan)
    ref = ref[radius:radius + act.shape[0], radius:radius + act.shape[1]] if radius else act
    got = l1_activity(a, radius)[0, 0].double().numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def valid_window_mean(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean of x over the part of each (2r+1)^2 window inside the image, from SciPy's box sums."""
    size = 2 * radius + 1
    sums = ndimage.uniform_filter(x, size, mode="constant", cval=0.0)
    counts = ndimage.uniform_filter(np.ones_like(x), size, mode="constant", cval=0.0)
    return sums / counts


def test_l1_weights_sum_to_one_and_closed_form(maps):
    """Paper Eqs. 3-5 computed independently in float64 NumPy/SciPy: C = sum_c |phi|, block
    mean over the valid window, w_k = C_k / (C_1 + C_2), f = w_1 phi_1 + w_2 phi_2."""
    a, b = maps
    an, bn = a.double().numpy(), b.double().numpy()
    ca = np.stack([valid_window_mean(np.abs(an[i]).sum(0), 1) for i in range(an.shape[0])])[:, None]
    cb = np.stack([valid_window_mean(np.abs(bn[i]).sum(0), 1) for i in range(bn.shape[0])])[:, None]
    expect = ca / (ca + cb) * an + cb / (ca + cb) * bn
    np.testing.assert_allclose(l1_norm(a, b, radius=1).double().numpy(), expect, atol=1e-5)
    # Weights sum to 1: fusing two constant maps c1, c2 lands between them.
    out = l1_norm(torch.full_like(a, 1.0), torch.full_like(a, 3.0), radius=0)
    assert torch.allclose(out, torch.full_like(a, 0.25 * 1 + 0.75 * 3))


def test_l1_equal_weights_where_both_zero(maps):
    """Where both activities are 0 the weights are exactly 1/2 each; elsewhere C_ir / (C_ir + C_vis).
    The weights themselves are checked: fused zero maps would hide any finite weight."""
    a, b = maps
    a, b = a.clone(), b.clone()
    a[..., :4, :] = 0  # rows 0-3 silent in both maps (radius 0: no neighbours leak in)
    b[..., :4, :] = 0
    w, w_b = l1_weights(a, b, radius=0)
    assert torch.equal(w[..., :4, :], torch.full_like(w[..., :4, :], 0.5))
    ca, cb = a.abs().sum(1, keepdim=True), b.abs().sum(1, keepdim=True)
    torch.testing.assert_close(w[..., 4:, :], (ca / (ca + cb))[..., 4:, :])
    assert torch.equal(w_b, 1 - w)
    # One side silent: all weight on the other.
    assert torch.equal(l1_weights(torch.zeros_like(a), b, radius=0)[0][..., 4:, :], torch.zeros_like(w[..., 4:, :]))
    assert torch.isfinite(l1_norm(torch.zeros_like(a), torch.zeros_like(b))).all()


def test_unknown_strategy():
    with pytest.raises(ValueError, match="unknown fusion strategy"):
        get_strategy("median")


def test_two_sources_bit_for_bit_the_paper_formula(maps):
    """N = 2 is exactly the two-source code this generalises (same operations in the same order),
    so outputs made before N-source fusion existed are reproduced byte for byte."""
    a, b = maps
    act_a, act_b = l1_activity(a, 1), l1_activity(b, 1)
    total = act_a + act_b
    w = torch.where(total > 0, act_a / total.clamp_min(torch.finfo(total.dtype).tiny), 0.5)
    assert torch.equal(l1_norm(a, b, radius=1), w * a + (1.0 - w) * b)
    assert torch.equal(STRATEGIES["mean"](a, b), (a + b) * 0.5)


def test_three_sources_closed_forms(maps):
    a, b = maps
    c = torch.rand(a.shape, generator=torch.Generator().manual_seed(5))
    assert torch.equal(STRATEGIES["add"](a, b, c), a + b + c)
    torch.testing.assert_close(STRATEGIES["mean"](a, b, c), (a + b + c) / 3)
    assert torch.equal(STRATEGIES["max"](a, b, c), torch.maximum(torch.maximum(a, b), c))
    acts = [l1_activity(f, 1) for f in (a, b, c)]
    total = acts[0] + acts[1] + acts[2]
    weights = l1_weights(a, b, c, radius=1)
    for w, act in zip(weights, acts, strict=True):
        torch.testing.assert_close(w, act / total)
    expect = sum(act / total * f for act, f in zip(acts, (a, b, c), strict=True))
    torch.testing.assert_close(l1_norm(a, b, c, radius=1), expect)
    # Order of the sources does not matter (up to rounding).
    for name in STRATEGIES:
        fn = get_strategy(name, 1)
        torch.testing.assert_close(fn(a, b, c), fn(c, a, b))


def test_three_silent_sources_get_equal_weights(maps):
    z = torch.zeros_like(maps[0])
    for w in l1_weights(z, z, z, radius=0):
        torch.testing.assert_close(w, torch.full_like(w[:, :1], 1 / 3))


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_fewer_than_two_maps_is_an_error(maps, name):
    with pytest.raises(ValueError, match="at least 2 feature maps"):
        get_strategy(name, 1)(maps[0])
