"""Score fused images with no-reference fusion metrics whose conventions are written down.

    python run_eval.py --fused data_result/Tno_fusion --test_path data_test/Tno
    python run_eval.py --fused out/ --ir data/ir --vis data/vi --csv scores.csv --json scores.json
    python run_eval.py --fused ... --test_path ... --profile densefuse

Pairs are found as in run_infer.py and fused images matched by pair name (``<name>.png``).
Colour images (fused or visible) are scored on their luma Y (BT.601). See utils/metrics.py and
docs/metrics.md for every metric's convention.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from configs import PROFILE_NAMES
from utils.cli import DefaultsFormatter

# The metrics (SciPy, PyWavelets, torch) are imported after argparse: --help stays instant.


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Score fused infrared-visible images.",
                                formatter_class=DefaultsFormatter)
    p.add_argument("--fused", required=True, help="folder of fused images named <pair>.png")
    p.add_argument("--test_path", help="folder of source pairs (any layout run_infer.py accepts)")
    p.add_argument("--ir", help="folder of infrared sources (with --vis), matched by file name")
    p.add_argument("--vis", help="folder of visible sources (with --ir)")
    p.add_argument("--profile", choices=PROFILE_NAMES, default="standard",
                   help="standard = conventions of the MATLAB toolbox of recent IVIF papers; "
                        "densefuse = the DenseFuse paper's eight metrics as its authors computed them")
    p.add_argument("--metrics", nargs="+", help="subset of the profile's metrics (default: all)")
    p.add_argument("--csv", help="write the table (one row per pair and a mean row) as CSV")
    p.add_argument("--json", help="write the table and conventions as JSON")
    p.add_argument("--quiet", action="store_true", help="print only the mean row")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from utils.evaluation import EvalError, evaluate, format_table, mean_row, write_csv, write_json
    from utils.files import check_writable
    from utils.images import ImageReadError
    from utils.metrics import CONVENTIONS
    from utils.pairs import PairError, find_pairs, pairs_from_folders
    conventions = CONVENTIONS[args.profile]
    try:
        if args.test_path:
            _, pairs = find_pairs(args.test_path)
        elif args.ir and args.vis:
            pairs = pairs_from_folders(Path(args.ir), Path(args.vis))
        else:
            raise EvalError("give --test_path DIR, or --ir DIR and --vis DIR")
        fused = Path(args.fused)
        if not fused.is_dir():
            raise EvalError(f"{fused}: folder not found")
        for out in filter(None, (args.csv, args.json)):  # before minutes of scoring, not after
            if Path(out).is_dir():
                raise EvalError(f"{out}: is a folder; give a file name for --csv/--json")
            if problem := check_writable(Path(out).parent, probe_bytes=1):
                raise EvalError(problem)
        rows, colour = evaluate(pairs, fused, args.profile, args.metrics, progress=not args.quiet)
    except (EvalError, PairError, ImageReadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows.append(mean_row(rows))
    title = f"profile {args.profile}: {fused} ({len(rows) - 1} pairs)"
    if colour:
        title += "; colour images scored on luma Y (BT.601)"
    print(format_table(rows if not args.quiet else rows[-1:], title))
    if not args.quiet:
        print("conventions:")
        for k in rows[0]:
            if k != "pair":
                print(f"  {k:>8}: {conventions[k]}")
    if args.csv:
        write_csv(rows, Path(args.csv))
    if args.json:
        write_json(rows, Path(args.json), {"profile": args.profile, "fused": str(fused),
                                           "conventions": {k: conventions[k] for k in rows[0] if k != "pair"},
                                           "colour_scored_on_Y": colour})
    return 0


if __name__ == "__main__":
    sys.exit(main())
