"""Score fused images with no-reference fusion metrics whose conventions are written down.

    python run_eval.py --fused data_result/Tno_fusion --test_path data_test/Tno
    python run_eval.py --fused out/ --ir data/ir --vis data/vi --csv scores.csv --json scores.json
    python run_eval.py --fused ... --test_path ... --profile densefuse
    python run_eval.py --fused out/ours out/theirs --names Ours Theirs --test_path data_test/Tno \
        --std --markdown table.md --latex table.tex
    python run_eval.py --sequence data_result/video/ir_vis.mp4 --every 10    # a fused video

Several --fused folders score several methods on the same pairs and print one comparison table
(mean per method and metric, the best marked, the direction of each metric stated); --csv and
--json then hold every method's per-pair rows too.

Pairs are found as in run_infer.py and fused images matched by pair name (``<name>.png``).
Colour images (fused or visible) are scored on their luma Y (BT.601), except by the vifb profile,
which scores them per channel as VIFB's MATLAB code does. See utils/metrics/ and
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
    p.add_argument("--fused", nargs="+", metavar="DIR",
                   help="folder(s) of fused images named <pair>.png; several = several methods compared")
    p.add_argument("--sequence", metavar="FUSED",
                   help="instead of --fused: a fused video (or frames folder) from run_infer.py --videos/--frames; "
                        "its sources, pairing and registration come from the record beside it (<name>.json); the "
                        "mean of the per-frame metrics and the flicker figure are printed (docs/video.md)")
    p.add_argument("--inputs", nargs="+", metavar="SOURCE",
                   help="with --sequence: its source videos or frame folders, paired one to one (a sequence "
                        "fused elsewhere, without our record)")
    p.add_argument("--every", type=int, default=1, metavar="N",
                   help="with --sequence: score every N-th frame (the flicker figure uses them all)")
    p.add_argument("--names", nargs="+", metavar="NAME",
                   help="one name per --fused folder for the table (default: the folder names)")
    p.add_argument("--test_path", help="folder of source pairs (any layout run_infer.py accepts)")
    p.add_argument("--ir", help="folder of infrared sources (with --vis), matched by file name")
    p.add_argument("--vis", help="folder of visible sources (with --ir)")
    p.add_argument("--profile", choices=PROFILE_NAMES, default="standard",
                   help="standard = every metric the field reports, published definitions (docs/metrics.md); "
                        "densefuse = the DenseFuse paper's eight metrics as its authors computed them; "
                        "vifb = VIFB's 13 metrics exactly as its MATLAB code computes them")
    p.add_argument("--metrics", nargs="+", help="subset of the profile's metrics, in this order (default: all)")
    p.add_argument("--std", action="store_true", help="show mean ± standard deviation over the pairs")
    p.add_argument("--csv", help="write per-pair rows and mean rows as CSV (with a method column for several)")
    p.add_argument("--json", help="write rows, means, conventions (and the best per metric) as JSON")
    p.add_argument("--markdown", metavar="FILE", help="write the comparison table as Markdown, best in bold")
    p.add_argument("--latex", metavar="FILE",
                   help="write the comparison table as a LaTeX tabular with booktabs rules (\\usepackage{booktabs})")
    p.add_argument("--precision", type=int, default=4, metavar="DIGITS",
                   help="significant digits of each metric column in --markdown/--latex (its largest mean: "
                        "0.4497, 6.975, 2217); the best is marked as printed")
    p.add_argument("--table_rows", choices=("auto", "methods", "metrics"), default="auto",
                   help="--markdown/--latex orientation: methods or metrics as rows; auto = metrics as rows "
                        "when there are more than 8 of them (a wide tabular does not fit a page)")
    p.add_argument("--quiet", action="store_true", help="print only the mean row (or the comparison table)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing --csv/--json/--markdown/--latex files (without it an existing file is "
                        "an error before any scoring); an input (source or fused image) is never replaced")
    return p


def sources_and_methods(args):
    """The source pairs and ``{method name: fused folder}``, with every check that needs no scoring."""
    from utils.evaluation import EvalError
    from utils.pairs import find_pairs, pairs_from_folders
    if args.test_path:
        _, pairs = find_pairs(args.test_path)
    elif args.ir and args.vis:
        pairs = pairs_from_folders(Path(args.ir), Path(args.vis))
    else:
        raise EvalError("give --test_path DIR, or --ir DIR and --vis DIR")
    folders = [Path(f) for f in args.fused]
    for folder in folders:
        if not folder.is_dir():
            raise EvalError(f"{folder}: folder not found")
    names = args.names or [f.name for f in folders]
    if len(names) != len(folders):
        raise EvalError(f"--names gives {len(names)} name(s) for {len(folders)} --fused folder(s)")
    if len(set(names)) != len(names):
        raise EvalError(f"method names {names} repeat; give distinct ones with --names")
    for folder in folders:
        check_registered(folder, pairs)
    check_outputs(args, pairs, folders)  # before minutes of scoring
    return pairs, dict(zip(names, folders, strict=True))


def check_registered(folder: Path, pairs) -> None:
    """Results of --align/--transform/--resize are in the reference's frame (cropped to the
    overlap): scored against their unregistered sources they would compare misregistered pixels.
    Their folder holds the registered sources (``registered/``); anything else is refused."""
    from utils.evaluation import EvalError
    from utils.files import resolved
    from utils.records import read_record
    record = read_record(folder)
    if not (isinstance(record, dict) and record.get("registration")):
        return
    registered = resolved(folder / "registered")
    if not all(registered in resolved(f).parents for p in pairs for f in p.sources):
        raise EvalError(f"{folder} holds registered results (fusion_settings.json); score them against the "
                        f"registered sources beside them: --test_path {folder / 'registered'}")


def check_outputs(args, pairs, folders: list[Path]) -> None:
    """The report files may be written: none is a folder, an input (a source or any file in a
    fused folder, through links too) or another flag's file; an existing one needs --overwrite."""
    from utils.evaluation import EvalError
    from utils.files import check_writable, resolved, same_file
    outputs = [(flag, Path(out)) for flag in ("csv", "json", "markdown", "latex") if (out := getattr(args, flag))]
    inputs = [f for p in pairs for f in p.sources] + [f for d in folders for f in d.iterdir() if f.is_file()]
    taken: dict[Path, str] = {}
    for flag, out in outputs:
        if out.is_dir():
            raise EvalError(f"{out}: is a folder; give a file name for --csv/--json/--markdown/--latex")
        if hit := next((f for f in inputs if same_file(out, f)), None):
            raise EvalError(f"--{flag} {out}: is an input ({hit}); give another file name")
        if (other := taken.setdefault(resolved(out), flag)) != flag:
            raise EvalError(f"--{flag} and --{other} both write {out}; give two file names")
        if out.exists() and not args.overwrite:
            raise EvalError(f"--{flag} {out}: exists; pass --overwrite to replace it, or give another file name")
        if problem := check_writable(out.parent, probe_bytes=1):
            raise EvalError(problem)


def score(args, pairs, methods, ctx) -> tuple[dict[str, list[dict]], bool, dict, str | None]:
    """Every method's rows (in pair order), whether any image was colour, the metrics some pairs
    were too small for, or the first problem met: under torchrun each rank scores its share of
    the pairs and all ranks get every row."""
    from utils import distributed as D
    from utils.evaluation import EvalError, check_methods, evaluate_methods
    from utils.images import ImageReadError
    check_methods(pairs, methods)  # every rank: a missing file stops all before any scoring
    try:
        mine = (*evaluate_methods(D.shard(pairs, ctx), methods, args.profile, args.metrics,
                                  progress=not args.quiet and ctx.main), None)
    except (EvalError, ImageReadError, ValueError) as e:
        mine = ({}, False, {}, str(e))
    parts = D.gather(mine, ctx)
    problems = [p[3] for p in parts if p[3]]
    if problems:
        return {}, False, {}, problems[0]
    results = {m: D.unshard([p[0][m] for p in parts], len(pairs)) for m in methods}
    skipped = {m: {} for m in methods}
    for part in parts:
        for m, metrics in part[2].items():
            for metric, where in metrics.items():
                skipped[m].setdefault(metric, []).extend(where)
    return results, any(p[1] for p in parts), skipped, None


def _title(args, what: str, pairs: int, colour: bool) -> str:
    title = f"profile {args.profile}: {what} ({pairs} pairs)"
    if colour:
        title += ("; colour images scored per channel, as VIFB" if args.profile == "vifb"
                  else "; colour images scored on luma Y (BT.601)")
    return title


def print_conventions(metrics: list[str], conventions: dict[str, str]) -> None:
    """Each metric's convention, wrapped to 100 columns under its name."""
    import textwrap

    from utils.log import log
    log.info("conventions:")
    for k in metrics:
        log.info(textwrap.fill(conventions[k], 100, initial_indent=f"  {k:>8}: ", subsequent_indent=" " * 12))


def report_one(args, rows: list[dict], colour: bool, fused: Path) -> None:
    """One method: the per-pair table and its mean row, as before comparisons existed."""
    from utils.evaluation import format_table, mean_row, write_csv, write_json
    from utils.metrics import CONVENTIONS
    conventions = CONVENTIONS[args.profile]
    rows = [*rows, mean_row(rows)]
    from utils.log import log
    log.info(format_table(rows if not args.quiet else rows[-1:], _title(args, str(fused), len(rows) - 1, colour)))
    if not args.quiet:
        print_conventions([k for k in rows[0] if k != "pair"], conventions)
    if args.csv:
        write_csv(rows, Path(args.csv))
    if args.json:
        write_json(rows, Path(args.json), {"profile": args.profile, "fused": str(fused),
                                           "conventions": {k: conventions[k] for k in rows[0] if k != "pair"},
                                           "colour_scored_on_Y": colour and args.profile != "vifb"})


def report(args, results: dict[str, list[dict]], colour: bool, methods: dict[str, Path]) -> None:
    """Print the table(s) and write the report files (each atomically: a failure keeps the old file)."""
    from utils import comparison as C
    from utils.files import write_text
    from utils.metrics import CONVENTIONS
    summary = C.summarise(results)
    if len(methods) == 1:
        report_one(args, results[summary.methods[0]], colour, next(iter(methods.values())))
    else:
        from utils.log import log
        log.info(C.text_table(summary, args.std, _title(args, f"{len(methods)} methods", summary.pairs, colour)))
        if not args.quiet:
            print_conventions(summary.metrics, CONVENTIONS[args.profile])
        meta = {"profile": args.profile, "fused": {m: str(f) for m, f in methods.items()},
                "conventions": {k: CONVENTIONS[args.profile][k] for k in summary.metrics}}
        if args.csv:
            C.write_comparison_csv(results, summary, Path(args.csv))
        if args.json:
            C.write_comparison_json(results, summary, Path(args.json), meta)
    if args.markdown:
        write_text(Path(args.markdown), C.markdown_table(summary, args.std, args.precision, args.table_rows))
    if args.latex:
        write_text(Path(args.latex), C.latex_table(summary, args.std, args.precision, args.table_rows))


def sequence_main(args) -> int:
    """--sequence: the per-frame rows (to --csv/--json), their mean row and the flicker figure."""
    from utils.evaluation import EvalError
    from utils.log import log
    from utils.sequence_eval import evaluate_sequence, report_sequence
    try:
        if args.every < 1:
            raise EvalError(f"--every must be at least 1, got {args.every}")
        for flag in ("csv", "json"):
            if (out := getattr(args, flag)) and Path(out).exists() and not args.overwrite:
                raise EvalError(f"--{flag} {out}: already there; pass --overwrite to replace it")
        rows, colour, flick = evaluate_sequence(Path(args.sequence), args.inputs, args.profile, args.metrics,
                                                args.every, progress=not args.quiet)
        report_sequence(rows, colour, flick, Path(args.sequence), args.profile, args.every, args.csv, args.json)
    except (EvalError, ValueError) as e:
        log.error(str(e))
        return 2
    except OSError as e:
        log.error(f"cannot write {e.filename or 'a report file'}: {e.strerror or e}")
        return 2
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.sequence or args.inputs or args.every != 1:
        if not args.sequence or args.fused:
            build_parser().error("--inputs and --every go with --sequence FUSED, which replaces --fused")
        return sequence_main(args)
    if not args.fused:
        build_parser().error("give --fused DIR [DIR ...] (fused images) or --sequence FUSED (a fused video)")
    import torch

    from utils import distributed as D
    from utils.evaluation import EvalError
    from utils.images import ImageReadError
    from utils.log import log
    from utils.pairs import PairError
    ctx = D.SINGLE
    try:
        pairs, methods = sources_and_methods(args)
        ctx, _ = D.start(torch.device("cpu"))
        results, colour, skipped, problem = score(args, pairs, methods, ctx)
        if problem:
            raise EvalError(problem)
    except (EvalError, PairError, ImageReadError, ValueError) as e:
        log.error(str(e))  # under torchrun every rank has the same error; rank 0 reports it
        return 2
    finally:
        D.stop(ctx)
    if ctx.main:
        from utils.evaluation import not_scored_lines
        for m, metrics in skipped.items():
            for line in not_scored_lines(metrics, len(pairs), m if len(methods) > 1 else ""):
                log.warning(line)
        try:
            report(args, results, colour, methods)
        except OSError as e:  # a full disk or a folder made read-only meanwhile: earlier files are whole
            log.error(f"cannot write {e.filename or 'a report file'}: {e.strerror or e}; an older file of "
                      f"that name is kept")
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
