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


def test_rgb_model_refused_clearly():
    with pytest.raises(WeightsError, match="RGB model"):
        load_model(OFFICIAL / "densefuse_rgb.model")


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
