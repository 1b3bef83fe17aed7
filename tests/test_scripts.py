import importlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import ROOT


@pytest.mark.slow  # 3.5 s: a training run and matplotlib
def test_loss_plot_from_a_training_run(tmp_path):
    import run_train
    from run_scripts import loss
    from tests.conftest import write_gray
    for i in range(3):
        write_gray(tmp_path / "im" / f"{i}.png", 20, 20, i)
    assert run_train.main(["--image_path", str(tmp_path / "im"), "--output_dir", str(tmp_path),
                           "--run_name", "r", "--image_size", "16", "--num_epochs", "1",
                           "--log_every", "1", "--device", "cpu", "--val_path", ""]) == 0
    assert loss.main([str(tmp_path / "r")]) == 0
    png = tmp_path / "r" / "loss.png"
    from PIL import Image
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    # Three panels (pixel, SSIM, total loss; no validation) of 4.2 x 3.4 inches at 110 dpi, each
    # with its smoothed curve drawn in matplotlib's first colour (#1f77b4).
    assert pixels.shape == (374, 1386, 3)
    curve = (np.abs(pixels - [31, 119, 180]).max(-1) <= 20)
    thirds = np.array_split(curve, 3, axis=1)
    assert all(part.sum() > 50 for part in thirds), [int(p.sum()) for p in thirds]
    np.testing.assert_allclose(loss.smooth(np.array([1., 2, 3, 4, 5]), 2), [1, 1.5, 2.5, 3.5, 4.5])
    # Two stages (a run and its --init_from continuation) as two rows of one picture.
    from PIL import Image
    both = tmp_path / "both.png"
    assert loss.main([str(tmp_path / "r"), str(tmp_path / "r" / "logs"), "--out", str(both)]) == 0
    assert Image.open(both).height > 1.8 * Image.open(png).height
    assert loss.main([str(tmp_path / "r"), str(tmp_path / "missing")]) == 2


def test_loss_plot_without_logs_is_an_error(tmp_path):
    from run_scripts import loss
    assert loss.main([str(tmp_path)]) == 2


def test_export_weights_names_file_by_hash(tmp_path):
    import torch

    from models.densefuse import DenseFuse
    from run_scripts import export_weights
    from utils.checkpoint import load_model, save_checkpoint, sha256_file
    save_checkpoint(tmp_path / "c.pt", DenseFuse(), {}, 1, 1, torch.optim.Adam(DenseFuse().parameters()))
    path, digest = export_weights.export(tmp_path / "c.pt", tmp_path, "w")
    assert path.name == f"w_{digest[:8]}.pth" and sha256_file(path) == digest
    assert path.stat().st_size < 400_000
    load_model(path, sha256=digest)


def test_export_weights_names_by_lambda_and_guards_the_default(tmp_path):
    import torch

    from models.densefuse import DenseFuse
    from run_scripts import export_weights
    from utils.checkpoint import save_checkpoint
    configs_text = (ROOT / "configs.py").read_text()
    save_checkpoint(tmp_path / "c.pt", DenseFuse(), {"ssim_weight": 10}, 1, 1,
                    torch.optim.Adam(DenseFuse().parameters()))
    # A lambda = 10 run must not replace the lambda = 100 default, and nothing is written.
    assert export_weights.main([str(tmp_path / "c.pt"), "--out_dir", str(tmp_path), "--update_configs"]) == 2
    assert (ROOT / "configs.py").read_text() == configs_text
    assert not list(tmp_path.glob("*.pth"))
    assert export_weights.main([str(tmp_path / "c.pt"), "--out_dir", str(tmp_path)]) == 0
    assert [p.name[:-len("_12345678.pth")] for p in tmp_path.glob("*.pth")] == ["densefuse_gray_l10"]


@pytest.mark.parametrize("script", ["run_train.py", "run_infer.py", "run_eval.py"])
def test_help_runs_as_a_script_from_any_folder(script):
    """The top-level scripts run from any folder (run_scripts/ run as modules from the repository
    root, as the README documents them: tests/test_layout.py runs each one's --help)."""
    out = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True,
                         text=True, check=True, cwd="/").stdout
    assert out.startswith("usage:") and "(default: " in out


def tiny_sets(tmp_path):
    from tests.conftest import write_gray, write_rgb
    flat, sub = tmp_path / "Tno", tmp_path / "Road"
    for k in (1, 2):
        write_gray(flat / f"IR{k}.png", 170, 172, k)
        write_gray(flat / f"VIS{k}.png", 170, 172, k + 3)
        write_gray(sub / "ir" / f"p{k}.png", 170, 168, k)
        write_rgb(sub / "vi" / f"p{k}.png", 170, 168, k)
    return flat, sub


@pytest.mark.slow
def test_compare_weights_report(tmp_path, tiny_weights):
    """Two different files with a known difference: the reference is ours with its last bias
    raised by 0.05, i.e. every decoded pixel 0.05 brighter. ``minmax`` removes a constant shift,
    so every add/minmax metric agrees; ``clip`` keeps it, so the mean/clip PSNR differs."""
    import json

    from models.densefuse import DenseFuse
    from run_scripts import compare_weights
    flat, sub = tiny_sets(tmp_path)
    state = torch.load(tiny_weights, weights_only=True)
    state["decoder.layers.3.conv.bias"] = state["decoder.layers.3.conv.bias"] + 0.05
    shifted = tmp_path / "shifted.pth"
    torch.save(state, shifted)
    DenseFuse().load_state_dict(state)
    out = tmp_path / "cmp"
    assert compare_weights.main(["--ours", str(tiny_weights), "--official", str(shifted),
                                 "--sets", str(flat), str(sub), "--out", str(out),
                                 "--figure_pairs", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    for key, entry in report["fusion"].items():
        if "add/minmax" in key:
            for metric, d in entry["diff_pct"].items():
                assert abs(d) < 0.5, (key, metric, d)  # equal up to 8-bit rounding of the stretch
    assert any(abs(e["diff_pct"]["PSNR"]) > 0.01 for k, e in report["fusion"].items() if "mean/clip" in k)
    assert report["psnr"]["Tno"]["ours"] != report["psnr"]["Tno"]["reference"]
    ratios = report["flat_activity_ratio"]
    assert ratios["ours"] == ratios["reference"] and 0 < ratios["ours"] < 1  # the encoders are the same
    assert "within 2 %" in (out / "report.md").read_text()
    # The picture: one row (pair 1) of IR | visible | ours | reference, each tile the image itself
    # scaled to 220 px high.
    from PIL import Image
    pic = np.asarray(Image.open(out / "compare.png").convert("L")).astype(int)
    ir = Image.open(next(p for p in flat.iterdir() if p.stem == "IR1"))
    tile_w = round(ir.width * 220 / ir.height)
    assert pic.shape == (22 + 224, 4 * tile_w + 12)
    want = np.asarray(ir.convert("RGB").resize((tile_w, 220), Image.BILINEAR).convert("L")).astype(int)
    assert np.abs(pic[22:242, :tile_w] - want).max() <= 1
    (fused,) = (out / "ours").glob("*_add_minmax/1.png")  # the fused image the third tile shows
    want = np.asarray(Image.open(fused).convert("RGB").resize((tile_w, 220), Image.BILINEAR).convert("L")).astype(int)
    assert np.abs(pic[22:242, 2 * (tile_w + 4):2 * (tile_w + 4) + tile_w] - want).max() <= 1 and want.std() > 1


def test_flat_activity_ratio_closed_forms():
    from models.densefuse import DenseFuse
    from run_scripts import compare_weights
    torch.manual_seed(0)
    m = DenseFuse()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    # No biases: a black image has no activity at all.
    assert compare_weights.flat_activity_ratio(m) == 0.0
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.copy_(torch.full_like(p, 0.5) if name.endswith("bias") else torch.zeros_like(p))
    # No weights: every image gives the same (bias-only) features.
    assert compare_weights.flat_activity_ratio(m) == 1.0


@pytest.mark.slow  # 1.5 s: fusion, scoring and matplotlib
def test_results_table_and_figure(tmp_path, tiny_weights):
    from run_scripts import figures, results_table
    flat, _ = tiny_sets(tmp_path)
    out = tmp_path / "tables"
    assert results_table.main(["--weights", str(tiny_weights), "--sets", str(flat), "--out", str(out),
                               "--strategies", "add", "mean", "--profiles", "standard"]) == 0
    md = (out / "tables.md").read_text()
    assert "(A+B)/2" in md and "ours add/minmax" in md and "ours mean/clip" in md
    from utils.metrics import PROFILES
    heads = [line.split(" | ")[1:] for line in md.splitlines() if line.startswith("| method |")]
    assert [len(h) for h in heads] == [12, 11] and "(metrics 13-23 of 23)" in md
    assert [k.strip(" |") for h in heads for k in h] == list(PROFILES["standard"])
    avg = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(out / "Tno_average" / "1.png"), float)
    from utils.images import load_image
    a, b = load_image(flat / "IR1.png") * 255, load_image(flat / "VIS1.png") * 255
    assert np.abs(avg - np.floor((a + b) / 2 + 0.5)).max() <= 1  # the baseline is (A+B)/2
    assert figures.main(["--weights", str(tiny_weights), "--pairs", "Tno:1", "Road:FLIR_05857",
                         "--out", str(tmp_path / "ex.png")]) == 0
    assert (tmp_path / "ex.png").stat().st_size > 1000


@pytest.mark.parametrize("script,args,message", [
    ("compare_weights", ["--official", "{missing}"], "{missing}: weights file not found"),
    ("compare_weights", ["--ours", "{weights}", "--official", "{weights}", "--sets", "{missing}"],
     "{missing}: folder not found"),
    ("results_table", ["--weights", "{missing}"], "{missing}: weights file not found"),
    ("results_table", ["--weights", "{weights}", "--sets", "{missing}"], "{missing}: folder not found"),
    ("figures", ["--weights", "{missing}"], "{missing}: weights file not found"),
])
def test_report_scripts_name_a_missing_file(tmp_path, tiny_weights, capsys, script, args, message):
    """A wrong path is one 'error:' line naming it (exit 2), not a traceback, and nothing is written."""
    module = importlib.import_module(f"run_scripts.{script}")
    fill = {"missing": str(tmp_path / "nope"), "weights": str(tiny_weights)}
    out = ["--out", str(tmp_path / ("ex.png" if script == "figures" else "out"))]
    assert module.main([a.format(**fill) for a in args] + out) == 2
    assert f"error: {message.format(**fill)}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
