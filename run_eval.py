"""Score fused images with no-reference fusion metrics whose conventions are written down.

    python run_eval.py --fused data_result/Tno_fusion --test_path data_test/Tno
    python run_eval.py --fused out/ --ir data/ir --vis data/vi --csv scores.csv --json scores.json
    python run_eval.py --fused ... --test_path ... --profile densefuse

Pairs are found as in run_infer.py and fused images matched by pair name (``<name>.png``).
Colour images (fused or visible) are scored on their luma Y (BT.601). See utils/metrics.py and
docs/metrics.md for every metric's convention. ``torchrun --nproc_per_node N run_eval.py ...``
shares the scoring among N processes; rank 0 prints and writes the one table.
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
                                epilog="Several processes: torchrun --nproc_per_node N run_eval.py ... shares the "
                                       "scoring; rank 0 writes the one table. See docs/distributed.md.",
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


def sources_and_folder(args):
    """The source pairs and the fused folder, with every check that needs no scoring."""
    from utils.evaluation import EvalError
    from utils.files import check_writable
    from utils.pairs import find_pairs, pairs_from_folders
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
    return pairs, fused


def score(args, pairs, fused, ctx) -> tuple[list[dict], bool, str | None]:
    """Every pair's row (in pair order) and whether any image was colour, or the first problem
    met: under torchrun each rank scores its share and all ranks get the whole table."""
    from utils import distributed as D
    from utils.evaluation import EvalError, evaluate, locate
    from utils.images import ImageReadError
    locate(pairs, fused)  # every rank: a missing file stops all before any scoring
    try:
        rows, colour = evaluate(D.shard(pairs, ctx), fused, args.profile, args.metrics,
                                progress=not args.quiet and ctx.main)
        mine = (rows, colour, None)
    except (EvalError, ImageReadError, ValueError) as e:
        mine = ([], False, str(e))
    parts = D.gather(mine, ctx)
    problems = [p[2] for p in parts if p[2]]
    if problems:
        return [], False, problems[0]
    return D.unshard([p[0] for p in parts], len(pairs)), any(p[1] for p in parts), None


def report(args, rows: list[dict], colour: bool, fused: Path) -> None:
    from utils.evaluation import format_table, mean_row, write_csv, write_json
    from utils.metrics import CONVENTIONS
    conventions = CONVENTIONS[args.profile]
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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from utils import distributed as D
    from utils.evaluation import EvalError
    from utils.images import ImageReadError
    from utils.pairs import PairError
    D.quiet_unless_main()
    ctx = D.SINGLE
    try:
        pairs, fused = sources_and_folder(args)
        ctx, _ = D.start(torch.device("cpu"))
        rows, colour, problem = score(args, pairs, fused, ctx)
        if problem:
            raise EvalError(problem)
    except (EvalError, PairError, ImageReadError, ValueError) as e:
        if D.main_process():  # under torchrun every rank has the same error; one reports it
            print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        D.stop(ctx)
    if ctx.main:
        report(args, rows, colour, fused)
    return 0


if __name__ == "__main__":
    sys.exit(main())
