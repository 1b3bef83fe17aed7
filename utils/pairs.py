"""Finding IR/visible pairs in a folder, in the layouts the fusion community uses.

- ``ir/`` + ``vi/`` (or ``vis/``): same file name (stem) = same pair (RoadScene, MSRS, ...)
- ``INF_images/`` + ``VIS_images/``: same stem = same pair (the TNO folders of several toolboxes)
- one folder of ``IR<k>.*`` + ``VIS<k>.*``: same k = same pair, named k (DenseFuse's TNO set);
  one separator after the prefix is ignored (``IR_1``, ``IR-1``, ``IR 1`` and ``IR1`` are pair 1)
- one folder of ``<name>-A.*`` + ``<name>-B.*``: the Lytro multi-focus naming (A near focus, B far
  focus), named ``<name>``; ``ir`` is A and ``vis`` is B (two sources, in that order)
Folder and prefix names are matched case-insensitively. Pairs are sorted naturally (2 before 10).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from utils.images import is_image_file

SUBFOLDER_LAYOUTS = [
    ("ir/ + vi/", ("ir",), ("vi", "vis")),  # RoadScene, MSRS (ir/ vi/), M3FD (Ir/ Vis/)
    ("INF_images/ + VIS_images/", ("inf_images",), ("vis_images",)),
    ("infrared/ + visible/", ("infrared",), ("visible",)),  # LLVIP, FMB (Infrared/ Visible/)
]
#: Split folders of the modern data sets (LLVIP: infrared/test/; MSRS: test/ir/): each is a set of
#: its own, named after its data set and split (``LLVIP_test``).
SPLITS = frozenset({"train", "test", "val", "validation", "trainval"})
FLAT_PATTERN = re.compile(r"^(ir|vis)[_\-\s]?(.+)$", re.IGNORECASE)
LYTRO_PATTERN = re.compile(r"^(.+)-([ab])$", re.IGNORECASE)


class PairError(ValueError):
    """A folder whose pairs cannot be formed; the message names the files at fault."""


class NoPairs(PairError):
    """A folder holding no layout of pairs at all (a folder of sets, or an unrelated folder)."""


class UnpairedFiles(PairError):
    """Files without a partner. Besides the message (every such file listed) it carries what
    could be matched, so that a caller may report these files with its other problems and go
    on with the rest: ``sets`` as :func:`find_sets` gives them (folder, layout, pairs), and
    ``problems``, one line per file."""

    def __init__(self, message: str, sets: list[tuple[Path, str, list[Pair]]], problems: list[str]):
        super().__init__(message)
        self.sets, self.problems = sets, problems


@dataclass(frozen=True)
class Pair:
    """One set of registered sources, named: ``ir`` and ``vis`` (the two of an IR/visible pair, or
    the first two of any set) and ``more`` sources after them (``run_infer.py --inputs A B C``)."""
    name: str
    ir: Path
    vis: Path
    more: tuple[Path, ...] = ()

    @property
    def sources(self) -> tuple[Path, ...]:
        return (self.ir, self.vis, *self.more)


def natural_key(s: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def _images(folder: Path) -> list[Path]:
    """Entries named like images, whatever they are: a folder, FIFO or dangling link named
    ``x.png`` is kept, so that reading it reports what it is instead of skipping it silently."""
    return [p for p in folder.iterdir() if is_image_file(p)]


def _subfolder(folder: Path, names: tuple[str, ...]) -> Path | None:
    found = [c for c in sorted(folder.iterdir()) if c.is_dir() and c.name.lower() in names]
    if len(found) > 1:  # ir/ and IR/, or vi/ and vis/: never a silent choice
        raise PairError(f"{folder}: both {' and '.join(c.name + '/' for c in found)} are present; keep one of them")
    return found[0] if found else None


def _match(ir_files: dict[str, Path], vis_files: dict[str, Path], folder: Path, layout: str,
           partners: tuple[str, str] = ("visible", "infrared")) -> list[Pair]:
    problems = [f"{p}: no {partners[0]} partner" for k, p in sorted(ir_files.items()) if k not in vis_files]
    problems += [f"{p}: no {partners[1]} partner" for k, p in sorted(vis_files.items()) if k not in ir_files]
    pairs = [Pair(k, ir_files[k], vis_files[k]) for k in sorted(ir_files, key=natural_key) if k in vis_files]
    if problems:
        raise UnpairedFiles(f"{folder}: {len(problems)} unpaired file(s):\n  " + "\n  ".join(problems),
                            [(folder, layout, pairs)], problems)
    return pairs


def _by_stem(files: list[Path], folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in files:
        if p.stem in out:
            raise PairError(f"{folder}: two files share the name {p.stem!r}: {out[p.stem].name}, {p.name}")
        out[p.stem] = p
    return out


def pairs_from_folders(ir_dir: Path, vis_dir: Path) -> list[Pair]:
    """Pairs from two explicit folders, matched by file name (stem)."""
    for d in (ir_dir, vis_dir):
        if not d.is_dir():
            raise PairError(f"{d}: folder not found")
    return _match(_by_stem(_images(ir_dir), ir_dir), _by_stem(_images(vis_dir), vis_dir), ir_dir.parent,
                  f"{ir_dir.name}/ + {vis_dir.name}/")


def sets_from_folders(folders: list[Path]) -> list[Pair]:
    """Sets of N >= 2 sources from N folders, matched by file name (stem), in the folders' order:
    ``--sources under/ over/ mid/`` (multi-exposure) or ``--sources ir/ vi/``. Every file without
    a partner in every other folder is listed in one PairError."""
    for d in folders:
        if not d.is_dir():
            raise PairError(f"{d}: folder not found")
    by_folder = [_by_stem(_images(d), d) for d in folders]
    names = sorted(set().union(*by_folder), key=natural_key)
    problems = []
    for n in names:
        where = [d for d, files in zip(folders, by_folder, strict=True) if n in files]
        problems += [f"{d / n}.*: missing (present in {', '.join(map(str, where))})" for d in folders if d not in where]
    sets = [Pair(n, *(files[n] for files in by_folder[:2]), tuple(files[n] for files in by_folder[2:]))
            for n in names if all(n in files for files in by_folder)]
    if problems:
        raise UnpairedFiles(f"{len(problems)} file(s) without a partner in every folder:\n  " + "\n  ".join(problems),
                            [(folders[0].parent, "sources", sets)], problems)
    return sets


def scenes(root: Path) -> list[Pair]:
    """One set per sub-folder of ``root`` (the multi-exposure convention: a folder per scene with
    its N >= 2 images), named after the folder, its images in natural order of file name."""
    if not root.is_dir():
        raise PairError(f"{root}: folder not found")
    out, problems = [], []
    for d in sorted((c for c in root.iterdir() if c.is_dir() and not c.name.startswith(".")),
                    key=lambda c: natural_key(c.name)):
        files = sorted(_images(d), key=lambda p: natural_key(p.name))
        if len(files) < 2:
            problems.append(f"{d}: {len(files)} image(s); a scene needs at least 2")
        else:
            out.append(Pair(d.name, files[0], files[1], tuple(files[2:])))
    if problems:
        raise PairError(f"{root}: {len(problems)} scene folder(s) cannot be fused:\n  " + "\n  ".join(problems))
    if not out:
        raise PairError(f"{root}: no scene folders (expected one sub-folder per scene holding its images)")
    return out


def find_pairs(folder: str | Path) -> tuple[str, list[Pair]]:
    """``(layout description, pairs)`` for ``folder``; raises :class:`PairError` if the folder is
    missing, has no recognised layout or has files without a partner (all of them listed)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PairError(f"{folder}: folder not found")
    for layout, ir_names, vis_names in SUBFOLDER_LAYOUTS:
        ir_dir, vis_dir = _subfolder(folder, ir_names), _subfolder(folder, vis_names)
        if ir_dir is not None and vis_dir is not None:
            spelt = f"{ir_dir.name}/ + {vis_dir.name}/"  # as the folders are spelt
            ir_files, vis_files = _by_stem(_images(ir_dir), ir_dir), _by_stem(_images(vis_dir), vis_dir)
            if not ir_files and not vis_files:
                if splits := _splits(ir_dir, vis_dir):  # LLVIP: infrared/train/ + visible/train/, ...
                    raise NoPairs(f"{folder}: layout {layout} with split folders ({', '.join(splits)})")
                raise PairError(f"{folder}: layout {layout} found but it holds no images")
            return spelt, _match(ir_files, vis_files, folder, spelt)
    ir_files, vis_files = _by_name_pattern(folder, FLAT_PATTERN, side=1, key=2, second="vis")
    if ir_files or vis_files:
        return "IR<k> + VIS<k>", _match(ir_files, vis_files, folder, "IR<k> + VIS<k>")
    a_files, b_files = _by_name_pattern(folder, LYTRO_PATTERN, side=2, key=1, second="b")
    if a_files or b_files:
        lytro = "<name>-A + <name>-B (multi-focus)"
        return lytro, _match(a_files, b_files, folder, lytro, ("-B", "-A"))
    raise NoPairs(f"{folder}: no IR/visible pairs found (expected ir/ + vi/, INF_images/ + "
                    f"VIS_images/, or files IR<k>.* + VIS<k>.* or <name>-A.* + <name>-B.*)")


def _by_name_pattern(folder: Path, pattern: re.Pattern, side: int, key: int,
                     second: str) -> tuple[dict[str, Path], dict[str, Path]]:
    """The first and second sources of ``folder``'s files whose stem matches ``pattern``, by pair
    key: group ``side`` says which source (``second``, case-insensitive, or the first), group
    ``key`` names the pair (``IR7``/``VIS7`` -> 7; ``lytro-1-A``/``-B`` -> lytro-1)."""
    found: tuple[dict[str, Path], dict[str, Path]] = ({}, {})
    for p in _images(folder):
        if m := pattern.match(p.stem):
            target = found[m.group(side).lower() == second]
            if m.group(key) in target:
                raise PairError(f"{folder}: two files for the same pair: {target[m.group(key)].name}, {p.name}")
            target[m.group(key)] = p
    return found


def _splits(ir_dir: Path, vis_dir: Path) -> list[str]:
    """Sub-folders present under both ``ir_dir`` and ``vis_dir`` (LLVIP's ``train/``, ``test/``)."""
    names = [{c.name for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")} for d in (ir_dir, vis_dir)]
    return sorted(names[0] & names[1], key=natural_key)


def split_sets(folder: Path) -> list[tuple[Path, str, list[Pair]]]:
    """LLVIP's layout, ``infrared/<split>/`` + ``visible/<split>/``: one set per split, given as
    ``(folder / split, layout, pairs)`` (a name, not a folder on disk); [] for any other layout."""
    for _, ir_names, vis_names in SUBFOLDER_LAYOUTS:
        ir_dir, vis_dir = _subfolder(folder, ir_names), _subfolder(folder, vis_names)
        if ir_dir is None or vis_dir is None or _images(ir_dir) or _images(vis_dir):
            continue
        out = []
        for split in _splits(ir_dir, vis_dir):
            a, b = ir_dir / split, vis_dir / split
            spelt = f"{ir_dir.name}/{split}/ + {vis_dir.name}/{split}/"
            out.append((folder / split, spelt, lambda a=a, b=b, name=folder / split, spelt=spelt: _match(
                _by_stem(_images(a), a), _by_stem(_images(b), b), name, spelt)))
        return out
    return []


def set_name(folder: Path) -> str:
    """A set's name: its folder's, or for a split folder (``test/``) its data set's and its own
    (``LLVIP_test``, ``MSRS_test``), so that two data sets' splits never share an output folder."""
    return f"{folder.parent.name}_{folder.name}" if folder.name.lower() in SPLITS else folder.name


def find_sets(root: str | Path) -> list[tuple[Path, str, list[Pair]]]:
    """``(folder, layout, pairs)`` for each sub-folder of ``root`` that holds a recognised
    layout (sorted by name), e.g. data_test/Tno, or each split of LLVIP's layout
    (:func:`split_sets`); other folders are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise PairError(f"{root}: folder not found")
    sets, unpaired = [], []
    found = split_sets(root) or [(c, None, None) for c in sorted(root.iterdir())
                                 if c.is_dir() and not c.name.startswith(".")]
    for child, layout, match in found:
        try:
            layout, pairs = (layout, match()) if match else find_pairs(child)
        except UnpairedFiles as e:  # listed with every other set's, once all are seen
            unpaired.append(e)
            sets += e.sets
            continue
        except NoPairs:  # a data set of split folders (LLVIP, MSRS) inside a folder of data sets
            if split_sets(child) or any(c.is_dir() and c.name.lower() in SPLITS for c in child.iterdir()):
                try:
                    sets += find_sets(child)
                except UnpairedFiles as e:
                    unpaired.append(e)
                    sets += e.sets
            continue
        sets.append((child, layout, pairs))
    if unpaired:
        raise UnpairedFiles("\n".join(map(str, unpaired)), sets, [p for e in unpaired for p in e.problems])
    return sets
