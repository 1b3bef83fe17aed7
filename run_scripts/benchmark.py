"""Benchmark fusion and training: the project's path against a naive eager loop, in one run.

    python -m run_scripts.benchmark                 # CPU, full sizes (a few minutes)
    python -m run_scripts.benchmark --device cuda   # GPU (adds bf16 mixed precision)
    python -m run_scripts.benchmark --amp           # CPU, with bf16 mixed precision too
    python -m run_scripts.benchmark --smoke         # tiny sizes, seconds (used by the tests)

Every figure is the median of --repeats runs after a warm-up. Ratios compare numbers taken in
this same run, so they hold on a noisy shared machine better than absolute times. Each timed
comparison runs its contestants in fresh processes (see VARIANTS), so that one's allocator
state cannot help or hurt the other. FLOPs count
the useful work only: 87,984 multiply-adds per pixel for a fusion (two encoders + decoder),
not the halo recomputed by tiling.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from utils.cli import DefaultsFormatter
from utils.files import write_text

# The measuring code (utils/benchmarking.py) imports torch: after argparse, so --help is instant.


def print_startup(s):
    print(f"\nstart-up (whole processes): --help {s['help_s']:.2f} s (slowest entry point); import torch "
          f"{s['torch_import_s']:.2f} s; run_infer.py from process start to its first tile "
          f"{s['infer_startup_s']:.2f} s (torch's import included); one {s['size']} pair, whole process: "
          f"run_infer.py {s['infer_process_s']:.2f} s, naive script {s['naive_process_s']:.2f} s "
          f"(run_infer.py at x{s['process_speedup']:.2f} the naive script's speed)"
          + (f", plain onnxruntime script {s['onnxruntime_process_s']:.2f} s (run_infer.py "
             f"at x{s['process_speedup_vs_onnxruntime']:.2f} its speed)" if "onnxruntime_process_s" in s else ""))


def print_fusion(rows, where: str = "fresh process each"):
    print(f"\nfusion (add), seconds | GFLOP/s | % of the matmul rate ({where}; the rate of one fp32 "
          "matmul is a yardstick, not a ceiling: oneDNN's convolutions can beat it)")
    for r in rows:
        print(f"  {r['size']:>9}: naive {r['naive_s']:.3f} s | {r['naive_gflops']:.0f} | "
              f"{r['naive_pct_peak']:.0f}%   naive + keep_freed_memory {r['naive_keep_memory_s']:.3f} s   "
              f"ours {r['ours_s']:.3f} s | {r['ours_gflops']:.0f} | {r['ours_pct_peak']:.0f}%   "
              f"ours at x{r['speedup']:.2f} naive's speed (x{r['speedup_vs_naive_keep_memory']:.2f} naive + "
              f"keep_freed_memory's)   max|diff| "
              f"{r['max_abs_diff']:.1e}, identical 8-bit pixels {r['identical_8bit_pixels_pct']:.3f}%"
              + f"   {r['pairs_per_s']:.2f} pairs/s"
              + (f"   bf16 autocast {r['amp_bf16_s']:.3f} s = x{r['amp_speedup']:.2f}, "
                 f"{r['amp_pairs_per_s']:.2f} pairs/s, max|diff| {r['amp_max_abs_diff']:.1e}"
                 if "amp_speedup" in r else ""))
        if "onnxruntime_s" in r:
            print(f"  {'':>9}  onnxruntime, whole image {r['onnxruntime_s']:.3f} s | {r['onnxruntime_gflops']:.0f} | "
                  f"{r['onnxruntime_pct_peak']:.0f}% (max|diff| {r['onnxruntime_max_abs_diff']:.1e})   "
                  f"onnxruntime through our tiling {r['onnxruntime_tiled_s']:.3f} s | "
                  f"{r['onnxruntime_tiled_gflops']:.0f} | {r['onnxruntime_tiled_pct_peak']:.0f}%   "
                  f"ours at x{r['ours_over_onnxruntime']:.2f} onnxruntime's speed (whole image), "
                  f"x{r['ours_over_onnxruntime_tiled']:.2f} (tiled)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions (median reported)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes, one repetition, contestants in this process (about 30 s): checks that every "
                        "section runs; its numbers mean nothing")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--skip", nargs="*", default=[],
                   choices=["startup", "fusion", "infer", "training", "memory", "registration", "data", "deploy",
                            "video"],
                   help="parts to leave out")
    p.add_argument("--amp", action="store_true",
                   help="also time the project's fusion and training step under bf16 autocast "
                        "(always on with --device cuda)")
    p.add_argument("--micro_batch", type=int, default=0,
                   help="micro-batch of the project's training step; 0 = run_train.py's default (2 on CPU)")
    p.add_argument("--in_process", action="store_true",
                   help="run every contestant in this process, not in fresh ones: seconds quicker, less fair "
                        "(allocator state carries over); for tests")
    p.add_argument("--_child", help=argparse.SUPPRESS)  # JSON {"kind": ..., **kwargs}
    return p


def print_training(rows, where: str = "fresh process each"):
    print(f"\ntraining step, images/s | % of the matmul rate ({where})")
    for r in rows:
        print(f"  batch {r['batch']:>2} at {r['size']}x{r['size']}: naive {r['naive_img_s']:.2f} | "
              f"{r['naive_pct_peak']:.0f}%   naive + keep_freed_memory {r['naive_keep_memory_img_s']:.2f}   "
              f"ours {r['ours_img_s']:.2f} | {r['ours_pct_peak']:.0f}% (micro-batch {r['micro_batch']}, "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB)   "
              f"ours at x{r['speedup']:.2f} naive's speed (x{r['speedup_vs_naive_keep_memory']:.2f} naive + "
              f"keep_freed_memory's)   "
              f"convolutions alone {r['convs_only_img_s']:.2f} | {r['convs_only_pct_peak']:.0f}%   "
              f"first-step loss {r['first_loss_naive']:.6f} / {r['first_loss_naive_keep_memory']:.6f} / "
              f"{r['first_loss_ours']:.6f}"
              + (f"   bf16 autocast {r['amp_img_s']:.2f} = x{r['amp_speedup']:.2f}" if "amp_img_s" in r else ""))


def print_memory(rows, w: int, h: int, tried_untiled: bool, where: str = "fresh process each"):
    print(f"\npeak RSS fusing one {w}x{h} pair ({where})")
    for r in rows:
        print(f"  {r['mode']:>8}: " + (f"{r['peak_rss_mib']:.0f} MiB in {r['seconds']:.1f} s"
                                       + (f", CUDA max allocated {r['cuda_max_allocated_mib']:.0f} MiB"
                                          if "cuda_max_allocated_mib" in r else "")
                                       if "peak_rss_mib" in r else f"failed: {r['error']}"))
    if not tried_untiled:
        print("  untiled: skipped (needs > 16 GB free)")


def bench_infer_set(args, B, reps: int) -> dict:
    """run_infer.py end to end on data_test/Tno (``--smoke``: on a tiny generated set)."""
    import tempfile

    from configs import TEST_DATA
    with tempfile.TemporaryDirectory() as tmp:
        tno = TEST_DATA / "Tno"
        if args.smoke:
            import numpy as np
            from PIL import Image
            rng = np.random.default_rng(0)
            for name in ("IR1", "VIS1", "IR2", "VIS2"):
                Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8)).save(f"{tmp}/{name}.png")
            tno = Path(tmp)
        r = B.bench_infer(tno, reps, args.device)
    print(f"\nrun_infer.py end to end on {r['set']}: {r['pairs']} pairs in {r['seconds']:.1f} s = "
          f"{r['pairs_per_s']:.2f} pairs/s")
    return r


def bench_registration(device: str, reps: int, smoke: bool) -> dict | None:
    """run_infer.py --align's registration of a 640x512 thermal frame onto a 1280x720 colour one
    (a RoadScene pair of data_test/, the thermal image moved by a known similarity and the visible
    one enlarged), against the fusion of the registered pair: a ratio of two times of this run."""
    try:
        import cv2
    except ImportError:
        print("\nregistration: skipped (pip install -r requirements-align.txt)")
        return None
    import numpy as np

    from configs import SHIPPED_WEIGHTS, TEST_DATA
    from utils.benchmarking import timed
    from utils.checkpoint import load_model
    from utils.fusion import FuseSettings, fuse_images, prepare_model
    from utils.images import load_image
    from utils.registration import apply, register
    (h_ir, w_ir), (h_vis, w_vis) = ((64, 80), (90, 160)) if smoke else ((512, 640), (720, 1280))
    ir = load_image(TEST_DATA / "Road/ir/FLIR_00977.jpg", gray=True)
    vis = load_image(TEST_DATA / "Road/vi/FLIR_00977.jpg")
    m = np.array([[1.5 * w_ir / ir.shape[1], 0.02, -20], [-0.02, 1.5 * h_ir / ir.shape[0], -30], [0, 0, 1]])
    thermal = cv2.warpPerspective(ir, m, (w_ir, h_ir))
    colour = np.clip(cv2.resize(vis, (w_vis, h_vis), interpolation=cv2.INTER_CUBIC), 0, 1)
    reg_s = timed(lambda: apply([thermal, colour], register([thermal, colour], 1, "affine")), reps)
    images = apply([thermal, colour], register([thermal, colour], 1, "affine"))
    model = prepare_model(load_model(SHIPPED_WEIGHTS)[0], device)
    fuse_s = timed(lambda: fuse_images(model, *images, settings=FuseSettings(device=device)), reps)
    r = {"sizes": f"{w_ir}x{h_ir} onto {w_vis}x{h_vis}", "registration_s": reg_s, "fusion_s": fuse_s,
         "registration_over_fusion": reg_s / fuse_s}
    print(f"\nregistration (--align) of {r['sizes']}: {reg_s:.2f} s; fusing the registered pair "
          f"({images[1].shape[1]}x{images[1].shape[0]}): {fuse_s:.2f} s; registration / fusion = "
          f"{r['registration_over_fusion']:.2f}" + ("  (--smoke sizes: not meaningful)" if smoke else ""))
    return r


def bench_data(smoke: bool) -> dict:
    """Training images delivered per second on one core: decoded from the JPEG folder as
    run_train.py's folder loader does (decode, float resize to 256x256), against the same images
    read from a prepared folder (run_scripts.prepare_data). BSDS500 from ../shared when present,
    else the bundled sample images."""
    import tempfile
    import time

    from configs import DEMO_TRAIN_IMAGES, ROOT
    from utils.data import NaturalImages, list_images
    from utils.prepared import PreparedImages, prepare
    bsds = ROOT.parent / "shared" / "data" / "train_natural" / "bsds500"
    root = DEMO_TRAIN_IMAGES if smoke or not bsds.is_dir() else bsds
    paths = list_images(root)[:8 if smoke else 200]
    size = 32 if smoke else 256

    def rate(data) -> float:
        t = time.perf_counter()
        for k in range(len(data)):
            data[k]
        return len(data) / (time.perf_counter() - t)
    jpeg = rate(NaturalImages(paths, size))
    with tempfile.TemporaryDirectory() as tmp:
        sub = Path(tmp) / "images"
        sub.mkdir()
        for p in paths:  # the same files, in a folder of their own
            (sub / p.name).symlink_to(p.resolve())
        prepare(sub, Path(tmp) / "prep", size, True, "bilinear", 1, progress=False)
        ready = rate(PreparedImages(Path(tmp) / "prep", size))
    r = {"images": len(paths), "source": str(root), "size": size, "jpeg_images_per_s_per_core": jpeg,
         "prepared_images_per_s_per_core": ready, "prepared_over_jpeg": ready / jpeg}
    print(f"\ntraining data, one core, {len(paths)} images of {root.name} at {size}x{size}: folder loader "
          f"{jpeg:.0f} images/s, prepared data {ready:.0f} images/s (prepared at x{ready / jpeg:.0f} the "
          f"folder's rate)")
    return r


def run_sections(args, B, res: dict, amp: bool, reps: int) -> None:
    """Each part not in --skip, printed as it finishes and added to ``res``."""
    dev, peak, smoke = args.device, res["matmul_peak_gflops"], args.smoke
    where = "in this process" if args.in_process or smoke else "fresh process each"
    if "startup" not in args.skip:
        res["startup"] = B.bench_startup(*((48, 64) if smoke else (1152, 1536)), reps)
        print_startup(res["startup"])
    if "fusion" not in args.skip:
        res["fusion"] = B.bench_fusion(dev, [(24, 32)] if smoke else [(576, 768), (768, 1024)], reps, peak, amp,
                                       fresh=not (args.in_process or args.smoke))
        print_fusion(res["fusion"], where)
    if "infer" not in args.skip:
        res["infer"] = bench_infer_set(args, B, reps)
    if "registration" not in args.skip:
        res["registration"] = bench_registration(dev, reps, smoke)
    if "data" not in args.skip:
        res["data"] = bench_data(smoke)
    if "training" not in args.skip:
        res["training"] = B.bench_training(dev, [2] if smoke else [2, 16], 16 if smoke else 256, reps,
                                           args.micro_batch, peak, amp, fresh=not (args.in_process or args.smoke))
        print_training(res["training"], where)
    if "deploy" not in args.skip and dev == "cpu":
        from utils.benchmarking import have_onnxruntime
        if have_onnxruntime():
            from utils.benchmarking_deploy import bench_deploy, print_deploy
            res["deploy"] = bench_deploy(reps, smoke, fresh=not (args.in_process or smoke))
            print_deploy(res["deploy"])
        else:
            print("\ndeploy: skipped (pip install onnx onnxscript onnxruntime)")
    if "video" not in args.skip and dev == "cpu":
        from utils.benchmarking_video import bench_video, have_pyav, print_video
        if not have_pyav():
            print("\nvideo: skipped (pip install -r requirements-video.txt)")
        else:
            res["video"] = bench_video(smoke)
            print_video(res["video"])
    if "memory" not in args.skip:
        h, w = (64, 96) if smoke else (2160, 3840)
        try_untiled = smoke or B.available_mib() > 16_000
        res["memory"] = B.bench_memory(h, w, try_untiled, dev, fresh=not (args.in_process or args.smoke))
        print_memory(res["memory"], w, h, try_untiled, where)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from utils import benchmarking as B
    if args._child:
        kwargs = json.loads(args._child)
        from utils.benchmarking_deploy import CHILDREN as DEPLOY_CHILDREN
        print(json.dumps({**B.CHILDREN, **DEPLOY_CHILDREN}[kwargs.pop("kind")](**kwargs)))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    dev = args.device
    reps = 1 if args.smoke else args.repeats
    B.keep_freed_memory()  # as run_infer.py does, for the end-to-end section
    res = {"device": torch.cuda.get_device_name() if dev == "cuda" else f"cpu, {torch.get_num_threads()} threads",
           "torch": torch.__version__}
    res["matmul_peak_gflops"] = B.matmul_peak(dev, reps, 256 if args.smoke else (8192 if dev == "cuda" else 2048))
    print(f"device: {res['device']}; fp32 matmul {res['matmul_peak_gflops']:.0f} GFLOP/s")
    if args.smoke:
        print("--smoke: tiny sizes, one repetition, contestants in this process: these numbers only show that "
              "every section runs; they say nothing about speed")
    run_sections(args, B, res, args.amp or torch.device(dev).type == "cuda", reps)
    if args.json:
        write_text(args.json, json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
