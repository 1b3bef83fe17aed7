"""The optimised paths compute what the naive ones do (timing lives in run_scripts/benchmark.py)."""
import platform
import sys

import numpy as np
import pytest
import torch

from models.densefuse import DenseFuse
from models.fusion import STRATEGIES, get_strategy
from run_scripts import benchmark
from tests.conftest import ROOT
from utils import benchmarking
from utils.fusion import FuseSettings, fuse_gray, prepare_model
from utils.losses import DenseFuseLoss


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_fast_path_equals_naive_eager_loop(strategy):
    torch.manual_seed(3)
    naive = DenseFuse().eval()
    fast = prepare_model(DenseFuse().eval())
    fast.load_state_dict(naive.state_dict())
    rng = np.random.default_rng(1)
    a, b = rng.random((61, 83), dtype=np.float32), rng.random((61, 83), dtype=np.float32)
    fn = get_strategy(strategy, 1)
    with torch.no_grad():
        ref = naive.decode(fn(naive.encode(torch.from_numpy(a)[None, None]),
                              naive.encode(torch.from_numpy(b)[None, None])))[0, 0].numpy()
    for tile in (0, -1, 24):
        np.testing.assert_allclose(fuse_gray(fast, a, b, FuseSettings(strategy, 1, tile=tile)), ref, atol=1e-4)


def test_micro_batched_step_equals_whole_batch_step():
    from utils import training
    torch.manual_seed(0)
    x = torch.rand(6, 1, 24, 24)
    crit = DenseFuseLoss(100)
    results = []
    for micro, cl in ((6, False), (2, True)):
        torch.manual_seed(0)
        m = DenseFuse()
        if cl:
            m = m.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(m.parameters(), 1e-3)
        losses = training.train_step(m, crit, opt, x, micro)
        grads = [p.grad.clone() for p in m.parameters()]
        results.append((losses, grads))
    (l1, g1), (l2, g2) = results
    assert l1 == pytest.approx(l2, rel=1e-5)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # 4 s
def test_benchmark_smoke_fusion(tmp_path):
    """Seconds: the fusion part runs its variants (in this process, for speed; the slow test
    below runs them in fresh ones) and writes consistent results: the same pixels as the naive
    loop, onnxruntime's included; ratios and GFLOP/s from the times it reports."""
    import json
    out = tmp_path / "b.json"
    assert benchmark.main(["--smoke", "--in_process", "--skip", "startup", "infer", "training", "memory",
                           "registration", "data", "deploy", "video",
                           "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["matmul_peak_gflops"] > 0 and [r["size"] for r in res["fusion"]] == ["32x24"]
    r = res["fusion"][0]
    assert r["max_abs_diff"] <= 1e-4 and r["identical_8bit_pixels_pct"] > 99
    assert r["onnxruntime_max_abs_diff"] <= 1e-4
    assert all(r[f"{v}_s"] > 0 for v in (*benchmarking.VARIANTS, *benchmarking.ORT_VARIANTS))


@pytest.mark.slow  # 2.2 s: the contestants run once each
def test_benchmark_ratios_from_known_times(tmp_path, monkeypatch):
    """The report's ratios and rates, from timings fixed here (the real ones are noise): each
    contestant's time is known, so every derived column has one right value, and an inverted
    ratio or a wrong FLOP count cannot pass."""
    import json
    known = {"naive": 2.0, "naive_keep_memory": 1.0, "ours": 0.5, "onnxruntime": 0.25, "onnxruntime_tiled": 1.0}
    order = iter([*benchmarking.VARIANTS, *benchmarking.ORT_VARIANTS])
    monkeypatch.setattr(benchmarking, "timed", lambda fn, repeats, sync=None: known[next(order)])
    monkeypatch.setattr(benchmarking, "matmul_peak", lambda *a: 10.0)  # GFLOP/s
    out = tmp_path / "b.json"
    assert benchmark.main(["--smoke", "--in_process", "--skip", "startup", "infer", "training", "memory",
                           "registration", "data", "deploy", "video",
                           "--json", str(out)]) == 0
    r = json.loads(out.read_text())["fusion"][0]
    gflop = 2 * 87_984 * 24 * 32 / 1e9  # multiply-adds per pixel: two encoders and a decoder
    assert r["speedup"] == pytest.approx(4.0) and r["speedup_vs_naive_keep_memory"] == pytest.approx(2.0)
    assert r["ours_over_onnxruntime"] == pytest.approx(0.5) and r["ours_over_onnxruntime_tiled"] == pytest.approx(2)
    assert r["ours_gflops"] == pytest.approx(gflop / 0.5) and r["naive_gflops"] == pytest.approx(gflop / 2)
    assert r["ours_pct_peak"] == pytest.approx(100 * gflop / 0.5 / 10.0)
    assert r["pairs_per_s"] == pytest.approx(2.0)
    # The contestants really ran (once each, for the outputs compared): the same image.
    assert r["max_abs_diff"] <= 1e-4 and r["identical_8bit_pixels_pct"] > 99 and r["onnxruntime_max_abs_diff"] <= 1e-4


@pytest.mark.slow
def test_benchmark_smoke(tmp_path):
    import json
    out = tmp_path / "b.json"
    assert benchmark.main(["--smoke", "--amp", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["matmul_peak_gflops"] > 0
    assert all(r["max_abs_diff"] <= 1e-4 for r in res["fusion"])
    # The mixed-precision path (what --device cuda runs) really ran in bf16: its output differs
    # from fp32 by more than float rounding, by no more than bf16's 8-bit mantissa allows.
    for r in res["fusion"]:
        assert r["max_abs_diff"] < r["amp_max_abs_diff"] < 1e-2
        assert r["amp_pairs_per_s"] == pytest.approx(1 / r["amp_bf16_s"])
    assert [r["batch"] for r in res["training"]] == [2]
    t = res["training"][0]
    # Same seed, same data in three fresh processes: the same first-step loss.
    assert t["first_loss_naive"] == pytest.approx(t["first_loss_ours"], rel=1e-5)
    assert t["first_loss_naive"] == t["first_loss_naive_keep_memory"]
    assert t["naive_img_s"] > 0 and t["ours_img_s"] > 0 and t["convs_only_img_s"] > 0 and t["peak_rss_mib"] > 0
    assert t["amp_speedup"] == pytest.approx(t["amp_img_s"] / t["naive_img_s"])
    assert t["ours_pct_peak"] == pytest.approx(
        100 * t["ours_img_s"] * 2 * benchmarking.TRAIN_MACS_PER_PIXEL * 16 * 16 / 1e9 / res["matmul_peak_gflops"])
    assert res["infer"]["pairs"] == 2
    d = res["data"]
    assert d["jpeg_images_per_s_per_core"] > 0 and d["prepared_images_per_s_per_core"] > 0 and d["images"] == 8
    reg = res["registration"]
    assert reg["registration_s"] > 0 and reg["fusion_s"] > 0 and reg["sizes"] == "80x64 onto 160x90"
    assert all("peak_rss_mib" in r for r in res["memory"])
    s = res["startup"]
    assert 0 < s["help_s"] < s["torch_import_s"]  # --help imports no torch
    assert s["process_speedup"] == pytest.approx(s["naive_process_s"] / s["infer_process_s"])


def test_benchmark_flop_counts_match_pytorchs_counter():
    """The per-pixel multiply-add counts behind the benchmark's GFLOP/s and % of peak, checked
    against torch.utils.flop_counter on the model itself (a fusion; a training forward+backward
    whose input needs no gradient)."""
    from torch.utils.flop_counter import FlopCounterMode
    model, x = DenseFuse(), torch.rand(1, 1, 20, 30)
    with FlopCounterMode(display=False) as fusion:
        benchmarking.naive_fuse(model, x, x)
    with FlopCounterMode(display=False) as training:
        model(x).sum().backward()
    assert fusion.get_total_flops() == 2 * benchmarking.MACS_PER_PIXEL * 20 * 30
    assert training.get_total_flops() == 2 * benchmarking.TRAIN_MACS_PER_PIXEL * 20 * 30


FAULTS_CHILD = """
import resource
import torch
from utils.devices import keep_freed_memory
assert keep_freed_memory(large_blocks={large})
def churn(rounds):  # allocate, touch and free 160 MiB, like a training step
    for _ in range(rounds):
        ts = [torch.ones({numel}) for _ in range({count})]
        del ts
churn(5)  # glibc settles after a few rounds (aligned blocks fragment at first)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn(3)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


#: keep_freed_memory() tunes glibc's malloc; elsewhere (musl, macOS) it returns False by design.
needs_glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                                 reason="glibc's mallopt")


def churn_faults(block_mib: int, large_blocks: bool) -> float:
    """Page faults while re-allocating 3 x 160 MiB in blocks of ``block_mib``, as a fraction of
    the pages touched; in a fresh process (the setting is process-wide and cannot be undone)."""
    import subprocess
    code = FAULTS_CHILD.format(large=large_blocks, numel=block_mib << 18,
                               count=160 // block_mib)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return int(out.stdout.split()[-1]) / (3 * 160 * 2 ** 20 // 4096)


@pytest.mark.slow  # 3 s of timed fusions
@needs_glibc
def test_keep_freed_memory_stops_page_faults():
    """After the setting, re-allocating freed 4 MiB blocks does not page-fault them back in:
    fewer than 5 % of the churned pages fault. (Default glibc usually unmaps or trims them and
    faults nearly all back in, but not always, depending on its dynamic thresholds, so that
    side is not asserted.)"""
    assert churn_faults(4, large_blocks=False) < 0.05


@pytest.mark.slow  # seconds of page faults; the default run checks the normal setting
@needs_glibc
def test_keep_freed_memory_large_blocks():
    """Blocks over the 32 MiB mmap threshold (here 40 MiB) are unmapped on free and fault back
    in every time, unless ``large_blocks`` keeps them too."""
    assert churn_faults(40, large_blocks=False) > 0.9
    assert churn_faults(40, large_blocks=True) < 0.05
