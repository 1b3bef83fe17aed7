"""Untrusted files and arguments on the newer surfaces (issue #30): official zips, exported ONNX
graphs, run_eval's report files, export_onnx's output, torch.hub's fuse, forged model_args.
Each case was a traceback, a lost file or a silently wrong result before; each is one
``error:`` line naming the file (exit 2, nothing written) or a ValueError saying what is expected.
"""
from __future__ import annotations

import csv
import errno
import json
import os
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import hubconf
import run_eval
import run_infer
from models.densefuse import DenseFuse
from tests.conftest import write_gray
from utils.checkpoint import load_model
from utils.errors import WeightsError


def full_disk_writes(monkeypatch, first_bytes: bytes):
    """Every atomic write fails as on a full disk, after ``first_bytes`` went into its temporary
    file; returns a function that restores the real writer."""
    from utils import files
    real = files.atomic_write

    def full_disk(path, write):
        def partial(fh):
            fh.write(first_bytes)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, partial)
    monkeypatch.setattr(files, "atomic_write", full_disk)
    return lambda: monkeypatch.setattr(files, "atomic_write", real)


def one_error_line(capsys, *names) -> str:
    """The run's stderr, asserted to be one ``error:`` line naming every one of ``names``."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    for n in names:
        assert str(n) in err[0], (n, err[0])
    return err[0]


def pair(tmp_path) -> list[str]:
    a, b = write_gray(tmp_path / "in" / "a.png", 20, 22, 1), write_gray(tmp_path / "in" / "b.png", 20, 22, 2)
    return ["--ir", str(a), "--vis", str(b)]


# ---- official zip weights ---------------------------------------------------------------------

def test_a_zip_bomb_is_refused_from_its_declared_size_before_it_is_read(tmp_path, capsys):
    """64 MiB of zeros deflate to 64 KiB: the member's declared size is refused before any byte of
    it is decompressed, so memory stays far below the member's size."""
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("model.ckpt.index", b"\0" * 100)
        z.writestr("model.ckpt.data-00000-of-00001", bytes(64 << 20))
    assert bomb.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(WeightsError, match=r"67,108,864 bytes, more than a DenseFuse checkpoint"):
            load_model(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak:,} bytes allocated while refusing the bomb"
    assert run_infer.main([*pair(tmp_path), "--weights", str(bomb), "--output_path", str(tmp_path / "o")]) == 2
    one_error_line(capsys, bomb, "not a DenseFuse checkpoint")
    assert not (tmp_path / "o").exists()


def test_oversized_checkpoint_files_beside_each_other_are_refused(tmp_path):
    (tmp_path / "model.ckpt.index").write_bytes(b"\0" * 100)
    with open(tmp_path / "model.ckpt.data-00000-of-00001", "wb") as fh:
        fh.truncate(64 << 20)  # sparse: costs no disk
    with pytest.raises(WeightsError, match="data-00000-of-00001: 67,108,864 bytes"):
        load_model(tmp_path / "model.ckpt.index")


# ---- exported ONNX graphs ---------------------------------------------------------------------

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def with_metadata(graph: Path, out: Path, edit) -> Path:
    """A copy of ``graph`` whose ``densefuse`` metadata is ``edit(metadata)`` (a dict, or a string
    written as it is)."""
    proto = onnx.load(str(graph))
    prop = next(p for p in proto.metadata_props if p.key == "densefuse")
    new = edit(json.loads(prop.value))
    prop.value = new if isinstance(new, str) else json.dumps(new)
    onnx.save(proto, str(out))
    return out


def drop(key):
    return lambda m: {k: v for k, v in m.items() if k != key}


@pytest.mark.parametrize("edit,says", [
    (drop("strategy"), "strategy None"),
    (drop("model_args"), "model_args None"),
    (lambda m: "[1, 2]", "not written by run_scripts/export_onnx.py"),
    (lambda m: "{not json", "not written by run_scripts/export_onnx.py"),
    (lambda m: {**m, "strategy": "l1_norm", "l1_radius": "x"}, "l1_radius 'x'"),
    (lambda m: {**m, "sources": "2"}, "sources '2'"),
    (lambda m: {**m, "sources": 3}, "fuses 3 images; these sets have 2"),
    (lambda m: {**m, "model_args": {"channels": 3}}, "metadata says (1, 3, H, W)"),
    (lambda m: {**m, "model_args": {"channels": True}}, "channels must be 1 or 3"),
], ids=["no strategy", "no model_args", "a JSON list", "not JSON", "radius x", "sources text",
        "3 sources", "3 channels", "channels true"])
def test_forged_graph_metadata_is_one_error_and_nothing_is_written(add_graph, tmp_path, capsys, edit, says):
    forged = with_metadata(add_graph, tmp_path / "forged.onnx", edit)
    out = tmp_path / "o"
    assert run_infer.main([*pair(tmp_path), "--backend", "onnxruntime", "--weights", str(forged),
                           "--output_path", str(out)]) == 2
    one_error_line(capsys, forged, says)
    assert not out.exists()


def test_metadata_that_lies_about_the_graphs_inputs_is_refused_before_fusing(add_graph, tmp_path, capsys):
    """Metadata saying 3 sources on a 2-input graph, given 3 images: the session's real inputs
    are checked against the metadata before any image is fused or any record written."""
    forged = with_metadata(add_graph, tmp_path / "forged.onnx", lambda m: {**m, "sources": 3})
    files = [write_gray(tmp_path / f"{n}.png", 16, 18, k) for k, n in enumerate("abc")]
    assert run_infer.main(["--inputs", *map(str, files), "--backend", "onnxruntime", "--weights", str(forged),
                           "--output_path", str(tmp_path / "o")]) == 2
    one_error_line(capsys, forged, "the graph takes 2 input(s) and gives 1; its metadata says 3")
    assert not (tmp_path / "o").exists()


def external_data_graph(graph: Path, folder: Path, location: str) -> Path:
    """A copy of ``graph`` in ``folder`` whose weights are external data at ``location``."""
    from onnx.external_data_helper import convert_model_to_external_data
    proto = onnx.load(str(graph))
    convert_model_to_external_data(proto, all_tensors_to_one_file=True, location="weights.bin",
                                    size_threshold=4096)  # the kernels; small constants stay inline
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(folder / "g.onnx"))  # writes folder/weights.bin
    for t in proto.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(proto, str(folder / "g.onnx"), save_as_external_data=False)
    return folder / "g.onnx"


@pytest.mark.parametrize("where", ["absolute", "parent", "symlink"])
def test_external_data_outside_the_graphs_folder_is_one_error(add_graph, tmp_path, capsys, where):
    """onnxruntime refuses external data outside the graph's folder; its exception was a
    traceback. Now one line naming the graph, and no output folder. (The same graph with its
    data beside it fuses.)"""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    g = external_data_graph(add_graph, tmp_path / "models" / "m", "weights.bin")
    assert run_infer.main([*pair(tmp_path), "--backend", "onnxruntime", "--weights", str(g),
                           "--output_path", str(tmp_path / "ok")]) == 0
    os.replace(g.parent / "weights.bin", outside / "weights.bin")
    location = {"absolute": str(outside / "weights.bin"), "parent": "../../elsewhere/weights.bin",
                "symlink": "link.bin"}[where]
    if where == "symlink":
        (g.parent / "link.bin").symlink_to(outside / "weights.bin")
    g = external_data_graph(add_graph, g.parent, location)
    (g.parent / "weights.bin").unlink(missing_ok=True)
    out = tmp_path / "o"
    assert run_infer.main([*pair(tmp_path), "--backend", "onnxruntime", "--weights", str(g),
                           "--output_path", str(out)]) == 2
    one_error_line(capsys, g)
    assert not out.exists()


# ---- export_onnx's output ---------------------------------------------------------------------

def test_export_never_writes_over_its_weights_and_refuses_an_opset_it_cannot_write(tmp_path, tiny_weights, capsys):
    from run_scripts import export_onnx as script
    weights = tmp_path / "w.pth"
    weights.write_bytes(tiny_weights.read_bytes())
    before = weights.read_bytes()
    assert script.main([str(weights), "-o", str(weights), "--overwrite"]) == 2
    one_error_line(capsys, weights, "is the input weights file")
    (tmp_path / "link.onnx").symlink_to(weights)
    assert script.main([str(weights), "-o", str(tmp_path / "link.onnx"), "--overwrite"]) == 2
    one_error_line(capsys, "is the input weights file")
    assert weights.read_bytes() == before
    assert script.main([str(weights), "-o", str(tmp_path / "old.onnx"), "--opset", "7"]) == 2
    one_error_line(capsys, "--opset 7")
    assert not (tmp_path / "old.onnx").exists()


@pytest.mark.slow  # 6 s: two exports
def test_export_writes_the_opset_asked_for_atomically(tmp_path, tiny_weights, capsys, monkeypatch):
    """--opset 7 printed "opset 7 (checked)" and wrote 18; an opset it can write is written. A
    full disk is one line naming the file, and the old file stays."""
    from run_scripts import export_onnx as script
    out = tmp_path / "g19.onnx"
    out.write_bytes(b"old graph")
    restore = full_disk_writes(monkeypatch, b"\x08\x0a")
    assert script.main([str(tiny_weights), "-o", str(out), "--opset", "19", "--overwrite"]) == 2
    one_error_line(capsys, out, "No space left on device")
    assert out.read_bytes() == b"old graph" and not list(tmp_path.glob(".*.tmp"))
    restore()
    assert script.main([str(tiny_weights), "-o", str(out), "--opset", "19", "--overwrite"]) == 0
    assert "opset 19 (checked)" in capsys.readouterr().out
    written = onnx.load(str(out)).opset_import
    assert {o.version for o in written if o.domain in ("", "ai.onnx")} == {19}


# ---- run_eval's report files ------------------------------------------------------------------

@pytest.fixture
def scored(tmp_path, flat_set, tiny_weights):
    """(fused folder, test set, base run_eval arguments)."""
    assert run_infer.main(["--test_path", str(flat_set), "--output_path", str(tmp_path / "res"), "--weights",
                           str(tiny_weights), "--device", "cpu"]) == 0
    fused = tmp_path / "res" / "Flat_fusion"
    return fused, flat_set, ["--fused", str(fused), "--test_path", str(flat_set), "--metrics", "EN", "--quiet"]


def snapshot(*folders) -> dict:
    return {p: p.read_bytes() for d in folders for p in sorted(Path(d).rglob("*")) if p.is_file()}


@pytest.mark.parametrize("flags,says", [
    (["--csv", "{src}/IR1.png"], "--csv {src}/IR1.png: is an input"),
    (["--json", "{fused}/2.png"], "--json {fused}/2.png: is an input"),
    (["--markdown", "{fused}/fusion_settings.json"], "is an input"),
    (["--latex", "{fused}"], "is a folder"),
    (["--csv", "{tmp}/s.txt", "--json", "{tmp}/s.txt"], "both write"),
])
def test_run_eval_never_writes_over_an_input_or_a_folder(scored, tmp_path, capsys, flags, says):
    fused, src, base = scored
    fill = {"src": src, "fused": fused, "tmp": tmp_path}
    before = snapshot(src, fused)
    assert run_eval.main([*base, *(f.format(**fill) for f in flags)]) == 2
    one_error_line(capsys, says.format(**fill))
    assert snapshot(src, fused) == before and not (tmp_path / "s.txt").exists()


def test_run_eval_replaces_a_report_only_with_overwrite_and_atomically(scored, tmp_path, capsys, monkeypatch):
    base = scored[2]
    report = tmp_path / "scores.json"
    report.write_text("old scores")
    assert run_eval.main([*base, "--json", str(report)]) == 2
    one_error_line(capsys, report, "pass --overwrite")
    assert report.read_text() == "old scores"

    restore = full_disk_writes(monkeypatch, b'{"rows": [')
    assert run_eval.main([*base, "--json", str(report), "--overwrite"]) == 2
    one_error_line(capsys, report, "No space left on device")
    assert report.read_text() == "old scores" and not list(tmp_path.glob(".*.tmp"))
    restore()
    assert run_eval.main([*base, "--json", str(report), "--overwrite"]) == 0
    assert json.loads(report.read_text())["rows"][0]["pair"] == "1"


def test_method_names_are_inert_in_csv_and_markdown(scored, tmp_path):
    """A method named like a formula is text in the CSV (OWASP: a leading '); a | in a name is
    escaped in the Markdown table, which keeps its columns."""
    fused, src, _ = scored
    names = ['=cmd|"/c calc"!A1', "a|b"]
    assert run_eval.main(["--fused", str(fused), str(fused), "--names", *names, "--test_path", str(src),
                          "--metrics", "EN", "SD", "--quiet", "--csv", str(tmp_path / "t.csv"),
                          "--markdown", str(tmp_path / "t.md")]) == 0
    cells = {c for row in csv.reader((tmp_path / "t.csv").open()) for c in row}
    assert "'" + names[0] in cells and names[0] not in cells
    assert not any(c.startswith(("=", "+", "@")) for c in cells)
    rows = [r for r in (tmp_path / "t.md").read_text().splitlines() if r.startswith("|")]
    columns = {len(r.replace("\\|", "").split("|")) for r in rows}
    assert len(columns) == 1 and any("a\\|b" in r for r in rows)


def test_two_fused_files_for_one_pair_is_an_error_naming_both(scored, capsys):
    fused, _, base = scored
    from PIL import Image
    Image.open(fused / "1.png").save(fused / "1.tif")
    assert run_eval.main(base) == 2
    one_error_line(capsys, "1.png", "1.tif", "several fused images")


# ---- torch.hub and model_args -----------------------------------------------------------------

@pytest.fixture(scope="module")
def gray_net():
    torch.manual_seed(0)
    return DenseFuse().eval()


@pytest.mark.parametrize("make,says", [
    (lambda: [torch.rand(1, 3, 8, 8)] * 2, "fuses 1-channel images"),
    (lambda: [torch.rand(8)] * 2, "(H,W) or (B,C,H,W)"),
    (lambda: [torch.rand(3, 8, 8)] * 2, "(H,W) or (B,C,H,W)"),
    (lambda: [torch.randint(0, 255, (8, 8), dtype=torch.uint8)] * 2, "divide 8-bit images by 255"),
    (lambda: [torch.rand(1, 1)] * 2, "at least 2x2"),
    (lambda: [torch.rand(8, 8) * 255] * 2, "divide 0-255 images by 255"),
    (lambda: [torch.rand(8, 8), torch.rand(8, 9)], "shapes differ"),
    (lambda: [torch.full((8, 8), float("nan"))] * 2, "NaN"),
    (lambda: [torch.rand(8, 8)], "at least 2 images"),
], ids=["rgb into gray", "1-D", "3-D", "uint8", "1x1", "0-255", "shapes", "nan", "one image"])
def test_hub_fuse_says_what_it_expects(gray_net, make, says):
    with pytest.raises(ValueError) as e:
        hubconf.fuse(*make(), network=gray_net, output_mode="clip")
    assert says in str(e.value)


def test_hub_rgb_network_wants_four_dimensions_and_arguments_are_checked(gray_net):
    with pytest.raises(ValueError, match=r"3-channel images, \(B,3,H,W\)"):
        hubconf.fuse(torch.rand(8, 8), torch.rand(8, 8), network=DenseFuse(channels=3).eval())
    with pytest.raises(ValueError, match="l1_radius must be an int from 0 to 1000, got -5"):
        hubconf.fuse(torch.rand(8, 8), torch.rand(8, 8), network=gray_net, strategy="l1_norm", l1_radius=-5)
    with pytest.raises(ValueError, match="output_mode"):
        hubconf.fuse(torch.rand(8, 8), torch.rand(8, 8), network=gray_net, output_mode="stretch")
    with pytest.raises(ValueError, match="lam must be an int, got True"):
        hubconf.densefuse(lam=True)
    with pytest.raises(ValueError, match="channels must be an int"):
        hubconf.densefuse(channels=1.0, pretrained=False)
    # What passes the checks still fuses: (H,W) in, (H,W) out, in [0, 1] with clip.
    with torch.no_grad():
        out = hubconf.fuse(torch.rand(9, 7), torch.rand(9, 7), network=gray_net, output_mode="clip")
    assert out.shape == (9, 7) and 0 <= float(out.min()) <= float(out.max()) <= 1


@pytest.mark.parametrize("channels", [True, 1.0, "1", 2])
def test_model_args_channels_must_be_the_int_1_or_3(tmp_path, channels, capsys):
    """True == 1 in Python: it passed the check and failed later inside DenseFuse."""
    path = tmp_path / "w.pth"
    from utils.checkpoint import WEIGHTS_FORMAT
    torch.save({"format": WEIGHTS_FORMAT, "model": DenseFuse().state_dict(), "model_args": {"channels": channels}},
               path)
    with pytest.raises(WeightsError, match="channels must be 1 or 3"):
        load_model(path)
    assert run_infer.main([*pair(tmp_path), "--weights", str(path), "--output_path", str(tmp_path / "o")]) == 2
    one_error_line(capsys, path, "channels must be 1 or 3")
    assert not (tmp_path / "o").exists()


def test_what_passes_hubs_checks_fuses_as_the_command_line_does(gray_net):
    """The checks add no behaviour: hub's clip output, rounded, is the pipeline's 8-bit image
    (1 level where a value sits on a rounding edge: the two sum the features in another order)."""
    from utils.fusion import FuseSettings, fuse_images
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(12, 10, generator=g), torch.rand(12, 10, generator=g)
    with torch.no_grad():
        hub = hubconf.fuse(a, b, network=gray_net, output_mode="clip").numpy()
    cli = fuse_images(gray_net, a.numpy(), b.numpy(), settings=FuseSettings("add", output_mode="clip"))
    assert np.abs(np.round(hub * 255) - cli).max() <= 1


def test_hub_fuse_without_a_network_returns_no_graph_and_with_one_keeps_it():
    """Without network= the shipped weights are loaded for the call: nothing to train, no graph.
    With network=, autograd works as in any module call."""
    a, b = torch.rand(8, 8), torch.rand(8, 8)
    assert hubconf.fuse(a, b, output_mode="clip").grad_fn is None
    net = DenseFuse().eval()
    out = hubconf.fuse(a, b, network=net)
    assert out.grad_fn is not None
    out.sum().backward()
    assert net.encoder.conv1.conv.weight.grad is not None
