import pytest
import torch
from skimage.metrics import structural_similarity

from utils.losses import DenseFuseLoss


def test_pixel_term_is_mse_on_0_255():
    x = torch.zeros(1, 1, 16, 16)
    y = torch.full_like(x, 2 / 255)  # every pixel off by 2 gray levels
    _, pixel, _ = DenseFuseLoss(100)(y, x)
    assert pixel.item() == pytest.approx(4.0, rel=1e-5)


def test_ssim_term_matches_scikit_image():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 40, 37, generator=g)
    y = (x + 0.1 * torch.rand(1, 1, 40, 37, generator=g)).clamp(0, 1)
    total, pixel, ssim_loss = DenseFuseLoss(10)(y, x)
    ref = structural_similarity(x[0, 0].double().numpy(), y[0, 0].double().numpy(), data_range=1.0,
                                gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert 1 - ssim_loss.item() == pytest.approx(ref, abs=2e-3)
    assert total.item() == pytest.approx(pixel.item() + 10 * ssim_loss.item(), rel=1e-6)


def test_identical_images_zero_loss():
    x = torch.rand(2, 1, 20, 20)
    total, _, _ = DenseFuseLoss(1000)(x, x)
    assert abs(total.item()) < 1e-3
