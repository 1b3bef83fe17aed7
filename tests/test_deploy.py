"""The deploy path: ``run_infer.py --backend onnxruntime`` with numpy, Pillow and onnxruntime
only (requirements-deploy.txt), tiled exactly, as the torch path."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT
from utils.fusion import FuseSettings, fuse_images
from utils.images import load_image

pytest.importorskip("onnxruntime")

#: Packages a fresh process must not be able to import: what requirements-deploy.txt leaves out.
ABSENT = ("torch", "onnx", "onnxscript", "scipy", "tqdm", "cv2", "matplotlib", "pywt", "pytorch_msssim")

#: Run in a fresh process in which importing any of ABSENT fails as if it were not installed
#: (a finder ahead of every other), then report which third-party top-level modules were loaded.
CHILD = """
import importlib.abc, json, sys
ABSENT = {absent!r}
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
sys.meta_path.insert(0, NotInstalled())
before = set(sys.modules)
{body}
third = sorted({{m.split(".")[0] for m in set(sys.modules) - before}} - set(sys.stdlib_module_names))
files = sorted(getattr(m, "__file__", None) or "" for m in list(sys.modules.values()))
print(json.dumps({{"result": result, "loaded": third, "files": files}}))
"""


def run_child(body: str) -> dict:
    code = CHILD.format(absent=ABSENT, body=body)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def deploy_stage_copies() -> set[str]:
    """What the Dockerfile's deploy target copies from the checkout (files and folders)."""
    stage = (ROOT / "Dockerfile").read_text().split("AS deploy", 1)[1].split("\nFROM ", 1)[0]
    return {src.rstrip("/") for line in stage.splitlines() if line.startswith("COPY ")
            for src in line.split()[1:-1]}


def test_the_deploy_requirements_are_numpy_pillow_and_onnxruntime():
    lines = (ROOT / "requirements-deploy.txt").read_text().splitlines()
    names = {re.split(r"[<>=!~ ]", line, maxsplit=1)[0].lower() for line in lines if line and not line.startswith("#")}
    assert names == {"numpy", "pillow", "onnxruntime"}
    assert "requirements-deploy.txt" in deploy_stage_copies()


def test_the_onnxruntime_backend_runs_without_torch(add_graph, tmp_path):
    """A fusion on the onnxruntime backend, tiled and in colour, in a process where torch, onnx,
    SciPy, tqdm and OpenCV cannot be imported: it succeeds, every third-party module it loads is
    one that importing numpy, Pillow and onnxruntime loads (requirements-deploy.txt is complete),
    and the image equals the torch backend's within one level."""
    from PIL import Image

    from configs import SHIPPED_WEIGHTS
    from utils.checkpoint import load_model
    from utils.fusion import prepare_model
    ir, vis = ROOT / "data_test/Road/ir/FLIR_00211.jpg", ROOT / "data_test/Road/vi/FLIR_00211.jpg"
    out = tmp_path / "out"
    argv = ["--backend", "onnxruntime", "--weights", str(add_graph), "--ir", str(ir), "--vis", str(vis),
            "--output_path", str(out), "--tile", "96"]
    base = run_child("import numpy, PIL.Image, PIL.PngImagePlugin, onnxruntime\nresult = None")["loaded"]
    child = run_child(f"import run_infer\nresult = run_infer.main({argv!r})")
    assert child["result"] == 0
    assert set(child["loaded"]) - set(base) == {"run_infer", "configs", "utils"}, child["loaded"]
    ours = [Path(f).relative_to(ROOT) for f in child["files"] if f.startswith(str(ROOT))]
    copied = deploy_stage_copies()
    assert all(f.parts[0] in copied or str(f) in copied for f in ours), (ours, copied)
    fused = sorted(out.rglob("*.png"))
    assert [f.parent.name for f in fused] == ["pair_onnxruntime"]
    got = np.asarray(Image.open(fused[0]))
    ref = fuse_images(prepare_model(load_model(SHIPPED_WEIGHTS)[0]), load_image(ir, gray=True), load_image(vis),
                      settings=FuseSettings("add", tile=-1))
    assert got.shape == ref.shape == (*load_image(vis).shape[:2], 3)
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1


def test_tiling_on_onnxruntime_is_exact_and_needs_its_halo(add_graph):
    """The onnxruntime network in 40-pixel tiles gives the untiled output (bit for bit on this
    machine; 5e-6 allows kernels that round differently by shape), and the same tiles with a halo
    one pixel short of the receptive field do not (4e-5 here: the outermost ring weighs little,
    but it counts)."""
    from utils.fusion import fuse_sources
    from utils.onnx_backend import OnnxNetwork
    ir = load_image(ROOT / "data_test/Tno/IR1.png")[:101, :133]
    vis = load_image(ROOT / "data_test/Tno/VIS1.png")[:101, :133]
    net = OnnxNetwork(add_graph)
    whole = fuse_sources(net, [ir, vis], FuseSettings("add", tile=-1))
    tiled = fuse_sources(net, [ir, vis], FuseSettings("add", tile=40))
    assert np.abs(tiled - whole).max() <= 5e-6
    net.halo -= 1
    short = fuse_sources(net, [ir, vis], FuseSettings("add", tile=40))
    assert np.abs(short - whole).max() > 2e-5


def test_onnxruntime_tiles_by_default(add_graph):
    """--tile 0 on this backend means its own tile size (memory bounded, docs/deploy.md)."""
    from utils.fusion import auto_tile
    from utils.onnx_backend import OnnxNetwork
    assert auto_tile("cpu", 3840 * 2160, OnnxNetwork(add_graph)) == OnnxNetwork.auto_tile == 256
    assert auto_tile("cpu", 3840 * 2160) == 192


@pytest.mark.slow  # 25 s: a 4K pair in a fresh process
def test_a_4k_pair_fuses_in_under_a_gibibyte(add_graph, tmp_path):
    """Peak memory (the child's maximum resident set) of run_infer.py --backend onnxruntime on a
    3840x2160 pair stays under 1 GiB: the tiles bound the network's memory."""
    from PIL import Image

    from utils.benchmarking_deploy import run_measured
    rng = np.random.default_rng(0)
    for name in ("ir", "vis"):
        Image.fromarray(rng.integers(0, 256, (2160, 3840), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    _, peak_mib = run_measured([sys.executable, "run_infer.py", "--backend", "onnxruntime", "--weights",
                                str(add_graph), "--ir", str(tmp_path / "ir.png"), "--vis", str(tmp_path / "vis.png"),
                                "--output_path", str(tmp_path / "out")], tmp_path / "log.txt")
    assert peak_mib < 1024, f"peak {peak_mib:.0f} MiB"
    assert len(list((tmp_path / "out").rglob("*.png"))) == 1


@pytest.mark.slow  # 15 s: an export and eleven small processes
def test_the_deploy_benchmark_runs_and_reports_consistently(tmp_path):
    """The benchmark's deploy part (--smoke sizes) runs every contestant, the plain script and the
    backend write the same 8-bit image, and its ratio is the one of the times it reports."""
    from run_scripts import benchmark
    from utils.benchmarking_deploy import OPTION_VARIANTS
    out = tmp_path / "b.json"
    assert benchmark.main(["--smoke", "--skip", "startup", "fusion", "infer", "training", "memory", "registration",
                           "data", "video", "--json", str(out)]) == 0
    r = json.loads(out.read_text())["deploy"]
    assert r["max_level_diff_vs_plain"] == 0
    assert r["onnxruntime_over_plain"] == pytest.approx(r["plain_onnxruntime"]["seconds"]
                                                        / r["run_infer_onnxruntime"]["seconds"])
    assert sorted(r["options_s"]) == sorted(OPTION_VARIANTS) and all(v > 0 for v in r["options_s"].values())
    for name in ("plain_onnxruntime", "run_infer_torch", "run_infer_onnxruntime", "onnxruntime_4k"):
        assert 20 < r[name]["peak_mib"] < 4096, name  # a process's own peak, not its parent's


@pytest.mark.slow  # 2 min: every bundled set through both backends
def test_both_backends_agree_within_one_level_on_the_bundled_sets(add_graph, tmp_path):
    """run_infer.py on data_test/ (TNO, RoadScene, Lytro; gray and colour) with the torch backend
    and with the onnxruntime one on an export of the same weights: every 8-bit image within one level."""
    from PIL import Image

    import run_infer
    base = ["--test_path", str(ROOT / "data_test"), "--output_path", str(tmp_path)]
    assert run_infer.main(base) == 0
    assert run_infer.main([*base, "--backend", "onnxruntime", "--weights", str(add_graph)]) == 0
    compared = 0
    for torch_dir in sorted(p for p in tmp_path.iterdir() if p.name.endswith("_fusion")):
        for png in sorted(torch_dir.glob("*.png")):
            a = np.asarray(Image.open(png), np.int16)
            b = np.asarray(Image.open(tmp_path / f"{torch_dir.name}_onnxruntime" / png.name), np.int16)
            assert a.shape == b.shape and np.abs(a - b).max() <= 1, png
            compared += 1
    assert compared >= 21 + 50 + 3
