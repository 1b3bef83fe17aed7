"""The DenseFuse autoencoder.

H. Li, X.-J. Wu, "DenseFuse: A Fusion Approach to Infrared and Visible Images",
IEEE TIP 28(5):2614-2623, 2019 (arXiv:1804.08361), Fig. 1 and Table I.

Encoder: C1 (3x3, 1->16) followed by a dense block of three 3x3 convolutions that each
output 16 channels and take the concatenation of every earlier output, giving
16 + 3*16 = 64 feature maps. Decoder: four 3x3 convolutions 64->64->32->16->1.
Every convolution has stride 1 and reflection padding 1, so an HxW input gives HxW feature
maps and an HxW output; every layer but the last is followed by a ReLU. 74,193 parameters.

Inputs are expected in [0, 1] (the official releases use 0-255 gray levels; the importer in
``utils/official.py`` rescales their first layer so that the same files give the same result).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from configs import RECEPTIVE_RADIUS
from models.fusion import Strategy, get_strategy


class ConvLayer(nn.Module):
    """3x3 convolution, stride 1, reflection padding 1, optional ReLU. (B,Cin,H,W)->(B,Cout,H,W)."""

    def __init__(self, in_channels: int, out_channels: int, relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=0)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Reflection padding (not zero padding) as in the paper's TF code: zero borders
        # create dark frames in the reconstruction.
        x = self.conv(F.pad(x, (1, 1, 1, 1), mode="reflect"))
        # In place: the convolution's output is fresh and its backward does not need it;
        # saves a full-size allocation per layer (~10 % of CPU fusion time).
        return F.relu_(x) if self.relu else x


class DenseBlock(nn.Module):
    """Dense block of the encoder (paper Sec. III-A). (B,16,H,W) -> (B,64,H,W).

    Layer i sees ``cat([x, out_1, ..., out_{i-1}])`` (16, 32, 48 channels) and adds 16 channels.
    Channel order of the output: input first, then the new features in order. (The official
    TF code concatenates ``[new, x]``; ``utils/official.py`` permutes its kernels to match.)
    """

    def __init__(self, in_channels: int = 16, growth: int = 16, num_layers: int = 3):
        super().__init__()
        self.layers = nn.ModuleList(
            ConvLayer(in_channels + i * growth, growth) for i in range(num_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
        return x


class Encoder(nn.Module):
    """C1 then the dense block. (B,C,H,W) -> (B,64,H,W)."""

    def __init__(self, in_channels: int = 1):
        super().__init__()
        self.conv1 = ConvLayer(in_channels, 16)
        self.dense = DenseBlock(16, 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.conv1(x))


class Decoder(nn.Module):
    """C2..C5: 64->64->32->16->C, no ReLU after C5 (unless ``final_relu``). (B,64,H,W) -> (B,C,H,W)."""

    def __init__(self, out_channels: int = 1, final_relu: bool = False):
        super().__init__()
        self.layers = nn.Sequential(
            ConvLayer(64, 64),
            ConvLayer(64, 32),
            ConvLayer(32, 16),
            ConvLayer(16, out_channels, relu=final_relu),
        )

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.layers(f)


class DenseFuse(nn.Module):
    """DenseFuse autoencoder: ``encode`` -> fuse feature maps -> ``decode``.

    ``forward(x)`` is the reconstruction used in training, (B,C,H,W) -> (B,C,H,W), any H,W >= 2
    (reflection padding needs at least 2 pixels per side).

    Constructor arguments (saved in every checkpoint as ``model_args``, see :meth:`model_args`):
    ``channels`` (1 = the paper's gray network; input channels = output channels) and
    ``final_relu`` (a ReLU after the last decoder layer, as in the authors' PyTorch port; the
    paper and its TF code have none).
    """

    #: Layers applied in sequence on each path; the receptive field of ``decode(encode(x))``
    #: is (2 * 8 + 1) pixels, so a tile halo of 8 pixels reproduces the untiled result.
    RECEPTIVE_RADIUS = RECEPTIVE_RADIUS

    def __init__(self, channels: int = 1, final_relu: bool = False):
        super().__init__()
        self.encoder = Encoder(channels)
        self.decoder = Decoder(channels, final_relu)

    def model_args(self) -> dict:
        """The constructor arguments that rebuild this network: ``DenseFuse(**m.model_args())``."""
        return {"channels": self.encoder.conv1.conv.in_channels, "final_relu": self.decoder.layers[-1].relu}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B,C,H,W) image in [0,1] -> (B,64,H,W) non-negative feature maps."""
        return self.encoder(x)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """(B,64,H,W) feature maps -> (B,C,H,W) image (nominally [0,1]; not clamped)."""
        return self.decoder(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def fuse(self, sources: torch.Tensor | Sequence[torch.Tensor], strategy: str | Strategy = "add",
             l1_radius: int = 1) -> torch.Tensor:
        """Fuse N >= 2 registered sources (paper Fig. 3): encode them as one batch, combine the N
        feature maps with ``strategy`` (a name in ``models.fusion.STRATEGIES``, or a function
        from :func:`models.fusion.get_strategy`), decode.

        ``sources``: a sequence of N (B,C,H,W) tensors, or one (N,C,H,W) stack of N single images.
        Returns the raw decoder output, (B,C,H,W) (nominally [0, 1], not clamped:
        :func:`models.fusion.apply_output_mode` maps it). The one place the three steps are
        written: the tiled pipeline, the ONNX graph and torch.hub all call it.
        """
        n = sources.shape[0] if isinstance(sources, torch.Tensor) else len(sources)
        x = sources if isinstance(sources, torch.Tensor) else torch.cat(tuple(sources))
        fn = get_strategy(strategy, l1_radius) if isinstance(strategy, str) else strategy
        return self.decode(fn(*self.encode(x).chunk(n)))
