"""Benchmark fusion and training: the project's path against a naive eager loop, in one run.

    python run_scripts/benchmark.py                 # CPU, full sizes (a few minutes)
    python run_scripts/benchmark.py --device cuda   # GPU (adds mixed precision)
    python run_scripts/benchmark.py --smoke         # tiny sizes, seconds (used by the tests)

Every figure is the median of --repeats runs after a warm-up. Ratios compare numbers taken in
this same run, so they hold on a noisy shared machine better than absolute times. FLOPs count
the useful work only: 87,984 multiply-adds per pixel for a fusion (two encoders + decoder),
not the halo recomputed by tiling.
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs import TEST_DATA  # noqa: E402
from models.densefuse import DenseFuse  # noqa: E402
from utils.fusion import fuse_gray, postprocess, prepare_model  # noqa: E402
from utils.images import to_uint8  # noqa: E402
from utils.losses import DenseFuseLoss  # noqa: E402

MACS_PER_PIXEL = 87_984


def timed(fn, repeats: int, sync=lambda: None) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    sync()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def matmul_peak(device, repeats: int, n: int) -> float:
    """fp32 matrix-multiply GFLOP/s on ``device``: the yardstick for "% of peak"."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n ** 3 / timed(lambda: a @ b, repeats, sync(device)) / 1e9


def sync(device):
    return torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)


def naive_fuse(model, ir, vis):
    """The reference: plain eager NCHW float32, encode, add, decode, under no_grad."""
    with torch.no_grad():
        return model.decode(model.encode(ir) + model.encode(vis))


def bench_fusion(model, device, sizes, repeats, peak, amp: bool):
    rows = []
    fast = prepare_model(copy.deepcopy(model), device)
    g = torch.Generator().manual_seed(0)
    for h, w in sizes:
        ir_np = torch.rand(h, w, generator=g).numpy()
        vis_np = torch.rand(h, w, generator=g).numpy()
        ir = torch.from_numpy(ir_np)[None, None].to(device)
        vis = torch.from_numpy(vis_np)[None, None].to(device)
        gflop = 2 * MACS_PER_PIXEL * h * w / 1e9
        t_naive = timed(lambda: naive_fuse(model, ir, vis), repeats, sync(device))
        t_ours = timed(lambda: fuse_gray(fast, ir_np, vis_np, "add", device=device), repeats, sync(device))
        ref = naive_fuse(model, ir, vis)[0, 0].cpu().numpy()
        ours = fuse_gray(fast, ir_np, vis_np, "add", device=device)
        same8 = np.mean(to_uint8(postprocess(ref, "minmax")) == to_uint8(postprocess(ours, "minmax")))
        row = {"size": f"{w}x{h}", "naive_s": t_naive, "ours_s": t_ours,
               "naive_gflops": gflop / t_naive, "ours_gflops": gflop / t_ours,
               "naive_pct_peak": 100 * gflop / t_naive / peak, "ours_pct_peak": 100 * gflop / t_ours / peak,
               "speedup": t_naive / t_ours, "max_abs_diff": float(np.abs(ref - ours).max()),
               "identical_8bit_pixels_pct": 100 * float(same8)}
        if amp:
            def amp_fuse():
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    return fuse_gray(fast, ir_np, vis_np, "add", device=device)
            t_amp = timed(amp_fuse, repeats, sync(device))
            row.update(amp_bf16_s=t_amp, amp_speedup=t_naive / t_amp,
                       amp_max_abs_diff=float(np.abs(ref - amp_fuse()).max()),
                       pairs_per_s=1 / t_ours)
        rows.append(row)
    return rows


def bench_training(device, batches, size, repeats, micro):
    """Images/s of one optimizer step, naive (NCHW, whole batch) vs the project's step."""
    import run_train
    rows = []
    for bs in batches:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(bs, 1, size, size, generator=g).to(device)
        crit = DenseFuseLoss(100)
        torch.manual_seed(0)
        naive = DenseFuse().to(device)
        opt_n = torch.optim.Adam(naive.parameters(), 1e-4)
        ours = copy.deepcopy(naive).to(memory_format=torch.channels_last)
        opt_o = torch.optim.Adam(ours.parameters(), 1e-4)
        losses = {}

        def naive_step():
            opt_n.zero_grad()
            total = crit(naive(x), x)[0]
            total.backward()
            opt_n.step()
            losses["naive"] = total.item()

        xc = x.contiguous(memory_format=torch.channels_last)
        mb = micro or (2 if torch.device(device).type == "cpu" else bs)

        def our_step():
            losses["ours"] = run_train.train_step(ours, crit, opt_o, xc, mb)[0]
            opt_o.step()

        # Same starting weights, same data: the first-step losses must agree.
        naive_step()
        our_step()
        first = dict(losses)
        t_n = timed(naive_step, repeats, sync(device))
        t_o = timed(our_step, repeats, sync(device))
        rows.append({"batch": bs, "size": size, "micro_batch": mb, "naive_img_s": bs / t_n,
                     "ours_img_s": bs / t_o, "speedup": t_n / t_o,
                     "first_loss_naive": first["naive"], "first_loss_ours": first["ours"]})
    return rows


def peak_rss_mib() -> float:
    """High-water RSS of this process's address space. VmHWM, not ru_maxrss: on Linux
    ru_maxrss survives execve, so a child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # non-Linux fallback


def memory_child(mode: str, h: int, w: int, device: str) -> None:
    """Run in a fresh process: fuse one h x w pair; print peak RSS (and CUDA max allocated), MiB."""
    torch.manual_seed(0)
    model = prepare_model(DenseFuse(), device)
    rng = np.random.default_rng(0)
    ir, vis = rng.random((h, w), dtype=np.float32), rng.random((h, w), dtype=np.float32)
    t = time.perf_counter()
    fuse_gray(model, ir, vis, "add", device=device, tile=-1 if mode == "untiled" else 0)
    row = {"mode": mode, "peak_rss_mib": peak_rss_mib(), "seconds": time.perf_counter() - t}
    if device == "cuda":
        row["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    print(json.dumps(row))


def bench_memory(h, w, try_untiled: bool, device: str):
    rows = []
    for mode in ("tiled", "untiled") if try_untiled else ("tiled",):
        out = subprocess.run([sys.executable, __file__, "--_memory_child", mode, str(h), str(w), device],
                             capture_output=True, text=True)
        if out.returncode != 0:
            rows.append({"mode": mode, "error": out.stderr.strip().splitlines()[-1:]})
        else:
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def bench_infer(test_path: Path, repeats: int, device: str):
    import run_infer
    from utils.pairs import find_pairs
    n = len(find_pairs(test_path)[1])
    with tempfile.TemporaryDirectory() as tmp:
        t = timed(lambda: run_infer.main(["--test_path", str(test_path), "--output_path", tmp,
                                          "--device", device]), repeats)
    return {"set": str(test_path), "pairs": n, "seconds": t, "pairs_per_s": n / t}


def available_mib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions (median reported)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one repetition (for tests)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--skip", nargs="*", default=[], choices=["fusion", "infer", "training", "memory"],
                   help="parts to leave out")
    p.add_argument("--_memory_child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._memory_child:
        mode, h, w, device = args._memory_child
        memory_child(mode, int(h), int(w), device)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    dev = args.device
    reps = 1 if args.smoke else args.repeats
    torch.manual_seed(0)
    model = DenseFuse().to(dev).eval()
    res = {"device": torch.cuda.get_device_name() if dev == "cuda" else f"cpu, {torch.get_num_threads()} threads",
           "torch": torch.__version__}
    res["matmul_peak_gflops"] = matmul_peak(dev, reps, 256 if args.smoke else (8192 if dev == "cuda" else 2048))
    peak = res["matmul_peak_gflops"]
    print(f"device: {res['device']}; fp32 matmul peak {peak:.0f} GFLOP/s")
    if "fusion" not in args.skip:
        sizes = [(24, 32), (40, 36)] if args.smoke else [(576, 768), (768, 1024)]
        res["fusion"] = bench_fusion(model, dev, sizes, reps, peak, amp=dev == "cuda")
        print("\nfusion (add), seconds | GFLOP/s | % of peak")
        for r in res["fusion"]:
            print(f"  {r['size']:>9}: naive {r['naive_s']:.3f} s | {r['naive_gflops']:.0f} | "
                  f"{r['naive_pct_peak']:.0f}%   ours {r['ours_s']:.3f} s | {r['ours_gflops']:.0f} | "
                  f"{r['ours_pct_peak']:.0f}%   speed-up x{r['speedup']:.2f}   max|diff| "
                  f"{r['max_abs_diff']:.1e}, identical 8-bit pixels {r['identical_8bit_pixels_pct']:.3f}%"
                  + (f"   bf16 autocast x{r['amp_speedup']:.2f}, {r['pairs_per_s']:.1f} pairs/s"
                     if "amp_speedup" in r else ""))
    if "infer" not in args.skip:
        with tempfile.TemporaryDirectory() as tmp:
            tno = TEST_DATA / "Tno"
            if args.smoke:  # a tiny generated set
                from PIL import Image
                rng = np.random.default_rng(0)
                for name in ("IR1", "VIS1", "IR2", "VIS2"):
                    Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8)).save(f"{tmp}/{name}.png")
                tno = Path(tmp)
            res["infer"] = bench_infer(tno, reps, dev)
        print(f"\nrun_infer.py end to end on {res['infer']['set']}: {res['infer']['pairs']} pairs in "
              f"{res['infer']['seconds']:.1f} s = {res['infer']['pairs_per_s']:.2f} pairs/s")
    if "training" not in args.skip:
        res["training"] = bench_training(dev, [2, 4] if args.smoke else [2, 16],
                                         16 if args.smoke else 256, reps, 0)
        print("\ntraining step, images/s")
        for r in res["training"]:
            print(f"  batch {r['batch']:>2} at {r['size']}x{r['size']}: naive {r['naive_img_s']:.2f}, ours "
                  f"{r['ours_img_s']:.2f} (micro-batch {r['micro_batch']}), x{r['speedup']:.2f}; first-step "
                  f"loss {r['first_loss_naive']:.6f} vs {r['first_loss_ours']:.6f}")
    if "memory" not in args.skip:
        h, w = (64, 96) if args.smoke else (2160, 3840)
        try_untiled = args.smoke or available_mib() > 16_000
        res["memory"] = bench_memory(h, w, try_untiled, dev)
        print(f"\npeak RSS fusing one {w}x{h} pair (fresh process each)")
        for r in res["memory"]:
            print(f"  {r['mode']:>8}: " + (f"{r['peak_rss_mib']:.0f} MiB in {r['seconds']:.1f} s"
                                           + (f", CUDA max allocated {r['cuda_max_allocated_mib']:.0f} MiB"
                                              if "cuda_max_allocated_mib" in r else "")
                                           if "peak_rss_mib" in r else f"failed: {r['error']}"))
        if not try_untiled:
            print("  untiled: skipped (needs > 16 GB free)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
