import pytest
import torch

from models.densefuse import DenseFuse


def test_parameter_count_matches_paper():
    assert sum(p.numel() for p in DenseFuse().parameters()) == 74_193


def test_layer_widths():
    m = DenseFuse()
    assert m.encoder.conv1.conv.in_channels == 1 and m.encoder.conv1.conv.out_channels == 16
    assert [layer.conv.in_channels for layer in m.encoder.dense.layers] == [16, 32, 48]
    assert all(layer.conv.out_channels == 16 for layer in m.encoder.dense.layers)
    assert [(layer.conv.in_channels, layer.conv.out_channels) for layer in m.decoder.layers] == \
        [(64, 64), (64, 32), (32, 16), (16, 1)]
    assert all(mod.conv.kernel_size == (3, 3) and mod.conv.stride == (1, 1) for mod in m.modules()
               if hasattr(mod, "conv"))


@pytest.mark.parametrize("hw", [(2, 2), (3, 5), (7, 11), (33, 20)])
def test_shapes_any_size(hw):
    m = DenseFuse().eval()
    x = torch.rand(2, 1, *hw)
    with torch.no_grad():
        f = m.encode(x)
        assert f.shape == (2, 64, *hw)
        assert (f >= 0).all()  # ReLU after every encoder layer
        assert m.decode(f).shape == (2, 1, *hw)
        assert m(x).shape == (2, 1, *hw)


def test_dense_block_concatenates_input_first():
    m = DenseFuse().eval()
    x = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        c1 = m.encoder.conv1(x)
        f = m.encode(x)
        assert torch.equal(f[:, :16], c1)  # input of the block, then 3 x 16 new maps
        assert torch.allclose(f[:, 16:32], m.encoder.dense.layers[0](c1))


def test_last_layer_has_no_relu():
    m = DenseFuse().eval()
    with torch.no_grad():
        m.decoder.layers[-1].conv.bias.fill_(-5.0)
        assert (m(torch.rand(1, 1, 8, 8)) < 0).any()


def test_reflection_padding_not_zero_padding():
    # With reflection padding a constant image gives a constant feature map; zero padding
    # would make the border differ from the centre.
    m = DenseFuse().eval()
    with torch.no_grad():
        f = m.encode(torch.full((1, 1, 12, 12), 0.7))
    assert torch.allclose(f, f[..., 6:7, 6:7].expand_as(f), atol=1e-6)


def test_the_receptive_radius_is_the_networks():
    """configs.RECEPTIVE_RADIUS (the tile halo of both backends) is how far decode(encode(x))
    sees: one changed pixel moves outputs exactly up to 8 pixels away and none further
    (in float64, so that "none" is exact)."""
    from configs import RECEPTIVE_RADIUS
    torch.manual_seed(0)
    model = DenseFuse().double().eval()
    x = torch.rand(1, 1, 41, 41, dtype=torch.float64)
    y = x.clone()
    y[0, 0, 20, 20] += 1.0
    with torch.no_grad():
        changed = (model(x) - model(y)).abs()[0, 0] > 0
    rows, cols = torch.nonzero(changed, as_tuple=True)
    reach = int(torch.maximum((rows - 20).abs(), (cols - 20).abs()).max())
    assert reach == RECEPTIVE_RADIUS == DenseFuse.RECEPTIVE_RADIUS
