import json

import numpy as np
import pytest
from PIL import Image

import run_eval
import run_infer
from tests.conftest import write_gray, write_rgb
from utils import metrics as M


@pytest.fixture
def fused(tmp_path, flat_set, tiny_weights):
    out = tmp_path / "res"
    assert run_infer.main(["--test_path", str(flat_set), "--output_path", str(out), "--weights",
                           str(tiny_weights), "--device", "cpu"]) == 0
    return out / "Flat_fusion"


def test_table_csv_json(fused, flat_set, tmp_path, capsys):
    rc = run_eval.main(["--fused", str(fused), "--test_path", str(flat_set), "--metrics", "EN", "SD",
                        "Qabf", "--csv", str(tmp_path / "s.csv"), "--json", str(tmp_path / "s.json")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "mean" in out and "Qabf" in out and "conventions" in out
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "pair,EN,SD,Qabf" and len(lines) == 5 and lines[-1].startswith("mean,")
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["profile"] == "standard" and len(data["rows"]) == 4
    # The table's numbers are the library's numbers.
    f = np.asarray(Image.open(fused / "2.png"), dtype=np.float64)
    assert data["rows"][1]["EN"] == pytest.approx(M.entropy(f))


def test_ir_vis_folders_and_colour_on_y(tmp_path, tiny_weights, capsys):
    write_gray(tmp_path / "S" / "ir" / "a.png", 20, 24, 0)
    write_rgb(tmp_path / "S" / "vi" / "a.png", 20, 24, 1)
    assert run_infer.main(["--test_path", str(tmp_path / "S"), "--output_path", str(tmp_path / "r"),
                           "--weights", str(tiny_weights), "--device", "cpu"]) == 0
    rc = run_eval.main(["--fused", str(tmp_path / "r" / "S_fusion"), "--ir", str(tmp_path / "S" / "ir"),
                        "--vis", str(tmp_path / "S" / "vi"), "--metrics", "EN", "CC"])
    assert rc == 0 and "luma Y" in capsys.readouterr().out


def test_missing_fused_image_names_the_pair(fused, flat_set, capsys):
    (fused / "3.png").unlink()
    assert run_eval.main(["--fused", str(fused), "--test_path", str(flat_set)]) == 2
    err = capsys.readouterr().err
    assert "'3'" in err and "no fused image" in err


def test_wrong_size_names_the_pair(fused, flat_set, capsys):
    Image.new("L", (5, 5)).save(fused / "2.png")
    assert run_eval.main(["--fused", str(fused), "--test_path", str(flat_set), "--metrics", "EN"]) == 2
    err = capsys.readouterr().err
    assert "'2'" in err and "5x5" in err


def test_unknown_metric(fused, flat_set, capsys):
    assert run_eval.main(["--fused", str(fused), "--test_path", str(flat_set), "--metrics", "XYZ"]) == 2
    assert "unknown metric" in capsys.readouterr().err


def test_densefuse_profile_runs(tmp_path, tiny_weights, capsys):
    d = tmp_path / "T"
    write_gray(d / "IR1.png", 48, 52, 0)
    write_gray(d / "VIS1.png", 48, 52, 1)
    assert run_infer.main(["--test_path", str(d), "--output_path", str(tmp_path / "r"), "--weights",
                           str(tiny_weights), "--device", "cpu"]) == 0
    assert run_eval.main(["--fused", str(tmp_path / "r" / "T_fusion"), "--test_path", str(d),
                          "--profile", "densefuse", "--quiet"]) == 0
    out = capsys.readouterr().out
    for k in M.DENSEFUSE:
        assert k in out


def test_infer_eval_prints_mean_row(tmp_path, tiny_weights, capsys):
    d = tmp_path / "T"
    write_gray(d / "IR1.png", 170, 170, 0)
    write_gray(d / "VIS1.png", 170, 170, 1)
    assert run_infer.main(["--test_path", str(d), "--output_path", str(tmp_path / "r"), "--weights",
                           str(tiny_weights), "--device", "cpu", "--eval"]) == 0
    out = capsys.readouterr().out
    assert "standard-profile metrics" in out and "MS-SSIM" in out and "mean" in out


@pytest.mark.parametrize("flag", ["--csv", "--json"])
def test_output_that_is_a_folder_fails_before_scoring(fused, flat_set, tmp_path, capsys, flag):
    rc = run_eval.main(["--fused", str(fused), "--test_path", str(flat_set), flag, str(tmp_path)])
    captured = capsys.readouterr()
    assert rc == 2 and f"error: {tmp_path}: is a folder; give a file name for --csv/--json" in captured.err
    assert "mean" not in captured.out  # nothing was scored
