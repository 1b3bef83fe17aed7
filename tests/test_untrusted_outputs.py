"""Issue #30, fusion side: a results folder is untrusted input, and nothing a run writes or removes
ever resolves to an input or leaves the output folder (docs/faults.md, "Your data is never lost")."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass

import pytest

import run_infer
from configs import FuseConfig
from tests.conftest import ROOT, write_gray, write_rgb
from utils.files import writing_into


def infer(*args, weights, cwd=None):
    argv = [*map(str, args), "--weights", str(weights), "--device", "cpu"]
    if cwd is None:
        return run_infer.main(argv)
    here = os.getcwd()
    os.chdir(cwd)
    try:
        return run_infer.main(argv)
    finally:
        os.chdir(here)


def test_a_crafted_record_never_makes_overwrite_delete_outside_its_folder(tmp_path, flat_set, tiny_weights,
                                                                         capsys):
    """The record names ``../../victim`` and an absolute path: --overwrite under new settings
    removes the folder's own stale images only, and warns about the entries it ignored."""
    out = tmp_path / "res"
    assert infer("--test_path", flat_set, "--output_path", out, weights=tiny_weights) == 0
    folder = out / "Flat_fusion"
    victim = write_gray(tmp_path / "victim.png", 8, 8, 1)
    precious = write_gray(tmp_path / "abs" / "precious.png", 8, 8, 2)
    record = json.loads((folder / "fusion_settings.json").read_text())
    record["inputs"].update({"../../victim": ["x"], str(precious.with_suffix("")): ["y"], "sub/9": ["z"],
                             "old": ["w"]})
    (folder / "fusion_settings.json").write_text(json.dumps(record))
    write_gray(folder / "old.png", 8, 8, 3)  # a stale image this run will not rewrite: removed
    capsys.readouterr()
    assert run_infer.main(["--test_path", str(flat_set), "--output_path", str(out), "--overwrite",
                           "--ssim_weight", "10", "--device", "cpu"]) == 0
    assert victim.exists() and precious.exists()
    assert not (folder / "old.png").exists()
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and str(folder / "fusion_settings.json") in warning[0]
    assert "'../../victim'" in warning[0] and "ignored 3 entries" in warning[0]


def test_overwrite_never_removes_an_input_of_the_same_run(tmp_path, tiny_weights):
    """The trial's case: a fused image of folder C is an input of the next run into C."""
    g = [write_gray(tmp_path / f"g{k}.png", 20, 24, k) for k in (1, 2, 3)]
    c = tmp_path / "C"
    assert infer("--ir", g[0], "--vis", g[1], "--output_path", c, weights=tiny_weights) == 0
    fused = c / "pair" / "g1_g2.png"
    before = fused.read_bytes()
    assert infer("--ir", fused, "--vis", g[2], "--strategy", "max", "--output_mode", "clip", "--output_path", c,
                 "--overwrite", weights=tiny_weights) == 0
    assert fused.read_bytes() == before
    # Into the same folder, under other weights (so the folder's images count as stale): still kept.
    assert run_infer.main(["--ir", str(fused), "--vis", str(g[2]), "--output_path", str(c), "--overwrite",
                           "--ssim_weight", "10", "--device", "cpu"]) == 0
    assert fused.read_bytes() == before and (c / "pair" / "g1_g2_g3.png").exists()


def readme_examples() -> list[list[str]]:
    """The README's run_infer.py example block, each line's arguments (comments dropped)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Fusing images: `run_infer.py`")[1].split("```bash")[1].split("```")[0]
    return [shlex.split(line.split("#")[0])[2:] for line in block.strip().splitlines()]


def test_the_readme_examples_run_in_order_with_nothing_refused_or_removed(tmp_path, tiny_weights, monkeypatch):
    """Every example of the README's fusion block, in the order written, from a folder holding
    the files they name: each exits 0, and every result of an earlier one is still there after."""
    for s in ("Tno", "Road"):
        for k in (1, 2):
            write_gray(tmp_path / "data_test" / s / f"IR{k}.png", 20, 24, k)
            write_gray(tmp_path / "data_test" / s / f"VIS{k}.png", 20, 24, k + 5)
    for k, name in enumerate("abc"):
        write_gray(tmp_path / f"{name}.png", 20, 24, k)
    for k, d in enumerate(("under", "over", "mid")):
        write_rgb(tmp_path / d / "s1.png", 20, 24, k)
    for k, scene in enumerate(("house", "lamp")):
        for j in range(3):
            write_rgb(tmp_path / "mef" / scene / f"{j}.png", 20, 24, 10 * k + j)

    @dataclass
    class HereDefaults(FuseConfig):  # the bundled data_test/ stands in for a small one
        test_path: str = str(tmp_path / "data_test")
    monkeypatch.setattr(run_infer, "FuseConfig", HereDefaults)
    examples = readme_examples()
    assert len(examples) == 7 and examples[2] == ["--ir", "a.png", "--vis", "b.png"]
    seen: dict[str, bytes] = {}
    for args in examples:
        assert infer(*args, weights=tiny_weights, cwd=tmp_path) == 0, args
        for f, data in seen.items():
            assert (tmp_path / f).read_bytes() == data, f"{args} changed or removed {f}"
        seen.update({str(p.relative_to(tmp_path)): p.read_bytes()
                     for p in (tmp_path / "data_result").rglob("*.png")})
    got = {str(p.parent.relative_to(tmp_path / "data_result")) for p in (tmp_path / "data_result").rglob("*.png")}
    assert got == {"Tno_fusion", "Road_fusion", "pair", "pair_l1_norm_clip", "sources_fusion", "mef_fusion",
                   "Tno_fusion_l1_norm_clip", "Road_fusion_l1_norm_clip"}


def test_outputs_default_to_the_current_folder_and_bundled_data_says_when_absent(tmp_path, tiny_weights,
                                                                                 monkeypatch, capsys):
    a, b = write_gray(tmp_path / "a.png", 16, 16, 1), write_gray(tmp_path / "b.png", 16, 16, 2)
    work = tmp_path / "work"
    work.mkdir()
    assert infer("--ir", a, "--vis", b, weights=tiny_weights, cwd=work) == 0
    assert (work / "data_result" / "pair" / "a_b.png").is_file()
    assert not (ROOT / "data_result" / "pair" / "a_b.png").exists()

    @dataclass
    class Installed(FuseConfig):  # what an installed copy sees: its bundled data_test/ is not there
        test_path: str = str(ROOT / "data_test" / "not_installed")
    monkeypatch.setattr(run_infer, "FuseConfig", Installed)
    capsys.readouterr()
    assert infer(weights=tiny_weights, cwd=work) == 2
    err = capsys.readouterr().err
    assert "an installed copy does not have" in err and "--test_path DIR" in err


def test_a_symlink_loop_is_one_error_line_as_input_under_skip_bad_and_as_output(tmp_path, tiny_weights, capsys):
    a, b = write_gray(tmp_path / "a.png", 16, 16, 1), write_gray(tmp_path / "b.png", 16, 16, 2)
    (tmp_path / "l1.png").symlink_to(tmp_path / "l2.png")
    (tmp_path / "l2.png").symlink_to(tmp_path / "l1.png")
    (tmp_path / "o1").symlink_to(tmp_path / "o2")
    (tmp_path / "o2").symlink_to(tmp_path / "o1")
    s = tmp_path / "set"
    write_gray(s / "IR1.png", 16, 16, 1), write_gray(s / "VIS1.png", 16, 16, 2), write_gray(s / "IR2.png", 16, 16, 3)
    (s / "VIS2.png").symlink_to(s / "VIS3.png")
    (s / "VIS3.png").symlink_to(s / "VIS2.png")
    out = ["--output_path", tmp_path / "out"]
    cases = [(["--ir", tmp_path / "l1.png", "--vis", b, *out], 2, "a symlink loop"),
             (["--ir", a, "--vis", b, "--output_path", tmp_path / "o1"], 2, "o1"),
             (["--test_path", s, *out], 2, "VIS2.png: a symlink loop"),
             (["--test_path", s, "--skip_bad", *out], 1, "VIS2.png: a symlink loop")]
    for args, rc, message in cases:
        capsys.readouterr()
        assert infer(*args, weights=tiny_weights) == rc, args
        err = capsys.readouterr().err
        assert "Traceback" not in err and message in err, (args, err)
        assert rc == 1 or err.count("error:") == 1, (args, err)
    assert (tmp_path / "out" / "set_fusion" / "1.png").exists()  # --skip_bad fused the good pair


KILLED_WRITE = """
import os, sys
from utils.images import save_image
import numpy as np
def die(fh):
    fh.write(b"\\x89PNG partial")
    os.kill(os.getpid(), 9)
from utils import images
real = images.atomic_write
images.atomic_write = lambda path, write: real(path, die)
save_image(sys.argv[1], np.zeros((4, 4), np.uint8))
"""


def test_a_killed_png_write_leaves_a_temporary_file_that_the_next_run_removes(tmp_path, flat_set, tiny_weights,
                                                                             capsys):
    out = tmp_path / "res"
    folder = out / "Flat_fusion"
    folder.mkdir(parents=True)
    r = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(folder / "2.png")], cwd=ROOT)
    assert r.returncode == -9
    (left,) = folder.glob(".2.png.*.tmp")  # what SIGKILL leaves: atomic_write's temporary file
    theirs = folder / ".notes.txt.abcd1234.tmp"  # not fusion's pattern: never touched
    theirs.write_text("x")
    assert infer("--test_path", flat_set, "--output_path", out, weights=tiny_weights) == 0
    assert not left.exists() and theirs.exists()
    assert "removed 1 partial file(s) a killed run left (.2.png." in capsys.readouterr().out


def test_a_writer_in_progress_keeps_its_temporary_files(tmp_path):
    """While one writer holds the folder, another finds its temporary file and leaves it: the
    removal needs the folder to itself."""
    pattern = re.compile(r".+\.png")
    with writing_into(tmp_path, pattern) as first:
        busy = tmp_path / ".1.png.abcdefgh.tmp"
        busy.write_bytes(b"in progress")
        with writing_into(tmp_path, pattern) as second:
            assert first == [] and second == [] and busy.exists()
    with writing_into(tmp_path, pattern) as third:
        assert third == [busy] and not busy.exists()


def test_single_pair_folders_are_named_by_their_settings(tmp_path, tiny_weights):
    a, b, c = (write_gray(tmp_path / f"{n}.png", 16, 16, k) for k, n in enumerate("abc"))
    out = tmp_path / "o"
    assert infer("--ir", a, "--vis", b, "--output_path", out, weights=tiny_weights) == 0
    assert infer("--inputs", a, b, c, "--strategy", "l1_norm", "--output_mode", "clip", "--output_path", out,
                 weights=tiny_weights) == 0
    assert infer("--inputs", a, b, c, "--strategy", "l1_norm", "--output_mode", "clip", "--output_path", out,
                 "--overwrite", weights=tiny_weights) == 0
    assert (out / "pair" / "a_b.png").exists() and (out / "pair_l1_norm_clip" / "a_b_c.png").exists()


@pytest.mark.parametrize("args", [["--val_path", "nowhere"], ["--val_path", str(ROOT / "data_test" / "gone")]])
def test_training_with_a_validation_folder_that_is_not_there_is_an_error(tmp_path, capsys, args):
    import run_train
    imgs = tmp_path / "imgs"
    for i in range(2):
        write_gray(imgs / f"{i}.png", 20, 20, i)
    assert run_train.main(["--image_path", str(imgs), "--output_dir", str(tmp_path / "runs"), *args,
                           "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"--val_path {args[1]}: folder not found" in err and "--val_path ''" in err
    assert ("an installed copy does not have" in err) == ("data_test" in args[1])
    assert not (tmp_path / "runs").exists()
