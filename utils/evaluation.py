"""Scoring a folder of fused images against their sources (used by run_eval.py and
``run_infer.py --eval``)."""
from __future__ import annotations

import csv
import functools
import io
import json
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from utils.files import write_text
from utils.images import IMAGE_EXTENSIONS, image_size, load_image, rgb_to_gray
from utils.metrics import COLOUR_AS_STORED, PROFILES, higher_is_better
from utils.metrics.common import TooSmall
from utils.pairs import Pair


class EvalError(ValueError):
    """A fused folder that does not match its sources; names the pair."""


def fused_candidates(fused_dir: Path, name: str) -> list[Path]:
    """Every ``<fused_dir>/<name>.<ext>`` present, for the image extensions: one is the fused
    image, none is a missing one, several (``p0.png`` and ``p0.tif``) are an ambiguity that is
    never resolved silently."""
    return [p for ext in dict.fromkeys((".png", *IMAGE_EXTENSIONS)) if (p := fused_dir / f"{name}{ext}").is_file()]


def fused_file(fused_dir: Path, name: str) -> Path:
    """The one fused image of pair ``name``; an EvalError when there is none or several."""
    found = fused_candidates(fused_dir, name)
    if not found:
        raise EvalError(f"pair {name!r}: no fused image {name}.png (or .jpg/.bmp/.tif) in {fused_dir}")
    if len(found) > 1:
        raise EvalError(f"pair {name!r}: several fused images in {fused_dir}: {' and '.join(p.name for p in found)}; "
                        f"keep one")
    return found[0]


def load_levels(path: Path, as_stored: bool = False) -> tuple[np.ndarray, bool]:
    """Gray levels 0-255 (float64) of an image file and whether it was colour. Colour is reduced
    to its luma Y (BT.601), unless ``as_stored``: then (H, W, 3) levels rounded to integers, what
    MATLAB's ``imread`` gives the ``vifb`` profile."""
    return image_levels(load_image(path), as_stored)


def image_levels(img: np.ndarray, as_stored: bool = False) -> tuple[np.ndarray, bool]:
    """:func:`load_levels` of a decoded float [0, 1] image (a video frame)."""
    colour = img.ndim == 3
    if colour and not as_stored:
        img = rgb_to_gray(img)
    levels = img.astype(np.float64) * 255.0
    return (np.rint(levels) if as_stored else levels), colour


def _listed(names: list[str], most: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def check_methods(pairs: list[Pair], methods: dict[str, Path]) -> dict[str, list[Path]]:
    """Every method's fused file for every pair (in pair order), sizes checked against the
    sources from the image headers, before any scoring: one EvalError lists, per method, the
    pairs without a fused image, with several (``p0.png`` and ``p0.tif``) and of another size."""
    problems, files, sizes = [], {}, {}
    for method, folder in methods.items():
        label = f"method {method!r}" if len(methods) > 1 else str(folder)
        missing, wrong, found = [], [], []
        for p in pairs:
            candidates = fused_candidates(folder, p.name)
            if len(candidates) != 1:
                if candidates:
                    wrong.append(f"pair {p.name!r}: several fused images, {' and '.join(map(str, candidates))}; "
                                 f"keep one")
                else:
                    missing.append(p.name)
                continue
            ff = candidates[0]
            if p.name not in sizes:  # each source header read once, not once per method
                sizes[p.name] = image_size(p.ir)
            src, got = sizes[p.name], image_size(ff)
            if got != src:
                wrong.append(f"pair {p.name!r}: fused image {ff.name} is {got[0]}x{got[1]}, "
                             f"sources are {src[0]}x{src[1]}")
            found.append(ff)
        if missing:
            problems.append(f"{label}: no fused image (<pair>.png/.jpg/.bmp/.tif) in {folder} for "
                            f"{len(missing)} of {len(pairs)} pair(s): {_listed(missing)}")
        problems += [f"{label}: {w}" for w in wrong[:8]] + ([f"{label}: ... {len(wrong) - 8} more pairs with "
                                                             "several fused images or one of another size"]
                                                            if len(wrong) > 8 else [])
        files[method] = found
    if problems:
        raise EvalError("\n".join(problems))
    return files


class MetricWarning(UserWarning):
    """A metric that gave inf or NaN on a pair (its convention says when); named with the pair."""


def metric_table(profile: str, metrics: list[str] | None) -> dict:
    """The profile's metric functions, or the asked subset in the asked order."""
    table = PROFILES[profile]
    names = metrics or list(table)
    unknown = [m for m in names if m not in table]
    if unknown:
        raise EvalError(f"unknown metric(s) {unknown} for profile {profile!r}; choose from {list(table)}")
    return {m: table[m] for m in names}


@functools.cache
def _pool() -> ThreadPoolExecutor:
    """Threads for the metrics of one pair: their FFTs, filters and array arithmetic release the
    GIL, so two cores score a pair about 1.8x faster than one loop (docs/metrics.md, Speed)."""
    return ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="metric")


def score(table: dict, name: str, a: np.ndarray, b: np.ndarray, f: np.ndarray,
          method: str = "") -> tuple[dict, dict[str, str]]:
    """One row ``{"pair": name, metric: value, ...}``, the metrics run side by side on threads,
    and ``{metric: reason}`` of those the images are too small for (their value is None); a
    MetricWarning for each inf or NaN."""
    def run(fn) -> tuple[float | None, str | None]:
        try:
            return float(fn(a, b, f)), None
        except TooSmall as e:
            return None, str(e)

    results = dict(zip(table, _pool().map(run, table.values()), strict=True))
    row = {"pair": name, **{m: v for m, (v, _) in results.items()}}
    for m, v in row.items():
        if isinstance(v, float) and not math.isfinite(v):
            where = f"{method}, pair {name!r}" if method else f"pair {name!r}"
            warnings.warn(f"{where}: {m} = {v} (see its convention in docs/metrics.md)", MetricWarning,
                          stacklevel=2)
    return row, {m: why for m, (_, why) in results.items() if why}


#: ``{metric: [(pair name, reason), ...]}``: the pairs whose images were too small for a metric.
NotScored = dict[str, list[tuple[str, str]]]


def not_scored_lines(skipped: NotScored, pairs: int, method: str = "") -> list[str]:
    """One line per metric that some pairs were too small for: how many, which, why."""
    lines = []
    for m, where in skipped.items():
        names = ", ".join(repr(n) for n, _ in where[:3]) + (", ..." if len(where) > 3 else "")
        mean = "it has no mean" if len(where) == pairs else f"its mean is over the other {pairs - len(where)}"
        lines.append(f"{method + ': ' if method else ''}{m} not scored on {len(where)} of {pairs} pair(s) "
                     f"({names}): {where[0][1]}; {mean}")
    return lines


def evaluate_methods(pairs: list[Pair], methods: dict[str, Path], profile: str = "standard",
                     metrics: list[str] | None = None,
                     progress: bool = True) -> tuple[dict[str, list[dict]], bool, dict[str, NotScored]]:
    """Rows (one per pair, in pair order) of every method ``{name: fused folder}``, whether any
    fused image was colour, and per method the metrics some pairs were too small for (None in
    those rows). All files are located and size-checked first (:func:`check_methods`); each
    pair's sources are read once for all methods."""
    table = metric_table(profile, metrics)
    files = check_methods(pairs, methods)
    stored = profile in COLOUR_AS_STORED
    results, any_colour = {m: [] for m in methods}, False
    skipped = {m: {} for m in methods}
    what = next(iter(methods.values())).name if len(methods) == 1 else f"{len(methods)} methods"
    for i, pair in enumerate(tqdm(pairs, desc=f"scoring {what}", unit="pair", disable=None if progress else True)):
        a, _ = load_levels(pair.ir, stored)
        b, _ = load_levels(pair.vis, stored)
        if b.shape[:2] != a.shape[:2]:
            raise EvalError(f"pair {pair.name!r}: sources differ in size: {pair.ir} is {a.shape[1]}x{a.shape[0]}, "
                            f"{pair.vis} is {b.shape[1]}x{b.shape[0]}")
        for method in methods:
            f, colour = load_levels(files[method][i], stored)
            any_colour |= colour
            row, too_small = score(table, pair.name, a, b, f, method if len(methods) > 1 else "")
            results[method].append(row)
            for m, why in too_small.items():
                skipped[method].setdefault(m, []).append((pair.name, why))
    return results, any_colour, skipped


def evaluate(pairs: list[Pair], fused_dir: Path, profile: str = "standard",
             metrics: list[str] | None = None, progress: bool = True) -> tuple[list[dict], bool]:
    """One row per pair ``{"pair": name, metric: value, ...}`` and whether any fused image was
    colour (scored on Y). Every fused file is located and size-checked before scoring; a metric
    some pairs were too small for is None there, and named in one MetricWarning."""
    results, colour, skipped = evaluate_methods(pairs, {fused_dir.name: fused_dir}, profile, metrics, progress)
    for line in not_scored_lines(skipped[fused_dir.name], len(pairs)):
        warnings.warn(line, MetricWarning, stacklevel=2)
    return next(iter(results.values())), colour


def scored(rows: list[dict], metric: str) -> list[float]:
    """The values of ``metric`` on the pairs it was scored on (None: the images were too small)."""
    return [r[metric] for r in rows if r[metric] is not None]


def mean_row(rows: list[dict]) -> dict:
    """Each metric's mean over the pairs it was scored on; None where it was scored on none."""
    keys = [k for k in rows[0] if k != "pair"]
    return {"pair": "mean", **{k: float(np.mean(v)) if (v := scored(rows, k)) else None for k in keys}}


def format_value(v: float | None) -> str:
    """A score as printed in every table: four decimals; ``n/a`` when not scored (images too
    small for the metric); ``inf``, ``-inf`` or ``nan`` as such."""
    return "n/a" if v is None else f"{v:.4f}" if math.isfinite(v) else str(v)


def _cell(v: float | None) -> str:
    return f"{format_value(v):>9}"


def format_table(rows: list[dict], title: str = "", per_block: int = 7) -> str:
    """Per-pair rows, in blocks of ``per_block`` metrics (each block a table of its own, the pair
    column repeated): the 23 standard metrics fit an 80-column terminal in four blocks."""
    keys = [k for k in rows[0] if k != "pair"]
    width = max(8, *(len(str(r["pair"])) for r in rows))
    lines = [title] if title else []
    for i in range(0, len(keys), per_block):
        part = keys[i:i + per_block]
        head = f"{'pair':<{width}} " + " ".join(f"{k:>9}" for k in part)
        lines += ([""] if i else []) + [head, "-" * len(head)]
        lines += [f"{r['pair']!s:<{width}} " + " ".join(_cell(r[k]) for k in part) for r in rows]
    return "\n".join(lines)


def format_row(row: dict, title: str = "", per_line: int = 8, arrows: bool = False) -> str:
    """One row (a mean row) as lines of ``per_line`` metrics, each name (with its direction ↑/↓
    if ``arrows``) above its value: the 23 standard metrics fit an 80-column terminal in six lines."""
    keys = [k for k in row if k != "pair"]
    lines = [title] if title else []
    for i in range(0, len(keys), per_line):
        part = keys[i:i + per_line]
        names = (f"{k}{'↑' if higher_is_better(k) else '↓'}" if arrows else k for k in part)
        lines += [" ".join(f"{k:>9}" for k in names), " ".join(_cell(row[k]) for k in part)]
    return "\n".join(lines)


#: A text cell starting with one of these is a formula to a spreadsheet (OWASP, CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(v):
    """A CSV cell that no spreadsheet runs: text starting like a formula gets a leading ``'``
    (the OWASP rule); numbers are left as they are (a negative score stays a number)."""
    return "'" + v if isinstance(v, str) and v.startswith(FORMULA_START) else v


def csv_text(header: list[str], rows) -> str:
    """CSV of ``rows`` (lists of cells) under ``header``, every cell through :func:`csv_cell`."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    for row in (header, *rows):
        w.writerow([csv_cell(v) for v in row])
    return buf.getvalue()


def write_csv(rows: list[dict], path: Path) -> None:
    """One row per pair (and the mean row), atomically."""
    keys = list(rows[0])
    write_text(path, csv_text(keys, ([r[k] for k in keys] for r in rows)))


def write_json(rows: list[dict], path: Path, meta: dict) -> None:
    clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
             for r in rows]
    write_text(path, json.dumps({**meta, "rows": clean}, indent=1))
