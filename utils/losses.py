"""Training loss of DenseFuse (paper Eqs. 6-8): L = L_pixel + lambda * L_ssim."""
from __future__ import annotations

import torch
from pytorch_msssim import ssim
from torch import nn

#: The paper measures the pixel loss on 0-255 gray levels. Our images are in [0, 1], so the MSE
#: is multiplied by 255^2 to keep lambda's meaning (lambda = 100 balances the same two terms).
PIXEL_SCALE = 255.0 ** 2


class DenseFuseLoss(nn.Module):
    """Pixel MSE (on the 0-255 scale) + ``ssim_weight`` * (1 - SSIM).

    SSIM: Wang et al. 2004 via pytorch-msssim, 11x11 Gaussian window (sigma 1.5), K1=0.01,
    K2=0.03, data range 1, mean over the (valid-convolution) SSIM map, the channels (RGB
    networks) and the batch. Inputs (B,C,H,W) in [0,1], H,W >= 11. ``forward`` returns
    (total, pixel, ssim_loss).
    """

    def __init__(self, ssim_weight: float = 100.0):
        super().__init__()
        self.ssim_weight = ssim_weight

    def forward(self, output: torch.Tensor, target: torch.Tensor):
        pixel = torch.mean((output - target) ** 2) * PIXEL_SCALE
        ssim_loss = 1.0 - ssim(output, target, data_range=1.0, size_average=True)
        return pixel + self.ssim_weight * ssim_loss, pixel, ssim_loss
