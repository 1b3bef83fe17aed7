import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import run_infer
from models.densefuse import DenseFuse
from models.fusion import STRATEGIES
from tests.conftest import write_gray, write_rgb
from utils.fusion import FuseSettings, fuse_gray, fuse_images
from utils.images import load_image, rgb_to_ycbcr


def infer(*args, weights):
    return run_infer.main([*map(str, args), "--weights", str(weights), "--device", "cpu"])


def test_flat_layout_writes_every_pair(flat_set, tmp_path, tiny_weights):
    out = tmp_path / "res"
    assert infer("--test_path", flat_set, "--output_path", out, weights=tiny_weights) == 0
    files = sorted(p.name for p in (out / "Flat_fusion").iterdir())
    assert files == ["1.png", "2.png", "3.png", "fusion_settings.json"]
    img = np.asarray(Image.open(out / "Flat_fusion" / "1.png"))
    assert img.shape == (21, 17) and img.dtype == np.uint8
    assert img.min() == 0 and img.max() == 255  # minmax output mode


@pytest.mark.parametrize("ir,vis", [("ir", "vi"), ("ir", "vis"), ("INF_images", "VIS_images")])
def test_subfolder_layouts_and_root_of_sets(tmp_path, tiny_weights, ir, vis):
    root = tmp_path / "data"
    write_gray(root / "SetA" / ir / "x 1.png", 12, 10, 0)
    write_gray(root / "SetA" / vis / "x 1.png", 12, 10, 1)
    out = tmp_path / "res"
    assert infer("--test_path", root, "--output_path", out, weights=tiny_weights) == 0
    assert (out / "SetA_fusion" / "x 1.png").is_file()


def test_single_pair(tmp_path, tiny_weights):
    a, b = write_gray(tmp_path / "IR7.png", 9, 9, 0), write_gray(tmp_path / "VIS7.png", 9, 9, 1)
    out = tmp_path / "res"
    assert infer("--ir", a, "--vis", b, "--output_path", out, weights=tiny_weights) == 0
    assert (out / "pair" / "7.png").is_file()


def test_colour_visible_keeps_chroma(tmp_path, tiny_weights):
    write_gray(tmp_path / "ir" / "c.png", 14, 11, 0)
    vis = write_rgb(tmp_path / "vi" / "c.png", 14, 11, 1)
    out = tmp_path / "res"
    assert infer("--test_path", tmp_path, "--output_path", out, weights=tiny_weights) == 0
    fused = load_image(out / f"{tmp_path.name}_fusion" / "c.png")
    assert fused.shape == (14, 11, 3)
    src = rgb_to_ycbcr(load_image(vis))
    got = rgb_to_ycbcr(fused)
    # Chroma survives up to clipping of out-of-gamut colours and 8-bit rounding.
    inside = np.all((fused > 0.02) & (fused < 0.98), axis=-1)
    assert inside.mean() > 0.2
    assert np.abs(got[inside, 1:] - src[inside, 1:]).max() < 0.02


def test_chroma_rule_is_the_saturation_weighted_mean():
    """fuse_chroma against its closed form (DeepFuse, Eq. 5, on [0,1] planes)."""
    from utils.fusion import fuse_chroma
    rng = np.random.default_rng(0)
    c1, c2, c3 = (rng.random((5, 7), dtype=np.float32) for _ in range(3))
    w = [np.abs(c.astype(np.float64) - 0.5) for c in (c1, c2, c3)]
    expected = (w[0] * c1 + w[1] * c2 + w[2] * c3) / (w[0] + w[1] + w[2])
    np.testing.assert_allclose(fuse_chroma([c1, c2, c3]), expected, rtol=1e-6)
    neutral = np.full((5, 7), 0.5, np.float32)
    np.testing.assert_allclose(fuse_chroma([c1, neutral]), c1, rtol=1e-6)  # a gray source adds no colour
    assert (fuse_chroma([neutral, neutral]) == 0.5).all()  # equal weights where every source is neutral


def test_two_colour_sources_give_a_colour_output_with_fused_chroma(tiny_weights):
    """Both sources colour (multi-focus, multi-exposure) and a gray network: Y through the
    network, Cb and Cr by the chroma rule; exactly one colour source (here the IR) keeps its own."""
    from utils.checkpoint import load_model
    from utils.fusion import fuse_chroma
    from utils.images import ycbcr_to_rgb
    model = load_model(tiny_weights)[0]
    rng = np.random.default_rng(1)
    a, b = (rng.uniform(0.3, 0.7, (20, 24, 3)).astype(np.float32) for _ in range(2))
    settings = FuseSettings("mean", output_mode="clip")
    out = fuse_images(model, a, b, settings=settings)
    ya, yb = rgb_to_ycbcr(a), rgb_to_ycbcr(b)
    y = fuse_gray(model, ya[..., 0], yb[..., 0], settings)
    want = np.stack([np.clip(y, 0, 1), *(fuse_chroma([ya[..., k], yb[..., k]]) for k in (1, 2))], -1)
    assert out.shape == (20, 24, 3)
    assert np.abs(out.astype(np.float64) - np.floor(np.clip(ycbcr_to_rgb(want), 0, 1) * 255 + 0.5)).max() <= 1
    gray_vis = b.mean(-1)
    y = np.clip(fuse_gray(model, ya[..., 0], gray_vis, settings), 0, 1)
    want = np.floor(np.clip(ycbcr_to_rgb(np.stack([y, ya[..., 1], ya[..., 2]], -1)), 0, 1) * 255 + 0.5)
    assert np.abs(fuse_images(model, a, gray_vis, settings=settings) - want).max() <= 1  # the IR's own chroma


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("hw,tile", [((37, 29), 8), ((19, 40), 13), ((16, 16), 5)])
def test_tiled_equals_untiled(strategy, hw, tile):
    torch.manual_seed(1)
    model = DenseFuse().eval()
    rng = np.random.default_rng(0)
    a, b = rng.random(hw, dtype=np.float32), rng.random(hw, dtype=np.float32)
    whole = fuse_gray(model, a, b, FuseSettings(strategy, 2, tile=-1))
    tiled = fuse_gray(model, a, b, FuseSettings(strategy, 2, tile=tile))
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_add_minmax_is_official_postprocessing():
    torch.manual_seed(2)
    model = DenseFuse().eval()
    rng = np.random.default_rng(0)
    a, b = rng.random((10, 12), dtype=np.float32), rng.random((10, 12), dtype=np.float32)
    y = fuse_gray(model, a, b, FuseSettings("add", 1, tile=-1)).astype(np.float32)
    expect = np.floor((y - y.min()) / (y.max() - y.min()) * 255 + 0.5).astype(np.uint8)
    got = fuse_images(model, a, b, settings=FuseSettings("add", output_mode="minmax"))
    assert np.abs(got.astype(int) - expect).max() <= 1  # float32 rounding at .5 boundaries


# ---- bad input: one clear line, exit code 2, nothing written --------------------------------

def run_bad(capsys, *args, weights):
    rc = infer(*args, weights=weights)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    return err


def test_size_mismatch_reports_before_writing(tmp_path, tiny_weights, capsys, flat_set):
    write_gray(flat_set / "IR4.png", 10, 10, 0)
    write_gray(flat_set / "VIS4.png", 11, 10, 0)
    out = tmp_path / "res"
    err = run_bad(capsys, "--test_path", flat_set, "--output_path", out, weights=tiny_weights)
    assert "IR4.png" in err and "sizes differ" in err
    assert not out.exists()


def test_skip_bad_fuses_the_rest(tmp_path, tiny_weights, capsys, flat_set):
    (flat_set / "IR4.png").write_bytes(b"not an image")
    write_gray(flat_set / "VIS4.png", 10, 10, 0)
    out = tmp_path / "res"
    rc = infer("--test_path", flat_set, "--output_path", out, "--skip_bad", weights=tiny_weights)
    assert rc == 1 and "IR4.png" in capsys.readouterr().err
    written = sorted(p.name for p in (out / "Flat_fusion").iterdir())
    assert written == ["1.png", "2.png", "3.png", "fusion_settings.json"]


def test_unpaired_files_and_size_mismatches_are_reported_together(tmp_path, tiny_weights, capsys, flat_set):
    write_gray(flat_set / "IR8.png", 10, 10, 0)
    write_gray(flat_set / "VIS9.png", 10, 10, 0)
    write_gray(flat_set / "VIS2.png", 12, 16, 0)  # IR2 is 16x16
    err = run_bad(capsys, "--test_path", flat_set, "--output_path", tmp_path / "r", weights=tiny_weights)
    lines = err.splitlines()
    assert lines[0] == "3 problem(s) with the inputs:"
    assert {line.strip().split(": ")[-1].split(" (")[0] for line in lines[1:4]} == {
        "no visible partner", "no infrared partner", "sizes differ"}
    assert "sizes differ (--resize if they show the same field of view, --align to register them)" in lines[3]
    assert "IR8.png" in lines[1] and "VIS9.png" in lines[2] and "VIS2.png" in lines[3]
    assert not (tmp_path / "r").exists()


def test_skip_bad_skips_unpaired_files_too(tmp_path, tiny_weights, capsys, flat_set):
    write_gray(flat_set / "IR8.png", 10, 10, 0)
    (flat_set / "VIS3.png").write_bytes(b"broken")
    out = tmp_path / "r"
    assert infer("--test_path", flat_set, "--output_path", out, "--skip_bad", weights=tiny_weights) == 1
    cap = capsys.readouterr()
    assert "IR8.png: no visible partner" in cap.err and "VIS3.png" in cap.err
    assert "layout IR<k> + VIS<k>, 3 pairs, 1 unpaired file" in cap.out
    assert sorted(p.name for p in (out / "Flat_fusion").iterdir()) == ["1.png", "2.png", "fusion_settings.json"]


def test_skip_bad_fuses_every_set_of_a_folder_whatever_the_others_problems(tmp_path, tiny_weights, capsys):
    for name in ("A", "B"):
        for k in (1, 2):
            write_gray(tmp_path / "sets" / name / "ir" / f"{k}.png", 12, 14, k)
            write_gray(tmp_path / "sets" / name / "vi" / f"{k}.png", 12, 14, k + 5)
    write_gray(tmp_path / "sets/A/vi/3.png", 12, 14, 0)
    write_gray(tmp_path / "sets/B/vi/4.png", 12, 14, 0)
    out = tmp_path / "r"
    assert infer("--test_path", tmp_path / "sets", "--output_path", out, "--skip_bad", weights=tiny_weights) == 1
    err = capsys.readouterr().err
    assert "2 problem(s)" in err and "A/vi/3.png: no infrared partner" in err and "B/vi/4.png" in err
    for name in ("A", "B"):
        assert sorted(p.name for p in (out / f"{name}_fusion").glob("*.png")) == ["1.png", "2.png"]


def test_skip_bad_with_sources_fuses_the_complete_sets(tmp_path, tiny_weights, capsys):
    folders = [tmp_path / d for d in ("under", "over", "mid")]
    for i, d in enumerate(folders):
        for name in ("a", "b"):
            write_gray(d / f"{name}.png", 12, 14, i)
    write_gray(folders[0] / "c.png", 12, 14, 0)
    out = tmp_path / "r"
    rc = infer("--sources", *folders, "--output_path", out, "--skip_bad", weights=tiny_weights)
    assert rc == 1 and "c.*: missing" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "sources_fusion").glob("*.png")) == ["a.png", "b.png"]


def test_missing_partners_all_listed(tmp_path, tiny_weights, capsys, flat_set):
    write_gray(flat_set / "IR8.png", 10, 10, 0)
    write_gray(flat_set / "VIS9.png", 10, 10, 0)
    err = run_bad(capsys, "--test_path", flat_set, "--output_path", tmp_path / "r", weights=tiny_weights)
    assert "IR8.png" in err and "VIS9.png" in err


def test_unreadable_file(tmp_path, tiny_weights, capsys, flat_set):
    (flat_set / "VIS2.png").write_bytes(b"")
    err = run_bad(capsys, "--test_path", flat_set, "--output_path", tmp_path / "r", weights=tiny_weights)
    assert "VIS2.png" in err and "empty" in err


def test_missing_folder(tmp_path, tiny_weights, capsys):
    err = run_bad(capsys, "--test_path", tmp_path / "nowhere", weights=tiny_weights)
    assert "nowhere" in err and "not found" in err


def test_not_a_densefuse_checkpoint(tmp_path, capsys, flat_set):
    bad = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, bad)
    err = run_bad(capsys, "--test_path", flat_set, "--output_path", tmp_path / "r", weights=bad)
    assert "other.pth" in err and "not a DenseFuse checkpoint" in err
    assert not (tmp_path / "r").exists()  # failed before creating anything


def test_output_never_overwrites_input(tmp_path, tiny_weights, capsys):
    d = tmp_path / "S"
    a, b = write_gray(d / "ir" / "p.png", 8, 8, 0), write_gray(d / "vi" / "p.png", 8, 8, 1)
    before = a.read_bytes()
    # --output_path chosen so that <out>/pair/p.png is the IR file itself.
    (tmp_path / "o").mkdir()
    shutil.move(str(d / "ir"), str(tmp_path / "o" / "pair"))
    a = tmp_path / "o" / "pair" / "p.png"
    err = run_bad(capsys, "--ir", a, "--vis", b, "--output_path", tmp_path / "o", weights=tiny_weights)
    assert "overwrite an input" in err and a.read_bytes() == before


def test_ir_without_vis(tmp_path, tiny_weights, capsys):
    err = run_bad(capsys, "--ir", "x.png", weights=tiny_weights)
    assert "--ir and --vis" in err


def test_help_lists_defaults(capsys):
    with pytest.raises(SystemExit):
        run_infer.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--strategy" in out and "(default: add;" in out
    assert "(images' default: minmax)" in out and "(sequences' default: no flicker)" in out
    assert "--calibrate K output mode sequence: fix the stretch from the first K frames (default 8)" in out


def test_bad_device_is_an_error_before_anything_is_created(tmp_path, tiny_weights, capsys, flat_set):
    out = tmp_path / "res"
    rc = run_infer.main(["--test_path", str(flat_set), "--output_path", str(out), "--weights", str(tiny_weights),
                         "--device", "gpu"])
    assert rc == 2
    assert "error: --device gpu: not a device" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("tile", [3, 31, -2])
def test_tiny_tile_is_refused(tmp_path, tiny_weights, capsys, flat_set, tile):
    """Tiles below 32 pixels would mostly recompute their halo (40x the work at 3 pixels)."""
    err = run_bad(capsys, "--test_path", flat_set, "--output_path", tmp_path / "res", "--tile", tile,
                  weights=tiny_weights)
    assert f"--tile {tile}: use 0 (automatic), -1 (never) or a size of at least 32" in err
    assert not (tmp_path / "res").exists()


def test_tile_32_is_accepted(tmp_path, tiny_weights, flat_set):
    assert infer("--test_path", flat_set, "--output_path", tmp_path / "res", "--tile", 32, weights=tiny_weights) == 0


def test_results_of_other_settings_are_never_replaced(tmp_path, tiny_weights, capsys, flat_set):
    out = tmp_path / "res"
    assert infer("--test_path", flat_set, "--output_path", out, weights=tiny_weights) == 0
    folder = out / "Flat_fusion"
    recorded = json.loads((folder / "fusion_settings.json").read_text())
    import torch

    from configs import VERSION
    from utils.checkpoint import sha256_file
    assert recorded == {"weights": tiny_weights.name, "weights_sha256": sha256_file(tiny_weights),
                        "ssim_weight": None, "strategy": "add", "l1_radius": None, "output_mode": "minmax",
                        "software": {"densefuse": VERSION, "torch": torch.__version__},
                        "inputs": {k: [str(flat_set / f"IR{k}.png"), str(flat_set / f"VIS{k}.png")]
                                   for k in ("1", "2", "3")}}
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    # The same settings again (tiling does not change the pixels): fine.
    assert infer("--test_path", flat_set, "--output_path", out, "--tile", 32, weights=tiny_weights) == 0
    capsys.readouterr()
    # Other settings (other weights into the same folder): refused, naming the folder and what
    # made its results; nothing is touched.
    other = tmp_path / "other.pth"
    torch.manual_seed(9)
    torch.save(DenseFuse().state_dict(), other)
    err = run_bad(capsys, "--test_path", flat_set, "--output_path", out, weights=other)
    assert f"{folder} holds results made with weights {tiny_weights.name}, strategy add, output_mode minmax" in err
    assert "--overwrite" in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    # --overwrite replaces them and records the new settings.
    assert infer("--test_path", flat_set, "--output_path", out, "--overwrite", weights=other) == 0
    assert json.loads((folder / "fusion_settings.json").read_text())["weights"] == "other.pth"
    assert (folder / "1.png").read_bytes() != before["1.png"]


def test_unlabelled_earlier_results_are_not_replaced(tmp_path, tiny_weights, capsys, flat_set):
    """Fused images without a settings file (another program, an older version) count as other settings."""
    folder = tmp_path / "res" / "Flat_fusion"
    write_gray(folder / "2.png", 8, 8, 0)
    before = (folder / "2.png").read_bytes()
    err = run_bad(capsys, "--test_path", flat_set, "--output_path", tmp_path / "res", weights=tiny_weights)
    assert f"{folder} holds 1 fused image(s) of an earlier run (2.png ...)" in err
    assert (folder / "2.png").read_bytes() == before and not (folder / "1.png").exists()


def test_other_weights_of_the_same_name_never_replace_results(tmp_path, tiny_weights, capsys, flat_set):
    """Two runs' last.pt have the same name: the weights are told apart by content."""
    other = tmp_path / "other" / tiny_weights.name
    other.parent.mkdir()
    torch.manual_seed(5)
    torch.save(DenseFuse().state_dict(), other)
    out = tmp_path / "res"
    assert infer("--test_path", flat_set, "--output_path", out, weights=tiny_weights) == 0
    before = (out / "Flat_fusion" / "1.png").read_bytes()
    err = run_bad(capsys, "--test_path", flat_set, "--output_path", out, weights=other)
    assert "holds results made with" in err and (out / "Flat_fusion" / "1.png").read_bytes() == before


def test_other_inputs_of_the_same_name_never_replace_results(tmp_path, tiny_weights, capsys):
    """Two single pairs both named 1 (or two data sets both called test) go to one folder."""
    a = [write_gray(tmp_path / "a" / f"{m}1.png", 9, 9, i) for i, m in enumerate(("IR", "VIS"))]
    b = [write_gray(tmp_path / "b" / f"{m}1.png", 9, 9, 5 + i) for i, m in enumerate(("IR", "VIS"))]
    out = tmp_path / "res"
    assert infer("--ir", a[0], "--vis", a[1], "--output_path", out, weights=tiny_weights) == 0
    before = (out / "pair" / "1.png").read_bytes()
    err = run_bad(capsys, "--ir", b[0], "--vis", b[1], "--output_path", out, weights=tiny_weights)
    assert f"was made from {a[0]} + {a[1]}, not from {b[0]} + {b[1]}" in err
    assert (out / "pair" / "1.png").read_bytes() == before
    # The same inputs again replace as before; another pair of another name is added beside it.
    assert infer("--ir", a[0], "--vis", a[1], "--output_path", out, weights=tiny_weights) == 0
    c = [write_gray(tmp_path / "c" / f"{m}2.png", 9, 9, i) for i, m in enumerate(("IR", "VIS"))]
    assert infer("--ir", c[0], "--vis", c[1], "--output_path", out, weights=tiny_weights) == 0
    assert sorted(json.loads((out / "pair" / "fusion_settings.json").read_text())["inputs"]) == ["1", "2"]


def test_overwrite_with_skip_bad_leaves_no_stale_image(tmp_path, tiny_weights, capsys, flat_set):
    out = tmp_path / "res"
    assert infer("--test_path", flat_set, "--output_path", out, weights=tiny_weights) == 0
    (flat_set / "IR2.png").write_bytes(b"broken now")
    other = tmp_path / "other.pth"
    torch.manual_seed(9)
    torch.save(DenseFuse().state_dict(), other)
    rc = infer("--test_path", flat_set, "--output_path", out, "--overwrite", "--skip_bad", weights=other)
    assert rc == 1
    folder = out / "Flat_fusion"
    assert sorted(p.name for p in folder.iterdir()) == ["1.png", "3.png", "fusion_settings.json"]
    assert sorted(json.loads((folder / "fusion_settings.json").read_text())["inputs"]) == ["1", "3"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_input_is_never_written_over_through_a_link(tmp_path, tiny_weights, capsys, overwrite):
    """The output folder resolves to the input folder (a symlink): refused with or without
    --overwrite, and the message calls the file an input, not a fused image."""
    d = tmp_path / "S"
    write_gray(d / "ir" / "p.png", 8, 8, 0)
    write_gray(d / "vi" / "p.png", 8, 8, 1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "S_fusion").symlink_to(d / "vi")
    before = (d / "vi" / "p.png").read_bytes()
    err = run_bad(capsys, "--test_path", d, "--output_path", tmp_path / "out",
                  *(["--overwrite"] if overwrite else []), weights=tiny_weights)
    assert "input" in err and "fused image" not in err
    assert (d / "vi" / "p.png").read_bytes() == before


def test_ssim_weight_with_a_single_network_file_is_an_error(tmp_path, tiny_weights, capsys, flat_set):
    err = run_bad(capsys, "--test_path", flat_set, "--output_path", tmp_path / "r", "--ssim_weight", "10",
                  weights=tiny_weights)
    assert "--ssim_weight 10 was given with --weights" in err and not (tmp_path / "r").exists()


def test_ssim_weight_alone_picks_the_shipped_file_of_that_lambda(tmp_path, flat_set):
    from configs import SHIPPED_BY_LAMBDA
    out = tmp_path / "r"
    assert run_infer.main(["--test_path", str(flat_set), "--output_path", str(out), "--ssim_weight", "10",
                           "--device", "cpu"]) == 0
    rec = json.loads((out / "Flat_fusion" / "fusion_settings.json").read_text())
    assert rec["weights"] == SHIPPED_BY_LAMBDA[10][0].name and rec["weights_sha256"] == SHIPPED_BY_LAMBDA[10][1]


def test_non_default_settings_get_their_own_folder(tmp_path, tiny_weights, flat_set):
    """The README's examples, run in its order, do not collide."""
    out = tmp_path / "res"
    assert infer("--test_path", flat_set, "--output_path", out, weights=tiny_weights) == 0
    assert infer("--test_path", flat_set, "--output_path", out, "--strategy", "l1_norm", "--output_mode", "clip",
                 weights=tiny_weights) == 0
    assert sorted(p.name for p in out.iterdir()) == ["Flat_fusion", "Flat_fusion_l1_norm_clip"]


@pytest.mark.parametrize("radius", [-1, 1001])
def test_absurd_l1_radius_is_refused(tmp_path, tiny_weights, capsys, flat_set, radius):
    err = run_bad(capsys, "--test_path", flat_set, "--output_path", tmp_path / "r", "--strategy", "l1_norm",
                  "--l1_radius", radius, weights=tiny_weights)
    assert f"--l1_radius must be between 0 and 1000, got {radius}" in err and not (tmp_path / "r").exists()


def test_inputs_fuses_two_or_more_registered_images(tmp_path, tiny_weights):
    """--inputs A B writes what --ir A --vis B writes, byte for byte; --inputs A B C fuses three
    (the output is fuse_images of the three, named after them, its record lists all three)."""
    from utils.checkpoint import load_model
    files = [write_gray(tmp_path / f"{n}.png", 21, 26, k) for k, n in enumerate("abc")]
    common = ["--weights", str(tiny_weights), "--device", "cpu", "--strategy", "l1_norm", "--output_mode", "clip"]
    assert run_infer.main(["--ir", str(files[0]), "--vis", str(files[1]), "--output_path", str(tmp_path / "o1"),
                           *common]) == 0
    assert run_infer.main(["--inputs", *map(str, files[:2]), "--output_path", str(tmp_path / "o2"), *common]) == 0
    folder = "pair_l1_norm_clip"  # single pairs' folders are named by their settings, as sets' are
    assert (tmp_path / "o1" / folder / "a_b.png").read_bytes() == (tmp_path / "o2" / folder / "a_b.png").read_bytes()
    assert run_infer.main(["--inputs", *map(str, files), "--output_path", str(tmp_path / "o3"), *common]) == 0
    got = np.asarray(Image.open(tmp_path / "o3/pair_l1_norm_clip/a_b_c.png"))
    model = load_model(tiny_weights)[0]
    want = fuse_images(model, *(load_image(f) for f in files), settings=FuseSettings("l1_norm", output_mode="clip"))
    assert np.array_equal(got, want)
    record = json.loads((tmp_path / "o3/pair_l1_norm_clip/fusion_settings.json").read_text())
    assert record["inputs"]["a_b_c"] == [str(f.resolve()) for f in files]


@pytest.mark.parametrize("args,message", [
    (["--inputs", "{a}"], "--inputs needs at least 2 images"),
    (["--inputs", "{a}", "{b}", "--ir", "{a}", "--vis", "{b}"], "not several"),
    (["--inputs", "{a}", "{b}", "{c}", "--eval"], "defined for two sources"),
    (["--inputs", "{a}", "{b}", "{odd}"], "sizes differ"),
])
def test_inputs_errors_name_the_problem_and_write_nothing(tmp_path, tiny_weights, capsys, args, message):
    names = {n: write_gray(tmp_path / f"{n}.png", 21 if n != "odd" else 22, 26, k) for k, n in enumerate("abc")}
    names["odd"] = write_gray(tmp_path / "odd.png", 22, 26, 9)
    argv = [a.format(**names) for a in args]
    assert run_infer.main([*argv, "--weights", str(tiny_weights), "--device", "cpu",
                           "--output_path", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and not (tmp_path / "out").exists()
    if message == "sizes differ":
        assert all(str(names[n]) in err for n in ("a", "b", "odd"))


def test_multi_focus_colour_pair_gives_a_colour_result(tmp_path, capsys):
    """data_test/Lytro: both sources colour, so the output is colour (chroma fused, not dropped)."""
    from tests.conftest import ROOT
    for part in ("A", "B"):
        shutil.copy(ROOT / "data_test/Lytro" / f"lytro-3-{part}.jpg", tmp_path / f"lytro-3-{part}.jpg")
    assert run_infer.main(["--test_path", str(tmp_path), "--output_path", str(tmp_path / "out"), "--device", "cpu",
                           "--strategy", "l1_norm", "--output_mode", "clip"]) == 0
    assert "<name>-A + <name>-B (multi-focus)" in capsys.readouterr().out
    fused = Image.open(tmp_path / "out" / f"{tmp_path.name}_fusion_l1_norm_clip" / "lytro-3.png")
    assert fused.mode == "RGB" and fused.size == (520, 520)
    rgb = np.asarray(fused).astype(int)
    assert np.abs(rgb[..., 0] - rgb[..., 2]).mean() > 5  # really coloured, not gray in an RGB file


def test_sources_folders_fuse_sets_matched_by_name(tmp_path, tiny_weights, capsys):
    """--sources A/ B/ C/: one set per file name, in the folders' order, each fused like --inputs."""
    dirs = [tmp_path / d for d in ("under", "over", "mid")]
    for k, d in enumerate(dirs):
        for n in ("s1", "s2"):
            write_gray(d / f"{n}.png", 18, 22, 10 * k + int(n[1]))
    common = ["--weights", str(tiny_weights), "--device", "cpu"]
    assert run_infer.main(["--sources", *map(str, dirs), "--output_path", str(tmp_path / "o"), *common]) == 0
    assert "2 sets of 3 sources" in capsys.readouterr().out
    assert run_infer.main(["--inputs", *(str(d / "s2.png") for d in dirs), "--output_path", str(tmp_path / "p"),
                           *common]) == 0
    assert (tmp_path / "o/sources_fusion/s2.png").read_bytes() == (tmp_path / "p/pair/s2.png").read_bytes()
    (dirs[2] / "s1.png").unlink()
    assert run_infer.main(["--sources", *map(str, dirs), "--output_path", str(tmp_path / "q"), *common]) == 2
    assert f"{dirs[2] / 's1'}.*: missing" in capsys.readouterr().err and not (tmp_path / "q").exists()


def test_scene_folders_fuse_each_scene_s_images(tmp_path, tiny_weights, capsys):
    """--scenes DIR: one set per sub-folder, its images in file-name order (2 or more each)."""
    root = tmp_path / "mef"
    for scene, n in (("s1", 3), ("s2", 2)):
        for k in range(n):
            write_gray(root / scene / f"ev{k}.png", 17, 19, 10 * k + len(scene))
    common = ["--weights", str(tiny_weights), "--device", "cpu"]
    assert run_infer.main(["--scenes", str(root), "--output_path", str(tmp_path / "o"), *common]) == 0
    assert "2 scenes of 2/3 images" in capsys.readouterr().out
    assert run_infer.main(["--inputs", *(str(root / "s1" / f"ev{k}.png") for k in range(3)),
                           "--output_path", str(tmp_path / "p"), *common]) == 0
    assert (tmp_path / "o/mef_fusion/s1.png").read_bytes() == (tmp_path / "p/pair/ev0_ev1_ev2.png").read_bytes()
    (root / "s2" / "ev1.png").unlink()
    assert run_infer.main(["--scenes", str(root), "--output_path", str(tmp_path / "q"), *common]) == 2
    assert "s2: 1 image(s); a scene needs at least 2" in capsys.readouterr().err


def test_fuse_pairs_reads_every_source_of_a_set(tmp_path, tiny_weights):
    """Without pre-decoded images, fuse_pairs reads all of a set's sources, not only the first two."""
    from utils.checkpoint import load_model
    from utils.fusion import fuse_pairs
    from utils.pairs import Pair
    files = [write_gray(tmp_path / f"{n}.png", 15, 17, k) for k, n in enumerate("abc")]
    model = load_model(tiny_weights)[0]
    settings = FuseSettings("mean", output_mode="clip")
    fuse_pairs(model, [Pair("abc", *files[:2], (files[2],))], tmp_path / "out", settings)
    want = fuse_images(model, *(load_image(f) for f in files), settings=settings)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out/abc.png")), want)


def test_messages_count_what_was_fused(tmp_path, tiny_weights, capsys):
    """A set of three images is "1 set", scenes are scenes, pairs are pairs (each said "pair")."""
    files = [write_gray(tmp_path / f"{n}.png", 16, 18, k) for k, n in enumerate("abc")]
    common = ["--weights", str(tiny_weights), "--device", "cpu"]
    assert run_infer.main(["--inputs", *map(str, files), "--output_path", str(tmp_path / "o"), *common]) == 0
    assert "pair: 1 set fused" in capsys.readouterr().out
    for scene in ("s1", "s2"):
        for k in range(2):
            write_gray(tmp_path / "mef" / scene / f"ev{k}.png", 16, 18, k)
    assert run_infer.main(["--scenes", str(tmp_path / "mef"), "--output_path", str(tmp_path / "o"), *common]) == 0
    assert "mef: 2 scenes fused" in capsys.readouterr().out
    assert run_infer.main(["--inputs", *map(str, files[:2]), "--output_path", str(tmp_path / "p"), *common]) == 0
    assert "pair: 1 pair fused" in capsys.readouterr().out
