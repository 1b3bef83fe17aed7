"""Scoring a folder of fused images against their sources (used by run_eval.py and
``run_infer.py --eval``)."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from utils.images import IMAGE_EXTENSIONS, load_image
from utils.metrics import PROFILES
from utils.pairs import Pair


class EvalError(ValueError):
    """A fused folder that does not match its sources; names the pair."""


def fused_file(fused_dir: Path, name: str) -> Path:
    """``<fused_dir>/<name>.<ext>`` for the first image extension present."""
    for ext in (".png", *IMAGE_EXTENSIONS):
        p = fused_dir / f"{name}{ext}"
        if p.is_file():
            return p
    raise EvalError(f"pair {name!r}: no fused image {name}.png (or .jpg/.bmp/.tif) in {fused_dir}")


def load_levels(path: Path) -> tuple[np.ndarray, bool]:
    """Gray levels 0-255 (float64) of an image file; colour is reduced to its luma Y (BT.601).
    Returns (image, was_colour)."""
    img = load_image(path)
    colour = img.ndim == 3
    if colour:
        img = load_image(path, gray=True)
    return img.astype(np.float64) * 255.0, colour


def locate(pairs: list[Pair], fused_dir: Path) -> list[tuple[Pair, Path]]:
    """Each pair with its fused file; an EvalError names the first pair without one."""
    return [(p, fused_file(fused_dir, p.name)) for p in pairs]


def evaluate(pairs: list[Pair], fused_dir: Path, profile: str = "standard",
             metrics: list[str] | None = None, progress: bool = True) -> tuple[list[dict], bool]:
    """One row per pair ``{"pair": name, metric: value, ...}`` and whether any fused image was
    colour (scored on Y). Every fused file is located and size-checked before scoring."""
    table = PROFILES[profile]
    names = metrics or list(table)
    unknown = [m for m in names if m not in table]
    if unknown:
        raise EvalError(f"unknown metric(s) {unknown} for profile {profile!r}; choose from {list(table)}")
    files = locate(pairs, fused_dir)
    rows, any_colour = [], False
    for pair, ff in tqdm(files, desc=f"scoring {fused_dir.name}", unit="pair", disable=None if progress else True):
        a, _ = load_levels(pair.ir)
        b, _ = load_levels(pair.vis)
        f, colour = load_levels(ff)
        any_colour |= colour
        if f.shape != a.shape or b.shape != a.shape:
            raise EvalError(f"pair {pair.name!r}: fused image {ff} is {f.shape[1]}x{f.shape[0]}, "
                            f"sources are {a.shape[1]}x{a.shape[0]} and {b.shape[1]}x{b.shape[0]}")
        row = {"pair": pair.name}
        for m in names:
            row[m] = float(table[m](a, b, f))
        rows.append(row)
    return rows, any_colour


def mean_row(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if k != "pair"]
    return {"pair": "mean", **{k: float(np.mean([r[k] for r in rows])) for k in keys}}


def format_table(rows: list[dict], title: str = "") -> str:
    keys = [k for k in rows[0] if k != "pair"]
    width = max(8, *(len(str(r["pair"])) for r in rows))
    head = f"{'pair':<{width}} " + " ".join(f"{k:>9}" for k in keys)
    lines = [title, head, "-" * len(head)] if title else [head, "-" * len(head)]
    for r in rows:
        vals = " ".join(f"{'inf':>9}" if math.isinf(r[k]) else f"{r[k]:>9.4f}" for k in keys)
        lines.append(f"{r['pair']!s:<{width}} {vals}")
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def write_json(rows: list[dict], path: Path, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
             for r in rows]
    path.write_text(json.dumps({**meta, "rows": clean}, indent=1))
