"""The results tables of docs/metrics.md: mean metrics per set, model and strategy, beside (A+B)/2.

    python -m run_scripts.results_table                         # shipped weights, both profiles
    python -m run_scripts.results_table --official ../shared/weights/official/densefuse_gray_tf_ckpt.zip

Fuses every pair of each set with each strategy (add with minmax output as the paper;
mean, l1_norm and max with clip), adds the plain average (A+B)/2 (8-bit, rounded) as a baseline,
scores them with run_eval.py's profiles and prints Markdown tables (also written to --out).
With --official, the official weights (lambda 1e2, through the importer) are added for the
strategies in --official_strategies.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from configs import PROFILE_NAMES, RESULTS, SHIPPED_WEIGHTS, TEST_DATA
from utils.cli import DefaultsFormatter
from utils.files import write_text

MODES = {"add": "minmax", "mean": "clip", "l1_norm": "clip", "max": "clip"}


def average_baseline(pairs, folder: Path) -> None:
    """(A+B)/2 on gray levels (colour visible images reduced to luma), rounded to 8 bit."""
    from utils.images import load_image, save_image
    for p in pairs:
        a, b = load_image(p.ir, gray=True), load_image(p.vis, gray=True)
        save_image(folder / f"{p.name}.png", (a + b) / 2)


#: Columns per Markdown table: the standard profile's 23 metrics are split in two readable tables.
COLUMNS = 12


def markdown_tables(title: str, means: dict[str, dict], keys: list[str]) -> list[str]:
    """Lines of one table of ``means`` (method -> mean row) per :data:`COLUMNS` metrics."""
    from utils.evaluation import format_value
    lines = []
    for start in range(0, len(keys), COLUMNS):
        part = keys[start:start + COLUMNS]
        label = f" (metrics {start + 1}-{start + len(part)} of {len(keys)})" if len(keys) > COLUMNS else ""
        lines += [f"#### {title}{label}", "", "| method | " + " | ".join(part) + " |", "|---" * (len(part) + 1) + "|"]
        lines += [f"| {m} | " + " | ".join(format_value(row[k]) for k in part) + " |" for m, row in means.items()]
        lines.append("")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=DefaultsFormatter)
    ap.add_argument("--weights", default=str(SHIPPED_WEIGHTS), help="the project's weights")
    ap.add_argument("--official", help="also the official weights (TF zip/checkpoint or .model)")
    ap.add_argument("--ssim_weight", type=int, default=100, help="lambda of the official checkpoint")
    ap.add_argument("--official_strategies", nargs="+", default=["add", "l1_norm"],
                    help="strategies to run with the official weights")
    ap.add_argument("--sets", nargs="+", default=[str(TEST_DATA / "Tno"), str(TEST_DATA / "Road")])
    ap.add_argument("--strategies", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--profiles", nargs="+", default=["standard", "densefuse"], choices=PROFILE_NAMES)
    ap.add_argument("--out", default=str(RESULTS / "tables"), help="fused images and tables go here")
    args = ap.parse_args(argv)
    from utils.checkpoint import WeightsError, load_model
    from utils.evaluation import evaluate, mean_row  # SciPy: only after parsing
    from utils.fusion import FuseSettings, fuse_pairs, prepare_model
    from utils.metrics import PROFILES
    from utils.pairs import PairError, find_pairs

    out = Path(args.out)
    try:
        sets = {s: find_pairs(s)[1] for s in args.sets}
        models = {"ours": prepare_model(load_model(args.weights)[0])}
        if args.official:
            models["official"] = prepare_model(load_model(args.official, ssim_weight=args.ssim_weight)[0])
    except (PairError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.time()
    md = []
    for s, pairs in sets.items():
        set_name = Path(s).name
        methods = {}
        base = out / f"{set_name}_average"
        average_baseline(pairs, base)
        methods["(A+B)/2"] = base
        for name, model in models.items():
            for strat in args.strategies:
                if name == "official" and strat not in args.official_strategies:
                    continue
                folder = out / f"{set_name}_{name}_{strat}"
                fuse_pairs(model, pairs, folder, FuseSettings(strat, 1, MODES[strat]),
                           desc=f"{set_name} {name} {strat}")
                methods[f"{name} {strat}/{MODES[strat]}"] = folder
        for prof in args.profiles:
            means = {label: mean_row(evaluate(pairs, folder, prof)[0]) for label, folder in methods.items()}
            tables = markdown_tables(f"{set_name} ({len(pairs)} pairs), profile `{prof}`", means, list(PROFILES[prof]))
            md += tables
            print("\n".join(tables), flush=True)
    write_text(out / "tables.md", "\n".join(md))
    print(f"written {out / 'tables.md'} in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
