"""Fault injection: real signals to real subprocesses, hostile files, random inputs."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import run_infer
import run_train
from tests.conftest import ROOT, write_gray
from utils.images import ImageReadError, load_image
from utils.pairs import PairError, find_pairs


@pytest.fixture
def images(tmp_path):
    for i in range(4):
        write_gray(tmp_path / "imgs" / f"{i}.png", 70, 70, i)
    return tmp_path / "imgs"


def train_args(images, out, *extra):
    return ["--image_path", str(images), "--output_dir", str(out), "--run_name", "r", "--image_size", "48",
            "--crop", "--batch_size", "2", "--epoch_size", "40", "--num_epochs", "2", "--seed", "7",
            "--device", "cpu", "--val_path", "", "--save_every", "1", *map(str, extra)]


def start_training(images, out, *extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "run_train.py"), *train_args(images, out, *extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def wait_for(path, proc, timeout=120):
    t = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.communicate()}")
        assert time.time() - t < timeout, "timed out"
        time.sleep(0.05)


def final_weights(path):
    return torch.load(path, weights_only=True)["model"]


@pytest.mark.slow  # 8-11 s (training processes); the default run keeps Ctrl-C during fusion and in-process resume
def test_sigint_subprocess_checkpoint_then_resume_is_bit_identical(images, tmp_path):
    assert run_train.main(train_args(images, tmp_path / "a")) == 0  # uninterrupted reference
    proc = start_training(images, tmp_path / "b")
    last = tmp_path / "b/r/checkpoints/last.pt"
    wait_for(last, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("training finished before the signal arrived")
    assert proc.returncode == 130 and "Resume with" in out, err
    step = torch.load(last, weights_only=True)["step"]
    assert 0 < step < 40
    assert run_train.main(["--resume_path", str(last), "--device", "cpu"]) == 0
    a, b = final_weights(tmp_path / "a/r/checkpoints/last.pt"), final_weights(last)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # the handler is SIGINT's (tested by default), registered for both
def test_sigterm_is_handled_like_sigint(images, tmp_path):
    """SIGTERM (what schedulers send) stops a run that could not have finished (2,000 steps) at the
    end of the current step, writes last.pt at exactly that step, and says how to resume."""
    proc = start_training(images, tmp_path / "b", "--num_epochs", "100")
    last = tmp_path / "b/r/checkpoints/last.pt"
    wait_for(last, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    stopped = int(out.split("SIGTERM: stopped at step ")[1].split(";")[0])
    ck = torch.load(last, weights_only=True)
    assert ck["step"] == stopped and 0 < stopped < 2000 and ck["epoch"] < 100
    assert f"--resume_path {last}" in out


@pytest.mark.slow  # 5 s; the default run keeps a kill during fusion (complete files only)
def test_sigkill_leaves_only_complete_checkpoints(images, tmp_path):
    proc = start_training(images, tmp_path / "b")
    ckpts = tmp_path / "b/r/checkpoints"
    wait_for(ckpts / "last.pt", proc)
    time.sleep(0.3)
    proc.kill()
    proc.communicate()
    finals = [p for p in ckpts.iterdir() if not p.name.startswith(".")]
    assert finals
    for p in finals:  # every file under a final name loads completely
        assert "model" in torch.load(p, weights_only=True)
    assert run_train.main(["--resume_path", str(ckpts / "last.pt"), "--device", "cpu"]) == 0


def test_ctrl_c_during_fusion_is_one_line(tmp_path, tiny_weights):
    """SIGINT mid-set: exit 2, one error line saying what was written, no traceback; every image
    written is complete and the folder's record labels it."""
    d = tmp_path / "S"
    ir, vis = write_gray(d / "IR1.png", 300, 300, 1), write_gray(d / "VIS1.png", 300, 300, 51)
    for k in range(2, 41):  # copies: generating 80 images took longer than the fusion they feed
        (d / f"IR{k}.png").write_bytes(ir.read_bytes())
        (d / f"VIS{k}.png").write_bytes(vis.read_bytes())
    out = tmp_path / "res"
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_infer.py"), "--test_path", str(d),
                             "--output_path", str(out), "--weights", str(tiny_weights), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    wait_for(out / "S_fusion" / "1.png", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("fusion finished before the signal arrived")
    assert proc.returncode == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [err.strip()] and err.startswith("error: interrupted")
    written = sorted(p.stem for p in (out / "S_fusion").glob("*.png") if not p.name.startswith("."))
    assert 0 < len(written) < 40
    for name in written:
        with Image.open(out / "S_fusion" / f"{name}.png") as im:
            im.load()
    record = json.loads((out / "S_fusion" / "fusion_settings.json").read_text())
    assert set(written) <= set(record["inputs"])


@pytest.mark.slow  # 2.5 s: a process; the default run keeps Ctrl-C during fusion
def test_kill_during_fusion_leaves_no_truncated_png(tmp_path, tiny_weights):
    d = tmp_path / "S"
    for k in range(1, 7):
        write_gray(d / f"IR{k}.png", 300, 300, k)
        write_gray(d / f"VIS{k}.png", 300, 300, k + 9)
    out = tmp_path / "res"
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_infer.py"), "--test_path", str(d),
                             "--output_path", str(out), "--weights", str(tiny_weights), "--device", "cpu"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    wait_for(out / "S_fusion" / "1.png", proc)
    proc.kill()
    proc.communicate()
    for p in (out / "S_fusion").glob("*.png"):
        if not p.name.startswith("."):
            with Image.open(p) as im:
                im.load()  # raises on a truncated file
                assert im.size == (300, 300)


def test_unwritable_output_fails_before_fusing(tmp_path, tiny_weights, flat_set, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = run_infer.main(["--test_path", str(flat_set), "--output_path", str(blocker),
                         "--weights", str(tiny_weights)])
    assert rc == 2 and "cannot write" in capsys.readouterr().err


def test_decompression_bomb_is_a_clear_error(tmp_path, monkeypatch):
    Image.new("L", (40, 40)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    with pytest.raises(ImageReadError, match="too many pixels"):
        load_image(tmp_path / "bomb.png")


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("L", (30, 10), 50)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise for display
    img.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").shape == (30, 10)


def test_symlink_loop_and_odd_names(tmp_path, tiny_weights):
    d = tmp_path / "data" / "Set ü"
    write_gray(d / "ir" / "a b é.png", 12, 12, 0)
    write_gray(d / "vi" / "a b é.png", 12, 12, 1)
    os.symlink(tmp_path / "data", tmp_path / "data" / "loop")
    os.symlink(tmp_path / "data" / "nowhere", tmp_path / "data" / "dangling")
    assert run_infer.main(["--test_path", str(tmp_path / "data"), "--output_path", str(tmp_path / "r"),
                           "--weights", str(tiny_weights)]) == 0
    assert (tmp_path / "r" / "Set ü_fusion" / "a b é.png").is_file()


def test_training_image_search_survives_symlink_loop(tmp_path):
    from utils.data import list_images
    write_gray(tmp_path / "a" / "x.png", 5, 5, 0)
    os.symlink(tmp_path, tmp_path / "a" / "loop")
    assert list_images(tmp_path) == [tmp_path / "a" / "x.png"]


# ---- property-based: a correct result or a clear error, never a traceback ------------------

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=600), suffix=st.sampled_from([".png", ".jpg", ".bmp", ".tif"]))
def test_reader_on_random_bytes(tmp_path, data, suffix):
    p = tmp_path / f"x{suffix}"
    p.write_bytes(data)
    try:
        img = load_image(p)
    except ImageReadError as e:
        assert str(p) in str(e)
    else:
        assert img.dtype == np.float32 and img.min() >= 0 and img.max() <= 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.integers(1, 40), w=st.integers(1, 40), mode=st.sampled_from(["L", "RGB", "RGBA", "I;16", "P"]),
       ext=st.sampled_from([".png", ".bmp", ".tif"]))
def test_reader_on_random_sizes_and_modes(tmp_path, h, w, mode, ext):
    if mode == "I;16" and ext == ".bmp":
        return  # BMP cannot store 16 bits
    arr = np.random.default_rng(h * 41 + w).integers(0, 255, (h, w), dtype=np.uint8)
    img = Image.fromarray(arr).convert(mode) if mode != "I;16" else Image.fromarray(arr.astype(np.uint16) * 257)
    p = tmp_path / f"r{ext}"
    img.save(p)
    try:
        out = load_image(p)
    except ImageReadError as e:
        assert min(h, w) < 2 and "at least 2x2" in str(e)
        return
    assert out.shape[:2] == (h, w) and out.dtype == np.float32
    if mode in ("L", "I;16"):
        np.testing.assert_allclose(out, arr / 255.0, atol=1e-6)


names = st.text(alphabet="abcXY01 _-é", min_size=1, max_size=6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ir=st.lists(names, max_size=5, unique=True), vis=st.lists(names, max_size=5, unique=True),
       layout=st.sampled_from([("ir", "vi"), ("IR", "VIS"), ("INF_images", "VIS_images"), None]))
def test_pair_discovery_on_random_layouts(tmp_path_factory, ir, vis, layout):
    root = tmp_path_factory.mktemp("layout")
    for n in ir:
        (root / layout[0] if layout else root).mkdir(exist_ok=True)
        (root / (layout[0] if layout else "") / (n if layout else f"IR{n}")).with_suffix(".png").write_bytes(b"")
    for n in vis:
        (root / layout[1] if layout else root).mkdir(exist_ok=True)
        (root / (layout[1] if layout else "") / (n if layout else f"VIS{n}")).with_suffix(".png").write_bytes(b"")
    try:
        _, pairs = find_pairs(root)
    except PairError as e:
        assert str(root) in str(e)
        return
    if layout is None:  # one separator after IR/VIS is ignored: IR_1, IR-1, IR 1 and IR1 are pair 1
        def key(n):
            return n[1:] if len(n) > 1 and n[0] in "_- " else n
        ir, vis = [key(n) for n in ir], [key(n) for n in vis]
    assert sorted(p.name for p in pairs) == sorted(ir) == sorted(vis)
    for p in pairs:
        assert p.ir.is_file() and p.vis.is_file()


def test_png_with_a_zero_side_is_a_clear_error(tmp_path):
    import struct
    import zlib
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 5, 8, 0, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    (tmp_path / "zero.png").write_bytes(png)
    with pytest.raises(ImageReadError, match=r"zero\.png"):
        load_image(tmp_path / "zero.png")


def test_output_names_cannot_escape_the_output_folder(tmp_path):
    from utils.records import RecordError, output_file
    for name in ("../evil", "a/b", "/abs/x", "..", ""):
        with pytest.raises(RecordError, match="outside"):
            output_file(tmp_path / "out", name)


@pytest.mark.slow  # 2.5 s: two processes
def test_two_runs_writing_one_folder(tmp_path, tiny_weights, flat_set):
    out = tmp_path / "res"
    cmd = [sys.executable, str(ROOT / "run_infer.py"), "--test_path", str(flat_set), "--output_path",
           str(out), "--weights", str(tiny_weights), "--device", "cpu"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    files = sorted(p.name for p in (out / "Flat_fusion").iterdir())
    # No temporary files left, every file complete.
    assert files == ["1.png", "2.png", "3.png", "fusion_settings.json"]
    for f in files[:3]:
        with Image.open(out / "Flat_fusion" / f) as im:
            im.load()


def test_no_progress_bars_in_redirected_output(tmp_path, tiny_weights, flat_set, images, capsys):
    """Output that is not a terminal (a log file, a pipe: here pytest's capture) gets the summary
    lines only: no tqdm bars and their carriage returns, from fusion or training."""
    assert run_infer.main(["--test_path", str(flat_set), "--output_path", str(tmp_path / "res"),
                           "--weights", str(tiny_weights), "--device", "cpu"]) == 0
    fuse = capsys.readouterr()
    assert "\r" not in fuse.out + fuse.err and "pair/s" not in fuse.err
    assert "Flat: 3 pairs fused in" in fuse.out
    assert run_train.main([*train_args(images, tmp_path / "runs"), "--num_epochs", "1", "--epoch_size", "4"]) == 0
    train = capsys.readouterr()
    assert "\r" not in train.out + train.err and "it/s" not in train.err
    assert "epoch 1: mean loss" in train.out


@pytest.mark.parametrize("damage,message", [("huge", "not finite"), ("zero", "constant")])
def test_weights_that_overflow_stop_with_an_error_naming_them(tmp_path, flat_set, capsys, damage, message):
    """Non-finite or constant decoder output (for images that are not constant) is an error naming
    the pair and the weights, never an all-black image with exit 0."""
    from models.densefuse import DenseFuse
    torch.manual_seed(0)
    state = DenseFuse().state_dict()
    for k in state:
        if damage == "zero" and k.endswith("weight"):
            state[k].zero_()
        if damage == "huge" and k.endswith("weight"):  # finite weights whose activations overflow float32
            state[k] *= 1e10
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    assert run_infer.main(["--test_path", str(flat_set), "--weights", str(bad), "--output_path",
                           str(tmp_path / "out"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert message in err and "pair 1" in err and str(bad) in err
    assert not list((tmp_path / "out").rglob("*.png"))


def test_meta_device_is_one_line(tmp_path, flat_set, images, capsys):
    assert run_infer.main(["--test_path", str(flat_set), "--output_path", str(tmp_path / "o"), "--device", "meta"]) == 2
    assert run_train.main([*train_args(images, tmp_path / "runs"), "--device", "meta"]) == 2
    err = capsys.readouterr().err
    assert err.count("--device meta: not a device this project computes on") == 2 and "Traceback" not in err


def test_an_output_name_taken_by_a_folder_is_reported_before_anything_is_written(tmp_path, flat_set, tiny_weights,
                                                                                  capsys):
    out = tmp_path / "out" / "Flat_fusion"
    (out / "2.png").mkdir(parents=True)
    argv = ["--test_path", str(flat_set), "--output_path", str(tmp_path / "out"), "--weights", str(tiny_weights),
            "--device", "cpu"]
    assert run_infer.main([*argv, "--overwrite"]) == 2
    assert "2.png: the output's name is taken by a folder" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["2.png"]


def test_entries_named_like_images_are_reported_as_what_they_are(tmp_path, flat_set, tiny_weights, capsys):
    """A dangling link, a FIFO and a folder named like images are each named for what they are."""
    data = tmp_path / "set"
    shutil.copytree(flat_set, data)
    (data / "IR2.png").unlink()
    (data / "IR2.png").symlink_to(tmp_path / "gone.png")
    (data / "VIS1.png").unlink()
    os.mkfifo(data / "VIS1.png")
    (data / "IR3.png").unlink()
    (data / "IR3.png").mkdir()
    assert run_infer.main(["--test_path", str(data), "--output_path", str(tmp_path / "out"),
                           "--weights", str(tiny_weights), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "IR2.png: a dangling link" in err and "VIS1.png: not a regular file (a FIFO" in err
    assert "IR3.png: is a folder" in err and not (tmp_path / "out").exists()


def test_both_spellings_of_a_layout_folder_are_an_error_naming_both(tmp_path):
    for d in ("ir", "IR", "vi"):
        write_gray(tmp_path / d / "a.png", 8, 8, 0)
    with pytest.raises(PairError, match=r"both IR/ and ir/ are present"):
        find_pairs(tmp_path)


def test_multi_frame_images_say_the_first_frame_is_used(tmp_path, tiny_weights, capsys):
    frames = [Image.fromarray(np.full((12, 14), v, np.uint8)) for v in (40, 200)]
    frames[0].save(tmp_path / "IR1.tif", save_all=True, append_images=frames[1:])  # a multi-page TIFF
    write_gray(tmp_path / "VIS1.png", 12, 14, 3)
    assert run_infer.main(["--test_path", str(tmp_path), "--output_path", str(tmp_path / "out"),
                           "--weights", str(tiny_weights), "--device", "cpu"]) == 0
    assert "IR1.tif: 2 frames (animated or multi-page); the first is used" in capsys.readouterr().err


def test_a_size_mismatch_after_exif_rotation_says_so(tmp_path, tiny_weights, capsys):
    img = Image.fromarray(np.zeros((10, 16), np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6  # stored 16x10, shown 10x16
    img.save(tmp_path / "IR1.jpg", exif=exif)
    write_gray(tmp_path / "VIS1.png", 10, 16, 1)
    assert run_infer.main(["--test_path", str(tmp_path), "--output_path", str(tmp_path / "out"),
                           "--weights", str(tiny_weights), "--device", "cpu"]) == 2
    assert "IR1.jpg (10x16, after its EXIF rotation)" in capsys.readouterr().err


def test_a_full_disk_during_fusion_is_one_error_and_keeps_the_images_written(tmp_path, tiny_weights, flat_set,
                                                                             capsys, monkeypatch):
    import errno

    import run_infer
    from utils import images
    real, calls = images.atomic_write, []

    def atomic_write(path, write):
        calls.append(path)
        if len(calls) < 2:
            return real(path, write)

        def fill_the_disk(fh):
            fh.write(b"\x89PNG partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, fill_the_disk)

    monkeypatch.setattr(images, "atomic_write", atomic_write)
    out = tmp_path / "r" / "Flat_fusion"
    assert run_infer.main(["--test_path", str(flat_set), "--output_path", str(tmp_path / "r"), "--weights",
                           str(tiny_weights), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot write {out / '2.png'}: No space left on device")
    assert "images written before it are complete" in err[0]
    assert images.load_image(out / "1.png").shape == (21, 17)
    assert not (out / "2.png").exists() and not list(out.glob(".*.tmp"))
