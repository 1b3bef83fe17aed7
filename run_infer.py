"""Fuse infrared and visible images with a trained DenseFuse (paper Fig. 3).

    python run_infer.py                                  # every set under data_test/
    python run_infer.py --test_path data_test/Road       # one set (or a folder of sets)
    python run_infer.py --ir a.png --vis b.png           # one pair -> data_result/pair/
    python run_infer.py --videos ir.mp4 vis.mp4          # a video -> data_result/video/ir_vis.mp4
    torchrun --nproc_per_node 4 run_infer.py --test_path /data/LLVIP   # pairs shared by 4 GPUs

Outputs: ``<output_path>/<Set>_fusion/<pair name>.png`` (8-bit; colour if the visible image is),
and beside them ``fusion_settings.json``, the settings that made them. Every input is read and
checked before anything is fused or written; results made with other settings are never
replaced unless ``--overwrite`` says so. Under torchrun every process checks every input (so
all stop on the same report), rank 0 writes the records and prints, and each fuses its share.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from configs import CALIBRATION_FRAMES, OUTPUT_MODES, SEQUENCE_MODE, SSIM_WEIGHTS, STRATEGY_NAMES, FuseConfig
from utils.cli import DefaultsFormatter
from utils.errors import JobError
from utils.jobs import MIN_TILE  # light: configs and the error types only
from utils.records import SETTINGS_FILE, RecordError

# The work lives in utils/ (jobs: what to fuse and where; inputs: the input check; weights;
# records: the settings record and the overwrite guard; fusion: the pixels). It is imported
# after argparse: --help and a bad flag cost no torch import, and SciPy (for --eval only) is
# never imported by a plain fusion.


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Fuse infrared and visible image pairs, or any registered sets of 2+ images, with DenseFuse.",
        epilog="Several GPUs or machines: torchrun --nproc_per_node N run_infer.py ... shares the pairs "
               "among N processes (one GPU each); the files are those of one process. See docs/distributed.md.",
        formatter_class=DefaultsFormatter)
    add_input_flags(p.add_argument_group("what to fuse (one of)"))
    add_video_flags(p.add_argument_group("videos and frame sequences (docs/video.md)"))
    add_registration_flags(p.add_argument_group("sources of different cameras or sizes (docs/registration.md)"))
    add_network_flags(p.add_argument_group("network and fusion"))
    g = p.add_argument_group("output")
    g.add_argument("--output_path", default=FuseConfig.output_path,
                   help="results folder; sets go to <output_path>/<Set>_fusion/ with the default strategy and "
                        "output mode, <Set>_fusion_<strategy>_<output_mode>/ with others")
    g.add_argument("--eval", action="store_true",
                   help="score each fused set with run_eval.py's standard profile; print the mean row")
    g.add_argument("--skip_bad", action="store_true",
                   help="fuse the good pairs and list the bad ones instead of stopping")
    g.add_argument("--overwrite", action="store_true",
                   help=f"replace fused images made with other settings (recorded in each output folder's "
                        f"{SETTINGS_FILE}); without it such a folder is an error and nothing is written")
    return p


def add_input_flags(g) -> None:
    g.add_argument("--test_path", default=FuseConfig.test_path,
                   help="a folder of pairs (layouts: ir/+vi/, INF_images/+VIS_images/, infrared/+visible/ as "
                        "LLVIP and FMB, IR<k>+VIS<k>, <name>-A+<name>-B for Lytro multi-focus; train/ and test/ "
                        "split folders) or a folder of such folders")
    g.add_argument("--ir", help="one infrared image (with --vis); written to <output_path>/pair/<name>.png "
                                "(pair_<strategy>_<output_mode>/ with other settings), named after what the two "
                                "file names share (IR7 + VIS7 -> 7.png, a + b -> a_b.png)")
    g.add_argument("--vis", help="one visible image (with --ir)")
    g.add_argument("--sources", nargs="+", metavar="DIR",
                   help="two or more folders of registered images matched by file name, fused in the folders' "
                        "order (multi-exposure: under/ over/; or ir/ vi/); written to <output_path>/sources_fusion/")
    g.add_argument("--scenes", metavar="DIR",
                   help="a folder with one sub-folder per scene holding its 2+ images (multi-exposure), fused "
                        "in file-name order; written to <output_path>/<DIR name>_fusion/<scene>.png")
    g.add_argument("--inputs", nargs="+", metavar="IMAGE",
                   help="one set of two or more registered images of one size, fused in the order given "
                        "(multi-focus, multi-exposure, several cameras); --inputs A B = --ir A --vis B")


def add_video_flags(g) -> None:
    g.add_argument("--videos", nargs="+", metavar="FILE",
                   help="two or more videos of one scene (infrared first, then visible), fused frame by frame into "
                        "<output_path>/video/<name>.mp4 (H.264) with its record <name>.json; needs PyAV: "
                        "pip install -r requirements-video.txt")
    g.add_argument("--frames", nargs="+", metavar="DIR",
                   help="two or more folders of frames (an image sequence each, in natural order of file name), "
                        "fused into <output_path>/video/<name>/000001.png ...")
    g.add_argument("--write", choices=("video", "frames", "both"), default=None,
                   help="what a sequence is fused into: an MP4, numbered PNG frames, or both (default: video for "
                        "--videos, frames for --frames)")
    g.add_argument("--fps", type=float, default=None,
                   help="frame rate of the output video (default: the inputs'; 25 for frame folders)")
    g.add_argument("--trim", action="store_true",
                   help="sequences of different lengths with nothing to pair them by (frame folders without shared "
                        "file names): fuse the first frames of each, as many as the shortest has (videos pair by "
                        "timestamp, frame folders by shared names, without it)")
    g.add_argument("--align_frame", type=int, default=None, metavar="K",
                   help="with --align: estimate the transform on frame K (1-based; default 1) and apply it to "
                        "every frame; the record says which")
    g.add_argument("--calibrate", type=int, default=None, metavar="K",
                   help=f"output mode {SEQUENCE_MODE}: fix the stretch from the first K frames "
                        f"(default {CALIBRATION_FRAMES})")


def add_registration_flags(g) -> None:
    g.add_argument("--align", action="store_true",
                   help="register every source onto the reference (edge-based, multimodal; OpenCV: pip install "
                        "-r requirements-align.txt); the fused image is in the reference's frame, cropped to "
                        "where all sources overlap; the transforms and their quality go to the record")
    g.add_argument("--align_to", type=int, default=None, metavar="K",
                   help="the reference source, 1-based (default: 2, the visible image of a pair)")
    g.add_argument("--align_model", choices=("similarity", "affine", "homography"), default="affine",
                   help="what --align estimates: similarity (scale, rotation, shift), affine, or homography")
    g.add_argument("--transform", metavar="FILE",
                   help="apply known 3x3 matrices instead of estimating them (a calibrated rig): JSON "
                        "{\"reference\": K-1, \"matrices\": [one 3x3 list per source]}, as --write_transform writes")
    g.add_argument("--write_transform", metavar="FILE",
                   help="with --align on one pair or set: write the matrices found, for --transform")
    g.add_argument("--resize", action="store_true",
                   help="sources of one field of view at different resolutions: resample each to the reference's "
                        "size (never done without this flag or --align)")
    g.add_argument("--fill", action="store_true",
                   help="with --align/--transform: keep the reference's whole frame, black where a source does "
                        "not reach, instead of cropping to the overlap")


def add_network_flags(g) -> None:
    d = FuseConfig()
    g.add_argument("--weights", default=None,
                   help="weights: a shipped file (weights/ holds lambda = 1, 10, 100 and 1000; default: "
                        f"{Path(d.weights).relative_to(Path(d.weights).parents[1])}, lambda = 100), a run_train.py "
                        "checkpoint, exported weights, or the official DenseFuse release (TF checkpoint/zip or the "
                        "PyTorch .model)")
    g.add_argument("--rgb", action="store_true",
                   help="without --weights: the shipped RGB (3-channel) network of --ssim_weight's lambda "
                        "(100), which fuses colour directly, instead of the gray one")
    g.add_argument("--ssim_weight", type=int, choices=SSIM_WEIGHTS, default=None,
                   help="lambda: picks the shipped weights of that lambda when --weights is not given, "
                        "or the checkpoint of that lambda in an official TF release holding several "
                        "(when omitted: 100); an error with any other weights file")
    g.add_argument("--strategy", choices=STRATEGY_NAMES, default=None,
                   help=f"feature fusion: add = paper's sum, mean = half the sum, l1_norm = paper's "
                        f"L1-norm weighting, max = element-wise maximum (default: {d.strategy}; with "
                        f"--backend onnxruntime the strategy exported into the file)")
    g.add_argument("--l1_radius", type=int, default=None,
                   help=f"l1_norm block-average radius r (window 2r+1); 0 = official code (default: "
                        f"{d.l1_radius}; with --backend onnxruntime the file's)")
    g.add_argument("--output_mode", choices=(*OUTPUT_MODES, SEQUENCE_MODE), default=None,
                   help=f"minmax = stretch each output to 0..255 as the official release did (images' default: "
                        f"{d.output_mode}); clip = keep intensities, clip to 0..255; {SEQUENCE_MODE} = one stretch "
                        f"for every frame of a video, fixed from its first frames (sequences' default: no flicker)")
    g.add_argument("--device", default=d.device, help="auto (cuda if available), cpu, cuda")
    g.add_argument("--tile", type=int, default=d.tile,
                   help=f"tile size (exact, with a halo), at least {MIN_TILE}; 0 = automatic (192 on CPU, "
                        "for speed; on GPU only above 1600x1600 pixels; 256 with --backend onnxruntime), -1 = never")
    g.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                   help="torch = this repository's PyTorch path; onnxruntime = run an exported fusion graph "
                        "(--weights FILE.onnx from python -m run_scripts.export_onnx) on the CPU, without torch: "
                        "pip install -r requirements-deploy.txt is enough (docs/deploy.md); results go to "
                        "<Set>_fusion..._onnxruntime/")


def run(job) -> int:
    """Join the process group under torchrun (a device this machine lacks is refused before
    anything is checked or created), then :func:`run_on`."""
    from utils import distributed as D
    if job.backend == "onnxruntime" and not D.launched():  # the deploy path imports no torch
        return run_on(job, "cpu", D.SINGLE)
    from utils.devices import resolve_device
    try:
        ctx, device = D.start(resolve_device(job.device))
    except ValueError as e:
        raise JobError(str(e)) from None
    try:
        return run_on(job, device, ctx)
    finally:
        D.stop(ctx)


def run_on(job, device, ctx) -> int:
    """Check, load, guard and fuse, as rank ``ctx.rank`` of ``ctx.world`` (one process: 0 of 1)."""
    from utils import distributed as D
    from utils.fusion import FuseSettings
    from utils.inputs import Decoded, check_inputs, check_source_counts, run_inputs
    from utils.jobs import collect_sets, fuse_sets, prepare_outputs
    from utils.records import recorded_settings
    if job.sequences:
        from utils.sequences import fuse_job
        return fuse_job(job, lambda: load_stream_network(job, device), ctx)
    decoded = Decoded(fill=bool(job.align and job.align.fill))
    sets, unpaired = collect_sets(job)
    check_source_counts(sets, job.eval, job.onnx_meta, job.weights)
    checked, any_bad = check_inputs(sets, decoded, unpaired, job.skip_bad, report=ctx.main, align=job.align)
    if job.write_transform:
        write_found_transform(job.write_transform, checked, decoded.registrations)
    decoded.keep_only({p for s in checked for p in D.shard(s.pairs, ctx)})
    weights, (network, info) = load_network(job)
    settings = FuseSettings(job.strategy, job.l1_radius, job.output_mode, job.tile, str(device))
    record = recorded_settings(weights, info, settings, job.backend)
    if job.align is not None:
        record["align"] = job.align.settings()
    # it may remove stale files: once, before any rank writes
    D.on_main(lambda: prepare_outputs(checked, record, job.overwrite, run_inputs(sets)), ctx, JobError)
    if job.backend == "torch":
        from utils.devices import keep_freed_memory
        from utils.fusion import prepare_model
        keep_freed_memory()  # ~30 % faster CPU fusion (utils/devices.py)
        network = prepare_model(network, settings.device)
    fuse_sets(checked, network, settings, record, decoded.load, f"weights: {weights} ({info['kind']})", ctx,
              scoring=job.eval, registrations=decoded.registrations)
    return 1 if any_bad else 0


def write_found_transform(path: Path, sets, registrations: dict) -> None:
    """--write_transform: the matrices --align found for the run's one pair (or set)."""
    pairs = [p for s in sets for p in s.pairs]
    if len(pairs) != 1:
        raise JobError(f"--write_transform writes the transform of one pair; this run has {len(pairs)} "
                       f"(a rig's transform is estimated once, on one good pair)")
    from utils.registration import write_transform
    try:
        write_transform(path, registrations[pairs[0]])
    except OSError as e:
        raise JobError(f"cannot write {path}: {e.strerror or e}") from None
    from utils.log import log
    log.info(f"{path}: the transform of {pairs[0].name}; reuse it with --transform {path}")


def load_stream_network(job, device) -> tuple:
    """A sequence's network (loaded once), its FuseSettings and settings record."""
    from utils.fusion import FuseSettings, prepare_model
    from utils.records import recorded_settings
    weights, (network, info) = load_network(job)
    mode = "clip" if job.output_mode == SEQUENCE_MODE else job.output_mode  # the stretch is the stream's
    settings = FuseSettings(job.strategy, job.l1_radius, mode, job.tile, str(device))
    if job.backend == "torch":
        from utils.devices import keep_freed_memory
        keep_freed_memory()
        network = prepare_model(network, settings.device)
    log_weights = f"weights: {weights} ({info['kind']}); strategy {job.strategy}, output {job.output_mode}"
    from utils.log import log
    log.info(f"{log_weights}, device {device}")
    return network, settings, recorded_settings(weights, info, settings, job.backend)


def load_network(job) -> tuple[Path, tuple]:
    """The weights file and ``(network, info)``: a DenseFuse (torch) or an OnnxNetwork."""
    from utils.weights import load_onnx_network, load_torch_weights, pick_weights
    if job.backend == "onnxruntime":
        return job.weights, load_onnx_network(job.weights, job.onnx_meta)
    weights = pick_weights(job.weights, job.ssim_weight, job.rgb)
    return weights, load_torch_weights(weights, job.ssim_weight, explicit=job.weights is not None)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from utils.jobs import FuseJob
    from utils.log import log
    try:
        return run(FuseJob.from_args(args))
    except (JobError, RecordError) as e:  # RecordError: a pair name that would leave its folder
        log.error(str(e))  # under torchrun every rank meets the same error; rank 0 reports it
        return 2


if __name__ == "__main__":
    sys.exit(main())
