import numpy as np
import pytest
from PIL import Image

from utils.images import ImageReadError, load_image, rgb_to_ycbcr, save_image, to_uint8, ycbcr_to_rgb


def test_roundtrip_8bit_exact(tmp_path):
    a = np.arange(256, dtype=np.uint8).reshape(16, 16)
    save_image(tmp_path / "a.png", a)
    x = load_image(tmp_path / "a.png")
    assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
    assert np.array_equal(to_uint8(x), a)


def test_explicit_rounding():
    # floor(255 x + 0.5): half-way values round up, out-of-range values clip.
    x = np.array([0.5 / 255, 0.49 / 255, 1.2, -0.3, 254.5 / 255], dtype=np.float32)
    assert to_uint8(x).tolist() == [1, 0, 255, 0, 255]


def test_16bit_scaled_by_65535(tmp_path):
    a = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "s.png")
    np.testing.assert_allclose(load_image(tmp_path / "s.png"), a / 65535.0, rtol=1e-6)


def test_rgba_drops_alpha_and_gray_rgb_becomes_gray(tmp_path):
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 7
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    assert x.shape == (4, 5, 3) and np.allclose(x[..., 0], 200 / 255)
    g = np.repeat(np.arange(20, dtype=np.uint8).reshape(4, 5, 1), 3, axis=2)
    Image.fromarray(g).save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png").shape == (4, 5)


def test_palette_and_cmyk(tmp_path):
    Image.new("P", (6, 4), 3).save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").shape[:2] == (4, 6)
    Image.new("CMYK", (6, 4), (0, 255, 0, 0)).save(tmp_path / "c.jpg")
    assert load_image(tmp_path / "c.jpg").shape == (4, 6, 3)


@pytest.mark.parametrize("content,match", [
    (b"", "empty file"),
    (b"this is not an image", "not an image"),
])
def test_bad_files_named_in_error(tmp_path, content, match):
    p = tmp_path / "bad file é.png"
    p.write_bytes(content)
    with pytest.raises(ImageReadError, match=match) as e:
        load_image(p)
    assert str(p) in str(e.value)


def test_truncated_png(tmp_path):
    p = tmp_path / "t.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(p)
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(ImageReadError, match=r"t\.png"):
        load_image(p)


def test_too_small(tmp_path):
    Image.new("L", (1, 1)).save(tmp_path / "one.png")
    with pytest.raises(ImageReadError, match="at least 2x2"):
        load_image(tmp_path / "one.png")


def test_ycbcr_is_pillows_full_range_bt601():
    """Against an independent implementation: Pillow's convert("YCbCr") (JPEG's full-range
    BT.601) on 8-bit RGB, within one level (Pillow rounds in fixed point). Swapped Cb/Cr, or a
    wrong coefficient, would be off by tens of levels on these colours."""
    rgb8 = np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    rgb8[0, :3] = [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    pillow = np.asarray(Image.fromarray(rgb8).convert("YCbCr"), np.float64)
    ours = rgb_to_ycbcr(rgb8.astype(np.float32) / 255).astype(np.float64) * 255
    assert np.abs(ours - pillow).max() <= 1.0
    # The inverse against Pillow's YCbCr -> RGB of the same 8-bit YCbCr (two fixed-point roundings).
    back = np.asarray(Image.fromarray(pillow.astype(np.uint8), "YCbCr").convert("RGB"), np.float64)
    assert np.abs(back - ycbcr_to_rgb(pillow.astype(np.float32) / 255) * 255).max() <= 2.0


def test_ycbcr_roundtrip_and_gray_axis():
    rgb = np.random.default_rng(1).random((5, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=1e-5)
    gray = np.full((2, 2, 3), 0.3, np.float32)
    ycc = rgb_to_ycbcr(gray)
    np.testing.assert_allclose(ycc[..., 0], 0.3, atol=1e-6)
    np.testing.assert_allclose(ycc[..., 1:], 0.5, atol=1e-6)


def test_save_is_atomic_no_temp_left(tmp_path):
    save_image(tmp_path / "o.png", np.zeros((3, 3), np.float32))
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]


def test_written_files_follow_the_umask(tmp_path):
    import os
    old = os.umask(0o022)
    try:
        save_image(tmp_path / "p.png", np.zeros((3, 3), np.float32))
    finally:
        os.umask(old)
    assert (tmp_path / "p.png").stat().st_mode & 0o777 == 0o644
