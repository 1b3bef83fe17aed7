"""What a fusion run was asked to do, checked once (:class:`FuseJob`), and the sets it fuses
(:func:`collect_sets`): a folder of pairs or of sets, one pair or set of images, folders of
sources matched by name, or scene folders.

Output folders are named by their settings: ``<Set>_fusion`` (sets), ``pair`` (one pair or
``--inputs``), ``sources_fusion`` (``--sources``), ``<DIR>_fusion`` (``--scenes``), each with
``_<strategy>_<output_mode>`` for other than the default settings and ``_onnxruntime`` for that
backend; so the README's examples, run one after another, each get their own folder.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from configs import CALIBRATION_FRAMES, SEQUENCE_MODE, FuseConfig, bundled_note
from utils.errors import JobError
from utils.log import log

if TYPE_CHECKING:
    from utils.registration import AlignSpec

#: Smallest ``--tile``: every tile recomputes a halo of 8+ pixels on each side, so a t-pixel
#: tile costs ((t + 16) / t)^2 times the work: 2.3x at 32, 40x at 3 (a typo that looks like a hang).
MIN_TILE = 32


class FuseSet(NamedTuple):
    """One output folder's worth of work: its name (for messages), the pairs (or sets of N
    sources, :class:`utils.pairs.Pair`) and the folder their fused images go to; ``unit`` is
    what one item is called in messages ("" = "pair" for two sources, else "set")."""
    name: str
    pairs: list
    out_dir: Path
    unit: str = ""

    def count(self) -> str:
        """``"3 pairs"``, ``"1 set"``, ``"2 scenes"``."""
        unit = self.unit or ("pair" if all(len(p.sources) == 2 for p in self.pairs) else "set")
        return f"{len(self.pairs)} {plural(len(self.pairs), unit)}"


@dataclass(frozen=True)
class FuseJob:
    """A run of ``run_infer.py``, described once from its arguments and then only read.

    Exactly one of ``inputs`` (``--inputs``, or ``--ir``/``--vis``), ``sources``, ``scenes``
    or ``test_path`` says what to fuse. ``strategy`` and ``l1_radius`` are final: the command
    line's, or with ``backend == "onnxruntime"`` those exported into the graph, whose checked
    metadata is ``onnx_meta``. ``weights`` is the file given with ``--weights`` (None: a shipped
    file chosen by ``ssim_weight`` and ``rgb``). ``device`` is as asked (``auto`` included).
    """
    test_path: Path
    output_path: Path
    inputs: tuple[Path, ...] = ()
    sources: tuple[Path, ...] = ()
    scenes: Path | None = None
    weights: Path | None = None
    rgb: bool = False
    ssim_weight: int | None = None
    backend: str = "torch"
    strategy: str = FuseConfig.strategy
    l1_radius: int = FuseConfig.l1_radius
    output_mode: str = FuseConfig.output_mode
    tile: int = FuseConfig.tile
    device: str = FuseConfig.device
    eval: bool = False
    skip_bad: bool = False
    overwrite: bool = False
    onnx_meta: dict | None = field(default=None, compare=False)
    align: AlignSpec | None = None
    write_transform: Path | None = None
    videos: tuple[Path, ...] = ()
    frames: tuple[Path, ...] = ()
    write: str = "video"
    fps: float | None = None
    trim: bool = False
    align_frame: int = 1
    calibrate: int = CALIBRATION_FRAMES

    @property
    def sequences(self) -> tuple[Path, ...]:
        """The videos or frame folders to fuse (empty: images)."""
        return self.videos or self.frames

    @classmethod
    def from_args(cls, args) -> FuseJob:
        """The job of parsed ``run_infer.py`` arguments, or a JobError naming the bad flag."""
        inputs = _inputs(args)
        if args.l1_radius is not None and not 0 <= args.l1_radius <= 1000:
            raise JobError(f"--l1_radius must be between 0 and 1000, got {args.l1_radius}")
        if args.tile not in (0, -1) and args.tile < MIN_TILE:
            raise JobError(f"--tile {args.tile}: use 0 (automatic), -1 (never) or a size of at least {MIN_TILE} "
                           f"(each tile recomputes an 8-pixel halo around it)")
        weights = Path(args.weights) if args.weights is not None else None
        strategy, radius, device, meta = args.strategy, args.l1_radius, args.device, None
        if args.backend == "onnxruntime":
            if args.ssim_weight is not None:
                raise JobError("--ssim_weight does not apply to an ONNX file: it holds one network")
            if args.device not in ("auto", "cpu"):
                raise JobError(f"--backend onnxruntime runs on the CPU; --device {args.device} is for the torch "
                               f"backend")
            from utils.weights import onnx_fusion_metadata
            meta = onnx_fusion_metadata(weights, strategy, radius)
            strategy, radius, device = meta["strategy"], meta["l1_radius"], "cpu"
        return cls(align=align_spec(args), write_transform=Path(args.write_transform) if args.write_transform else None,
                   **sequence_fields(args),
                   test_path=Path(args.test_path), output_path=Path(args.output_path), inputs=inputs,
                   sources=tuple(map(Path, args.sources or ())), scenes=Path(args.scenes) if args.scenes else None,
                   weights=weights, rgb=args.rgb, ssim_weight=args.ssim_weight, backend=args.backend,
                   strategy=strategy or FuseConfig.strategy,
                   l1_radius=FuseConfig.l1_radius if radius is None else radius,
                   tile=args.tile, device=device, eval=args.eval, skip_bad=args.skip_bad, overwrite=args.overwrite,
                   onnx_meta=meta)

    def settings_tail(self, default_mode: str = FuseConfig.output_mode) -> str:
        """``""`` for the default strategy and output mode (``default_mode``: sequences have their
        own), else ``_<strategy>_<mode>``; then ``_onnxruntime`` for that backend."""
        backend = "_onnxruntime" if self.backend == "onnxruntime" else ""
        if self.align is not None:  # registered results never mix with unregistered ones
            backend = ("_resized" if self.align.mode == "resize" else "_aligned") + backend
        if (self.strategy, self.output_mode) == (FuseConfig.strategy, default_mode):
            return backend
        return f"_{self.strategy}_{self.output_mode}{backend}"


def align_spec(args) -> AlignSpec | None:
    """``--align``/``--transform``/``--resize`` as one description (None: the sources must be
    registered and of one size already), or a JobError for flags that do not go together."""
    if not (args.align or args.transform or args.resize):
        for flag in ("fill", "write_transform", "align_to"):
            if getattr(args, flag) not in (None, False):
                raise JobError(f"--{flag} goes with --align (or --transform)")
        return None
    if args.align and args.transform:
        raise JobError("give --align (estimate the transforms) or --transform FILE (known ones), not both")
    if args.write_transform and not args.align:
        raise JobError("--write_transform writes what --align estimated; add --align")
    if args.align_to is not None and args.align_to < 1:
        raise JobError(f"--align_to counts sources from 1, got {args.align_to}")
    from utils.registration import AlignSpec, RegistrationError, read_transform
    if args.transform:
        try:
            t = read_transform(Path(args.transform))
        except RegistrationError as e:
            raise JobError(str(e)) from None
        reference = t["reference"] if args.align_to is None else args.align_to - 1
        return AlignSpec("transform", reference, t["model"], args.fill, tuple(t["matrices"]), str(args.transform))
    reference = 1 if args.align_to is None else args.align_to - 1
    return AlignSpec("align" if args.align else "resize", reference, args.align_model, args.fill and args.align)


def sequence_fields(args) -> dict:
    """The video flags (``--videos``/``--frames`` and what goes with them) as FuseJob fields,
    with the output mode resolved: ``sequence`` for sequences, ``minmax`` for images by default."""
    videos, frames = tuple(map(Path, args.videos or ())), tuple(map(Path, args.frames or ()))
    if (videos or frames) and len(videos or frames) < 2:
        raise JobError(f"--{'videos' if videos else 'frames'} needs at least 2 sequences, got 1")
    mode = args.output_mode or (SEQUENCE_MODE if videos or frames else FuseConfig.output_mode)
    if not (videos or frames):
        for flag, default in (("write", None), ("fps", None), ("trim", False), ("align_frame", None),
                              ("calibrate", None)):
            if getattr(args, flag) != default:
                raise JobError(f"--{flag} goes with --videos or --frames")
        if mode == SEQUENCE_MODE:
            raise JobError("--output_mode sequence is for --videos and --frames (one stretch for all frames); "
                           "images use minmax or clip")
        return {"output_mode": mode}
    if args.fps is not None and not 0 < args.fps <= 1000:
        raise JobError(f"--fps must be between 0 and 1000, got {args.fps}")
    if args.calibrate is not None and args.calibrate < 1:
        raise JobError(f"--calibrate counts frames, at least 1; got {args.calibrate}")
    if args.align_frame is not None and not args.align:
        raise JobError("--align_frame says which frame --align estimates the transform on; add --align")
    if args.align_frame is not None and args.align_frame < 1:
        raise JobError(f"--align_frame counts frames from 1, got {args.align_frame}")
    if args.eval:
        raise JobError("--eval scores image sets; score a fused sequence with run_eval.py --sequence FILE")
    return {"videos": videos, "frames": frames, "output_mode": mode, "fps": args.fps, "trim": args.trim,
            "write": args.write or ("video" if videos else "frames"), "align_frame": args.align_frame or 1,
            "calibrate": args.calibrate or CALIBRATION_FRAMES}


def _inputs(args) -> tuple[Path, ...]:
    """``--inputs``, or ``--ir``/``--vis`` as two inputs; refuses several kinds of input at once."""
    if sum(map(bool, (args.inputs, args.ir or args.vis, args.sources, args.scenes, args.videos, args.frames))) > 1:
        raise JobError("give one of --inputs A B [C ...], --ir A --vis B, --sources DIR DIR [...], --scenes DIR, "
                       "--videos FILE FILE [...] and --frames DIR DIR [...], not several")
    if args.inputs and len(args.inputs) < 2:
        raise JobError(f"--inputs needs at least 2 images, got {len(args.inputs)}: {args.inputs[0]}")
    if (args.ir or args.vis) and not (args.ir and args.vis):
        raise JobError("--ir and --vis must be given together")
    if args.sources and len(args.sources) < 2:
        raise JobError(f"--sources needs at least 2 folders, got {len(args.sources)}: {args.sources[0]}")
    return tuple(map(Path, args.inputs or ([args.ir, args.vis] if args.ir else [])))


def plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


def single_pair(ir: Path, vis: Path, *more: Path):
    """Name a lone pair (or set) after what its file names share (``IR7``/``VIS7`` -> ``7``,
    ``a`` + ``b`` -> ``a_b``, ``a`` + ``b`` + ``c`` -> ``a_b_c``)."""
    from utils.pairs import FLAT_PATTERN, Pair
    m_ir, m_vis = FLAT_PATTERN.match(ir.stem), FLAT_PATTERN.match(vis.stem)
    if not more and m_ir and m_vis and m_ir.group(2) == m_vis.group(2):
        return Pair(m_ir.group(2), ir, vis)
    stems = [f.stem for f in (ir, vis, *more)]
    return Pair(stems[0] if len(set(stems)) == 1 else "_".join(stems), ir, vis, tuple(more))


def collect_sets(job: FuseJob) -> tuple[list[FuseSet], list[str]]:
    """Everything ``job`` fuses, and one line per file without a partner (reported with the other
    problems of the inputs); a JobError for any other layout problem."""
    from utils.files import is_symlink_loop
    suffix = "_fusion" + job.settings_tail()
    if job.sources:
        return sources_set(job.sources, job.output_path / f"sources{suffix}")
    if job.scenes:
        return [scenes_set(job.scenes, job.output_path, suffix)], []
    if job.inputs:
        for f in job.inputs:
            if not f.is_file():
                raise JobError(f"{f}: {'a symlink loop' if is_symlink_loop(f) else 'file not found'}")
        return [FuseSet("pair", [single_pair(*job.inputs)], job.output_path / f"pair{job.settings_tail()}")], []
    return folder_sets(job.test_path, job.output_path, suffix)


def folder_sets(root: Path, out_root: Path, suffix: str) -> tuple[list[FuseSet], list[str]]:
    """--test_path: one set, or a folder of sets; files without a partner are returned as problems."""
    from utils.pairs import NoPairs, PairError, UnpairedFiles, find_pairs, find_sets, set_name
    if not root.is_dir():
        raise JobError(f"{root}: folder not found{bundled_note(root)}; pass --test_path DIR or --ir FILE --vis FILE")
    unpaired: list[str] = []
    try:
        try:
            sets = [(root, *find_pairs(root))]
        except NoPairs:
            sets = find_sets(root)  # a folder of sets
    except UnpairedFiles as e:
        sets, unpaired = e.sets, e.problems
    except PairError as e:
        raise JobError(str(e)) from None
    if not sets:
        raise JobError(f"{root}: no IR/visible pairs found in it or its sub-folders")
    jobs = []
    for s, layout, pairs in sets:
        lone = sum(line.startswith(f"{s}{os.sep}") for line in unpaired)
        log.info(f"{s}: layout {layout}, {len(pairs)} {plural(len(pairs), 'pair')}"
              + (f", {lone} unpaired {plural(lone, 'file')}" if lone else ""))
        name = set_name(s)
        jobs.append(FuseSet(name, pairs, out_root / f"{name}{suffix}"))
    return jobs, unpaired


def sources_set(folders: tuple[Path, ...], out_dir: Path) -> tuple[list[FuseSet], list[str]]:
    """--sources DIR DIR [...]: the sets matched by name across the folders, and the files
    without a partner in every folder."""
    from utils.pairs import PairError, UnpairedFiles, sets_from_folders
    unpaired: list[str] = []
    try:
        sets = sets_from_folders(list(folders))
    except UnpairedFiles as e:
        sets, unpaired = e.sets[0][2], e.problems
    except PairError as e:
        raise JobError(str(e)) from None
    names = [str(d) for d in folders]
    if not sets and not unpaired:
        raise JobError(f"no images in {', '.join(names)}")
    log.info(f"{' + '.join(names)}: {len(sets)} {plural(len(sets), 'set')} of {len(folders)} sources")
    return [FuseSet("sources", sets, out_dir)], unpaired


def scenes_set(root: Path, out_root: Path, suffix: str) -> FuseSet:
    """--scenes DIR: one set per scene folder."""
    from utils.pairs import PairError, scenes
    try:
        sets = scenes(root)
    except PairError as e:
        raise JobError(str(e)) from None
    counts = sorted({len(s.sources) for s in sets})
    log.info(f"{root}: {len(sets)} {plural(len(sets), 'scene')} of {'/'.join(map(str, counts))} images")
    return FuseSet(root.name, sets, out_root / f"{root.name}{suffix}", unit="scene")


# ---- running the sets -------------------------------------------------------------------------

def prepare_outputs(sets: list[FuseSet], record: dict, overwrite: bool, inputs: set[Path]) -> None:
    """Refuse or clear results made otherwise (:func:`utils.records.guard`), then check that every
    output folder takes files."""

    from utils.files import check_writable
    from utils.records import RecordError, guard
    try:
        warnings = guard(sets, record, overwrite, inputs)
    except RecordError as e:
        raise JobError(str(e)) from None
    for line in warnings:
        log.warning(line)
    for s in sets:
        if s.pairs and (problem := check_writable(s.out_dir)):
            raise JobError(problem)


def fuse_sets(sets: list[FuseSet], network, settings, record: dict, images, what: str, ctx,
              scoring: bool = False, registrations: dict | None = None) -> None:
    """Fuse every set: rank 0 writes its record first (and removes what a killed run left), then
    each rank fuses its share of the pairs; ``scoring`` prints each set's mean metrics.
    ``images``: ``pair -> sources`` (the decoded inputs). With ``registrations`` (pair ->
    Registration) the registered sources are written too (:func:`registered_sources`), which
    is what the fused images are scored against. A fault is a JobError saying what is done."""
    import time

    from utils import distributed as D
    from utils.files import writing_into
    from utils.fusion import FusionError, fuse_pairs
    from utils.records import FUSION_FILES, write_record
    log.info(f"{what}; strategy {settings.strategy}, output {settings.output_mode}, device {settings.device}")
    written = 0
    try:
        for s in (s for s in sets if s.pairs):
            t0 = time.perf_counter()
            with writing_into(s.out_dir, FUSION_FILES) as leftovers:
                if ctx.main:
                    write_record(s.out_dir, record, s.pairs, registrations)
                    if leftovers:
                        log.info(f"{s.out_dir}: removed {len(leftovers)} partial file(s) a killed run left "
                              f"({leftovers[0].name} ...)")
                D.barrier(ctx)  # the record exists before any image of the set
                read = registered_sources(s.out_dir, images) if registrations else images
                fuse_pairs(network, D.shard(s.pairs, ctx), s.out_dir, settings, desc=s.name, images=read,
                           progress=ctx.main)
                D.barrier(ctx)  # the set is complete
            written += len(s.pairs)
            log.info(f"{s.name}: {s.count()} fused in "
                  f"{time.perf_counter() - t0:.1f} s -> {s.out_dir}"
                  + (f" ({ctx.world} processes)" if ctx.world > 1 else ""))
            if scoring and ctx.main:
                score_set(s)
    except KeyboardInterrupt:
        raise JobError(f"interrupted; the sets before this one are complete ({written} pairs), every image "
                       f"written is complete, and fusion_settings.json labels them") from None
    except FusionError as e:
        raise JobError(f"{e}; {what}. The images written before it are complete") from None


#: Where the registered sources of an aligned folder go (a layout run_eval.py reads: ir/ + vi/).
REGISTERED = "registered"


def registered_folders(n: int) -> list[str]:
    return ["ir", "vi"] if n == 2 else [f"source{k}" for k in range(1, n + 1)]


def registered_sources(out_dir: Path, images):
    """``images`` that also writes each pair's registered sources to ``<out_dir>/registered/``
    (``ir/`` + ``vi/``, or ``source<k>/``) as 8-bit PNG: the region the fused image covers, in
    its frame, so that ``run_eval.py --fused OUT --test_path OUT/registered`` scores registered
    pixels against registered pixels."""
    from utils.images import save_image

    def read(pair):
        sources = images(pair)
        for folder, im in zip(registered_folders(len(sources)), sources, strict=True):
            save_image(out_dir / REGISTERED / folder / f"{pair.name}.png", im)
        return sources
    return read


def score_set(s: FuseSet) -> None:
    """--eval: the standard profile's mean row of the set just fused."""
    import warnings

    from utils.evaluation import EvalError, MetricWarning, evaluate, format_row, mean_row
    from utils.images import ImageReadError
    from utils.pairs import Pair
    reg = s.out_dir / REGISTERED
    if reg.is_dir():  # aligned: the fused images are scored against the registered sources
        s = s._replace(pairs=[Pair(p.name, reg / "ir" / f"{p.name}.png", reg / "vi" / f"{p.name}.png")
                              for p in s.pairs])
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MetricWarning)  # others keep their once-per-place filter
            rows, colour = evaluate(s.pairs, s.out_dir, "standard", progress=False)
    except (EvalError, ImageReadError) as e:  # the images are written; the later sets still get fused
        log.warning(f"{s.name}: not scored: {e}")
        return
    for w in caught:  # metrics too small for some pairs, NaN values: what the mean row leaves out
        log.warning(f"{s.name}: {w.message}")
    note = "; colour scored on luma Y" if colour else ""
    log.info(format_row(mean_row(rows), f"{s.name}: standard-profile metrics (↑ higher is better, ↓ lower), "
                                     f"mean of {len(rows)} {plural(len(rows), 'pair')}{note}", arrows=True))
