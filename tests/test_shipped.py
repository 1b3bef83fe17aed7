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
