"""What issue #5 promises of the shipped weights, measured on the real test sets.

The fast test reconstructs crops of three TNO pairs with every shipped file; the slow one reruns
run_scripts/compare_weights.py for each against the official checkpoint of the same lambda in
../shared and checks the README's claims (skipped without the official files).
"""
import json

import numpy as np
import pytest

from configs import SHIPPED_BY_LAMBDA
from run_scripts import compare_weights
from tests.conftest import ROOT, SHARED
from utils.checkpoint import load_model
from utils.images import load_image

TF_ZIP = SHARED / "weights" / "official" / "densefuse_gray_tf_ckpt.zip"
TNO = ROOT / "data_test" / "Tno"


@pytest.mark.parametrize("lam", sorted(SHIPPED_BY_LAMBDA))
def test_shipped_weights_reconstruct_tno_crops_above_45db_on_average(lam):
    model, _ = load_model(SHIPPED_BY_LAMBDA[lam][0])
    vals = [compare_weights.reconstruction_psnr(model, load_image(TNO / f"{m}{k}.png", gray=True)[:192, :192])
            for k in (1, 7, 15) for m in ("IR", "VIS")]
    # The bar is the mean; VIS15 (sensor noise) is the hardest image (55 dB with the
    # lambda = 100 weights, 44 dB with the previous ones).
    assert np.mean(vals) >= 45.0 and min(vals) >= 40.0, vals


#: Largest |difference| in % that the README claims for each shipped lambda (issue bar: 2 %).
CLAIMED_MAX_DIFF = {1: 2.0, 10: 2.0, 100: 1.0, 1000: 2.0}


@pytest.mark.slow
@pytest.mark.skipif(not TF_ZIP.is_file(), reason="../shared/weights/official not present")
@pytest.mark.parametrize("lam", sorted(SHIPPED_BY_LAMBDA))
def test_shipped_weights_match_official(tmp_path, lam):
    path, _ = SHIPPED_BY_LAMBDA[lam]
    assert compare_weights.main(["--ours", str(path), "--official", str(TF_ZIP), "--ssim_weight", str(lam),
                                 "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    for name, vals in report["psnr"].items():
        assert np.mean(vals["ours"]) >= 45.0, name
    assert len(report["fusion"]) == 6  # 2 sets x (add/minmax, mean/clip, l1_norm/clip)
    diffs = {f"{key} {metric}": d for key, entry in report["fusion"].items()
             for metric, d in entry["diff_pct"].items()}
    assert len(diffs) == 72
    bound = CLAIMED_MAX_DIFF[lam]
    assert all(abs(d) <= bound for d in diffs.values()), {k: d for k, d in diffs.items() if abs(d) > bound}


def test_shipped_rgb_weights_reconstruct_colour_and_are_picked_by_rgb(tmp_path, capsys):
    """The shipped RGB network: hash-checked, 3 channels, reconstructs RoadScene colour crops and
    TNO crops (replicated) well; run_infer.py --rgb picks it without --weights."""
    import run_infer
    from configs import SHIPPED_RGB_BY_LAMBDA
    path, digest = SHIPPED_RGB_BY_LAMBDA[100]
    assert path.name.startswith(f"densefuse_rgb_l100_{digest[:8]}")
    model, info = load_model(path)
    assert info["sha256"] == digest and model.model_args()["channels"] == 3
    road = ROOT / "data_test" / "Road" / "vi"
    images = [load_image(road / f"{n}.jpg")[:160, :160] for n in ("FLIR_00211", "FLIR_05857")]
    images += [np.repeat(load_image(TNO / f"VIS{k}.png")[:160, :160, None], 3, axis=2) for k in (1, 7)]
    vals = [compare_weights.reconstruction_psnr(model, im) for im in images]
    assert np.mean(vals) >= 45.0, vals
    pair = [str(TNO / "IR1.png"), str(TNO / "VIS1.png")]
    assert run_infer.main(["--rgb", "--inputs", str(TNO / "IR1.png"), str(TNO / "VIS1.png"), "--output_path",
                           str(tmp_path), "--device", "cpu"]) == 0
    assert f"{path} (shipped weights)" in capsys.readouterr().out
    from PIL import Image
    assert Image.open(tmp_path / "pair" / "1.png").mode == "RGB"
    for argv, message in ((["--rgb", "--ssim_weight", "10"], "no shipped RGB network for lambda = 10"),
                          (["--rgb", "--weights", str(path)], "leave out --rgb")):
        assert run_infer.main([*argv, "--inputs", *pair, "--output_path", str(tmp_path / "x")]) == 2
        assert message in capsys.readouterr().err


def test_the_record_names_the_shipped_lambda_and_the_software(tmp_path):
    """The default weights are lambda = 100: the record says so (it said null), and which
    versions wrote it (informative: not a setting that makes a folder "other")."""
    import json

    import run_infer
    from configs import VERSION
    from tests.conftest import write_gray
    a, b = write_gray(tmp_path / "a.png", 20, 24, 1), write_gray(tmp_path / "b.png", 20, 24, 2)
    assert run_infer.main(["--ir", str(a), "--vis", str(b), "--output_path", str(tmp_path / "o")]) == 0
    record = json.loads((tmp_path / "o" / "pair" / "fusion_settings.json").read_text())
    assert record["ssim_weight"] == 100 and record["software"]["densefuse"] == VERSION
    record["software"] = {"densefuse": "0.9", "torch": "2.0"}  # an older version's folder is reused
    (tmp_path / "o" / "pair" / "fusion_settings.json").write_text(json.dumps(record))
    assert run_infer.main(["--ir", str(a), "--vis", str(b), "--output_path", str(tmp_path / "o")]) == 0
