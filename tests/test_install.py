"""The ecosystem's doors: torch.hub (source='local') and pip install (-e) . of pyproject.toml."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import hubconf
from configs import SHIPPED_BY_LAMBDA
from tests.conftest import ROOT
from utils.checkpoint import load_model
from utils.fusion import FuseSettings, fuse_gray, fuse_sources, postprocess, prepare_model


def test_hub_load_returns_the_shipped_network_in_eval_mode():
    model = torch.hub.load(str(ROOT), "densefuse", source="local", lam=10, trust_repo=True)
    assert not model.training
    ref = load_model(SHIPPED_BY_LAMBDA[10][0])[0].state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    with torch.no_grad():  # hub.load passes the tensors to the entry point and returns its result
        out = torch.hub.load(str(ROOT), "fuse", torch.rand(1, 1, 16, 20), torch.rand(1, 1, 16, 20), source="local",
                             trust_repo=True, network=model, output_mode="clip")
    assert out.shape == (1, 1, 16, 20) and out.min() >= 0 and out.max() <= 1


def test_hub_arguments_are_checked():
    with pytest.raises(ValueError, match="choose from"):
        hubconf.densefuse(lam=5)
    with pytest.raises(ValueError, match=r"gray \(1\) or RGB \(3\)"):
        hubconf.densefuse(channels=2)
    with pytest.raises(ValueError, match="no shipped 3-channel weights for lam=10"):
        hubconf.densefuse(lam=10, channels=3)
    assert hubconf.densefuse(channels=3).model_args()["channels"] == 3  # the shipped RGB network
    untrained = hubconf.densefuse(channels=3, pretrained=False)
    assert untrained(torch.rand(1, 3, 12, 12)).shape == (1, 3, 12, 12)
    with pytest.raises(ValueError, match="at least 2 images"):
        hubconf.fuse(torch.rand(9, 9))
    with pytest.raises(ValueError, match="shapes differ"):
        hubconf.fuse(torch.rand(9, 9), torch.rand(9, 8))


@pytest.mark.parametrize("strategy,mode", [("add", "minmax"), ("l1_norm", "clip"), ("max", None)])
def test_hub_fuse_equals_the_pipeline(strategy, mode):
    """hub ``fuse`` on tensors gives the pipeline's result: (H,W) in and out, batched (B,1,H,W) too."""
    rng = np.random.default_rng(2)
    a, b = rng.random((37, 45), dtype=np.float32), rng.random((37, 45), dtype=np.float32)
    model = hubconf.densefuse()
    ref = fuse_gray(prepare_model(load_model(SHIPPED_BY_LAMBDA[100][0])[0]), a, b, FuseSettings(strategy, tile=-1))
    if mode:
        ref = postprocess(ref, mode)
    with torch.no_grad():
        got = hubconf.fuse(torch.from_numpy(a), torch.from_numpy(b), network=model, strategy=strategy, output_mode=mode)
        batch = hubconf.fuse(*(torch.from_numpy(np.stack([x, y]))[:, None] for x, y in ((a, b), (b, a))),
                             network=model, strategy=strategy, output_mode=mode)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-5)
    np.testing.assert_allclose(batch[0, 0].numpy(), ref, atol=1e-5)
    with torch.no_grad():
        swapped = hubconf.fuse(torch.from_numpy(b), torch.from_numpy(a), network=model, strategy=strategy,
                               output_mode=mode)
    np.testing.assert_allclose(batch[1, 0].numpy(), swapped.numpy(), atol=1e-5)


def test_hub_fuse_three_sources():
    rng = np.random.default_rng(3)
    images = [rng.random((20, 26), dtype=np.float32) for _ in range(3)]
    model = hubconf.densefuse()
    ref = fuse_sources(prepare_model(model), images, FuseSettings("mean", tile=-1))
    with torch.no_grad():
        got = hubconf.fuse(*map(torch.from_numpy, images), network=model, strategy="mean")
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-5)


def copy_project(dest):
    """The checkout's source files (not its data, runs or caches) at ``dest``."""
    skip = shutil.ignore_patterns(".git", "__pycache__", "runs", "data_result", "data_test", "data_train_sample",
                                  "build", "*.egg-info", ".venv", "venv", ".*cache*", ".hypothesis", "docs")
    shutil.copytree(ROOT, dest, ignore=skip)
    return dest


def new_venv_seeing_these_packages(venv) -> str:
    """A new virtual environment whose interpreter also sees the packages of the one running the
    tests (torch, setuptools: nothing is downloaded), through a ``.pth`` file listing this
    interpreter's site-packages folders. ``--system-site-packages`` would not do: from inside a
    virtual environment it exposes the base interpreter's packages, not this environment's."""
    import site
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    ours = [p for p in dict.fromkeys([*site.getsitepackages(), *sys.path])
            if p.rstrip("/").endswith(("site-packages", "dist-packages"))]
    (Path(purelib) / "running_tests_packages.pth").write_text("\n".join(ours) + "\n")
    return python


#: Run in the installed environment from a folder outside the project: every module imports,
#: the shipped weights load with their hash checked, and the three commands start.
CHECK = """
import sys, run_infer, run_train, run_eval, models.densefuse, utils.metrics, run_scripts.benchmark, hubconf
import utils.training.trainer, utils.jobs, utils.inputs, utils.weights, utils.registration
print(run_infer.__file__)
hubconf.densefuse(lam=1000)
"""


@pytest.mark.parametrize("editable", [pytest.param(e, marks=pytest.mark.slow) for e in (True, False)],  # 6 s each
                         ids=["pip install -e .", "pip install ."])
def test_pip_install(tmp_path, editable):
    project = copy_project(tmp_path / "project")
    venv = tmp_path / "venv"
    python = new_venv_seeing_these_packages(venv)
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
               "--no-build-isolation", *(["-e"] if editable else []), str(project)]
    subprocess.run(install, check=True, capture_output=True)
    out = subprocess.run([str(python), "-c", CHECK], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    where = out.stdout.split()[0]
    assert where.startswith(str(project if editable else venv)), where
    for command in ("densefuse-infer", "densefuse-train", "densefuse-eval"):
        result = subprocess.run([str(venv / "bin" / command), "--help"], cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0 and "usage:" in result.stdout, result.stderr
