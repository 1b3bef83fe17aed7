"""Prepared training data (run_scripts.prepare_data, utils/prepared.py): samples equal to what the
folder loader computes under the same resize rule, bad files skipped once, a killed preparation
continued, and training from the prepared folder with an exact resume."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import run_train
from run_scripts import prepare_data
from tests.conftest import write_gray, write_rgb
from utils import files, prepared
from utils.data import NaturalImages, list_images
from utils.images import to_uint8


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "imgs"
    for i in range(7):
        write_gray(d / ("sub" if i % 2 else "") / f"im{i}.png", 30 + 3 * i, 40, i)
    return d


def test_samples_are_the_folder_loaders_images_rounded_to_8_bits(images, tmp_path):
    out = tmp_path / "prep"
    assert prepare_data.main(["--image_path", str(images), "-o", str(out), "--image_size", "24",
                              "--workers", "2"]) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["count"] == 7 and index["complete"] and index["rule"] == "bilinear"
    assert index["sources"] == [p.relative_to(images).as_posix() for p in list_images(images)]
    assert (out / "samples.u8").stat().st_size == 7 * 24 * 24
    data, folder = prepared.PreparedImages(out, 24), NaturalImages(list_images(images), 24)
    for k in range(7):
        got = data[k]
        assert got.dtype == torch.uint8 and got.shape == (1, 24, 24)
        assert torch.equal(got[0], torch.from_numpy(to_uint8(folder[k][0].numpy())))
    assert prepare_data.main(["--image_path", str(images), "-o", str(out), "--image_size", "24"]) == 2  # never over
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert prepare_data.main(["--image_path", str(images), "-o", str(tmp_path / "other")]) == 2
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["notes.txt"]


def test_rgb_and_nearest(tmp_path):
    for k in range(3):
        write_rgb(tmp_path / "c" / f"{k}.png", 20, 30, k)
    out = tmp_path / "p"
    assert prepare_data.main(["--image_path", str(tmp_path / "c"), "-o", str(out), "--image_size", "16",
                              "--no-gray", "--resize", "nearest", "--workers", "1"]) == 0
    from PIL import Image
    want = np.asarray(Image.open(tmp_path / "c" / "0.png").convert("RGB").resize((16, 16), Image.NEAREST))
    data = prepared.PreparedImages(out, 16)
    assert torch.equal(data[0], torch.from_numpy(want.transpose(2, 0, 1).copy()))


def test_a_file_that_does_not_decode_is_named_and_skipped_once(images, tmp_path, capsys):
    bad = images / "im2.png"
    bad.write_bytes(bad.read_bytes()[:60])
    out = tmp_path / "prep"
    assert prepare_data.main(["--image_path", str(images), "-o", str(out), "--image_size", "16"]) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["count"] == 6 and "im2.png" not in index["sources"] and str(bad) in index["skipped"][0]
    assert capsys.readouterr().err.count(f"warning: skipping {bad}") == 1
    assert (out / "samples.u8").stat().st_size == 6 * 16 * 16


def test_a_killed_preparation_continues_where_it_stopped(images, tmp_path, monkeypatch):
    out, whole = tmp_path / "prep", tmp_path / "whole"
    assert prepare_data.main(["--image_path", str(images), "-o", str(whole), "--image_size", "16"]) == 0
    monkeypatch.setattr(prepared, "CHECKPOINT_EVERY", 3)
    real, calls = files.write_text, []

    def killed_after_the_first_checkpoint(path, text):
        calls.append(path)
        if len(calls) > 1:
            raise KeyboardInterrupt
        real(path, text)
    monkeypatch.setattr(files, "write_text", killed_after_the_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        prepared.prepare(images, out, 16, True, "bilinear", 1, progress=False)
    index = json.loads((out / "index.json").read_text())
    assert index["done"] == 3 and not index["complete"]
    with pytest.raises(prepared.PreparedError, match="interrupted"):
        prepared.PreparedImages(out, 16)
    monkeypatch.setattr(files, "write_text", real)
    assert prepare_data.main(["--image_path", str(images), "-o", str(out), "--image_size", "16"]) == 0
    assert (out / "samples.u8").read_bytes() == (whole / "samples.u8").read_bytes()
    assert json.loads((out / "index.json").read_text())["sources"] == json.loads(
        (whole / "index.json").read_text())["sources"]


def train(data, out, *extra):
    return run_train.main(["--image_path", str(data), "--output_dir", str(out), "--run_name", "r", "--image_size",
                           "16", "--batch_size", "2", "--device", "cpu", "--val_path", "", "--seed", "4",
                           *map(str, extra)])


def test_training_from_prepared_data_resumes_exactly(images, tmp_path, capsys):
    data = tmp_path / "prep"
    assert prepare_data.main(["--image_path", str(images), "-o", str(data), "--image_size", "20"]) == 0
    assert train(data, tmp_path / "a", "--num_epochs", "2", "--crop", "--flip") == 0
    assert "Loaded 7 images" in capsys.readouterr().out
    assert train(data, tmp_path / "b", "--num_epochs", "1", "--crop", "--flip") == 0
    last = tmp_path / "b/r/checkpoints/last.pt"
    assert run_train.main(["--resume_path", str(last), "--num_epochs", "2"]) == 0
    a, b = (torch.load(tmp_path / f"{k}/r/checkpoints/last.pt", weights_only=True)["model"] for k in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a/r/images.txt").read_text().splitlines() == json.loads(
        (data / "index.json").read_text())["sources"]


@pytest.mark.parametrize("extra,says", [(["--image_size", "24"], "holds 20x20 samples"),
                                        (["--image_size", "16"], "a smaller size with --crop"),
                                        (["--image_size", "20", "--no-gray"], "holds gray samples"),
                                        (["--image_size", "16", "--crop", "--zoom", "1", "2"], "--zoom")])
def test_prepared_data_that_does_not_fit_the_run_is_one_error(images, tmp_path, capsys, extra, says):
    data = tmp_path / "prep"
    assert prepare_data.main(["--image_path", str(images), "-o", str(data), "--image_size", "20"]) == 0
    assert run_train.main(["--image_path", str(data), "--output_dir", str(tmp_path / "o"), "--val_path", "",
                           "--device", "cpu", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0]


def test_automatic_workers():
    """Prepared data and small epochs load in the training process; a folder of JPEGs gets one
    worker per core of the rank, less one for the step, at most 8."""
    from utils.training.steps import auto_workers
    assert auto_workers(True, 80_000, cpus=16) == 0 and auto_workers(False, 100, cpus=16) == 0
    assert auto_workers(False, 80_000, cpus=2) == 1 and auto_workers(False, 80_000, cpus=16) == 8
    assert auto_workers(False, 80_000, cpus=16, world=4) == 3
