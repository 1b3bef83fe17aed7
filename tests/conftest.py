"""Shared fixtures: tiny generated images and weights, so the suite runs on CPU in minutes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.densefuse import DenseFuse

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"



def write_gray(path: Path, h: int, w: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 128 + 60 * np.sin(xx / 3.0 + seed) * np.cos(yy / 4.0) + rng.normal(0, 10, (h, w))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
    return path


def write_rgb(path: Path, h: int, w: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    img = rng.integers(80, 176, (h, w, 3), dtype=np.uint8)  # mild colours: few out of gamut
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A randomly initialised (seed 0) DenseFuse saved as a bare state_dict."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    torch.save(DenseFuse().state_dict(), path)
    return path


@pytest.fixture(scope="session")
def add_graph(tmp_path_factory) -> Path:
    """The shipped lambda = 100 network exported as a 2-source ``add`` fusion graph (exporting
    takes seconds: the ONNX tests share this one)."""
    pytest.importorskip("onnxscript")
    from configs import SHIPPED_WEIGHTS
    from utils.checkpoint import load_model
    from utils.onnx_graph import export_onnx
    path = tmp_path_factory.mktemp("onnx") / "add.onnx"
    export_onnx(load_model(SHIPPED_WEIGHTS)[0], path, strategy="add", radius=1,
                provenance={"weights": SHIPPED_WEIGHTS.name})
    return path


@pytest.fixture
def flat_set(tmp_path) -> Path:
    """IR<k>/VIS<k> layout, 3 pairs of odd sizes."""
    d = tmp_path / "Flat"
    for k, (h, w) in enumerate([(21, 17), (16, 16), (9, 30)], start=1):
        write_gray(d / f"IR{k}.png", h, w, k)
        write_gray(d / f"VIS{k}.png", h, w, 100 + k)
    return d
