"""ONNX export and the onnxruntime backend against the PyTorch path, on real TNO and RoadScene pairs."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

import run_infer
from configs import SHIPPED_WEIGHTS
from models.fusion import STRATEGIES
from run_scripts import export_onnx as export_script
from tests.conftest import ROOT, write_gray
from utils.checkpoint import load_model
from utils.errors import WeightsError
from utils.fusion import FuseSettings, fuse_gray, fuse_sources, postprocess, prepare_model
from utils.images import load_image, to_uint8

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from utils.onnx_backend import OnnxNetwork, read_metadata  # noqa: E402
from utils.onnx_graph import export_onnx  # noqa: E402

#: One TNO and one RoadScene pair, cropped to odd sizes (dynamic height and width are exercised).
PAIRS = [(ROOT / "data_test/Tno/IR1.png", ROOT / "data_test/Tno/VIS1.png", (269, 359)),
         (ROOT / "data_test/Road/ir/FLIR_00211.jpg", ROOT / "data_test/Road/vi/FLIR_00211.jpg", (237, 301))]


@pytest.fixture(scope="module")
def shipped():
    return load_model(SHIPPED_WEIGHTS)[0]


@pytest.fixture(scope="module")
def exported(shipped, tmp_path_factory, add_graph):
    """strategy -> exported 2-source fusion graph of the shipped lambda = 100 weights."""
    d = tmp_path_factory.mktemp("onnx")

    class Exported(dict):  # exported on first use: the default run needs two of the four
        def __missing__(self, name):
            self[name] = d / f"{name}.onnx"
            export_onnx(shipped, self[name], strategy=name, radius=1, provenance={"weights": SHIPPED_WEIGHTS.name})
            return self[name]
    return Exported(add=add_graph)


def real_pairs():
    out = []
    for ir, vis, (h, w) in PAIRS:
        a, b = load_image(ir), load_image(vis)
        a, b = (x if x.ndim == 2 else x.mean(-1).astype(np.float32) for x in (a, b))
        out.append((a[:h, :w], b[:h, :w]))
    return out


@pytest.mark.parametrize("strategy", [s if s == "add" else pytest.param(s, marks=pytest.mark.slow)
                                      for s in sorted(STRATEGIES)])
def test_onnxruntime_matches_pytorch_on_real_pairs(shipped, exported, strategy):
    """Every strategy exports; onnxruntime's output is within 1e-4 of PyTorch's before
    quantisation and >= 99.9 % of the 8-bit pixels are identical, at odd sizes, tiled or not."""
    net, model = OnnxNetwork(exported[strategy]), prepare_model(shipped)
    mode = "minmax" if strategy == "add" else "clip"
    for ir, vis in real_pairs():
        ref = fuse_gray(model, ir, vis, FuseSettings(strategy, 1, tile=-1))
        for tile in ((-1, 96) if strategy == "l1_norm" else (-1,)):  # tiling: once, with the widest halo
            got = fuse_gray(net, ir, vis, FuseSettings(strategy, 1, tile=tile))
            assert got.shape == ir.shape
            assert np.abs(got - ref).max() <= 1e-4
            same = (to_uint8(postprocess(got, mode)) == to_uint8(postprocess(ref, mode))).mean()
            assert same >= 0.999


def test_graph_is_checked_dynamic_and_self_describing(exported):
    model = onnx.load(str(exported["l1_norm"]))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["source0", "source1"]
    assert [o.name for o in model.graph.output] == ["fused"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[:2]] == [1, 1] and all(d.dim_param for d in dims[2:])
    meta = read_metadata(exported["l1_norm"])
    assert meta["strategy"] == "l1_norm" and meta["l1_radius"] == 1 and meta["sources"] == 2
    assert meta["model_args"] == {"channels": 1, "final_relu": False}
    assert read_metadata(exported["add"])["l1_radius"] is None


@pytest.mark.slow  # 4 s per export; the default run exports the 2-source graphs (and checks them)
def test_three_source_graph(shipped, tmp_path):
    path = tmp_path / "mean3.onnx"
    export_onnx(shipped, path, strategy="mean", sources=3)
    rng = np.random.default_rng(0)
    images = [rng.random((33, 47), dtype=np.float32) for _ in range(3)]
    net = OnnxNetwork(path)
    assert net.sources == 3
    ref = fuse_sources(prepare_model(shipped), images, FuseSettings("mean", tile=-1))
    np.testing.assert_allclose(fuse_sources(net, images, FuseSettings("mean", tile=-1)), ref, atol=1e-4)


@pytest.mark.slow  # 4 s: an export
def test_colour_network_exports(tmp_path):
    """A 3-channel (RGB) network exports like the gray one: (1, 3, H, W) sources in, (1, 3, H, W)
    out, the channel count in the metadata, the PyTorch path's output (the RGB weights
    themselves come with the colour issue; the graph does not depend on them)."""
    from models.densefuse import DenseFuse
    from utils.fusion import TorchNetwork
    torch.manual_seed(0)
    model = DenseFuse(channels=3).eval()
    path = tmp_path / "rgb.onnx"
    assert export_onnx(model, path, strategy="l1_norm", radius=1)["model_args"]["channels"] == 3
    x = torch.rand(2, 3, 31, 45, generator=torch.Generator().manual_seed(2)).numpy()
    ref = TorchNetwork(model, "l1_norm", 1)(x)
    got = OnnxNetwork(path)(x)
    assert got.shape == (1, 3, 31, 45) and float(np.abs(got - ref).max()) <= 1e-4


@pytest.mark.parametrize("part", [pytest.param(p, marks=pytest.mark.slow) for p in ("encoder", "decoder")])  # 3 s each
def test_encoder_and_decoder_parts(shipped, tmp_path, part):
    path = tmp_path / f"{part}.onnx"
    export_onnx(shipped, path, part=part)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 1 if part == "encoder" else 64, 29, 41, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = (shipped.encode(x) if part == "encoder" else shipped.decode(x)).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, ref, atol=1e-4)
    with pytest.raises(WeightsError, match=r"holds the .* alone"):
        OnnxNetwork(path)


def test_run_infer_onnxruntime_backend(exported, tmp_path, capsys):
    """Same layouts and output writing as the torch path, in its own folder, labelled; the
    8-bit images agree with the torch backend's."""
    src = tmp_path / "Set"
    for k, (h, w) in enumerate([(45, 61), (64, 33)], start=1):
        write_gray(src / f"IR{k}.png", h, w, k)
        write_gray(src / f"VIS{k}.png", h, w, 50 + k)
    out = tmp_path / "out"
    base = ["--test_path", str(src), "--output_path", str(out), "--strategy", "l1_norm", "--output_mode", "clip"]
    assert run_infer.main([*base, "--backend", "onnxruntime", "--weights", str(exported["l1_norm"])]) == 0
    assert run_infer.main(base) == 0
    ours, theirs = out / "Set_fusion_l1_norm_clip", out / "Set_fusion_l1_norm_clip_onnxruntime"
    record = json.loads((theirs / run_infer.SETTINGS_FILE).read_text())
    assert record["backend"] == "onnxruntime" and record["strategy"] == "l1_norm"
    assert "backend" not in json.loads((ours / run_infer.SETTINGS_FILE).read_text())
    for k in (1, 2):
        a, b = (np.asarray(load_image(d / f"{k}.png")) for d in (ours, theirs))
        assert a.shape == b.shape and (a == b).mean() >= 0.999


def test_run_infer_onnxruntime_refusals(exported, tmp_path, capsys):
    ir, vis = write_gray(tmp_path / "a.png", 20, 20, 1), write_gray(tmp_path / "b.png", 20, 20, 2)
    pair = ["--ir", str(ir), "--vis", str(vis), "--output_path", str(tmp_path / "out"), "--backend", "onnxruntime"]
    cases = [([], "needs --weights FILE.onnx"),
             (["--weights", str(SHIPPED_WEIGHTS)], "needs --weights FILE.onnx"),
             (["--weights", str(exported["add"]), "--strategy", "max"], "exported with add"),
             (["--weights", str(exported["add"]), "--device", "cuda"], "runs on the CPU")]
    for extra, message in cases:
        capsys.readouterr()
        assert run_infer.main([*pair, *extra]) == 2
        assert message in capsys.readouterr().err
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"not a protobuf at all")
    assert run_infer.main([*pair, "--weights", str(fake)]) == 2
    assert str(fake) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_package_names_what_to_install(shipped, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(WeightsError, match="pip install onnxruntime"):
        OnnxNetwork(tmp_path / "any.onnx")
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(WeightsError, match="pip install onnxscript"):
        export_onnx(shipped, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow  # 3 s: the script around export_onnx, which the default run tests directly
def test_export_script(exported, tmp_path, capsys):
    out = tmp_path / "enc.onnx"
    assert export_script.main([str(SHIPPED_WEIGHTS), "-o", str(out), "--part", "encoder"]) == 0
    assert read_metadata(out)["weights_sha256"] == load_model(SHIPPED_WEIGHTS)[1]["sha256"]
    before = out.read_bytes()
    assert export_script.main([str(SHIPPED_WEIGHTS), "-o", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert export_script.main([str(SHIPPED_WEIGHTS), "-o", str(tmp_path / "x.onnx"), "--sources", "1"]) == 2
    assert export_script.main([str(tmp_path / "missing.pth"), "-o", str(tmp_path / "y.onnx")]) == 2
    assert not (tmp_path / "y.onnx").exists()


def test_run_infer_refuses_a_graph_of_another_source_count(exported, tmp_path, capsys):
    files = [write_gray(tmp_path / f"{n}.png", 16, 18, k) for k, n in enumerate("abc")]
    assert run_infer.main(["--backend", "onnxruntime", "--weights", str(exported["add"]), "--inputs",
                           *map(str, files), "--output_path", str(tmp_path / "out")]) == 2
    assert "fuses 2 images; these sets have 3" in capsys.readouterr().err and not (tmp_path / "out").exists()
