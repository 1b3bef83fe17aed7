import json
import math

import numpy as np
import pytest
from PIL import Image

import run_eval
import run_infer
from tests.conftest import write_gray, write_rgb
from utils import metrics as M


@pytest.fixture
def fused(tmp_path, flat_set, tiny_weights):
    out = tmp_path / "res"
    assert run_infer.main(["--test_path", str(flat_set), "--output_path", str(out), "--weights",
                           str(tiny_weights), "--device", "cpu"]) == 0
    return out / "Flat_fusion"


def test_table_csv_json(fused, flat_set, tmp_path, capsys):
    rc = run_eval.main(["--fused", str(fused), "--test_path", str(flat_set), "--metrics", "EN", "SD",
                        "Qabf", "--csv", str(tmp_path / "s.csv"), "--json", str(tmp_path / "s.json")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "mean" in out and "Qabf" in out and "conventions" in out
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "pair,EN,SD,Qabf" and len(lines) == 5 and lines[-1].startswith("mean,")
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["profile"] == "standard" and len(data["rows"]) == 4
    # The table's numbers are the library's numbers.
    f = np.asarray(Image.open(fused / "2.png"), dtype=np.float64)
    assert data["rows"][1]["EN"] == pytest.approx(M.entropy(f))


def test_ir_vis_folders_and_colour_on_y(tmp_path, tiny_weights, capsys):
    write_gray(tmp_path / "S" / "ir" / "a.png", 20, 24, 0)
    write_rgb(tmp_path / "S" / "vi" / "a.png", 20, 24, 1)
    assert run_infer.main(["--test_path", str(tmp_path / "S"), "--output_path", str(tmp_path / "r"),
                           "--weights", str(tiny_weights), "--device", "cpu"]) == 0
    rc = run_eval.main(["--fused", str(tmp_path / "r" / "S_fusion"), "--ir", str(tmp_path / "S" / "ir"),
                        "--vis", str(tmp_path / "S" / "vi"), "--metrics", "EN", "CC"])
    assert rc == 0 and "luma Y" in capsys.readouterr().out


def test_missing_fused_image_names_the_pair(fused, flat_set, capsys):
    (fused / "3.png").unlink()
    assert run_eval.main(["--fused", str(fused), "--test_path", str(flat_set)]) == 2
    err = capsys.readouterr().err
    assert "'3'" in err and "no fused image" in err


def test_wrong_size_names_the_pair(fused, flat_set, capsys):
    Image.new("L", (5, 5)).save(fused / "2.png")
    assert run_eval.main(["--fused", str(fused), "--test_path", str(flat_set), "--metrics", "EN"]) == 2
    err = capsys.readouterr().err
    assert "'2'" in err and "5x5" in err


def test_unknown_metric(fused, flat_set, capsys):
    assert run_eval.main(["--fused", str(fused), "--test_path", str(flat_set), "--metrics", "XYZ"]) == 2
    assert "unknown metric" in capsys.readouterr().err


def test_densefuse_profile_runs(tmp_path, tiny_weights, capsys):
    d = tmp_path / "T"
    write_gray(d / "IR1.png", 48, 52, 0)
    write_gray(d / "VIS1.png", 48, 52, 1)
    assert run_infer.main(["--test_path", str(d), "--output_path", str(tmp_path / "r"), "--weights",
                           str(tiny_weights), "--device", "cpu"]) == 0
    assert run_eval.main(["--fused", str(tmp_path / "r" / "T_fusion"), "--test_path", str(d),
                          "--profile", "densefuse", "--quiet"]) == 0
    out = capsys.readouterr().out
    for k in M.DENSEFUSE:
        assert k in out


def test_infer_eval_prints_mean_row(tmp_path, tiny_weights, capsys):
    d = tmp_path / "T"
    write_gray(d / "IR1.png", 170, 170, 0)
    write_gray(d / "VIS1.png", 170, 170, 1)
    assert run_infer.main(["--test_path", str(d), "--output_path", str(tmp_path / "r"), "--weights",
                           str(tiny_weights), "--device", "cpu", "--eval"]) == 0
    out = capsys.readouterr().out
    assert "standard-profile metrics" in out and "MS-SSIM" in out and "mean" in out


@pytest.mark.parametrize("flag", ["--csv", "--json"])
def test_output_that_is_a_folder_fails_before_scoring(fused, flat_set, tmp_path, capsys, flag):
    rc = run_eval.main(["--fused", str(fused), "--test_path", str(flat_set), flag, str(tmp_path)])
    captured = capsys.readouterr()
    assert rc == 2 and f"error: {tmp_path}: is a folder; give a file name for --csv/--json" in captured.err
    assert "mean" not in captured.out  # nothing was scored


def _method(tmp_path, flat_set, name, fn):
    """A fused folder made from the sources by ``fn`` (a method whose output we know)."""
    from utils.pairs import find_pairs
    out = tmp_path / name
    out.mkdir()
    for p in find_pairs(flat_set)[1]:
        a = np.asarray(Image.open(p.ir).convert("L"), dtype=np.float64)
        b = np.asarray(Image.open(p.vis).convert("L"), dtype=np.float64)
        Image.fromarray(fn(a, b).astype(np.uint8)).save(out / f"{p.name}.png")
    return out


def test_comparison_of_methods(flat_set, tmp_path, capsys):
    avg = _method(tmp_path, flat_set, "avg", lambda a, b: np.floor((a + b) / 2 + 0.5))
    ir = _method(tmp_path, flat_set, "ir", lambda a, b: a)
    rc = run_eval.main(["--fused", str(avg), str(ir), "--names", "mean_AB", "IR", "--test_path", str(flat_set),
                        "--metrics", "EN", "MSE", "Qabf", "--std", "--markdown", str(tmp_path / "t.md"),
                        "--latex", str(tmp_path / "t.tex"), "--csv", str(tmp_path / "t.csv"),
                        "--json", str(tmp_path / "t.json")])
    assert rc == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(t.startswith("MSE ") and " ↓ " in t for t in lines) and any(t.startswith("EN ") and " ↑ " in t
                                                                          for t in lines) and "±" in out
    data = json.loads((tmp_path / "t.json").read_text())
    rows = {m: data["methods"][m]["rows"] for m in ("mean_AB", "IR")}
    assert len(rows["IR"]) == 3 and data["higher_is_better"] == {"EN": True, "MSE": False, "Qabf": True}
    # the best of each column is the better mean in that metric's direction
    for k, higher in data["higher_is_better"].items():
        means = {m: data["methods"][m]["mean"][k] for m in rows}
        assert data["best"][k] == [(max if higher else min)(means, key=means.get)], k
    assert data["methods"]["mean_AB"]["mean"]["EN"] == pytest.approx(np.mean([r["EN"] for r in rows["mean_AB"]]))
    assert data["methods"]["mean_AB"]["sd"]["EN"] == pytest.approx(np.std([r["EN"] for r in rows["mean_AB"]],
                                                                          ddof=1))
    md = (tmp_path / "t.md").read_text().splitlines()
    assert md[0] == "| method | EN ↑ | MSE ↓ | Qabf ↑ |" and md[2].startswith("| mean_AB |")
    assert md[2 + ["mean_AB", "IR"].index(data["best"]["MSE"][0])].split(" | ")[2].startswith("**")
    tex = (tmp_path / "t.tex").read_text()
    assert r"mean\_AB" in tex and r"\textbf{" in tex and r"MSE $\downarrow$" in tex and r"$\pm$" in tex
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0] == "method,pair,EN,MSE,Qabf" and len(lines) == 1 + 2 * 3 + 2 * 2


def test_comparison_checks_every_method_before_scoring(flat_set, tmp_path, capsys):
    good = _method(tmp_path, flat_set, "good", lambda a, b: a)
    bad = _method(tmp_path, flat_set, "bad", lambda a, b: b)
    (bad / "3.png").unlink()
    Image.new("L", (5, 5)).save(bad / "2.png")
    assert run_eval.main(["--fused", str(good), str(bad), "--test_path", str(flat_set)]) == 2
    captured = capsys.readouterr()
    assert "method 'bad'" in captured.err and "'3'" in captured.err and "5x5" in captured.err
    assert "good" not in captured.err and "mean over" not in captured.out  # nothing was scored
    assert run_eval.main(["--fused", str(good), str(bad), "--names", "one", "--test_path", str(flat_set)]) == 2
    assert "--names gives 1 name(s) for 2" in capsys.readouterr().err


def test_vifb_profile_scores_colour_per_channel(tmp_path, capsys):
    write_gray(tmp_path / "S" / "ir" / "a.png", 40, 44, 0)
    write_rgb(tmp_path / "S" / "vi" / "a.png", 40, 44, 1)
    write_rgb(tmp_path / "F" / "a.png", 40, 44, 2)
    rc = run_eval.main(["--fused", str(tmp_path / "F"), "--ir", str(tmp_path / "S" / "ir"), "--vis",
                        str(tmp_path / "S" / "vi"), "--profile", "vifb", "--json", str(tmp_path / "v.json")])
    assert rc == 0 and "per channel, as VIFB" in capsys.readouterr().out
    got = json.loads((tmp_path / "v.json").read_text())["rows"][0]
    load = lambda p: np.asarray(Image.open(p), dtype=np.float64)  # noqa: E731
    a, b = load(tmp_path / "S" / "ir" / "a.png"), load(tmp_path / "S" / "vi" / "a.png")
    f = load(tmp_path / "F" / "a.png")
    assert got["EN"] == pytest.approx(np.mean([M.entropy(f[..., k]) for k in range(3)]))
    assert got["SSIM"] == pytest.approx(np.mean([M.VIFB["SSIM"](a, b[..., k], f[..., k]) for k in range(3)]))


def test_metrics_too_small_for_a_pair_are_left_out_of_its_mean_and_named(tmp_path, capsys):
    """MS-SSIM needs 161 px and VIF 41 px per side: on a set with a 170x172 and a 40x44 pair,
    the small pair's values are n/a and each mean is the large pair's value alone."""
    d = tmp_path / "Mixed"
    for k, (h, w) in enumerate([(170, 172), (40, 44)], start=1):
        write_gray(d / f"IR{k}.png", h, w, k)
        write_gray(d / f"VIS{k}.png", h, w, 10 + k)
    avg = _method(tmp_path, d, "avg", lambda a, b: np.floor((a + b) / 2 + 0.5))
    rc = run_eval.main(["--fused", str(avg), "--test_path", str(d), "--metrics", "MS-SSIM", "VIF", "EN",
                        "--json", str(tmp_path / "s.json"), "--csv", str(tmp_path / "s.csv")])
    cap = capsys.readouterr()
    assert rc == 0
    assert "warning: MS-SSIM not scored on 1 of 2 pair(s) ('2'): MS-SSIM (5 scales of an 11x11 window) " \
           "needs images of at least 161x161 pixels, got 44x40" in cap.err
    assert "warning: VIF not scored on 1 of 2 pair(s) ('2')" in cap.err
    rows = {r["pair"]: r for r in json.loads((tmp_path / "s.json").read_text())["rows"]}
    assert rows["2"]["MS-SSIM"] is None and rows["2"]["VIF"] is None and rows["2"]["EN"] > 0
    assert rows["mean"]["MS-SSIM"] == rows["1"]["MS-SSIM"] and rows["mean"]["VIF"] == rows["1"]["VIF"]
    assert rows["mean"]["EN"] == pytest.approx((rows["1"]["EN"] + rows["2"]["EN"]) / 2)
    assert "2,,," in (tmp_path / "s.csv").read_text()
    assert any(line.startswith("2 ") and line.split()[1:3] == ["n/a", "n/a"] for line in cap.out.splitlines())


def test_a_comparison_averages_each_metric_over_the_pairs_it_was_scored_on():
    from utils.comparison import markdown_table, summarise
    rows = {"A": [{"pair": "1", "VIF": 0.5, "EN": 7.0}, {"pair": "2", "VIF": None, "EN": 6.0}],
            "B": [{"pair": "1", "VIF": 0.4, "EN": None}, {"pair": "2", "VIF": None, "EN": None}]}
    s = summarise(rows)
    assert s.mean["A"] == {"VIF": 0.5, "EN": 6.5} and s.std["A"]["VIF"] == 0.0
    assert s.mean["B"]["EN"] is None and s.best == {"VIF": ["A"], "EN": ["A"]}
    assert "| B | 0.4000 | n/a |" in markdown_table(s)


def test_paper_tables_print_significant_digits_and_turn_when_wide():
    """Each column to 4 significant digits of its largest mean (not 4 decimals everywhere: "2216.7659
    ± 1174.8258"), the best marked as printed; more than 8 metrics go in rows."""
    from utils.comparison import latex_table, markdown_table, summarise
    rows = {"A": [{"pair": "1", "VIF": 0.55, "Qcv": 2216.7659}, {"pair": "2", "VIF": 0.45, "Qcv": 3000.0}],
            "B": [{"pair": "1", "VIF": 0.44, "Qcv": 1500.4}, {"pair": "2", "VIF": 0.46, "Qcv": 900.2}]}
    s = summarise(rows)
    md = markdown_table(s, with_std=True).splitlines()
    assert md[2] == "| A | **0.5000 ± 0.0707** | 2608 ± 554 |" and md[3] == "| B | 0.4500 ± 0.0141 | **1200 ± 424** |"
    assert markdown_table(s, digits=2).splitlines()[2] == "| A | **0.50** | 2608 |"
    many = {m: [{"pair": "1", **{f"M{k}": float(k + (m == "B")) for k in range(1, 11)}}] for m in ("A", "B")}
    wide = markdown_table(summarise(many)).splitlines()
    assert wide[0] == "| metric | A | B |" and len(wide) == 12 and wide[2] == "| M1 ↑ | 1.000 | **2.000** |"
    assert markdown_table(summarise(many), rows="methods").splitlines()[0].count("|") == 12
    tex = latex_table(summarise(many))
    assert r"\begin{tabular}{lrr}" in tex and r"M10 $\uparrow$ & 10.00 & \textbf{11.00} \\" in tex


def test_infer_eval_on_images_too_small_for_a_metric_scores_the_rest_and_fuses_later_sets(
        tmp_path, tiny_weights, capsys):
    """Before: MS-SSIM raised on the first (small) set after its images were written, and the
    second set was never fused."""
    root = tmp_path / "sets"
    for name, (h, w) in (("A_small", (24, 30)), ("B_large", (170, 170))):
        write_gray(root / name / "IR1.png", h, w, 1)
        write_gray(root / name / "VIS1.png", h, w, 2)
    assert run_infer.main(["--test_path", str(root), "--output_path", str(tmp_path / "r"), "--weights",
                           str(tiny_weights), "--device", "cpu", "--eval"]) == 0
    cap = capsys.readouterr()
    assert (tmp_path / "r/A_small_fusion/1.png").is_file() and (tmp_path / "r/B_large_fusion/1.png").is_file()
    assert "warning: A_small: MS-SSIM not scored on 1 of 1 pair(s) ('1')" in cap.err and "B_large:" not in cap.err
    lines = cap.out.splitlines()

    def mean_of(name):  # six lines after the title: metric names (with ↑/↓) above their values
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{name}: standard-profile metrics"))
        assert all(len(line) <= 80 for line in lines[at + 1:at + 7])
        block = [line.split() for line in lines[at + 1:at + 7]]
        arrows = {k[:-1]: k[-1] for names in block[::2] for k in names}
        assert arrows["EN"] == "↑" and arrows["MSE"] == "↓" and set(arrows.values()) == {"↑", "↓"}
        return {k[:-1]: v for names, values in zip(block[::2], block[1::2], strict=True)
                for k, v in zip(names, values, strict=True)}
    small, large = mean_of("A_small"), mean_of("B_large")
    assert list(small) == list(M.STANDARD)
    assert small["MS-SSIM"] == "n/a" and small["VIF"] == "n/a" and -1 <= float(small["SSIM"]) <= 1
    assert math.isfinite(float(large["MS-SSIM"])) and "Traceback" not in cap.err


def test_scores_print_alike_in_every_table():
    from utils.evaluation import format_value
    assert [format_value(v) for v in (None, 1 / 3, math.inf, -math.inf, math.nan)] == \
        ["n/a", "0.3333", "inf", "-inf", "nan"]
