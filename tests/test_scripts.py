import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT


def test_loss_plot_from_a_training_run(tmp_path):
    sys.path.insert(0, str(ROOT / "run_scripts"))
    import loss
    import run_train
    from tests.conftest import write_gray
    for i in range(3):
        write_gray(tmp_path / "im" / f"{i}.png", 20, 20, i)
    assert run_train.main(["--image_path", str(tmp_path / "im"), "--output_dir", str(tmp_path),
                           "--run_name", "r", "--image_size", "16", "--num_epochs", "1",
                           "--log_every", "1", "--device", "cpu", "--val_path", ""]) == 0
    assert loss.main([str(tmp_path / "r")]) == 0
    png = tmp_path / "r" / "loss.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    np.testing.assert_allclose(loss.smooth(np.array([1., 2, 3, 4, 5]), 2), [1, 1.5, 2.5, 3.5, 4.5])


def test_loss_plot_without_logs_is_an_error(tmp_path):
    sys.path.insert(0, str(ROOT / "run_scripts"))
    import loss
    assert loss.main([str(tmp_path)]) == 2


def test_export_weights_names_file_by_hash(tmp_path):
    import torch
    sys.path.insert(0, str(ROOT / "run_scripts"))
    import export_weights
    from models.densefuse import DenseFuse
    from utils.checkpoint import load_model, save_checkpoint, sha256_file
    save_checkpoint(tmp_path / "c.pt", DenseFuse(), {}, 1, 1, torch.optim.Adam(DenseFuse().parameters()))
    path, digest = export_weights.export(tmp_path / "c.pt", tmp_path, "w")
    assert path.name == f"w_{digest[:8]}.pth" and sha256_file(path) == digest
    assert path.stat().st_size < 400_000
    load_model(path, digest)


@pytest.mark.parametrize("script", ["run_train.py", "run_infer.py"])
def test_help_runs_as_a_script(script):
    out = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "default" in out
