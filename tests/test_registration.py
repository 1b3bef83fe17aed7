"""Registration of sources from different cameras (run_infer.py --align / --transform / --resize),
on synthetic warps of registered pairs (the answer is known) and on real unregistered RoadScene
frames (the data set authors' own registration is the answer), and the modern data set layouts."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

import run_eval
import run_infer
from tests.conftest import ROOT, SHARED, write_gray
from utils.images import load_image

cv2 = pytest.importorskip("cv2")
from utils import registration as R  # noqa: E402

RAW = SHARED / "data" / "roadscene_raw"
ROAD = SHARED / "data" / "roadscene50"
needs_raw = pytest.mark.skipif(not RAW.is_dir(), reason="../shared/data/roadscene_raw is absent")


def corner_error(found: np.ndarray, true: np.ndarray, w: int, h: int) -> float:
    """Largest distance, in reference pixels, between where the two matrices put the source's corners."""
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], float).T
    a, b = found @ corners, true @ corners
    return float(np.abs(a[:2] / a[2] - b[:2] / b[2]).max())


def similarity(scale: float, degrees: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * math.cos(math.radians(degrees)), scale * math.sin(math.radians(degrees))
    return np.array([[c, -s, tx], [s, c, ty], [0, 0, 1]])


# A RoadScene pair is registered: warp its infrared image by a known map W into another frame,
# keep the part the warped image covers (a camera sees no black margin), and the registration of
# it onto the visible image must be W's inverse (with the crop's shift), composed with what the
# method finds for the pair as it is (the data set's own registration is good to ~1 %, a few
# pixels at the corners, which bounds the absolute error).
CASES = {
    "half size": (similarity(0.5, 0, 0, 0), "similarity"),
    "1.4x, rotated 4 degrees": (similarity(1.4, 4, 0, 0), "affine"),
    "anisotropic, sheared": (np.array([[0.9, 0.05, 0], [0.0, 0.7, 0], [0, 0, 1]]), "affine"),
    "perspective": (np.array([[0.8, 0.03, 0], [-0.02, 0.82, 0], [2e-4, -1e-4, 1]]), "homography"),
}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) for c in sorted(CASES)])  # 2 s each;
# the default run keeps the real frames against their oracle and the end-to-end --align
def test_known_warps_of_a_registered_pair_are_recovered(case):
    ir = load_image(ROOT / "data_test/Road/ir/FLIR_00977.jpg", gray=True)
    vis = load_image(ROOT / "data_test/Road/vi/FLIR_00977.jpg")
    w_true, model = CASES[case]
    h, w = ir.shape
    corners = w_true @ np.array([[0, w, 0, w], [0, 0, h, h], [1, 1, 1, 1]], float)
    corners = corners[:2] / corners[2]
    shift = np.array([[1, 0, -corners[0].min()], [0, 1, -corners[1].min()], [0, 0, 1]])
    size = (int(np.ceil(np.ptp(corners[0]))), int(np.ceil(np.ptp(corners[1]))))
    moved = cv2.warpPerspective(ir, shift @ w_true, size, flags=cv2.INTER_LINEAR)
    cover = cv2.warpPerspective(np.ones_like(ir), shift @ w_true, size, flags=cv2.INTER_NEAREST) > 0.5
    x0, y0, x1, y1 = R.largest_rectangle(cover)
    moved, w_true = moved[y0:y1, x0:x1], np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]]) @ shift @ w_true
    found, quality = R.estimate(moved, vis, model)
    as_is = R.estimate(ir, vis, model)[0]
    relative = corner_error(found, as_is @ np.linalg.inv(w_true), x1 - x0, y1 - y0)
    absolute = corner_error(found, np.linalg.inv(w_true), x1 - x0, y1 - y0)
    # Absolute: the pair's own registration differs from what the method finds by 1-5 px at the
    # corners (affine), more for a homography's extra freedom on a nearly planar street scene.
    assert relative <= 2.0 and absolute <= (16.0 if model == "homography" else 8.0), (case, relative, absolute)
    assert quality["ecc"] >= R.MIN_ECC


def oracle_ncc(raw: np.ndarray, target: np.ndarray) -> float:
    """The best normalised cross-correlation any crop-and-scale of ``raw`` (a scale per axis and a
    shift) reaches against ``target``: uniform scales by 1 %, then both axes by 1 % around the best."""
    def best_at(sx, sy):
        r = cv2.resize(raw, None, fx=sx, fy=sy, interpolation=cv2.INTER_AREA if min(sx, sy) < 1 else cv2.INTER_LINEAR)
        if r.shape[0] < target.shape[0] or r.shape[1] < target.shape[1]:
            return -1.0
        return float(cv2.minMaxLoc(cv2.matchTemplate(r, target, cv2.TM_CCOEFF_NORMED))[1])
    s = max(np.arange(0.6, 1.4, 0.01), key=lambda s: best_at(s, s))
    steps = np.arange(-0.06, 0.061, 0.01)
    return max(best_at(s + dx, s + dy) for dx in steps for dy in steps)


def registered_ncc(name: str) -> tuple[float, float, dict]:
    """(ours, oracle, quality): the raw thermal frame registered onto the data set's visible crop,
    correlated with the data set's own registered thermal crop."""
    raw = load_image(RAW / "infrared" / f"{name}.png")
    vis, target = load_image(ROAD / "vi" / f"{name}.jpg"), load_image(ROAD / "ir" / f"{name}.jpg", gray=True)
    matrix, quality = R.estimate(raw, vis, "affine")
    warped, mask = R.warp(raw, matrix, (vis.shape[1], vis.shape[0]))
    a, b = warped[mask] - warped[mask].mean(), target[mask] - target[mask].mean()
    ours = float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))
    return ours, oracle_ncc(raw, target), quality


@needs_raw
@pytest.mark.parametrize("name", ["FLIR_04424", pytest.param("FLIR_04722", marks=pytest.mark.slow)])  # the hardest
def test_real_unregistered_frames_reach_the_crop_and_scale_oracle(name):
    ours, oracle, quality = registered_ncc(name)
    assert ours >= oracle - 0.03, (ours, oracle, quality)
    assert quality["ecc"] >= R.MIN_ECC


@needs_raw
@pytest.mark.slow  # 25 s: all twelve
def test_all_twelve_real_frames():
    names = sorted(p.stem for p in (RAW / "infrared").glob("*.png"))
    results = {n: registered_ncc(n) for n in names}
    good = [n for n, (ours, oracle, _) in results.items() if ours >= oracle - 0.03]
    assert len(names) == 12 and len(good) >= 11, results


@needs_raw
def test_align_end_to_end_records_writes_and_reuses_the_transform(tmp_path, tiny_weights, capsys):
    """A raw 640x512 thermal frame and a 496x301 colour crop: one command gives a fused image in
    the colour camera's frame, the transform and its quality in the record, the registered
    sources to score against; the written transform, reused, gives the same image."""
    ir, vis = RAW / "infrared" / "FLIR_00211.png", ROAD / "vi" / "FLIR_00211.jpg"
    common = ["--ir", str(ir), "--vis", str(vis), "--weights", str(tiny_weights), "--device", "cpu"]
    t = tmp_path / "rig.json"
    assert run_infer.main([*common, "--align", "--output_path", str(tmp_path / "a"), "--write_transform",
                           str(t)]) == 0
    out = tmp_path / "a" / "pair_aligned"
    record = json.loads((out / "fusion_settings.json").read_text())
    reg = record["registration"]["FLIR_00211"]
    assert record["align"]["mode"] == "align" and reg["reference"] == 1 and reg["model"] == "affine"
    assert np.allclose(reg["matrices"][1], np.eye(3)) and reg["quality"]["ecc"] >= R.MIN_ECC
    x0, y0, x1, y1 = reg["crop"]
    fused = Image.open(out / "FLIR_00211.png")
    assert fused.size == (x1 - x0, y1 - y0) and fused.mode == "RGB"
    assert (x1 - x0) * (y1 - y0) >= 0.95 * 496 * 301  # the thermal frame covers the crop
    for folder in ("ir", "vi"):
        assert Image.open(out / "registered" / folder / "FLIR_00211.png").size == fused.size
    assert run_eval.main(["--fused", str(out), "--test_path", str(out / "registered"), "--metrics", "EN",
                          "--quiet"]) == 0
    unregistered = tmp_path / "raw"
    for folder, f in (("ir", ir), ("vi", vis)):  # the same pair, unregistered, in a layout run_eval reads
        (unregistered / folder).mkdir(parents=True)
        (unregistered / folder / f"FLIR_00211{f.suffix}").symlink_to(f)
    assert run_eval.main(["--fused", str(out), "--test_path", str(unregistered), "--metrics", "EN"]) == 2
    assert "score them against the registered sources" in capsys.readouterr().err
    saved = json.loads(t.read_text())
    assert np.allclose(saved["matrices"], reg["matrices"], atol=1e-6)
    assert run_infer.main([*common, "--transform", str(t), "--output_path", str(tmp_path / "b")]) == 0
    again = np.asarray(Image.open(tmp_path / "b" / "pair_aligned" / "FLIR_00211.png")).astype(int)
    assert np.abs(again - np.asarray(fused).astype(int)).max() <= 1


def test_sizes_differ_without_a_flag_and_resize_resamples(tmp_path, tiny_weights, capsys):
    a, b = write_gray(tmp_path / "a.png", 40, 50, 1), write_gray(tmp_path / "b.png", 80, 100, 2)
    common = ["--ir", str(a), "--vis", str(b), "--weights", str(tiny_weights), "--device", "cpu"]
    assert run_infer.main([*common, "--output_path", str(tmp_path / "o")]) == 2
    assert "--resize if they show the same field of view, --align to register them" in capsys.readouterr().err
    assert run_infer.main([*common, "--resize", "--output_path", str(tmp_path / "o")]) == 0
    fused = tmp_path / "o" / "pair_resized" / "a_b.png"
    assert Image.open(fused).size == (100, 80)  # the reference's (the second source's) size
    record = json.loads((fused.parent / "fusion_settings.json").read_text())
    assert record["registration"]["a_b"]["model"] == "scale" and record["align"]["mode"] == "resize"
    assert run_infer.main([*common, "--resize", "--align_to", "1", "--output_path", str(tmp_path / "p")]) == 0
    assert Image.open(tmp_path / "p" / "pair_resized" / "a_b.png").size == (50, 40)


@needs_raw
def test_a_poor_registration_is_never_passed_off_as_good(tmp_path, tiny_weights, capsys):
    """Two different scenes: the registration is named poor; no image without --skip_bad."""
    ir, vis = RAW / "infrared" / "FLIR_00211.png", ROAD / "vi" / "FLIR_04722.jpg"
    common = ["--ir", str(ir), "--vis", str(vis), "--weights", str(tiny_weights), "--device", "cpu", "--align"]
    assert run_infer.main([*common, "--output_path", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "poor registration" in err and "nothing was fused" in err and not (tmp_path / "o").exists()
    assert run_infer.main([*common, "--output_path", str(tmp_path / "o"), "--skip_bad"]) == 1


@pytest.mark.parametrize("text,says", [
    ("not json", "not a transform file"),
    ('{"matrices": [[[1, 0, 0], [0, 1, 0], [0, 0, 1]], [[0, 0, 0], [0, 0, 0], [0, 0, 0]]]}', "invertible"),
    ('{"reference": 5, "matrices": [[[1, 0, 0], [0, 1, 0], [0, 0, 1]]]}', "reference 5"),
])
def test_a_bad_transform_file_is_one_error(tmp_path, tiny_weights, capsys, text, says):
    a, b = write_gray(tmp_path / "a.png", 20, 20, 1), write_gray(tmp_path / "b.png", 20, 20, 2)
    (tmp_path / "t.json").write_text(text)
    assert run_infer.main(["--ir", str(a), "--vis", str(b), "--transform", str(tmp_path / "t.json"),
                           "--weights", str(tiny_weights), "--output_path", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0] and str(tmp_path / "t.json") in err[0]


def test_registration_flags_that_do_not_go_together(tmp_path, capsys):
    a, b = write_gray(tmp_path / "a.png", 20, 20, 1), write_gray(tmp_path / "b.png", 20, 20, 2)
    for extra, says in ((["--fill"], "--fill goes with --align"),
                        (["--align", "--transform", "x.json"], "not both"),
                        (["--write_transform", "t.json"], "--write_transform goes with"),
                        (["--resize", "--write_transform", "t.json"], "add --align")):
        assert run_infer.main(["--ir", str(a), "--vis", str(b), "--output_path", str(tmp_path / "o"), *extra]) == 2
        assert says in capsys.readouterr().err


def make_sets(root):
    """The modern data sets' layouts, two pairs each."""
    def pair(a, b, k):
        write_gray(a, 16, 18, k)
        write_gray(b, 16, 18, k + 50)
    for split in ("train", "test"):
        for k in (1, 2):
            pair(root / f"LLVIP/infrared/{split}/{k:06d}.jpg", root / f"LLVIP/visible/{split}/{k:06d}.jpg", k)
            pair(root / f"MSRS/{split}/ir/{k:05d}D.png", root / f"MSRS/{split}/vi/{k:05d}D.png", k)
    for k in (1, 2):
        pair(root / f"FMB/Infrared/{k:04d}.png", root / f"FMB/Visible/{k:04d}.png", k)
        pair(root / f"M3FD/Ir/{k:05d}.png", root / f"M3FD/Vis/{k:05d}.png", k)


def test_modern_data_set_layouts_are_found(tmp_path, tiny_weights, capsys):
    make_sets(tmp_path / "data")
    common = ["--weights", str(tiny_weights), "--device", "cpu"]
    assert run_infer.main(["--test_path", str(tmp_path / "data"), "--output_path", str(tmp_path / "o"), *common]) == 0
    out = capsys.readouterr().out
    assert "LLVIP/test: layout infrared/test/ + visible/test/, 2 pairs" in out
    assert "FMB: layout Infrared/ + Visible/, 2 pairs" in out and "M3FD: layout Ir/ + Vis/, 2 pairs" in out
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "FMB_fusion", "LLVIP_test_fusion", "LLVIP_train_fusion", "M3FD_fusion", "MSRS_test_fusion",
        "MSRS_train_fusion"]
    assert sorted(p.name for p in (tmp_path / "o" / "LLVIP_test_fusion").glob("*.png")) == ["000001.png",
                                                                                            "000002.png"]
    assert run_infer.main(["--test_path", str(tmp_path / "data" / "LLVIP"), "--output_path", str(tmp_path / "p"),
                           *common]) == 0
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["LLVIP_test_fusion", "LLVIP_train_fusion"]


def test_resize_and_fill_work_for_sets_and_sources(tmp_path, tiny_weights):
    """--resize on a folder of pairs and on --sources folders; --fill keeps the reference's frame
    (null crop in the record) where --align/--transform would crop."""
    common = ["--weights", str(tiny_weights), "--device", "cpu"]
    for k in (1, 2):
        write_gray(tmp_path / "S" / "ir" / f"p{k}.png", 30, 40, k)
        write_gray(tmp_path / "S" / "vi" / f"p{k}.png", 60, 80, k + 5)
    assert run_infer.main(["--test_path", str(tmp_path / "S"), "--resize", "--output_path", str(tmp_path / "o"),
                           *common]) == 0
    assert {Image.open(p).size for p in (tmp_path / "o" / "S_fusion_resized").glob("*.png")} == {(80, 60)}
    assert run_infer.main(["--sources", str(tmp_path / "S" / "ir"), str(tmp_path / "S" / "vi"), "--resize",
                           "--align_to", "1", "--output_path", str(tmp_path / "o"), *common]) == 0
    assert {Image.open(p).size for p in (tmp_path / "o" / "sources_fusion_resized").glob("*.png")} == {(40, 30)}
    shift = tmp_path / "shift.json"  # the infrared image sits 5 px right of the visible one
    shift.write_text(json.dumps({"reference": 1, "matrices": [[[2, 0, 5], [0, 2, 0], [0, 0, 1]],
                                                              [[1, 0, 0], [0, 1, 0], [0, 0, 1]]]}))
    pair = ["--ir", str(tmp_path / "S/ir/p1.png"), "--vis", str(tmp_path / "S/vi/p1.png"), *common]
    assert run_infer.main([*pair, "--transform", str(shift), "--output_path", str(tmp_path / "t")]) == 0
    cropped = json.loads((tmp_path / "t/pair_aligned/fusion_settings.json").read_text())["registration"]["p1"]
    assert cropped["crop"][0] >= 4 and Image.open(tmp_path / "t/pair_aligned/p1.png").size[0] <= 76
    assert run_infer.main([*pair, "--transform", str(shift), "--fill", "--output_path", str(tmp_path / "f")]) == 0
    filled = json.loads((tmp_path / "f/pair_aligned/fusion_settings.json").read_text())
    assert filled["registration"]["p1"]["crop"] is None and filled["align"]["fill"] is True
    assert Image.open(tmp_path / "f/pair_aligned/p1.png").size == (80, 60)
