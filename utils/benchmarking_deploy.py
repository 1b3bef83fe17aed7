"""The ``deploy`` part of run_scripts/benchmark.py: the onnxruntime backend as a deploying user runs it.

Whole processes, each the median seconds and the largest peak resident memory (the kernel's
``ru_maxrss`` of that process) of ``repeats`` runs after a warm-up run: the plain onnxruntime
script (run_scripts/bench_ort_fusion.py, written apart from the backend: numpy, Pillow and one
``session.run`` on the whole image), ``run_infer.py`` on torch, and ``run_infer.py --backend
onnxruntime``, on one 1536x1152 pair; that backend on a 3840x2160 pair; and the session options
of ``utils.onnx_backend.session_options``, each changed alone, timed on the same pair in a fresh
process. Ratios compare figures of this one run.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from configs import ROOT, SHIPPED_WEIGHTS, TEST_DATA

#: Each session option the backend sets, changed alone (``chosen``: as the backend sets them).
OPTION_VARIANTS = ("chosen", "one_thread", "basic_optimisation", "no_arena", "parallel_execution")


#: Runs ``argv[2:]`` as its child and writes the child's peak resident KiB to ``argv[1]``. Linux
#: starts a process's peak at that of the process it was forked from (the mm replaced at exec
#: counts): measured from this benchmark or pytest, a child would "peak" at their size; forked
#: from this small interpreter it starts at ~10 MiB.
PEAK_WRAPPER = """import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(cmd: list[str], log: Path) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of one process (its stderr to ``log``)."""
    t = time.perf_counter()
    with open(log, "wb") as err:
        done = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, f"{log}.peak", *cmd], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=err, check=False)
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{log.read_text(errors='replace')[-2000:]}")
    return seconds, int(Path(f"{log}.peak").read_text()) / 1024


def process_figures(cmd: list[str], repeats: int, log: Path) -> dict:
    run_measured(cmd, log)  # warm-up: the files in the page cache, as for the others
    runs = [run_measured(cmd, log) for _ in range(repeats)]
    return {"seconds": statistics.median(r[0] for r in runs), "peak_mib": max(r[1] for r in runs)}


def write_pair(folder: Path, h: int, w: int) -> tuple[Path, Path]:
    """TNO's first pair resampled to w x h (real content at a deployment's size), as 8-bit PNGs."""
    from PIL import Image
    paths = folder / "IR1.png", folder / "VIS1.png"
    for src, dst in zip(("IR1.png", "VIS1.png"), paths, strict=True):
        Image.open(TEST_DATA / "Tno" / src).convert("L").resize((w, h), Image.BICUBIC).save(dst)
    return paths


def options_child(variant: str, onnx: str, h: int, w: int, repeats: int) -> dict:
    """Seconds of one fusion of an h x w pair through ``OnnxNetwork`` (its tiles) with the
    backend's session options, ``variant`` changed alone (OPTION_VARIANTS)."""
    import utils.onnx_backend as OB
    from utils.benchmarking import timed
    from utils.fusion import FuseSettings, fuse_sources
    ort, chosen = OB.require("onnxruntime"), OB.session_options

    def changed(threads=None):
        opts = chosen(threads)
        if variant == "one_thread":
            opts.intra_op_num_threads = 1
        elif variant == "basic_optimisation":
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        elif variant == "no_arena":
            opts.enable_cpu_mem_arena = False
        elif variant == "parallel_execution":
            opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        return opts
    OB.session_options = changed
    net = OB.OnnxNetwork(Path(onnx))
    rng = np.random.default_rng(0)
    images = [rng.random((h, w), dtype=np.float32) for _ in range(2)]
    return {"seconds": timed(lambda: fuse_sources(net, images, FuseSettings("add", tile=0)), repeats)}


#: The benchmark children of this part (run_scripts/benchmark.py --_child).
CHILDREN = {"ort_options": options_child}


def bench_deploy(repeats: int, smoke: bool, fresh: bool = True) -> dict:
    """The figures of the module docstring (``smoke``: tiny images, meaningless numbers)."""
    from PIL import Image

    from utils.benchmarking import export_benchmark_model, in_fresh_process
    from utils.checkpoint import load_model
    from utils.onnx_backend import cores
    py = sys.executable
    (h, w), (h4, w4) = ((72, 96), (120, 200)) if smoke else ((1152, 1536), (2160, 3840))
    row: dict = {"size": f"{w}x{h}", "size_4k": f"{w4}x{h4}", "threads": cores()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        log = tmp / "stderr.txt"
        onnx = export_benchmark_model(str(tmp / "shipped.onnx"), load_model(SHIPPED_WEIGHTS)[0])
        ir, vis = write_pair(tmp, h, w)
        pair = ["--ir", str(ir), "--vis", str(vis), "--overwrite"]
        contestants = {
            "plain_onnxruntime": [py, "-m", "run_scripts.bench_ort_fusion", onnx, str(ir), str(vis),
                                  str(tmp / "plain.png"), str(cores())],
            "run_infer_torch": [py, "run_infer.py", *pair, "--output_path", str(tmp / "torch"), "--device", "cpu"],
            "run_infer_onnxruntime": [py, "run_infer.py", *pair, "--output_path", str(tmp / "ort"),
                                      "--backend", "onnxruntime", "--weights", onnx]}
        for name, cmd in contestants.items():
            row[name] = process_figures(cmd, repeats, log)
        row["onnxruntime_over_plain"] = row["plain_onnxruntime"]["seconds"] / row["run_infer_onnxruntime"]["seconds"]
        plain, ours = (np.asarray(Image.open(p), np.int16) for p in (tmp / "plain.png", *(tmp / "ort").rglob("*.png")))
        row["max_level_diff_vs_plain"] = int(np.abs(plain - ours).max())
        (tmp / "4k").mkdir()
        ir4, vis4 = write_pair(tmp / "4k", h4, w4)
        row["onnxruntime_4k"] = process_figures(  # one run after the warm-up: ~20 s each
            [py, "run_infer.py", "--ir", str(ir4), "--vis", str(vis4), "--output_path", str(tmp / "4k" / "out"),
             "--overwrite", "--backend", "onnxruntime", "--weights", onnx], 1, log)
        kwargs = {"onnx": onnx, "h": h, "w": w, "repeats": repeats}
        row["options_s"] = {v: (in_fresh_process("ort_options", variant=v, **kwargs) if fresh
                                else options_child(v, **kwargs))["seconds"] for v in OPTION_VARIANTS}
    return row


def process_figure(entry: dict, digits: int = 2) -> str:
    """One :func:`process_figures` entry as printed: ``"4.11 s, 385 MiB"``."""
    return f"{entry['seconds']:.{digits}f} s, {entry['peak_mib']:.0f} MiB"


def print_deploy(r: dict) -> None:
    def fig(name):
        return process_figure(r[name])
    print(f"\ndeploy, one {r['size']} pair, whole processes (median seconds; peak resident memory), "
          f"{r['threads']} threads: plain onnxruntime script {fig('plain_onnxruntime')} | run_infer.py (torch) "
          f"{fig('run_infer_torch')} | run_infer.py --backend onnxruntime {fig('run_infer_onnxruntime')} "
          f"(x{r['onnxruntime_over_plain']:.2f} the plain script's speed; 8-bit images differ by at most "
          f"{r['max_level_diff_vs_plain']} level)")
    print(f"  {r['size_4k']} pair, run_infer.py --backend onnxruntime: {fig('onnxruntime_4k')}")
    chosen = r["options_s"]["chosen"]
    print(f"  session options, one {r['size']} pair (fresh process each): as chosen {chosen:.2f} s; each changed "
          "alone: " + ", ".join(f"{v} x{chosen / s:.2f} the chosen speed" for v, s in r["options_s"].items()
                                if v != "chosen"))
