"""What issue #5 promises of the shipped weights, measured on the real test sets.

The fast test reconstructs crops of three TNO pairs; the slow one reruns
run_scripts/compare_weights.py against the official lambda = 1e2 checkpoint in ../shared and
checks the README's claims (skipped without the official files).
"""
import json
import sys

import numpy as np
import pytest

from configs import SHIPPED_SHA256, SHIPPED_WEIGHTS
from tests.conftest import ROOT, SHARED
from utils.checkpoint import load_model
from utils.images import load_image

sys.path.insert(0, str(ROOT / "run_scripts"))
import compare_weights  # noqa: E402

TF_ZIP = SHARED / "weights" / "official" / "densefuse_gray_tf_ckpt.zip"
TNO = ROOT / "data_test" / "Tno"


def test_shipped_weights_reconstruct_tno_crops_above_45db_on_average():
    model, _ = load_model(SHIPPED_WEIGHTS, SHIPPED_SHA256)
    vals = [compare_weights.reconstruction_psnr(model, load_image(TNO / f"{m}{k}.png", gray=True)[:192, :192])
            for k in (1, 7, 15) for m in ("IR", "VIS")]
    # The bar is the mean; VIS15 (sensor noise) is the hardest image (55 dB with the
    # shipped weights, 44 dB with the previous ones).
    assert np.mean(vals) >= 45.0 and min(vals) >= 40.0, vals


@pytest.mark.slow
@pytest.mark.skipif(not TF_ZIP.is_file(), reason="../shared/weights/official not present")
def test_shipped_weights_match_official_within_1_percent(tmp_path):
    assert compare_weights.main(["--official", str(TF_ZIP), "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    for name, vals in report["psnr"].items():
        assert np.mean(vals["ours"]) >= 45.0, name
    assert len(report["fusion"]) == 6  # 2 sets x (add/minmax, mean/clip, l1_norm/clip)
    diffs = {f"{key} {metric}": d for key, entry in report["fusion"].items()
             for metric, d in entry["diff_pct"].items()}
    assert len(diffs) == 72
    # The bar is 2 %; the README claims every value is within 1 % (largest 0.69 %).
    assert all(abs(d) <= 1.0 for d in diffs.values()), {k: d for k, d in diffs.items() if abs(d) > 1.0}
