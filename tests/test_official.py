"""The importer of the authors' weights, tested on the real files in ../shared (skipped without)."""
import zipfile

import numpy as np
import pytest
import torch

from run_scripts import compare_weights
from tests.conftest import ROOT, SHARED
from utils.checkpoint import WeightsError, load_model
from utils.images import load_image

OFFICIAL = SHARED / "weights" / "official"
TF_ZIP = OFFICIAL / "densefuse_gray_tf_ckpt.zip"
PT_MODEL = OFFICIAL / "densefuse_gray.model"
TNO = ROOT / "data_test" / "Tno"

pytestmark = pytest.mark.skipif(not TF_ZIP.is_file(), reason="../shared/weights/official not present")


def recon_psnr(model, images) -> float:
    """Mean PSNR (dB, peak 255) of the float reconstruction vs the 8-bit input."""
    return float(np.mean([compare_weights.reconstruction_psnr(model, x) for x in images]))


@pytest.fixture(scope="module")
def crops():
    imgs = [load_image(TNO / f"{m}{k}.png", gray=True) for k in (1, 7, 15) for m in ("IR", "VIS")]
    return [im[:160, :160] for im in imgs]


@pytest.mark.parametrize("lam", [1, 10, 100, 1000])
def test_tf_checkpoints_reconstruct_above_60db(crops, lam):
    model, info = load_model(TF_ZIP, ssim_weight=lam)
    assert info["ssim_weight"] == lam
    assert recon_psnr(model, crops) >= 60.0


def test_official_pytorch_model_above_60db(crops):
    model, _ = load_model(PT_MODEL)
    assert model.decoder.layers[-1].relu  # the port's extra ReLU is kept
    assert recon_psnr(model, crops) >= 60.0


def test_wrong_dense_order_would_fail(crops, monkeypatch):
    import utils.official as official
    monkeypatch.setattr(official, "_reverse_groups", lambda w, depth: w)
    model, _ = load_model(TF_ZIP, ssim_weight=100)
    assert recon_psnr(model, crops) < 20.0  # why the [new, x] -> [x, new] permutation matters


def test_tf_and_pytorch_releases_agree_on_scale(crops):
    """The TF (lambda=100) and PyTorch releases are different trainings, but both reconstruct
    the same [0,1] image: their outputs agree to well under one gray level on average."""
    a, _ = load_model(TF_ZIP, ssim_weight=100)
    b, _ = load_model(PT_MODEL)
    x = torch.from_numpy(crops[0])[None, None]
    with torch.no_grad():
        assert float((a(x) - b(x)).abs().mean()) * 255 < 1.0


def test_every_form_of_the_tf_checkpoint(tmp_path):
    with zipfile.ZipFile(TF_ZIP) as z:
        z.extractall(tmp_path)
    folder = tmp_path / "densefuse_gray"
    prefix = folder / "densefuse_model_bs2_epoch4_all_weight_1e1.ckpt"
    ref, _ = load_model(TF_ZIP, ssim_weight=10)
    for form in (prefix, str(prefix) + ".index", str(prefix) + ".data-00000-of-00001"):
        m, info = load_model(form)
        assert info["ssim_weight"] == 10
        assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), ref.state_dict().values(), strict=True))
    assert load_model(folder)[1]["ssim_weight"] == 100  # several present: the official default
    assert load_model(folder, ssim_weight=1000)[1]["ssim_weight"] == 1000


def test_errors_name_the_problem(tmp_path):
    with zipfile.ZipFile(TF_ZIP) as z:
        z.extractall(tmp_path)
    prefix = tmp_path / "densefuse_gray" / "densefuse_model_bs2_epoch4_all_weight_1e2.ckpt"
    data = prefix.with_name(prefix.name + ".data-00000-of-00001")
    index = prefix.with_name(prefix.name + ".index")
    # truncated .data
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="truncated"):
        load_model(prefix)
    # missing .data
    data.unlink()
    with pytest.raises(WeightsError, match="data file not found"):
        load_model(prefix)
    # truncated .index
    bad = tmp_path / "t.ckpt"
    (tmp_path / "t.ckpt.index").write_bytes(index.read_bytes()[:500])
    (tmp_path / "t.ckpt.data-00000-of-00001").write_bytes(b"\0" * 10)
    with pytest.raises(WeightsError, match=r"t\.ckpt"):
        load_model(bad)
    # a zip without the requested lambda
    with pytest.raises(WeightsError, match="lambda=5"):
        from utils.official import load_tensorflow
        load_tensorflow(TF_ZIP, 5)


def port_pipeline(state: dict, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """The official PyTorch port's RGB fusion, written out from its raw state_dict: 0-255 RGB in
    (IR replicated), reflection-padded 3x3 convolutions with ReLU after every layer (the last
    too), dense block outputs concatenated, the mean of the two feature maps, output clamped to
    0-255 and truncated to 8 bits as the port saves it."""
    import torch.nn.functional as F

    def conv(name, x):
        return F.relu(F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), state[f"{name}.conv2d.weight"],
                               state[f"{name}.conv2d.bias"]))

    def encode(x):
        x = conv("conv1", x)
        for k in range(3):
            x = torch.cat([x, conv(f"DB1.denseblock.{k}.dense_conv", x)], 1)
        return x
    a, b = (torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1)))[None].float() for im in (ir, vis))
    with torch.no_grad():
        f = (encode(a) + encode(b)) / 2
        for name in ("conv2", "conv3", "conv4", "conv5"):
            f = conv(name, f)
    return np.floor(f[0].clamp(0, 255).numpy().transpose(1, 2, 0))


@pytest.mark.parametrize("pair", [("Tno/IR1.png", "Tno/VIS1.png"),
                                  ("Road/ir/FLIR_00211.jpg", "Road/vi/FLIR_00211.jpg")])
def test_official_rgb_model_reproduces_the_ports_pipeline(pair):
    """run_infer.py's path with --weights densefuse_rgb.model --strategy mean --output_mode clip
    against the port's own pipeline: within one gray level on average (we round, it truncates)."""
    from PIL import Image

    from utils.fusion import FuseSettings, fuse_images
    rgb = OFFICIAL / "densefuse_rgb.model"
    model, info = load_model(rgb)
    assert info["kind"].endswith("RGB") and model.model_args()["channels"] == 3
    assert sum(p.numel() for p in model.parameters()) == 74_771
    ir, vis = (ROOT / "data_test" / f for f in pair)
    ours = fuse_images(model, load_image(ir)[:120, :150], load_image(vis)[:120, :150],
                       settings=FuseSettings("mean", output_mode="clip", tile=64))
    assert ours.shape == (120, 150, 3) and ours.dtype == np.uint8
    ir255, vis255 = (np.asarray(Image.open(f).convert("RGB"), np.float32)[:120, :150] for f in (ir, vis))
    ref = port_pipeline(torch.load(rgb, map_location="cpu", weights_only=True), ir255, vis255)
    assert np.abs(ours.astype(np.float64) - ref).mean() <= 1.0


def test_rgb_and_gray_weights_are_never_mixed_up(flat_set):
    """An RGB network given gray images replicates them; a gray network refuses RGB arrays."""
    from utils.fusion import FuseSettings, fuse_images, fuse_sources
    rgb_model = load_model(OFFICIAL / "densefuse_rgb.model")[0]
    a, b = load_image(flat_set / "IR1.png"), load_image(flat_set / "VIS1.png")
    settings = FuseSettings("mean", output_mode="clip")
    out = fuse_images(rgb_model, a, b, settings=settings)
    replicated = fuse_sources(rgb_model, [np.repeat(im[..., None], 3, axis=2) for im in (a, b)], settings)
    assert out.shape == (*a.shape, 3) and np.array_equal(out, np.floor(np.clip(replicated, 0, 1) * 255 + 0.5))
    with pytest.raises(ValueError, match="1-channel network cannot fuse 3-channel"):
        fuse_sources(load_model(PT_MODEL)[0], [np.stack([a] * 3, -1)] * 2)


def test_convert_and_fuse_with_official(tmp_path, flat_set):
    import run_infer
    from run_scripts import convert_official
    out = tmp_path / "conv.pt"
    assert convert_official.main([str(PT_MODEL), "-o", str(out)]) == 0
    assert convert_official.main([str(PT_MODEL), "-o", str(out)]) == 2  # never overwrites
    a, _ = load_model(PT_MODEL)
    b, info = load_model(out)
    assert b.decoder.layers[-1].relu and info["kind"] == "project checkpoint"
    x = torch.rand(1, 1, 20, 20)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    res = tmp_path / "res"
    assert run_infer.main(["--test_path", str(flat_set), "--weights", str(TF_ZIP), "--ssim_weight",
                           "100", "--output_path", str(res), "--device", "cpu"]) == 0
    assert len(list((res / "Flat_fusion").glob("*.png"))) == 3


@pytest.mark.slow
@pytest.mark.parametrize("lam", [1, 10, 100, 1000])
def test_all_tno_images_above_60db(lam):
    images = [load_image(p, gray=True) for p in sorted(TNO.glob("*.png"))]
    model, _ = load_model(TF_ZIP, ssim_weight=lam)
    assert recon_psnr(model, images) >= 60.0


def mutations(data: bytes, rng: np.random.Generator, n: int):
    """``n`` damaged copies of a TF ``.index`` file: bytes overwritten, a middle cut out (the
    footer kept, so that the reader gets past its magic check), bytes inserted."""
    for i in range(n):
        b = bytearray(data)
        if i % 3 == 0:
            for _ in range(rng.integers(1, 9)):
                b[rng.integers(len(b))] = rng.integers(256)
        elif i % 3 == 1:
            b = b[:rng.integers(len(b) - 48)] + b[-48:]
        else:
            p = rng.integers(len(b) - 48)
            b[p:p] = rng.integers(0, 256, rng.integers(1, 16), dtype=np.uint8).tobytes()
        yield bytes(b)


def test_fuzzed_tf_index_files_give_a_weights_error_or_the_weights(tmp_path):
    """Seeded fuzzing of the .index reader: every damaged file either still reads (a byte the
    reader skips) or raises WeightsError; no TypeError, RuntimeError, struct.error, ..."""
    with zipfile.ZipFile(TF_ZIP) as z:
        prefix = next(n for n in z.namelist() if n.endswith("1e2.ckpt.index"))[:-6]
        index, data = z.read(prefix + ".index"), z.read(prefix + ".data-00000-of-00001")
    (tmp_path / "f.ckpt.data-00000-of-00001").write_bytes(data)
    outcomes = {"read": 0, "refused": 0}
    for damaged in mutations(index, np.random.default_rng(0), 600):
        (tmp_path / "f.ckpt.index").write_bytes(damaged)
        try:
            load_model(tmp_path / "f.ckpt")
            outcomes["read"] += 1
        except WeightsError as e:
            assert "f.ckpt" in str(e)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 500  # the fuzzing reached the reader's error paths


def test_a_damaged_member_of_the_official_zip_is_one_error_naming_it(tmp_path, flat_set, capsys):
    import run_infer
    raw = bytearray(TF_ZIP.read_bytes())
    with zipfile.ZipFile(TF_ZIP) as z:
        member = next(i for i in z.infolist() if i.filename.endswith("1e2.ckpt.data-00000-of-00001"))
    middle = member.header_offset + 30 + len(member.filename) + member.compress_size // 2
    raw[middle:middle + 64] = bytes(64)
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(raw))
    with pytest.raises(WeightsError, match=f"damaged zip, {member.filename} cannot be read"):
        load_model(damaged)
    assert run_infer.main(["--test_path", str(flat_set), "--weights", str(damaged),
                           "--output_path", str(tmp_path / "out"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()
