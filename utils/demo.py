"""The web demo's work (run_scripts/demo.py draws the page): one fusion as run_infer.py does it.

:func:`fuse_request` turns the page's choices into run_infer.py's own arguments and runs its job
in this process (the same checks, pipeline, record and 8-bit rounding, so the PNG is byte for byte
the command line's), into a fresh folder under the demo's temporary root; the network is loaded
once per weights file (``utils.weights`` keeps it). It imports no web library, so the tests can
drive it directly; every problem is a :class:`DemoError` with the message the command line would
print, never a traceback.
"""
from __future__ import annotations

import json
import logging
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from configs import OUTPUT_MODES, SHIPPED_BY_LAMBDA, SHIPPED_RGB_BY_LAMBDA, STRATEGY_NAMES, TEST_DATA

#: The weights the page offers: label -> run_infer.py flags.
WEIGHTS = {**{f"gray, λ = {lam}" + (" (default)" if lam == 100 else ""): ["--ssim_weight", str(lam)]
              for lam in sorted(SHIPPED_BY_LAMBDA)},
           **{f"RGB, λ = {lam}": ["--rgb", "--ssim_weight", str(lam)] for lam in sorted(SHIPPED_RGB_BY_LAMBDA)}}
DEFAULT_WEIGHTS = "gray, λ = 100 (default)"
STRATEGIES, MODES = STRATEGY_NAMES, OUTPUT_MODES


class DemoError(ValueError):
    """What went wrong, for the page: the command line's own messages, joined."""


def bundled_pairs(per_set: int = 4) -> dict[str, list[Path]]:
    """A few pairs of each bundled set (data_test/: TNO, RoadScene, Lytro), label -> sources."""
    from utils.pairs import find_pairs
    out = {}
    for folder in sorted(p for p in TEST_DATA.iterdir() if p.is_dir()):
        try:
            _, pairs = find_pairs(folder)
        except ValueError:
            continue
        for pair in pairs[:per_set]:
            out[f"{folder.name} {pair.name}"] = list(pair.sources)
    return out


@dataclass
class Result:
    """One fusion's files (in its own temporary folder) and what the page shows of them."""
    fused: Path
    record: Path
    sources: list[Path]
    metrics: list[tuple[str, str, str]]  # (name, value, ↑ or ↓)
    settings: dict


def arguments(sources: list[Path], out: Path, weights: str, strategy: str, l1_radius: int, output_mode: str,
              tile: int, align: bool = False, resize: bool = False) -> list[str]:
    """run_infer.py's arguments for the page's choices."""
    if weights not in WEIGHTS:
        raise DemoError(f"unknown weights {weights!r}; choose from {', '.join(WEIGHTS)}")
    argv = ["--inputs", *map(str, sources), "--output_path", str(out), *WEIGHTS[weights], "--strategy", strategy,
            "--l1_radius", str(int(l1_radius)), "--output_mode", output_mode, "--tile", str(int(tile))]
    return argv + (["--align"] if align else []) + (["--resize"] if resize else [])


@contextmanager
def captured_log():
    """The lines the project's logger writes from this thread (the page's request), kept."""
    from utils.log import log
    lines: list[str] = []
    me = threading.get_ident()

    class Keep(logging.Handler):
        def emit(self, record):
            if record.thread == me and record.levelno >= logging.WARNING:
                lines.append(record.getMessage())
    handler = Keep()
    log.addHandler(handler)
    try:
        yield lines
    finally:
        log.removeHandler(handler)


def fuse_request(sources: list[Path], root: Path, weights: str = DEFAULT_WEIGHTS, strategy: str = "add",
                 l1_radius: int = 1, output_mode: str = "minmax", tile: int = 0, align: bool = False,
                 resize: bool = False, metrics: list[str] | None = None) -> Result:
    """Fuse ``sources`` (2+ image files, in order) as ``run_infer.py --inputs`` would, into a new
    folder under ``root``; score the result with the standard profile (or ``metrics`` of it)."""
    import run_infer
    from utils.errors import JobError
    from utils.jobs import FuseJob
    from utils.records import SETTINGS_FILE, RecordError
    if len(sources) < 2:
        raise DemoError(f"upload two or more images (infrared first, then visible); got {len(sources)}")
    out = Path(tempfile.mkdtemp(prefix="fused-", dir=root))
    argv = arguments(sources, out, weights, strategy, l1_radius, output_mode, tile, align, resize)
    with captured_log() as problems:
        try:
            run_infer.run(FuseJob.from_args(run_infer.build_parser().parse_args(argv)))
        except (JobError, RecordError) as e:
            text = "\n".join(dict.fromkeys([*problems, str(e)]))  # the page has no --skip_bad
            raise DemoError(text.replace(" or pass --skip_bad", "")) from None
    fused = next(out.rglob("*.png"))
    reg = fused.parent / "registered"
    shown = sorted(reg.glob("*/*.png")) if reg.is_dir() else list(sources)
    record = fused.parent / SETTINGS_FILE
    rows = score(shown, fused, metrics) if len(sources) == 2 else []
    return Result(fused, record, shown, rows, json.loads(record.read_text()))


def score(sources: list[Path], fused: Path, metrics: list[str] | None) -> list[tuple[str, str, str]]:
    """The standard profile's metrics (or the chosen ones) of one fused pair: (name, value, ↑/↓)."""
    import warnings

    from utils.evaluation import EvalError, evaluate, format_value
    from utils.metrics import higher_is_better
    from utils.pairs import Pair
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a metric the pair is too small for shows as n/a
            rows, _ = evaluate([Pair(fused.stem, *sources)], fused.parent, "standard", metrics or None, progress=False)
    except EvalError as e:
        raise DemoError(f"the fused image is written, but not scored: {e}") from None
    return [(k, format_value(v), "↑" if higher_is_better(k) else "↓") for k, v in rows[0].items() if k != "pair"]
