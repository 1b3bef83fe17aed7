import math
import re

import numpy as np
import pytest
import torch

import run_train
from tests.conftest import SHARED, write_gray
from utils import training


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "imgs"
    for i in range(5):
        write_gray(d / ("sub" if i % 2 else "") / f"im{i}.png", 24 + i, 30, i)
    return d


def train(images, out, *extra):
    return run_train.main(["--image_path", str(images), "--output_dir", str(out), "--run_name", "r",
                           "--image_size", "16", "--crop", "--flip", "--batch_size", "2",
                           "--device", "cpu", "--val_path", "", *map(str, extra)])


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_smoke_writes_checkpoints_and_tensorboard(images, tmp_path, capsys):
    assert train(images, tmp_path / "runs", "--num_epochs", "1", "--epoch_size", "4") == 0
    out = capsys.readouterr().out
    assert "Loaded 5 images" in out and "tensorboard --logdir" in out
    assert out.count("device:") == 1 and "processes" not in out  # one line, one process
    run = tmp_path / "runs" / "r"
    ck = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ck["epoch"] == 1 and ck["step"] == 2 and ck["config"]["ssim_weight"] == 100
    assert {"optimizer", "scheduler", "model"} <= set(ck)
    assert (run / "checkpoints" / "epoch_1.pt").is_file() and (run / "checkpoints" / "best.pt").is_file()
    assert list((run / "logs").glob("events.out.tfevents.*"))
    # Scalars actually logged, read back with TensorBoard's own reader.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run / "logs")).Reload()
    assert {"loss/total", "loss/pixel", "loss/ssim", "lr", "speed/images_per_s",
            "speed/data_wait_fraction"} <= set(acc.Tags()["scalars"])
    line = next(t for t in out.splitlines() if t.startswith("epoch 1: mean loss"))
    rate, wait = re.search(r", ([0-9.]+) images/s, data wait ([0-9.]+) %", line).groups()
    assert float(rate) > 0 and 0 <= float(wait) <= 100
    assert acc.Scalars("speed/images_per_s")[0].value == pytest.approx(float(rate), rel=0.01)


def test_resume_at_epoch_boundary_is_bit_identical(images, tmp_path):
    args = ("--epoch_size", "4", "--lr", "1e-3", "--seed", "3")
    assert train(images, tmp_path / "a", "--num_epochs", "2", *args) == 0
    assert train(images, tmp_path / "b", "--num_epochs", "1", *args) == 0
    assert run_train.main(["--resume_path", str(tmp_path / "b/r/checkpoints/last.pt"),
                           "--num_epochs", "2", "--device", "cpu"]) == 0
    a, b = weights(tmp_path / "a/r/checkpoints/last.pt"), weights(tmp_path / "b/r/checkpoints/last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ck = torch.load(tmp_path / "b/r/checkpoints/last.pt", weights_only=True)
    assert ck["step"] == 4 and ck["scheduler"]["last_epoch"] == 2
    assert ck["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * 0.9 ** 2)


class StopAfter(training.StopFlag):
    """Behaves as if SIGINT arrived during step 3."""
    calls = 0

    @property
    def requested(self):
        StopAfter.calls += 1
        return "SIGINT" if StopAfter.calls == 3 else None

    @requested.setter
    def requested(self, value):
        pass


def test_interrupt_mid_epoch_then_resume_is_bit_identical(images, tmp_path, monkeypatch, capsys):
    args = ("--epoch_size", "8", "--num_epochs", "2", "--seed", "5")
    assert train(images, tmp_path / "a", *args) == 0
    monkeypatch.setattr(training, "StopFlag", StopAfter)  # run_train makes it
    assert train(images, tmp_path / "b", *args) == 130
    assert "--resume_path" in capsys.readouterr().out
    ck = torch.load(tmp_path / "b/r/checkpoints/last.pt", weights_only=True)
    assert ck["step"] == 3 and ck["epoch"] == 0
    monkeypatch.undo()
    assert run_train.main(["--resume_path", str(tmp_path / "b/r/checkpoints/last.pt"),
                           "--device", "cpu"]) == 0
    a, b = weights(tmp_path / "a/r/checkpoints/last.pt"), weights(tmp_path / "b/r/checkpoints/last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_bad_image_folder_one_line_error(tmp_path, capsys, make):
    d = tmp_path / "imgs"
    if make == "empty":
        d.mkdir()
        (d / "readme.txt").write_text("no images")
    assert run_train.main(["--image_path", str(d), "--output_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--image_path" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_unreadable_images_skipped_named_once_and_counted(images, tmp_path, capsys):
    """Garbage, an empty file, and one whose header parses but whose data is truncated (found by
    the decode check, not mid-run): each named once over two epochs, all counted."""
    (images / "broken.png").write_bytes(b"garbage")
    (images / "zero.jpg").write_bytes(b"")
    truncate(write_gray(images / "late.png", 40, 40, 9))
    assert train(images, tmp_path / "runs", "--num_epochs", "2", "--epoch_size", "12") == 0
    cap = capsys.readouterr()
    assert all(cap.err.count(name) == 1 for name in ("broken.png", "zero.jpg", "late.png")) and "truncated" in cap.err
    assert "Skipped 3 unreadable" in cap.out and "Loaded 5 images" in cap.out


def test_non_finite_loss_names_the_step(images, tmp_path, capsys):
    rc = train(images, tmp_path / "runs", "--num_epochs", "1", "--epoch_size", "8", "--lr", "1e20")
    err = capsys.readouterr().err
    assert rc == 2 and "non-finite loss" in err and "at step" in err


def test_unwritable_output_fails_before_training(images, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert train(images, blocker, "--num_epochs", "1") == 2
    assert "cannot write" in capsys.readouterr().err


def test_any_positive_lambda_trains_and_others_are_refused(images, tmp_path, capsys):
    """A lambda sweep is a normal experiment: 50 and 0.5 train (the loss is pixel + lambda * SSIM
    term, checked against the loss module); 0, -1 and nan are one error line each."""
    from utils.losses import DenseFuseLoss
    assert train(images, tmp_path / "a", "--ssim_weight", "50", "--num_epochs", "1", "--epoch_size", "2") == 0
    ck = torch.load(tmp_path / "a/r/checkpoints/last.pt", weights_only=True)
    assert ck["config"]["ssim_weight"] == 50 and type(ck["config"]["ssim_weight"]) is int
    x = torch.rand(2, 1, 16, 16)
    y = (x + 0.05 * torch.rand_like(x)).clamp(0, 1)
    total, pixel, ssim_term = DenseFuseLoss(0.5)(y, x)
    assert float(total) == pytest.approx(float(pixel) + 0.5 * float(ssim_term), rel=1e-6)
    for bad in ("0", "-1", "nan"):
        assert train(images, tmp_path / "b", "--ssim_weight", bad) == 2
        assert "--ssim_weight must be a positive number" in capsys.readouterr().err


def test_training_reduces_loss(images, tmp_path):
    """Sanity: a few dozen steps lower the reconstruction error of the training images."""
    assert train(images, tmp_path / "runs", "--num_epochs", "3", "--epoch_size", "20",
                 "--lr", "3e-3", "--lr_decay", "1.0") == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path / "runs/r/logs")).Reload()
    pixel = [e.value for e in acc.Scalars("loss/pixel")]
    assert math.isfinite(pixel[-1]) and np.mean(pixel[-3:]) < 0.5 * pixel[0]


def test_pixel_range_equals_training_on_0_255_pixels():
    """--pixel_range 255 (bias lr and initial biases / 255) is Adam on a network fed 0-255
    values, the official set-up: after several steps the weights agree and the biases differ
    by exactly the factor 255."""
    import copy

    import torch.nn.functional as F
    from pytorch_msssim import ssim

    from models.densefuse import DenseFuse
    from utils.losses import DenseFuseLoss

    torch.manual_seed(0)
    ours = DenseFuse().double()
    ref = copy.deepcopy(ours)  # the same network, in 0-255 units
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("bias"):
                p *= 255.0
    opt = training.build_optimizer(ours, 1e-3, 255.0)
    opt_ref = torch.optim.Adam(ref.parameters(), lr=1e-3)
    crit = DenseFuseLoss(100)
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        x = torch.rand(2, 1, 24, 24, generator=gen, dtype=torch.float64)
        opt.zero_grad()
        loss = crit(ours(x), x)[0]
        loss.backward()
        opt.step()
        x255 = 255.0 * x
        y = ref(x255)
        opt_ref.zero_grad()
        loss_ref = F.mse_loss(y, x255) + 100 * (1 - ssim(y, x255, data_range=255.0))
        loss_ref.backward()
        opt_ref.step()
        assert loss.item() == pytest.approx(loss_ref.item(), rel=1e-9)
    for (name, p), q in zip(ours.named_parameters(), ref.parameters(), strict=True):
        scale = 255.0 if name.endswith("bias") else 1.0
        torch.testing.assert_close(p * scale, q, rtol=1e-6, atol=1e-9)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-3 / 255]


def test_pixel_range_divides_initial_biases_and_bias_lr(images, tmp_path):
    assert train(images, tmp_path / "a", "--num_epochs", "1", "--epoch_size", "2",
                 "--pixel_range", "1", "--lr", "0") == 0
    assert train(images, tmp_path / "b", "--num_epochs", "1", "--epoch_size", "2",
                 "--pixel_range", "255", "--lr", "0") == 0
    a = torch.load(tmp_path / "a" / "r" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "r" / "checkpoints" / "last.pt", weights_only=True)
    for k, v in a["model"].items():
        expect = v / 255 if k.endswith("bias") else v
        torch.testing.assert_close(b["model"][k], expect)
    assert len(a["optimizer"]["param_groups"]) == 1 and len(b["optimizer"]["param_groups"]) == 2
    assert b["config"]["pixel_range"] == 255


def test_resume_checkpoint_from_before_pixel_range(images, tmp_path):
    """Checkpoints written before --pixel_range existed trained with plain Adam (R = 1)."""
    assert train(images, tmp_path / "runs", "--num_epochs", "1", "--epoch_size", "2",
                 "--pixel_range", "1") == 0
    last = tmp_path / "runs" / "r" / "checkpoints" / "last.pt"
    ck = torch.load(last, weights_only=True)
    del ck["config"]["pixel_range"]
    torch.save(ck, last)
    assert run_train.main(["--resume_path", str(last), "--num_epochs", "2"]) == 0
    assert torch.load(last, weights_only=True)["config"]["pixel_range"] == 1


@pytest.mark.parametrize("zoom", [2.0, 0.5])
def test_zoomed_crops_scale_a_ramp(tmp_path, zoom):
    """A horizontal ramp rising 1/400 per pixel: a crop covering S/z source pixels resized to S
    rises 1/(400 z) per pixel."""
    from PIL import Image

    from utils.data import NaturalImages
    ramp = np.tile(np.arange(400, dtype=np.float64) / 400 * 255, (300, 1))
    Image.fromarray(ramp.round().astype(np.uint8)).save(tmp_path / "ramp.png")
    ds = NaturalImages([tmp_path / "ramp.png"], size=64, crop=True, seed=1, zoom=(zoom, zoom))
    for epoch in range(3):
        ds.set_epoch(epoch)
        x = ds[0][0].numpy().astype(np.float64)
        assert x.shape == (64, 64)
        slope = np.mean(x[:, -9] - x[:, 8]) / (64 - 17)
        assert slope == pytest.approx(1 / (400 * zoom), rel=0.05)
    ds.set_epoch(0)
    torch.testing.assert_close(ds[0], ds[0])  # a pure function of (seed, epoch, index)


def test_bad_device_is_an_error_before_the_run_folder_is_created(images, tmp_path, capsys):
    assert train(images, tmp_path / "runs", "--device", "gpu") == 2
    assert "error: --device gpu: not a device" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flag,value,message", [
    ("--log_every", 0, "--log_every must be >= 1, got 0"),
    ("--micro_batch", -1, "--micro_batch must be >= 0 (0 = automatic), got -1"),
    ("--num_epochs", 0, "--num_epochs must be >= 1, got 0"),
    ("--epoch_size", 0, "--epoch_size must be >= 1, got 0"),
    ("--train_num", 0, "--train_num must be >= 1, got 0"),
    ("--lr", -1, "--lr must be >= 0, got -1.0"),
    ("--lr_decay", 0, "--lr_decay must be > 0, got 0.0"),
    ("--num_workers", -2, "--num_workers must be >= 0, or -1 for automatic, got -2"),
    ("--save_every", -1, "--save_every must be >= 0 (0 = only at epoch ends), got -1"),
    ("--batch_size", 0, "--batch_size must be >= 1, got 0"),
    ("--image_size", 8, "--image_size must be >= 16 (the SSIM window is 11), got 8"),
    ("--image_size", 100000, "--image_size must be <= 8192 (a batch would not fit in memory), got 100000"),
    ("--pixel_range", 0, "--pixel_range must be positive, got 0.0"),
])
def test_out_of_range_setting_is_an_error_before_the_run_folder(images, tmp_path, capsys, flag, value, message):
    assert train(images, tmp_path / "runs", flag, value) == 2
    err = capsys.readouterr().err
    assert f"error: {message}\n" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_every_bad_setting_is_reported_at_once(images, tmp_path, capsys):
    assert train(images, tmp_path / "runs", "--lr", "-1", "--log_every", "0") == 2
    err = capsys.readouterr().err
    assert "error: --lr must be >= 0" in err and "error: --log_every must be >= 1" in err


def test_bad_zoom_is_an_error(images, tmp_path, capsys):
    assert train(images, tmp_path / "runs", "--zoom", "2", "1") == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: --zoom MIN MAX needs 0 < MIN <= MAX, got 2.0 1.0"


def test_new_run_never_overwrites_an_earlier_one(images, tmp_path, capsys):
    assert train(images, tmp_path / "runs", "--num_epochs", "1", "--epoch_size", "2") == 0
    last = tmp_path / "runs" / "r" / "checkpoints" / "last.pt"
    before = last.read_bytes()
    capsys.readouterr()
    assert train(images, tmp_path / "runs", "--num_epochs", "1", "--epoch_size", "2", "--seed", "1") == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and f"--resume_path {last}" in err
    assert last.read_bytes() == before


def test_init_from_a_weights_file_starts_from_those_weights(images, tmp_path, tiny_weights):
    """--init_from takes a bare state_dict (a shipped or exported file) as well as a checkpoint;
    with --lr 0 the run's weights are exactly the file's."""
    assert train(images, tmp_path / "runs", "--num_epochs", "1", "--epoch_size", "2", "--lr", "0",
                 "--init_from", tiny_weights) == 0
    got = weights(tmp_path / "runs" / "r" / "checkpoints" / "last.pt")
    want = torch.load(tiny_weights, weights_only=True)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.skipif(not (SHARED / "weights/official/densefuse_gray.model").is_file(),
                    reason="../shared/weights/official not present")
def test_init_from_official_weights_is_refused_before_the_run_folder(images, tmp_path, capsys):
    official = SHARED / "weights/official/densefuse_gray.model"
    assert train(images, tmp_path / "runs", "--init_from", official) == 2
    assert "--init_from takes this project's weights" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_resume_from_a_copy_outside_its_run_is_refused(images, tmp_path, capsys):
    """A checkpoint copied to proj/saved/ must not make proj/ the run folder (it held another
    run's checkpoints/, which were overwritten)."""
    assert train(images, tmp_path / "runs", "--num_epochs", "1", "--epoch_size", "2") == 0
    proj = tmp_path / "proj"
    (proj / "saved").mkdir(parents=True)
    (proj / "checkpoints").mkdir()
    (proj / "checkpoints" / "best.pt").write_bytes(b"someone else's")
    copy = proj / "saved" / "ckpt.pt"
    copy.write_bytes((tmp_path / "runs/r/checkpoints/last.pt").read_bytes())
    assert run_train.main(["--resume_path", str(copy), "--num_epochs", "2"]) == 2
    assert "is not that run's folder" in capsys.readouterr().err
    assert (proj / "checkpoints" / "best.pt").read_bytes() == b"someone else's"


def test_two_runs_with_one_name_never_share_the_folder(images, tmp_path, capsys):
    """The folder is claimed (run.json, exclusive create) before training: the second run stops
    at once, even while the first has not written a checkpoint yet."""
    from configs import TrainConfig
    cfg = TrainConfig(output_dir=str(tmp_path), run_name="same")
    run_dir, _ = training.claim_run_dir(cfg)
    with pytest.raises(training.TrainingError, match="already holds a run"):
        training.claim_run_dir(cfg)
    # Default names differ even within one second.
    a, _ = training.claim_run_dir(TrainConfig(output_dir=str(tmp_path)))
    b, _ = training.claim_run_dir(TrainConfig(output_dir=str(tmp_path)))
    assert a != b and run_dir.name == "same"


def test_resume_from_an_earlier_epoch_keeps_the_best_and_sets_later_ones_aside(images, tmp_path, capsys):
    args = ("--epoch_size", "4", "--lr", "1e-3", "--seed", "3")
    assert train(images, tmp_path / "a", "--num_epochs", "3", *args) == 0
    ck = tmp_path / "a/r/checkpoints"
    last_before = (ck / "last.pt").read_bytes()
    # Make the run's real best far better than anything the resumed epoch 2 can reach again (as
    # after one lucky epoch): epoch_1.pt's own record of "best" is then worse than the run's,
    # and a resume from it must compare with best.pt's, not replace best.pt with a worse epoch.
    best = torch.load(ck / "best.pt", weights_only=True)
    assert torch.load(ck / "epoch_1.pt", weights_only=True)["best_loss"] > best["best_loss"] * 0.01
    best["best_loss"] *= 0.01
    torch.save(best, ck / "best.pt")
    best_before = (ck / "best.pt").read_bytes()
    assert run_train.main(["--resume_path", str(ck / "epoch_1.pt"), "--num_epochs", "2"]) == 0
    assert "moved to" in capsys.readouterr().out
    assert (ck / "best.pt").read_bytes() == best_before
    moved = list((ck / "superseded").glob("*/*.pt"))
    assert sorted(p.name for p in moved) == ["epoch_2.pt", "epoch_3.pt", "last.pt"]
    assert next(p for p in moved if p.name == "last.pt").read_bytes() == last_before


def test_best_after_interrupt_is_chosen_as_without(images, tmp_path, monkeypatch):
    """The interrupted epoch's mean loss covers all its steps, so best.pt matches an uninterrupted run."""
    args = ("--epoch_size", "8", "--num_epochs", "2", "--seed", "5")
    assert train(images, tmp_path / "a", *args) == 0
    monkeypatch.setattr(training, "StopFlag", StopAfter)  # run_train makes it
    StopAfter.calls = 0
    assert train(images, tmp_path / "b", *args) == 130
    monkeypatch.undo()
    assert run_train.main(["--resume_path", str(tmp_path / "b/r/checkpoints/last.pt"), "--device", "cpu"]) == 0
    a = torch.load(tmp_path / "a/r/checkpoints/best.pt", weights_only=True)
    b = torch.load(tmp_path / "b/r/checkpoints/best.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] and a["best_loss"] == b["best_loss"]


def test_resuming_a_finished_run_says_how_to_extend_it(images, tmp_path, capsys):
    assert train(images, tmp_path / "runs", "--num_epochs", "1", "--epoch_size", "2") == 0
    capsys.readouterr()
    assert run_train.main(["--resume_path", str(tmp_path / "runs/r/checkpoints/last.pt")]) == 0
    out = capsys.readouterr().out
    assert "already finished its 1 epoch(s)" in out and "--num_epochs" in out


def test_init_from_defaults_to_the_fine_tuning_lr(images, tmp_path, tiny_weights):
    assert train(images, tmp_path / "runs", "--num_epochs", "1", "--epoch_size", "2", "--init_from", tiny_weights) == 0
    ck = torch.load(tmp_path / "runs/r/checkpoints/last.pt", weights_only=True)
    assert ck["config"]["lr"] == training.FINETUNE_LR


@pytest.mark.skipif(not (SHARED / "weights/official/densefuse_gray.model").is_file(),
                    reason="../shared/weights/official not present")
def test_init_from_converted_official_weights_is_refused(images, tmp_path, capsys):
    from run_scripts import convert_official
    conv = tmp_path / "conv.pt"
    assert convert_official.main([str(SHARED / "weights/official/densefuse_gray.model"), "-o", str(conv)]) == 0
    assert train(images, tmp_path / "runs", "--init_from", conv) == 2
    assert "--init_from takes this project's weights" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_run_from_before_run_ids_resumes_again_and_again(images, tmp_path):
    """A checkpoint without run_id in a folder without run.json (written by older versions) is
    resumed in its folder, which is then given a run.json, so its next checkpoints resume too."""
    assert train(images, tmp_path / "runs", "--num_epochs", "1", "--epoch_size", "2") == 0
    run = tmp_path / "runs" / "r"
    last = run / "checkpoints" / "last.pt"
    ck = torch.load(last, weights_only=True)
    del ck["run_id"]
    torch.save(ck, last)
    (run / "run.json").unlink()
    assert run_train.main(["--resume_path", str(last), "--num_epochs", "2"]) == 0
    assert run_train.main(["--resume_path", str(last), "--num_epochs", "3"]) == 0
    assert torch.load(last, weights_only=True)["epoch"] == 3


def test_no_gray_trains_and_resumes_the_rgb_network(tmp_path, flat_set):
    """--no-gray: the 3-channel network on colour images (a gray file replicated), colour images
    in TensorBoard, a checkpoint that loads as the RGB model, a bit-identical resume."""
    from PIL import Image

    from tests.conftest import write_rgb
    from utils.checkpoint import load_model
    imgs = tmp_path / "rgb"
    for i in range(4):
        write_rgb(imgs / f"c{i}.png", 26 + i, 30, i)
    write_gray(imgs / "g.png", 28, 30, 9)
    args = ("--no-gray", "--epoch_size", "4", "--lr", "1e-3", "--seed", "2")
    assert train(imgs, tmp_path / "a", "--num_epochs", "2", *args, "--val_path", str(flat_set)) == 0
    model = load_model(tmp_path / "a/r/checkpoints/last.pt")[0]
    assert model.model_args()["channels"] == 3 and sum(p.numel() for p in model.parameters()) == 74_771
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path / "a/r/logs"), size_guidance={"images": 0}).Reload()
    import io
    png = acc.Images("reconstruction/0")[-1].encoded_image_string
    assert Image.open(io.BytesIO(png)).mode == "RGB"
    assert train(imgs, tmp_path / "b", "--num_epochs", "1", *args) == 0
    assert run_train.main(["--resume_path", str(tmp_path / "b/r/checkpoints/last.pt"), "--num_epochs", "2",
                           "--device", "cpu"]) == 0
    a, b = weights(tmp_path / "a/r/checkpoints/last.pt"), weights(tmp_path / "b/r/checkpoints/last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_colour_training_images_are_rgb_and_gray_files_replicated(tmp_path):
    from tests.conftest import write_rgb
    from utils.data import NaturalImages
    paths = [write_rgb(tmp_path / "c.png", 40, 50, 0), write_gray(tmp_path / "g.png", 40, 50, 1)]
    for crop in (False, True):
        ds = NaturalImages(paths, 32, crop=crop, flip=True, gray=False, zoom=(0.8, 1.25) if crop else (1, 1))
        c, g = ds[0], ds[1]
        assert c.shape == g.shape == (3, 32, 32) and not torch.equal(c[0], c[1])
        assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])
    assert NaturalImages(paths, 32)[0].shape == (1, 32, 32)


def test_init_from_a_network_of_the_other_channel_count_is_refused(images, tmp_path, tiny_weights, capsys):
    assert train(images, tmp_path / "runs", "--no-gray", "--init_from", tiny_weights) == 2
    assert "1-channel network; this run trains a 3-channel one" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("gray", [pytest.param(g, marks=pytest.mark.slow) for g in ("1", "0")])  # 5 s each
def test_training_launcher_demo_in_both_modes(tmp_path, gray):
    """bash run_scripts/test.sh (the demo on data_train_sample/), GRAY=0 for the RGB network; later
    flags override the demo's, to keep it to seconds here."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT
    out = subprocess.run(["bash", str(ROOT / "run_scripts/test.sh"), "--image_size", "32", "--epoch_size", "4",
                          "--num_epochs", "1", "--output_dir", str(tmp_path), "--val_path", "", "--device", "cpu"],
                         env={**os.environ, "GRAY": gray, "PYTHON": sys.executable}, capture_output=True, text=True,
                         cwd=ROOT)  # PYTHON: the interpreter running the tests, whether or not its venv is active
    assert out.returncode == 0 and "DEMO" in out.stdout, out.stderr
    (ckpt,) = tmp_path.glob("demo_*/checkpoints/last.pt")
    assert torch.load(ckpt, weights_only=True)["model_args"]["channels"] == (1 if gray == "1" else 3)


def test_the_training_launcher_says_what_it_is():
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT
    out = subprocess.run(["bash", str(ROOT / "run_scripts/test.sh"), "--help"], capture_output=True, text=True,
                         env={**os.environ, "PYTHON": sys.executable}, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.startswith("A TRAINING launcher")
    assert "it does not run the tests" in out.stdout and "--image_path" in out.stdout and "DEMO" not in out.stdout


def truncate(path):
    """Cut an image file in half: Pillow still parses its header, decoding fails."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


def test_a_folder_whose_every_image_fails_to_decode_is_one_error_and_no_run_folder(tmp_path, capsys):
    d = tmp_path / "imgs"
    for i in range(3):
        truncate(write_gray(d / f"im{i}.png", 40, 40, i))
    assert train(d, tmp_path / "runs", "--num_epochs", "1", "--epoch_size", "2") == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: none of the 3 images")
    assert "Traceback" not in err and not (tmp_path / "runs" / "r").exists()


def test_a_file_that_breaks_during_the_run_is_named_once_and_its_neighbour_used(images, tmp_path, capsys):
    from utils.data import NaturalImages, list_images
    paths = list_images(images)
    data = NaturalImages(paths, size=16, crop=True, flip=False, seed=0)
    truncate(paths[1])
    a = [data[1] for _ in range(3)]
    assert all(torch.equal(a[0], x) for x in a) and capsys.readouterr().err.count(paths[1].name) == 1
    for p in paths:
        truncate(p)
    with pytest.raises(Exception, match="none of the 5 training images"):
        data[0]


def test_resume_after_the_images_moved_takes_the_new_image_path(images, tmp_path):
    args = ("--epoch_size", "4", "--lr", "1e-3", "--seed", "3")
    assert train(images, tmp_path / "a", "--num_epochs", "2", *args) == 0
    assert train(images, tmp_path / "b", "--num_epochs", "1", *args) == 0
    moved = images.rename(tmp_path / "moved")
    assert run_train.main(["--resume_path", str(tmp_path / "b/r/checkpoints/last.pt"), "--num_epochs", "2",
                           "--image_path", str(moved)]) == 0
    a, b = weights(tmp_path / "a/r/checkpoints/last.pt"), weights(tmp_path / "b/r/checkpoints/last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    listing = (tmp_path / "b/r" / training.IMAGES_FILE).read_text().split()
    assert listing == ["im0.png", "im2.png", "im4.png", "sub/im1.png", "sub/im3.png"]


def test_resume_on_other_images_is_refused_naming_what_differs(images, tmp_path, capsys):
    assert train(images, tmp_path / "b", "--num_epochs", "1", "--epoch_size", "2") == 0
    (images / "im2.png").rename(images / "other.png")
    assert run_train.main(["--resume_path", str(tmp_path / "b/r/checkpoints/last.pt"), "--num_epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "missing: im2.png" in err and "not in the run: other.png" in err
    truncate(images / "im0.png")  # a file broken since: named as such, not as missing
    assert run_train.main(["--resume_path", str(tmp_path / "b/r/checkpoints/last.pt"), "--num_epochs", "2"]) == 2
    assert "no longer decodable: im0.png" in capsys.readouterr().err
    assert not (tmp_path / "b/r/checkpoints/epoch_2.pt").exists()


def test_partial_files_of_a_killed_save_are_removed_on_resume(images, tmp_path, capsys):
    assert train(images, tmp_path / "b", "--num_epochs", "1", "--epoch_size", "2") == 0
    stale = tmp_path / "b/r/checkpoints/.last.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert run_train.main(["--resume_path", str(tmp_path / "b/r/checkpoints/last.pt"), "--num_epochs", "2"]) == 0
    assert not stale.exists() and "Removed 1 partial checkpoint" in capsys.readouterr().out


def test_a_full_disk_while_saving_is_one_error_naming_the_last_good_checkpoint(images, tmp_path, capsys,
                                                                              monkeypatch):
    import errno
    real, calls = training.trainer.save_checkpoint, []

    def save(path, *a, **k):
        calls.append(path)
        if len(calls) > 1:  # epoch 1's one save (linked as last and best) succeeds; epoch 2's fails
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, *a, **k)

    monkeypatch.setattr(training.trainer, "save_checkpoint", save)
    assert train(images, tmp_path / "b", "--num_epochs", "2", "--epoch_size", "2") == 2
    err = capsys.readouterr().err.strip().splitlines()
    last = tmp_path / "b/r/checkpoints/last.pt"
    assert "No space left on device" in err[-1] and f"the last good checkpoint is {last}" in err[-1]
    assert torch.load(last, weights_only=True)["epoch"] == 1


def test_a_second_ctrl_c_stops_at_once_pointing_at_a_checkpoint_that_exists(images, tmp_path, capsys,
                                                                           monkeypatch):
    real = training.Trainer.train_epoch

    def epoch(self, e, stop):
        if e == 1:
            raise KeyboardInterrupt
        return real(self, e, stop)

    monkeypatch.setattr(training.Trainer, "train_epoch", epoch)
    assert train(images, tmp_path / "b", "--num_epochs", "2", "--epoch_size", "2") == 130
    err = capsys.readouterr().err
    last = tmp_path / "b/r/checkpoints/last.pt"
    assert f"--resume_path {last}" in err and last.is_file() and "Traceback" not in err


def test_multi_frame_training_images_are_named_in_one_warning(images, tmp_path, capsys):
    from PIL import Image
    frames = [Image.fromarray(np.full((30, 30), v, np.uint8)) for v in (40, 200)]
    frames[0].save(images / "pages.tif", save_all=True, append_images=frames[1:])
    for i in range(8):  # more files than the decode check has threads
        write_gray(images / f"more{i}.png", 24, 24, i)
    assert train(images, tmp_path / "runs", "--num_epochs", "1", "--epoch_size", "2") == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "several frames" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: 1 image(s) have several frames")
    assert warned[0].endswith(str(images / "pages.tif"))


@pytest.mark.slow  # 2 s of bf16 steps on CPU
def test_bf16_steps_track_the_float32_loss_and_checkpoints_stay_float32(images, tmp_path):
    """--amp bf16: the same first steps from the same weights give losses within 2 % of float32
    (bf16 keeps 8 bits of mantissa), and different ones (it really ran); the checkpoint is float32."""
    from models.densefuse import DenseFuse
    from utils.losses import DenseFuseLoss
    from utils.training import build_optimizer, train_step
    x = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    losses = {}
    for amp in ("off", "bf16"):
        torch.manual_seed(1)
        model = DenseFuse()
        opt, crit, seq = build_optimizer(model, 1e-3, 255.0), DenseFuseLoss(100), []
        for _ in range(4):
            seq.append(train_step(model, crit, opt, x, 2, amp=amp)[0])
            opt.step()
        losses[amp] = np.array(seq)
    assert not np.array_equal(losses["off"], losses["bf16"])
    np.testing.assert_allclose(losses["bf16"], losses["off"], rtol=0.02)
    assert train(images, tmp_path / "a", "--amp", "bf16", "--num_epochs", "1", "--epoch_size", "2") == 0
    ck = torch.load(tmp_path / "a/r/checkpoints/last.pt", weights_only=True)
    assert ck["config"]["amp"] == "bf16" and all(v.dtype == torch.float32 for v in ck["model"].values())


def test_fp16_needs_cuda(images, tmp_path, capsys):
    assert train(images, tmp_path / "a", "--amp", "fp16") == 2
    assert "--amp fp16 needs a CUDA device" in capsys.readouterr().err and not (tmp_path / "a").exists()


@pytest.mark.slow  # 40 s: compilation
def test_compiled_training_gives_the_uncompiled_weights(images, tmp_path):
    """--compile changes how the step runs, not what it computes: the same weights to 1e-5 after
    an epoch, saved from the bare module (plain state_dict keys, no _orig_mod prefix)."""
    import shutil
    if shutil.which("g++") is None and shutil.which("cc") is None:
        pytest.skip("no C++ compiler for torch.compile on CPU")
    assert train(images, tmp_path / "a", "--num_epochs", "1", "--epoch_size", "4") == 0
    assert train(images, tmp_path / "b", "--num_epochs", "1", "--epoch_size", "4", "--compile") == 0
    a, b = weights(tmp_path / "a/r/checkpoints/last.pt"), weights(tmp_path / "b/r/checkpoints/last.pt")
    assert set(a) == set(b) and max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5
