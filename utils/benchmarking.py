"""What run_scripts/benchmark.py measures: timers, the contestants (naive loop, this project's
path, onnxruntime) as functions run in fresh processes, and the start-up figures.

Every figure is the median of ``repeats`` runs after a warm-up. FLOPs count the useful work only:
87,984 multiply-adds per pixel for a fusion (two encoders + decoder), not the halo recomputed by
tiling. The command line, the printed tables and the README's figures are run_scripts/benchmark.py's.
"""
from __future__ import annotations

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

from configs import ROOT
from models.densefuse import DenseFuse
from utils.devices import keep_freed_memory
from utils.fusion import FuseSettings, fuse_gray, postprocess, prepare_model
from utils.images import to_uint8
from utils.losses import DenseFuseLoss

MACS_PER_PIXEL = 87_984
#: Multiply-adds per pixel of one training image: the forward pass (encoder + decoder, 74,016),
#: the weight gradients (as many) and the input gradients of every layer but the first (which
#: has no input gradient: 9 x 1 x 16 fewer). tests/test_speed_paths.py derives both from the model.
TRAIN_MACS_PER_PIXEL = 3 * 74_016 - 144


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


def bf16_autocast(device, enabled: bool = True):
    """Mixed precision as the benchmark times it: bf16 autocast on ``device``'s type. bf16
    rather than fp16: same exponent range as fp32, so training needs no loss scaling."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=enabled)


#: What each timed comparison runs, each in a fresh process (the allocator setting is
#: process-wide and cannot be undone): ``naive``, a plain script (NCHW float32 eager loop,
#: default allocator); ``naive_keep_memory``, the same loop after the allocator setting that
#: run_infer.py / run_train.py use (``keep_freed_memory()``, with ``large_blocks`` for
#: training), to show what that setting alone gives; ``ours``, the project's path as run_infer.py and
#: run_train.py run it.
VARIANTS = ("naive", "naive_keep_memory", "ours")
#: The runtime a deploying user would pick instead (issue #20), on an ONNX export of the same
#: weights with as many intra-op threads as torch uses: ``onnxruntime``, one session.run on the
#: whole image, as a plain deployment script does; ``onnxruntime_tiled``, the same file as
#: ``run_infer.py --backend onnxruntime`` runs it (``OnnxNetwork``, its session options and
#: tiles). Timed only when onnxruntime, onnx and onnxscript are installed.
ORT_VARIANTS = ("onnxruntime", "onnxruntime_tiled")


def have_onnxruntime() -> bool:
    import importlib.util
    return all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))


def ort_session(path: str):
    """A CPU session with torch's thread count, so both runtimes get the same cores."""
    from utils.onnx_backend import require
    ort = require("onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def in_fresh_process(kind: str, fresh: bool = True, **kwargs) -> dict:
    """Run ``CHILDREN[kind](**kwargs)`` in a new Python process and return its result; with
    ``fresh=False`` (``--in_process``: quick, less fair; for tests) in this one."""
    if not fresh:
        return CHILDREN[kind](**kwargs)
    child = json.dumps({"kind": kind, **kwargs})
    out = subprocess.run([sys.executable, "-m", "run_scripts.benchmark", "--_child", child],
                         capture_output=True, text=True, check=False, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child {kind} {kwargs} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def naive_fuse(model, ir, vis):
    """The reference: plain eager NCHW float32, encode, add, decode, under no_grad."""
    with torch.no_grad():
        return model.decode(model.encode(ir) + model.encode(vis))


def benchmark_model() -> DenseFuse:
    """The same random weights in every process."""
    torch.manual_seed(0)
    return DenseFuse().eval()


def fusion_child(variant: str, h: int, w: int, repeats: int, device: str, out: str, amp: bool,
                 onnx: str = "") -> dict:
    """Seconds of one fusion of an h x w random pair by ``variant`` (see VARIANTS and
    ORT_VARIANTS; those read the export ``onnx``), in a fresh process; saves the output to
    ``out`` (.npy) for the parent to compare. With ``amp``, ``ours`` also times bf16 autocast
    and saves that output to ``out`` + ``.amp.npy``."""
    if variant != "naive":
        keep_freed_memory()
    model = benchmark_model().to(device)
    g = torch.Generator().manual_seed(0)
    ir_np, vis_np = torch.rand(h, w, generator=g).numpy(), torch.rand(h, w, generator=g).numpy()
    ir = torch.from_numpy(ir_np)[None, None].to(device)
    vis = torch.from_numpy(vis_np)[None, None].to(device)
    if variant == "onnxruntime":
        session, feeds = ort_session(onnx), {"source0": ir_np[None, None], "source1": vis_np[None, None]}
        fuse = lambda: session.run(None, feeds)[0][0, 0]  # noqa: E731
    elif variant in ("ours", "onnxruntime_tiled"):
        from utils.onnx_backend import OnnxNetwork
        net = OnnxNetwork(Path(onnx), torch.get_num_threads()) if variant == "onnxruntime_tiled" else \
            prepare_model(model, device)
        settings = FuseSettings("add", tile=0, device=device)
        fuse = lambda: fuse_gray(net, ir_np, vis_np, settings)  # noqa: E731
    else:
        fuse = lambda: naive_fuse(model, ir, vis)[0, 0].cpu().numpy()  # noqa: E731
    row = {"seconds": timed(fuse, repeats, sync(device))}
    np.save(out, fuse())
    if variant == "ours" and amp:
        def amp_fuse():
            with bf16_autocast(device):
                return fuse()
        row["amp_bf16_s"] = timed(amp_fuse, repeats, sync(device))
        np.save(out + ".amp.npy", amp_fuse())
    return row


def export_benchmark_model(path: str, model: DenseFuse | None = None) -> str:
    from utils.onnx_graph import export_onnx
    export_onnx(model or benchmark_model(), Path(path), provenance={"weights": "benchmark"})
    return path


def bench_fusion(device, sizes, repeats, peak, amp, fresh: bool = True):
    """Per size, one fresh process per variant; outputs compared with the naive loop's."""
    rows = []
    ort = device == "cpu" and have_onnxruntime()
    with tempfile.TemporaryDirectory() as tmp:
        onnx = export_benchmark_model(f"{tmp}/fusion.onnx") if ort else ""
        for h, w in sizes:
            gflop = 2 * MACS_PER_PIXEL * h * w / 1e9
            row = {"size": f"{w}x{h}"}
            for v in VARIANTS + (ORT_VARIANTS if ort else ()):
                r = in_fresh_process("fusion", fresh, variant=v, h=h, w=w, repeats=repeats, device=device,
                                     out=f"{tmp}/{v}.npy", amp=amp, onnx=onnx)
                row[f"{v}_s"] = r["seconds"]
                row[f"{v}_gflops"] = gflop / r["seconds"]
                row[f"{v}_pct_peak"] = 100 * gflop / r["seconds"] / peak
                if "amp_bf16_s" in r:
                    row["amp_bf16_s"] = r["amp_bf16_s"]
            ref, ours = np.load(f"{tmp}/naive.npy"), np.load(f"{tmp}/ours.npy")
            same8 = np.mean(to_uint8(postprocess(ref, "minmax")) == to_uint8(postprocess(ours, "minmax")))
            row.update(speedup=row["naive_s"] / row["ours_s"],
                       speedup_vs_naive_keep_memory=row["naive_keep_memory_s"] / row["ours_s"],
                       max_abs_diff=float(np.abs(ref - ours).max()),
                       identical_8bit_pixels_pct=100 * float(same8), pairs_per_s=1 / row["ours_s"])
            if ort:
                row.update(ours_over_onnxruntime=row["onnxruntime_s"] / row["ours_s"],
                           ours_over_onnxruntime_tiled=row["onnxruntime_tiled_s"] / row["ours_s"],
                           onnxruntime_max_abs_diff=float(np.abs(ref - np.load(f"{tmp}/onnxruntime.npy")).max()))
            if "amp_bf16_s" in row:
                row.update(amp_speedup=row["naive_s"] / row["amp_bf16_s"], amp_pairs_per_s=1 / row["amp_bf16_s"],
                           amp_max_abs_diff=float(np.abs(ref - np.load(f"{tmp}/ours.npy.amp.npy")).max()))
            rows.append(row)
    return rows


def training_child(variant: str, batch: int, size: int, repeats: int, micro: int, device: str,
                   amp: bool) -> dict:
    """Images/s of one optimizer step of ``variant`` (see VARIANTS; ``ours`` is what
    run_train.py does: channels-last, micro-batches). ``ours`` also reports the process's peak
    RSS after its steps (what the micro-batch size bounds) and times the step's
    convolutions alone (forward and backward of every layer at the micro-batch's shape): the
    ceiling for any step built on these direct convolutions. With ``amp``, ``ours`` then
    times the same step under bf16 autocast (after the fp32 steps, so it starts from
    different weights: its loss is not comparable and is not reported)."""
    from utils import training
    if variant != "naive":
        keep_freed_memory(large_blocks=True)  # as run_train.py does
    x = torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    crit = DenseFuseLoss(100)
    torch.manual_seed(0)  # same initial weights in every process
    model = DenseFuse().to(device)
    if variant == "ours":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        micro = min(micro or training.default_micro_batch(device, batch), batch)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    losses = []

    def step(mixed=False):
        if variant == "ours":
            with bf16_autocast(device, enabled=mixed):
                losses.append(training.train_step(model, crit, opt, x, micro)[0])
        else:
            opt.zero_grad()
            total = crit(model(x), x)[0]
            total.backward()
            losses.append(total.item())
        opt.step()

    step()
    first = losses[0]
    row = {"variant": variant, "img_s": batch / timed(step, repeats, sync(device)), "first_loss": first}
    if variant == "ours":
        row["micro_batch"] = micro
        row["peak_rss_mib"] = peak_rss_mib()
        row["convs_only_img_s"] = batch / (batch / micro * convs_seconds(model, micro, size, repeats, device))
        if amp:
            row["amp_img_s"] = batch / timed(lambda: step(mixed=True), repeats, sync(device))
    return row


def convs_seconds(model, n: int, size: int, repeats: int, device: str) -> float:
    """Seconds for the forward and backward passes of every convolution of ``model`` alone on
    (n, C, size, size) channels-last inputs; the first layer needs no gradient for its input."""
    total = 0.0
    for conv in (m for m in model.modules() if isinstance(m, torch.nn.Conv2d)):
        x = torch.rand(n, conv.in_channels, size + 2, size + 2, device=device)
        x = x.contiguous(memory_format=torch.channels_last).requires_grad_(conv.in_channels > 1)
        g = torch.rand(n, conv.out_channels, size, size, device=device).contiguous(
            memory_format=torch.channels_last)
        wrt = [conv.weight, conv.bias] + ([x] if x.requires_grad else [])
        total += timed(lambda conv=conv, x=x, wrt=wrt, g=g: torch.autograd.grad(conv(x), wrt, g),
                       repeats, sync(device))
    return total


def bench_training(device, batches, size, repeats, micro, peak, amp, fresh: bool = True):
    """One fresh process per (batch, variant); see ``training_child``. ``*_pct_peak``: useful
    FLOPs (TRAIN_MACS_PER_PIXEL) per second as a share of the matmul peak."""
    gflop_per_image = 2 * TRAIN_MACS_PER_PIXEL * size * size / 1e9
    rows = []
    for bs in batches:
        row = {"batch": bs, "size": size}
        for variant in VARIANTS:
            r = in_fresh_process("training", fresh, variant=variant, batch=bs, size=size, repeats=repeats,
                                 micro=micro, device=device, amp=amp)
            row[f"{variant}_img_s"] = r["img_s"]
            row[f"first_loss_{variant}"] = r["first_loss"]
            row.update({k: r[k] for k in ("micro_batch", "peak_rss_mib", "convs_only_img_s", "amp_img_s") if k in r})
        for k in ("naive", "naive_keep_memory", "ours", "convs_only"):
            row[f"{k}_pct_peak"] = 100 * row[f"{k}_img_s"] * gflop_per_image / peak
        row["speedup"] = row["ours_img_s"] / row["naive_img_s"]
        row["speedup_vs_naive_keep_memory"] = row["ours_img_s"] / row["naive_keep_memory_img_s"]
        if "amp_img_s" in row:
            row["amp_speedup"] = row["amp_img_s"] / row["naive_img_s"]
        rows.append(row)
    return rows


def peak_rss_mib() -> float:
    """High-water RSS of this process's address space. VmHWM, not ru_maxrss: on Linux
    ru_maxrss survives execve, so a child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # non-Linux fallback


def memory_child(mode: str, h: int, w: int, device: str) -> dict:
    """Run in a fresh process: fuse one h x w pair as run_infer.py would; print peak RSS (and
    CUDA max allocated), MiB."""
    keep_freed_memory()
    torch.manual_seed(0)
    model = prepare_model(DenseFuse(), device)
    rng = np.random.default_rng(0)
    ir, vis = rng.random((h, w), dtype=np.float32), rng.random((h, w), dtype=np.float32)
    t = time.perf_counter()
    fuse_gray(model, ir, vis, FuseSettings("add", device=device, tile=-1 if mode == "untiled" else 0))
    row = {"mode": mode, "peak_rss_mib": peak_rss_mib(), "seconds": time.perf_counter() - t}
    if device == "cuda":
        row["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return row


def bench_memory(h, w, try_untiled: bool, device: str, fresh: bool = True):
    rows = []
    for mode in ("tiled", "untiled") if try_untiled else ("tiled",):
        try:
            rows.append(in_fresh_process("memory", fresh, mode=mode, h=h, w=w, device=device))
        except RuntimeError as e:  # untiled may run out of memory
            rows.append({"mode": mode, "error": str(e).strip().splitlines()[-1:]})
    return rows


def bench_infer(test_path: Path, repeats: int, device: str):
    """run_infer.py end to end on a set, as a whole process (read, check, fuse, write)."""
    from utils.pairs import find_pairs
    n = len(find_pairs(test_path)[1])
    with tempfile.TemporaryDirectory() as tmp:
        t = process_seconds([sys.executable, "run_infer.py", "--test_path", str(test_path), "--output_path", tmp,
                             "--device", device, "--overwrite"], repeats)
    return {"set": str(test_path), "pairs": n, "seconds": t, "pairs_per_s": n / t}


def process_seconds(cmd: list[str], repeats: int) -> float:
    """Median wall seconds of running ``cmd`` as a whole process (from the repository root)."""
    def once():
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return timed(once, repeats)


def bench_startup(h: int, w: int, repeats: int) -> dict:
    """What a user calling the scripts one pair at a time feels: ``--help`` of the entry points,
    torch's own import, run_infer.py's start-up (process start to the first tile on the network)
    and a whole single-pair fusion against a plain script that imports torch and runs the
    naive loop on the same weights."""
    from configs import SHIPPED_WEIGHTS
    py = sys.executable
    row = {"help_s": {s: process_seconds([py, s, "--help"], repeats) for s in ("run_infer.py", "run_train.py",
                                                                            "run_eval.py")},
           "torch_import_s": process_seconds([py, "-c", "import torch"], repeats)}
    row["help_s"] = max(row["help_s"].values())
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        from PIL import Image
        for name in ("IR1", "VIS1"):
            Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).save(f"{tmp}/{name}.png")
        pair = ["--ir", f"{tmp}/IR1.png", "--vis", f"{tmp}/VIS1.png", "--output_path", f"{tmp}/out", "--overwrite"]
        starts = []
        for _ in range(repeats):
            t0 = time.time()
            out = subprocess.run([py, "-m", "run_scripts.bench_first_tile", *pair, "--device", "cpu"], cwd=ROOT,
                                 check=True, capture_output=True, text=True)
            starts.append(json.loads(out.stdout.strip().splitlines()[-1])["first_tile"] - t0)
        row["infer_startup_s"] = statistics.median(starts)
        row["infer_process_s"] = process_seconds([py, "run_infer.py", *pair, "--device", "cpu"], repeats)
        row["naive_process_s"] = process_seconds([py, "-m", "run_scripts.bench_naive_fusion", str(SHIPPED_WEIGHTS),
                                                  f"{tmp}/IR1.png", f"{tmp}/VIS1.png", f"{tmp}/naive.png"], repeats)
        if have_onnxruntime():
            from utils.checkpoint import load_model
            onnx = export_benchmark_model(f"{tmp}/shipped.onnx", load_model(SHIPPED_WEIGHTS)[0])
            row["onnxruntime_process_s"] = process_seconds(
                [py, "-m", "run_scripts.bench_ort_fusion", onnx, f"{tmp}/IR1.png", f"{tmp}/VIS1.png",
                 f"{tmp}/ort.png", str(torch.get_num_threads())], repeats)
            row["process_speedup_vs_onnxruntime"] = row["onnxruntime_process_s"] / row["infer_process_s"]
    row.update(size=f"{w}x{h}", process_speedup=row["naive_process_s"] / row["infer_process_s"])
    return row


def available_mib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


CHILDREN = {"fusion": fusion_child, "training": training_child, "memory": memory_child}
