"""Fuse infrared and visible images with a trained DenseFuse (paper Fig. 3).

    python run_infer.py                                  # every set under data_test/
    python run_infer.py --test_path data_test/Road       # one set (or a folder of sets)
    python run_infer.py --ir a.png --vis b.png           # one pair -> data_result/pair/
    torchrun --nproc_per_node 4 run_infer.py --test_path /data/LLVIP   # pairs shared by 4 GPUs

Outputs: ``<output_path>/<Set>_fusion/<pair name>.png`` (8-bit; colour if the visible image is),
and beside them ``fusion_settings.json``, the settings that made them. Every input is read and
checked before anything is fused or written; results made with other settings are never
replaced unless ``--overwrite`` says so. Under torchrun every process checks every input (so
all stop on the same report), rank 0 writes the records and prints, and each fuses its share.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from configs import OUTPUT_MODES, SSIM_WEIGHTS, STRATEGY_NAMES, FuseConfig, bundled_note
from utils.cli import DefaultsFormatter
from utils.records import SETTINGS_FILE

# Everything else is imported where it is used, after argparse: --help and a bad flag cost no
# torch import, and SciPy (for --eval only) is never imported by a plain fusion.


class InferError(RuntimeError):
    """Reported as ``error: ...`` with exit code 2."""


#: What fusion writes into an output folder (its killed writes' temporary files are removed).
FUSION_FILES = re.compile(r".+\.png|" + re.escape(SETTINGS_FILE))


#: Smallest ``--tile``: every tile recomputes a halo of 8+ pixels on each side, so a t-pixel
#: tile costs ((t + 16) / t)^2 times the work: 2.3x at 32, 40x at 3 (a typo that looks like a hang).
MIN_TILE = 32


def build_parser() -> argparse.ArgumentParser:
    d = FuseConfig()
    p = argparse.ArgumentParser(
        description="Fuse infrared and visible image pairs, or any registered sets of 2+ images, with DenseFuse.",
        epilog="Several GPUs or machines: torchrun --nproc_per_node N run_infer.py ... shares the pairs "
               "among N processes (one GPU each); the files are those of one process. See docs/distributed.md.",
        formatter_class=DefaultsFormatter)
    p.add_argument("--test_path", default=d.test_path,
                   help="a folder of pairs (layouts: ir/+vi/, INF_images/+VIS_images/, IR<k>+VIS<k>) "
                        "or a folder of such folders")
    p.add_argument("--ir", help="one infrared image (with --vis); written to <output_path>/pair/<name>.png "
                                "(pair_<strategy>_<output_mode>/ with other settings), named after what the two "
                                "file names share (IR7 + VIS7 -> 7.png, a + b -> a_b.png)")
    p.add_argument("--vis", help="one visible image (with --ir)")
    p.add_argument("--sources", nargs="+", metavar="DIR",
                   help="two or more folders of registered images matched by file name, fused in the folders' "
                        "order (multi-exposure: under/ over/; or ir/ vi/); written to <output_path>/sources_fusion/")
    p.add_argument("--scenes", metavar="DIR",
                   help="a folder with one sub-folder per scene holding its 2+ images (multi-exposure), fused "
                        "in file-name order; written to <output_path>/<DIR name>_fusion/<scene>.png")
    p.add_argument("--inputs", nargs="+", metavar="IMAGE",
                   help="one set of two or more registered images of one size, fused in the order given "
                        "(multi-focus, multi-exposure, several cameras); --inputs A B = --ir A --vis B")
    p.add_argument("--output_path", default=d.output_path,
                   help="results folder; sets go to <output_path>/<Set>_fusion/ with the default strategy and "
                        "output mode, <Set>_fusion_<strategy>_<output_mode>/ with others")
    p.add_argument("--weights", default=None,
                   help="weights: a shipped file (weights/ holds lambda = 1, 10, 100 and 1000; default: "
                        f"{Path(d.weights).relative_to(Path(d.weights).parents[1])}, lambda = 100), a run_train.py "
                        "checkpoint, exported weights, or the official DenseFuse release (TF checkpoint/zip or the "
                        "PyTorch .model)")
    p.add_argument("--rgb", action="store_true",
                   help="without --weights: the shipped RGB (3-channel) network of --ssim_weight's lambda "
                        "(100), which fuses colour directly, instead of the gray one")
    p.add_argument("--ssim_weight", type=int, choices=SSIM_WEIGHTS, default=None,
                   help="lambda: picks the shipped weights of that lambda when --weights is not given, "
                        "or the checkpoint of that lambda in an official TF release holding several "
                        "(when omitted: 100); an error with any other weights file")
    p.add_argument("--strategy", choices=STRATEGY_NAMES, default=None,
                   help=f"feature fusion: add = paper's sum, mean = half the sum, l1_norm = paper's "
                        f"L1-norm weighting, max = element-wise maximum (default: {d.strategy}; with "
                        f"--backend onnxruntime the strategy exported into the file)")
    p.add_argument("--l1_radius", type=int, default=None,
                   help=f"l1_norm block-average radius r (window 2r+1); 0 = official code (default: "
                        f"{d.l1_radius}; with --backend onnxruntime the file's)")
    p.add_argument("--output_mode", choices=OUTPUT_MODES, default=d.output_mode,
                   help="minmax = stretch each output to 0..255 as the official release did; "
                        "clip = keep intensities, clip to 0..255")
    p.add_argument("--device", default=d.device, help="auto (cuda if available), cpu, cuda")
    p.add_argument("--tile", type=int, default=d.tile,
                   help=f"tile size (exact, with a halo), at least {MIN_TILE}; 0 = automatic (192 on CPU, "
                        "for speed; on GPU only above 1600x1600 pixels), -1 = never")
    p.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                   help="torch = this repository's PyTorch path (fastest here: docs/performance.md); onnxruntime "
                        "= run an exported fusion graph (--weights FILE.onnx from python -m run_scripts.export_onnx; "
                        "CPU; needs pip install onnx onnxruntime); results go to <Set>_fusion..._onnxruntime/")
    p.add_argument("--eval", action="store_true",
                   help="score each fused set with run_eval.py's standard profile; print the mean row")
    p.add_argument("--skip_bad", action="store_true",
                   help="fuse the good pairs and list the bad ones instead of stopping")
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace fused images made with other settings (recorded in each output folder's "
                        f"{SETTINGS_FILE}); without it such a folder is an error and nothing is written")
    return p


def single_pair(ir: Path, vis: Path, *more: Path):
    """Name a lone pair (or set) after what its file names share (``IR7``/``VIS7`` -> ``7``,
    ``a`` + ``b`` -> ``a_b``, ``a`` + ``b`` + ``c`` -> ``a_b_c``)."""
    from utils.pairs import FLAT_PATTERN, Pair
    m_ir, m_vis = FLAT_PATTERN.match(ir.stem), FLAT_PATTERN.match(vis.stem)
    if not more and m_ir and m_vis and m_ir.group(2) == m_vis.group(2):
        return Pair(m_ir.group(2), ir, vis)
    stems = [f.stem for f in (ir, vis, *more)]
    return Pair(stems[0] if len(set(stems)) == 1 else "_".join(stems), ir, vis, tuple(more))


def settings_tail(args) -> str:
    """``""`` for the default strategy and output mode, else ``_<strategy>_<mode>``, and
    ``_onnxruntime`` for that backend: every output folder is named after its settings (sets
    ``<Set>_fusion<tail>``, single pairs ``pair<tail>``), so that the README's examples, run one
    after another, each get their own folder."""
    d = FuseConfig()
    backend = "_onnxruntime" if args.backend == "onnxruntime" else ""
    if (args.strategy, args.output_mode) == (d.strategy, d.output_mode):
        return backend
    return f"_{args.strategy}_{args.output_mode}{backend}"


def folder_suffix(args) -> str:
    return "_fusion" + settings_tail(args)


def collect_jobs(args) -> tuple[list[tuple[str, list, Path]], list[str]]:
    """``(set name, pairs, output folder)`` for everything to fuse, and one line per file without
    a partner (reported with the other problems of the inputs); raises on any other layout error."""
    from utils.files import is_symlink_loop
    out_root = Path(args.output_path)
    if sum(map(bool, (args.inputs, args.ir or args.vis, args.sources, args.scenes))) > 1:
        raise InferError("give one of --inputs A B [C ...], --ir A --vis B, --sources DIR DIR [...] and --scenes DIR, "
                         "not several")
    if args.sources:
        return sources_job(args, out_root)
    if args.scenes:
        return [scenes_job(args, out_root)], []
    if args.inputs and len(args.inputs) < 2:
        raise InferError(f"--inputs needs at least 2 images, got {len(args.inputs)}: {args.inputs[0]}")
    if args.ir or args.vis:
        if not (args.ir and args.vis):
            raise InferError("--ir and --vis must be given together")
        args.inputs = [args.ir, args.vis]
    if args.inputs:
        for f in args.inputs:
            if not Path(f).is_file():
                raise InferError(f"{f}: {'a symlink loop' if is_symlink_loop(f) else 'file not found'}")
        return [("pair", [single_pair(*map(Path, args.inputs))], out_root / f"pair{settings_tail(args)}")], []
    return folder_jobs(Path(args.test_path), out_root, folder_suffix(args))


def folder_jobs(root: Path, out_root: Path, suffix: str) -> tuple[list[tuple[str, list, Path]], list[str]]:
    """--test_path: one set, or a folder of sets; files without a partner are returned as problems."""
    from utils.pairs import PairError, UnpairedFiles, find_pairs, find_sets
    if not root.is_dir():
        raise InferError(f"{root}: folder not found{bundled_note(root)}; pass --test_path DIR or --ir FILE --vis FILE")
    unpaired: list[str] = []
    try:
        try:
            sets = [(root, *find_pairs(root))]
        except PairError as e:
            if isinstance(e, UnpairedFiles) or "no IR/visible pairs found" not in str(e):
                raise
            sets = find_sets(root)  # a folder of sets
    except UnpairedFiles as e:
        sets, unpaired = e.sets, e.problems
    except PairError as e:
        raise InferError(str(e)) from None
    if not sets:
        raise InferError(f"{root}: no IR/visible pairs found in it or its sub-folders")
    jobs = []
    for s, layout, pairs in sets:
        lone = sum(line.startswith(f"{s}{os.sep}") for line in unpaired)
        print(f"{s}: layout {layout}, {len(pairs)} {plural(len(pairs), 'pair')}"
              + (f", {lone} unpaired {plural(lone, 'file')}" if lone else ""))
        jobs.append((s.name, pairs, out_root / f"{s.name}{suffix}"))
    return jobs, unpaired


def sources_job(args, out_root: Path) -> tuple[list[tuple[str, list, Path]], list[str]]:
    """--sources DIR DIR [...]: the sets matched by name across the folders, and the files
    without a partner in every folder."""
    from utils.pairs import PairError, UnpairedFiles, sets_from_folders
    if len(args.sources) < 2:
        raise InferError(f"--sources needs at least 2 folders, got {len(args.sources)}: {args.sources[0]}")
    unpaired: list[str] = []
    try:
        sets = sets_from_folders([Path(d) for d in args.sources])
    except UnpairedFiles as e:
        sets, unpaired = e.sets[0][2], e.problems
    except PairError as e:
        raise InferError(str(e)) from None
    if not sets and not unpaired:
        raise InferError(f"no images in {', '.join(args.sources)}")
    print(f"{' + '.join(args.sources)}: {len(sets)} {plural(len(sets), 'set')} of {len(args.sources)} sources")
    return [("sources", sets, out_root / f"sources{folder_suffix(args)}")], unpaired


def scenes_job(args, out_root: Path) -> tuple[str, list, Path]:
    """--scenes DIR: one set per scene folder."""
    from utils.pairs import PairError, scenes
    root = Path(args.scenes)
    try:
        sets = scenes(root)
    except PairError as e:
        raise InferError(str(e)) from None
    counts = sorted({len(s.sources) for s in sets})
    print(f"{root}: {len(sets)} {plural(len(sets), 'scene')} of {'/'.join(map(str, counts))} images")
    return root.name, sets, out_root / f"{root.name}{folder_suffix(args)}"


def plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


class Decoded:
    """Images decoded by the input check, kept for the fusion so that no input is decoded twice;
    up to ``budget`` bytes (a set of thousands of pairs is decoded again instead)."""

    def __init__(self, budget: int = 1 << 30):
        self.images, self.budget = {}, budget

    def load(self, pair):
        from utils.images import load_image
        if pair in self.images:
            return self.images.pop(pair)
        return tuple(load_image(f) for f in pair.sources)

    def keep_only(self, pairs: set) -> None:
        """Forget the images of pairs this process will not fuse (another rank's share)."""
        for pair in set(self.images) - pairs:
            self.budget += sum(im.nbytes for im in self.images.pop(pair))

    def keep(self, pair, images) -> None:
        size = sum(im.nbytes for im in images)
        if size <= self.budget:
            self.images[pair], self.budget = images, self.budget - size


def check_pairs(pairs: list, out_dir: Path, decoded: Decoded) -> tuple[list, list[str]]:
    """``(good pairs, problems)``: every file is decoded once so that a bad pair 40 is reported
    before pairs 1-39 are fused; problems are unreadable files, size mismatches and outputs
    that would overwrite an input."""
    from tqdm import tqdm

    from utils.files import resolved
    from utils.images import ImageReadError, exif_rotated
    from utils.records import output_file
    good, problems = [], []
    for pair in tqdm(pairs, desc="checking inputs", leave=False, disable=True if len(pairs) < 20 else None):
        found = []
        try:
            images = read_sources(pair)
            if len({im.shape[:2] for im in images}) > 1:
                sizes = (f"{f} ({im.shape[1]}x{im.shape[0]}{', after its EXIF rotation' if exif_rotated(f) else ''})"
                         for f, im in zip(pair.sources, images, strict=True))
                found.append(" and ".join(sizes) + ": sizes differ")
        except ImageReadError as e:
            found.append(str(e))
        target = resolved(output_file(out_dir, pair.name))
        if target in {resolved(f) for f in pair.sources}:
            found.append(f"{target}: output would overwrite an input; choose another --output_path")
        elif target.is_dir() or (target.exists() and not target.is_file()):
            found.append(f"{target}: the output's name is taken by a folder (or another non-file); "
                         f"move it or choose another --output_path")
        problems += found
        if not found:
            good.append(pair)
            decoded.keep(pair, images)
    return good, problems


def read_sources(pair) -> tuple:
    """Every source of ``pair`` decoded; what the reader warns about (a multi-frame file) is
    printed as one ``warning:`` line each, by the main process."""
    import warnings

    from utils.distributed import main_process
    from utils.images import ImageWarning, load_image
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ImageWarning)
        images = tuple(load_image(f) for f in pair.sources)
    for w in caught if main_process() else ():  # ImageWarning and anything else the decoders said
        print(f"warning: {w.message}", file=sys.stderr)
    return images


def check_inputs(args, jobs, decoded: Decoded, unpaired: list[str]) -> tuple[list[tuple[str, list, Path]], bool]:
    """Decode and check every input of every job; report all problems at once, with the files
    without a partner. Returns the jobs with their good pairs only, and whether any input was bad."""
    from utils.files import resolved
    from utils.records import output_file
    bad: list[str] = list(unpaired)
    checked = []
    every_input = run_inputs(jobs)
    for name, pairs, out_dir in jobs:
        good, problems = check_pairs(pairs, out_dir, decoded)
        for p in list(good):  # an output resolving to any input of the run (links, .., folders)
            if resolved(target := output_file(out_dir, p.name)) in every_input:
                problems.append(f"{target}: is an input of this run; choose another --output_path")
                good.remove(p)
        bad += problems
        checked.append((name, good, out_dir))
    from utils.distributed import main_process
    if bad:
        for line in [f"{len(bad)} problem(s) with the inputs:", *(f"  {b}" for b in bad)] if main_process() else ():
            print(line, file=sys.stderr)  # under torchrun every rank found the same; one reports
        if not args.skip_bad:
            raise InferError("nothing was fused; fix the files above or pass --skip_bad")
    return checked, bool(bad)


def pick_weights(args) -> Path:
    """--weights, or the shipped file of --ssim_weight's lambda (gray, or RGB with --rgb) when
    --weights is not given."""
    from configs import SHIPPED_BY_LAMBDA, SHIPPED_RGB_BY_LAMBDA
    lam = args.ssim_weight or 100
    if args.rgb and args.weights is not None:
        raise InferError("--rgb picks a shipped RGB file; with --weights the file's own network decides, "
                         "leave out --rgb")
    if args.rgb and lam not in SHIPPED_RGB_BY_LAMBDA:
        raise InferError(f"no shipped RGB network for lambda = {lam}; shipped: "
                         f"{', '.join(map(str, sorted(SHIPPED_RGB_BY_LAMBDA)))}")
    if args.weights is None:
        return (SHIPPED_RGB_BY_LAMBDA if args.rgb else SHIPPED_BY_LAMBDA)[lam][0]
    return Path(args.weights)


def load_weights(args, weights: Path):
    from utils.checkpoint import WeightsError, load_model
    try:
        model, info = load_model(weights, args.ssim_weight)
    except WeightsError as e:
        raise InferError(str(e)) from None
    if args.weights is not None and args.ssim_weight is not None and not info["kind"].startswith("official TensorFlow"):
        raise InferError(f"--ssim_weight {args.ssim_weight} was given with --weights {weights}, which holds one "
                         f"network ({info['kind']}): leave out --weights to take the shipped lambda = "
                         f"{args.ssim_weight} file, or leave out --ssim_weight")
    return model, info


def onnx_strategy(args) -> dict:
    """--backend onnxruntime: check the file and take its strategy (what it computes is fixed).
    Returns the file's metadata."""
    if args.weights is None or Path(args.weights).suffix.lower() != ".onnx":
        raise InferError("--backend onnxruntime needs --weights FILE.onnx (python -m run_scripts.export_onnx "
                         "WEIGHTS -o FILE.onnx)")
    if args.ssim_weight is not None:
        raise InferError("--ssim_weight does not apply to an ONNX file: it holds one network")
    if args.device not in ("auto", "cpu"):
        raise InferError(f"--backend onnxruntime runs on the CPU; --device {args.device} is for the torch backend")
    from utils.errors import WeightsError
    from utils.onnx_graph import read_metadata
    path = Path(args.weights)
    if not path.is_file():
        raise InferError(f"{path}: file not found")
    try:
        meta = read_metadata(path)
    except WeightsError as e:
        raise InferError(str(e)) from None
    if meta["part"] != "fusion":
        raise InferError(f"{path} holds the {meta['part']} alone; run_infer.py fuses with a whole fusion graph "
                         f"(export without --part)")
    for flag, ours, theirs in (("--strategy", args.strategy, meta["strategy"]),
                               ("--l1_radius", args.l1_radius, meta["l1_radius"])):
        if ours is not None and theirs is not None and ours != theirs:
            raise InferError(f"{flag} {ours} was given, but {path} was exported with {theirs}; export the file "
                             f"again with {flag} {ours}, or leave the flag out")
    args.strategy, args.l1_radius, args.device = meta["strategy"], meta["l1_radius"], "cpu"
    return meta


def load_network(args, weights: Path, onnx_meta: dict | None):
    """The model (torch) or the onnxruntime network, and what describes the weights."""
    if args.backend == "torch":
        return load_weights(args, weights)
    from utils.checkpoint import sha256_file
    from utils.errors import WeightsError
    from utils.onnx_graph import OnnxNetwork
    try:
        net = OnnxNetwork(weights, meta=onnx_meta)
    except WeightsError as e:
        raise InferError(str(e)) from None
    return net, {"sha256": sha256_file(weights), "ssim_weight": None, "kind": "ONNX fusion graph, onnxruntime"}


def run(args) -> int:
    from utils import distributed as D
    from utils.devices import resolve_device
    onnx_meta = onnx_strategy(args) if args.backend == "onnxruntime" else None
    d = FuseConfig()
    args.strategy = args.strategy or d.strategy
    args.l1_radius = d.l1_radius if args.l1_radius is None else args.l1_radius
    if args.l1_radius < 0 or args.l1_radius > 1000:
        raise InferError(f"--l1_radius must be between 0 and 1000, got {args.l1_radius}")
    if args.tile not in (0, -1) and args.tile < MIN_TILE:
        raise InferError(f"--tile {args.tile}: use 0 (automatic), -1 (never) or a size of at least {MIN_TILE} "
                         f"(each tile recomputes an 8-pixel halo around it)")
    try:  # before anything is checked or created
        device = resolve_device(args.device)
        ctx, device = D.start(device)
    except ValueError as e:
        raise InferError(str(e)) from None
    try:
        return run_on(args, device, onnx_meta, ctx)
    finally:
        D.stop(ctx)


def check_source_counts(args, jobs, onnx_meta: dict | None) -> None:
    """Sets of more than two sources cannot be scored (--eval: the standard metrics are defined for
    two), and an ONNX graph fuses the number of sources it was exported with."""
    counts = sorted({len(p.sources) for _, pairs, _ in jobs for p in pairs})
    if args.eval and counts and counts[-1] > 2:
        raise InferError(f"--eval scores two-source results (the standard metrics are defined for two sources); "
                         f"these sets have {'/'.join(map(str, counts))} images")
    if onnx_meta is not None and counts and counts != [onnx_meta["sources"]]:
        raise InferError(f"{args.weights} fuses {onnx_meta['sources']} images; these sets have "
                         f"{'/'.join(map(str, counts))} (export a graph with --sources N for each count)")


def run_on(args, device, onnx_meta: dict | None, ctx) -> int:
    """Check, load, guard and fuse, as rank ``ctx.rank`` of ``ctx.world`` (one process: 0 of 1)."""
    from utils import distributed as D
    decoded = Decoded()
    jobs, unpaired = collect_jobs(args)
    check_source_counts(args, jobs, onnx_meta)
    checked, any_bad = check_inputs(args, jobs, decoded, unpaired)
    decoded.keep_only({p for _, pairs, _ in checked for p in D.shard(pairs, ctx)})
    weights = pick_weights(args)
    model, info = load_network(args, weights, onnx_meta)
    from utils.fusion import FuseSettings
    from utils.records import RecordError, recorded_settings
    settings = FuseSettings(args.strategy, args.l1_radius, args.output_mode, args.tile, str(device))
    record = recorded_settings(weights, info, settings, args.backend)
    problem = None
    if ctx.main:  # it may remove stale files: once, before any rank writes
        try:
            prepare_outputs(args, checked, record, run_inputs(jobs))
        except (InferError, RecordError) as e:
            problem = InferError(str(e))
    if problem := D.from_main(problem, ctx):
        raise problem
    fuse_jobs(args, checked, model, settings, record, decoded, f"weights: {weights} ({info['kind']})", ctx)
    return 1 if any_bad else 0


def run_inputs(jobs) -> set[Path]:
    """Every input file of the run, links followed: never written over, never removed."""
    from utils.files import resolved
    return {resolved(f) for _, pairs, _ in jobs for p in pairs for f in p.sources}


def prepare_outputs(args, checked, record: dict, inputs: set[Path]) -> None:
    """Refuse or clear results made otherwise (:func:`utils.records.guard`), then check that every
    output folder takes files."""
    from utils.files import check_writable
    from utils.records import guard
    for line in guard(checked, record, args.overwrite, inputs):
        print(f"warning: {line}", file=sys.stderr)
    for _, pairs, out_dir in checked:
        if pairs and (problem := check_writable(out_dir)):
            raise InferError(problem)


def fuse_jobs(args, checked, model, settings, record: dict, decoded: Decoded, what: str, ctx) -> None:
    """Fuse every set: rank 0 writes its record first, then each rank fuses its share of the pairs."""
    from utils import distributed as D
    from utils.devices import keep_freed_memory
    from utils.files import writing_into
    from utils.fusion import FusionError, fuse_pairs, prepare_model
    from utils.records import write_record
    keep_freed_memory()  # ~30 % faster CPU fusion (utils/devices.py)
    if args.backend == "torch":
        model = prepare_model(model, settings.device)
    print(f"{what}; strategy {settings.strategy}, output {settings.output_mode}, device {settings.device}")
    written = 0
    try:
        for name, pairs, out_dir in checked:
            if not pairs:
                continue
            t0 = time.perf_counter()
            with writing_into(out_dir, FUSION_FILES) as leftovers:
                if ctx.main:
                    write_record(out_dir, record, pairs)
                    if leftovers:
                        print(f"{out_dir}: removed {len(leftovers)} partial file(s) a killed run left "
                              f"({leftovers[0].name} ...)")
                D.barrier(ctx)  # the record exists before any image of the set
                fuse_pairs(model, D.shard(pairs, ctx), out_dir, settings, desc=name, images=decoded.load,
                           progress=ctx.main)
                D.barrier(ctx)  # the set is complete
            written += len(pairs)
            print(f"{name}: {len(pairs)} {plural(len(pairs), 'pair')} fused in {time.perf_counter() - t0:.1f} s "
                  f"-> {out_dir}" + (f" ({ctx.world} processes)" if ctx.world > 1 else ""))
            if args.eval and ctx.main:
                score_set(name, pairs, out_dir)
    except KeyboardInterrupt:
        raise InferError(f"interrupted; the sets before this one are complete ({written} pairs), every image "
                         f"written is complete, and fusion_settings.json labels them") from None
    except FusionError as e:
        raise InferError(f"{e}; {what}. The images written before it are complete") from None


def score_set(name: str, pairs: list, out_dir: Path) -> None:
    """--eval: the standard profile's mean row of the set just fused."""
    import warnings

    from utils.evaluation import EvalError, MetricWarning, evaluate, format_row, mean_row
    from utils.images import ImageReadError
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MetricWarning)  # others keep their once-per-place filter
            rows, colour = evaluate(pairs, out_dir, "standard", progress=False)
    except (EvalError, ImageReadError) as e:  # the images are written; the later sets still get fused
        print(f"warning: {name}: not scored: {e}", file=sys.stderr)
        return
    for w in caught:  # metrics too small for some pairs, NaN values: what the mean row leaves out
        print(f"warning: {name}: {w.message}", file=sys.stderr)
    note = "; colour scored on luma Y" if colour else ""
    print(format_row(mean_row(rows), f"{name}: standard-profile metrics, mean of {len(rows)} "
                                     f"{plural(len(rows), 'pair')}{note}"))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from utils.distributed import main_process, quiet_unless_main
    quiet_unless_main()
    from utils.records import RecordError
    try:
        return run(args)
    except (InferError, RecordError) as e:
        if main_process():  # under torchrun every rank meets the same error; one reports it
            print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
