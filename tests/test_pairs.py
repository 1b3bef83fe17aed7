import pytest

from tests.conftest import write_gray
from utils.pairs import PairError, find_pairs, find_sets


def test_flat_layout_natural_order(tmp_path):
    for k in (10, 2, 1):
        write_gray(tmp_path / f"IR{k}.png", 4, 4, k)
        write_gray(tmp_path / f"VIS{k}.png", 4, 4, k)
    layout, pairs = find_pairs(tmp_path)
    assert layout == "IR<k> + VIS<k>"
    assert [p.name for p in pairs] == ["1", "2", "10"]
    assert pairs[2].ir.name == "IR10.png" and pairs[2].vis.name == "VIS10.png"


@pytest.mark.parametrize("ir,vis,layout", [
    ("ir", "vi", "ir/ + vi/"), ("IR", "vis", "IR/ + vis/"),
    ("INF_images", "VIS_images", "INF_images/ + VIS_images/")])
def test_subfolder_layouts(tmp_path, ir, vis, layout):
    for name in ("b 2", "a_1", "ü"):
        write_gray(tmp_path / ir / f"{name}.png", 4, 4, 0)
        write_gray(tmp_path / vis / f"{name}.jpg", 4, 4, 1)
    (tmp_path / ir / ".hidden.png").write_bytes(b"x")
    (tmp_path / vis / "notes.txt").write_text("x")
    found, pairs = find_pairs(tmp_path)
    assert found == layout
    assert [p.name for p in pairs] == ["a_1", "b 2", "ü"]


def test_all_unpaired_files_reported(tmp_path):
    write_gray(tmp_path / "ir" / "a.png", 4, 4, 0)
    write_gray(tmp_path / "ir" / "b.png", 4, 4, 0)
    write_gray(tmp_path / "vi" / "c.png", 4, 4, 0)
    with pytest.raises(PairError) as e:
        find_pairs(tmp_path)
    msg = str(e.value)
    assert "3 unpaired" in msg and "a.png" in msg and "b.png" in msg and "c.png" in msg


def test_missing_and_empty(tmp_path):
    with pytest.raises(PairError, match="not found"):
        find_pairs(tmp_path / "nope")
    with pytest.raises(PairError, match="no IR/visible pairs"):
        find_pairs(tmp_path)


def test_find_sets_skips_other_folders(tmp_path, flat_set):
    (tmp_path / "unrelated").mkdir()
    assert [folder for folder, _, _ in find_sets(tmp_path)] == [flat_set]


def test_lytro_multi_focus_naming_is_a_two_source_layout(tmp_path):
    from tests.conftest import write_rgb
    for name in ("lytro-2", "lytro-10"):
        for part in ("A", "b"):
            write_rgb(tmp_path / f"{name}-{part}.jpg", 12, 14, 1)
    layout, pairs = find_pairs(tmp_path)
    assert layout.startswith("<name>-A + <name>-B") and [p.name for p in pairs] == ["lytro-2", "lytro-10"]
    assert pairs[0].ir.name == "lytro-2-A.jpg" and pairs[0].vis.name == "lytro-2-b.jpg"
    (tmp_path / "lytro-10-b.jpg").unlink()
    with pytest.raises(PairError, match=r"lytro-10-A\.jpg: no -B partner"):
        find_pairs(tmp_path)
