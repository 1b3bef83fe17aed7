"""Fuse infrared and visible images with a trained DenseFuse (paper Fig. 3).

    python run_infer.py                                  # every set under data_test/
    python run_infer.py --test_path data_test/Road       # one set (or a folder of sets)
    python run_infer.py --ir a.png --vis b.png           # one pair -> data_result/pair/

Outputs: ``<output_path>/<Set>_fusion/<pair name>.png`` (8-bit; colour if the visible image is),
and beside them ``fusion_settings.json``, the settings that made them. Every input is read and
checked before anything is fused or written; results made with other settings are never
replaced unless ``--overwrite`` says so.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from configs import SSIM_WEIGHTS, FuseConfig
from models.fusion import STRATEGIES
from utils.checkpoint import WeightsError, load_model
from utils.cli import DefaultsFormatter
from utils.devices import keep_freed_memory, resolve_device
from utils.evaluation import evaluate, format_table, mean_row
from utils.files import atomic_write, check_writable
from utils.fusion import OUTPUT_MODES, fuse_pairs, prepare_model
from utils.images import ImageReadError, load_image
from utils.pairs import FLAT_PATTERN, Pair, PairError, find_pairs, find_sets


class InferError(RuntimeError):
    """Reported as ``error: ...`` with exit code 2."""


#: Written into every output folder: what decided the pixels of the fused images in it.
SETTINGS_FILE = "fusion_settings.json"

#: Smallest ``--tile``: every tile recomputes a halo of 8+ pixels on each side, so a t-pixel
#: tile costs ((t + 16) / t)^2 times the work: 2.3x at 32, 40x at 3 (a typo that looks like a hang).
MIN_TILE = 32


def build_parser() -> argparse.ArgumentParser:
    d = FuseConfig()
    p = argparse.ArgumentParser(
        description="Fuse infrared and visible image pairs with DenseFuse.",
        formatter_class=DefaultsFormatter)
    p.add_argument("--test_path", default=d.test_path,
                   help="a folder of pairs (layouts: ir/+vi/, INF_images/+VIS_images/, IR<k>+VIS<k>) "
                        "or a folder of such folders")
    p.add_argument("--ir", help="one infrared image (with --vis); written to <output_path>/pair/")
    p.add_argument("--vis", help="one visible image (with --ir)")
    p.add_argument("--output_path", default=d.output_path,
                   help="results folder; sets go to <output_path>/<Set>_fusion/")
    p.add_argument("--weights", default=d.weights,
                   help="weights: a shipped file (weights/ holds lambda = 1, 10, 100 and 1000; the "
                        "default is 100), a run_train.py checkpoint, or the official "
                        "DenseFuse release (TF checkpoint/zip or the PyTorch .model)")
    p.add_argument("--ssim_weight", type=int, choices=SSIM_WEIGHTS, default=None,
                   help="with an official TF release holding several lambdas: which one "
                        "(when omitted: 100, the official default)")
    p.add_argument("--strategy", choices=sorted(STRATEGIES), default=d.strategy,
                   help="feature fusion: add = paper's sum, mean = half the sum, l1_norm = paper's "
                        "L1-norm weighting, max = element-wise maximum")
    p.add_argument("--l1_radius", type=int, default=d.l1_radius,
                   help="l1_norm block-average radius r (window 2r+1); 0 = official code")
    p.add_argument("--output_mode", choices=OUTPUT_MODES, default=d.output_mode,
                   help="minmax = stretch each output to 0..255 as the official release did; "
                        "clip = keep intensities, clip to 0..255")
    p.add_argument("--device", default=d.device, help="auto (cuda if available), cpu, cuda")
    p.add_argument("--tile", type=int, default=d.tile,
                   help=f"tile size (exact, with a halo), at least {MIN_TILE}; 0 = automatic (192 on CPU, "
                        "for speed; on GPU only above 1600x1600 pixels), -1 = never")
    p.add_argument("--eval", action="store_true",
                   help="score each fused set with run_eval.py's standard profile; print the mean row")
    p.add_argument("--skip_bad", action="store_true",
                   help="fuse the good pairs and list the bad ones instead of stopping")
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace fused images made with other settings (recorded in each output folder's "
                        f"{SETTINGS_FILE}); without it such a folder is an error and nothing is written")
    return p


def single_pair(ir: Path, vis: Path) -> Pair:
    """Name a lone pair after what its two file names share (``IR7``/``VIS7`` -> ``7``)."""
    m_ir, m_vis = FLAT_PATTERN.match(ir.stem), FLAT_PATTERN.match(vis.stem)
    if m_ir and m_vis and m_ir.group(2) == m_vis.group(2):
        return Pair(m_ir.group(2), ir, vis)
    return Pair(ir.stem if ir.stem == vis.stem else f"{ir.stem}_{vis.stem}", ir, vis)


def collect_jobs(args) -> list[tuple[str, list[Pair], Path]]:
    """``(set name, pairs, output folder)`` for everything to fuse; raises on any layout error."""
    out_root = Path(args.output_path)
    if args.ir or args.vis:
        if not (args.ir and args.vis):
            raise InferError("--ir and --vis must be given together")
        for f in (args.ir, args.vis):
            if not Path(f).is_file():
                raise InferError(f"{f}: file not found")
        return [("pair", [single_pair(Path(args.ir), Path(args.vis))], out_root / "pair")]
    root = Path(args.test_path)
    if not root.is_dir():
        raise InferError(f"{root}: folder not found (pass --test_path DIR or --ir FILE --vis FILE)")
    try:
        layout, pairs = find_pairs(root)
        print(f"{root}: layout {layout}, {len(pairs)} pairs")
        return [(root.name, pairs, out_root / f"{root.name}_fusion")]
    except PairError as e:
        if "no IR/visible pairs found" not in str(e):
            raise InferError(str(e)) from None
    try:
        sets = find_sets(root)
    except PairError as e:
        raise InferError(str(e)) from None
    if not sets:
        raise InferError(f"{root}: no IR/visible pairs found in it or its sub-folders")
    jobs = []
    for s, layout, pairs in sets:
        print(f"{s}: layout {layout}, {len(pairs)} pairs")
        jobs.append((s.name, pairs, out_root / f"{s.name}_fusion"))
    return jobs


def check_pairs(pairs: list[Pair], out_dir: Path) -> tuple[list[Pair], list[str]]:
    """``(good pairs, problems)``: every file is decoded once so that a bad pair 40 is reported
    before pairs 1-39 are fused; problems are unreadable files, size mismatches and outputs
    that would overwrite an input."""
    good, problems = [], []
    for pair in tqdm(pairs, desc="checking inputs", leave=False, disable=len(pairs) < 20):
        found = []
        try:
            ir, vis = load_image(pair.ir), load_image(pair.vis)
            if ir.shape[:2] != vis.shape[:2]:
                found.append(f"{pair.ir} ({ir.shape[1]}x{ir.shape[0]}) and {pair.vis} "
                             f"({vis.shape[1]}x{vis.shape[0]}): sizes differ")
        except ImageReadError as e:
            found.append(str(e))
        target = output_file(out_dir, pair).resolve()
        if target in (pair.ir.resolve(), pair.vis.resolve()):
            found.append(f"{target}: output would overwrite an input; choose another --output_path")
        problems += found
        if not found:
            good.append(pair)
    return good, problems


def output_file(out_dir: Path, pair: Pair) -> Path:
    path = out_dir / f"{pair.name}.png"
    if path.resolve().parent != out_dir.resolve():
        raise InferError(f"pair name {pair.name!r} would write outside {out_dir}")
    return path


def fusion_settings(args) -> dict:
    """What decides the fused pixels (tile size and device do not: tiling is exact)."""
    return {"weights": Path(args.weights).name, "ssim_weight": args.ssim_weight, "strategy": args.strategy,
            "l1_radius": args.l1_radius if args.strategy == "l1_norm" else None,
            "output_mode": args.output_mode}


def replaced_results(pairs: list[Pair], out_dir: Path, settings: dict) -> str | None:
    """Why fusing ``pairs`` into ``out_dir`` with ``settings`` would replace or mix in with
    results made otherwise; None if it would not (a new folder, or the same settings again)."""
    recorded = out_dir / SETTINGS_FILE
    if recorded.is_file():
        try:
            old = json.loads(recorded.read_text())
        except (OSError, ValueError):
            old = None
        if old == settings:
            return None
        made = (", ".join(f"{k} {v}" for k, v in old.items() if v is not None) if isinstance(old, dict)
                else f"settings it cannot read ({recorded})")
        return f"{out_dir} holds results made with {made}"
    earlier = [p for p in pairs if output_file(out_dir, p).exists()]
    if earlier:
        return f"{out_dir} holds {len(earlier)} fused image(s) of an earlier run ({earlier[0].name}.png ...)"
    return None


def run(args) -> int:
    if args.l1_radius < 0:
        raise InferError("--l1_radius must be >= 0")
    if args.tile not in (0, -1) and args.tile < MIN_TILE:
        raise InferError(f"--tile {args.tile}: use 0 (automatic), -1 (never) or a size of at least {MIN_TILE} "
                         f"(each tile recomputes an 8-pixel halo around it)")
    try:  # before anything is checked or created
        device = resolve_device(args.device)
    except ValueError as e:
        raise InferError(str(e)) from None
    jobs = collect_jobs(args)
    bad: list[str] = []
    checked = []
    for name, pairs, out_dir in jobs:
        good, problems = check_pairs(pairs, out_dir)
        bad += problems
        checked.append((name, good, out_dir))
    if bad:
        print(f"{len(bad)} problem(s) with the inputs:", file=sys.stderr)
        for b in bad:
            print(f"  {b}", file=sys.stderr)
        if not args.skip_bad:
            raise InferError("nothing was fused; fix the files above or pass --skip_bad")

    weights = Path(args.weights)
    try:
        model, info = load_model(weights, args.ssim_weight)
    except WeightsError as e:
        raise InferError(str(e)) from None
    settings = fusion_settings(args)
    if not args.overwrite:
        clashes = [c for _, pairs, out_dir in checked if pairs and (c := replaced_results(pairs, out_dir, settings))]
        if clashes:
            raise InferError("\n  ".join([*clashes, "pass --output_path DIR for a new folder, or --overwrite to "
                                                    "replace them; nothing was written"]))
    for _, pairs, out_dir in checked:
        if pairs and (problem := check_writable(out_dir)):
            raise InferError(problem)
    keep_freed_memory()  # ~30 % faster CPU fusion (utils/devices.py)
    model = prepare_model(model, device)
    print(f"weights: {weights} ({info['kind']}); strategy {args.strategy}, output {args.output_mode}, "
          f"device {device}")
    for name, pairs, out_dir in checked:
        if not pairs:
            continue
        # Before the images, so that an interrupted run's files are labelled too.
        atomic_write(out_dir / SETTINGS_FILE, lambda fh: fh.write(json.dumps(settings, indent=1).encode()))
        t0 = time.perf_counter()
        fuse_pairs(model, pairs, out_dir, args.strategy, args.l1_radius, args.output_mode, device,
                   args.tile, desc=name)
        print(f"{name}: {len(pairs)} pairs fused in {time.perf_counter() - t0:.1f} s -> {out_dir}")
        if args.eval and pairs:
            rows, colour = evaluate(pairs, out_dir, "standard")
            note = "; colour scored on luma Y" if colour else ""
            print(format_table([mean_row(rows)], f"{name}: standard-profile metrics, mean of "
                                                 f"{len(rows)} pairs{note}"))
    return 1 if bad else 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except InferError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
