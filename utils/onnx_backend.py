"""onnxruntime as a fusion backend, without torch: the deploy path (docs/deploy.md).

Runs a fusion graph written by ``run_scripts/export_onnx.py`` (``utils/onnx_graph.py``): inputs
``source0 .. source{N-1}``, each float32 (1, C, H, W) in [0, 1], output ``fused`` (1, C, H, W),
the decoder's raw output; height and width are dynamic, so whole images and tiles share one
session. The file's ``densefuse`` metadata (JSON) says which strategy, radius and network it
holds; it is read through onnxruntime's own ``get_modelmeta()``.

This module, and everything ``run_infer.py --backend onnxruntime`` imports, needs only numpy,
Pillow and onnxruntime (requirements-deploy.txt): no torch, no ``onnx`` package. A test checks
the import set.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from configs import RADIUS_STRATEGIES, RECEPTIVE_RADIUS, STRATEGY_NAMES
from utils.errors import WeightsError

#: The metadata key and format tag of an exported file.
METADATA_KEY = "densefuse"
FORMAT = "densefuse-onnx/1"
PARTS = ("fusion", "encoder", "decoder")


def require(module: str, package: str | None = None):
    """Import an optional package, or fail with the pip command that installs it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise WeightsError(f"this needs the {package or module} package: pip install {package or module}") from None


def cores() -> int:
    """CPU cores this process may run on (its affinity mask, as taskset or a container sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def session_options(threads: int | None = None):
    """The session options of the backend, each checked by a measurement (docs/deploy.md; the
    ``deploy`` part of run_scripts/benchmark.py times each against these): intra-op threads = the
    cores this process may use (onnxruntime's default counts the machine's, ignoring an affinity
    mask; one thread instead of two is ~1.8x slower here); every graph optimisation (convolution +
    activation fusion and the blocked NCHWc layout: ``basic`` is ~1.2x slower); the memory arena
    on (off, every tile allocates afresh: ~1.4x slower); sequential execution and one inter-op
    thread (the graph is a chain: parallel execution gained nothing)."""
    ort = require("onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or cores()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_cpu_mem_arena = True
    return opts


#: Sessions by (file, its size and time, threads), the few last used: reading the metadata and
#: fusing share one load of the graph.
_SESSIONS: OrderedDict = OrderedDict()


def session(path: Path, threads: int | None = None):
    """An onnxruntime session of ``path`` on the CPU with :func:`session_options` (``threads``:
    intra-op threads, None = :func:`cores`); a WeightsError naming the file when onnxruntime
    cannot load it (not ONNX, a broken graph, external data outside the graph's folder)."""
    ort = require("onnxruntime")
    try:
        st = os.stat(path)
    except OSError as e:
        raise WeightsError(f"{path}: {e.strerror or e}") from None
    key = (os.path.realpath(path), st.st_mtime_ns, st.st_size, threads)
    if key not in _SESSIONS:
        try:
            _SESSIONS[key] = ort.InferenceSession(str(path), session_options(threads),
                                                  providers=["CPUExecutionProvider"])
        except Exception as e:  # its own exception types (Fail, InvalidGraph, ...) carry the reason
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WeightsError(f"{path}: onnxruntime cannot load this graph ({reason[:300]})") from None
        while len(_SESSIONS) > 4:
            _SESSIONS.popitem(last=False)
    _SESSIONS.move_to_end(key)
    return _SESSIONS[key]


def read_metadata(path: Path) -> dict:
    """The ``densefuse`` metadata of an exported file, checked (:func:`metadata_problem`); a clear
    error for any other file. The metadata is untrusted: it decides the strategy, tiling halo and
    what the record says, so a forged or damaged entry is refused, never half-used."""
    # Through onnxruntime's own reader: the backend needs neither the onnx package (a second
    # second of imports) nor a second load, the session is the one that fuses.
    props = session(path).get_modelmeta().custom_metadata_map
    try:
        meta = json.loads(props[METADATA_KEY])
    except (KeyError, ValueError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise WeightsError(f"{path}: an ONNX file not written by run_scripts/export_onnx.py (no {METADATA_KEY!r} "
                           f"metadata of format {FORMAT}); export one with python -m run_scripts.export_onnx")
    if problem := metadata_problem(meta):
        raise WeightsError(f"{path}: damaged {METADATA_KEY!r} metadata: {problem}; export the file again")
    return meta


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def metadata_problem(meta: dict) -> str | None:
    """What is wrong with an exported file's metadata, or None: the part, the network's arguments
    and, for a fusion graph, its strategy, radius and number of sources."""
    args = meta.get("model_args")
    if meta.get("part") not in PARTS:
        return f"part {meta.get('part')!r} is not one of {PARTS}"
    if (not isinstance(args, dict) or not _is_int(args.get("channels")) or args["channels"] not in (1, 3)
            or not isinstance(args.get("final_relu", False), bool)):
        return f"model_args {args!r}: channels must be 1 or 3, final_relu true/false"
    if meta["part"] != "fusion":
        return None
    strategy, radius, sources = meta.get("strategy"), meta.get("l1_radius"), meta.get("sources")
    if strategy not in STRATEGY_NAMES:
        return f"strategy {strategy!r} is not one of {sorted(STRATEGY_NAMES)}"
    if strategy in RADIUS_STRATEGIES and not (_is_int(radius) and 0 <= radius <= 1000):
        return f"l1_radius {radius!r} is not a whole number from 0 to 1000"
    if not (_is_int(sources) and sources >= 2):
        return f"sources {sources!r} is not a whole number of at least 2"
    return None


def graph_problem(session, meta: dict) -> str | None:
    """Whether the graph's real inputs and output are what its metadata says (a fusion graph:
    ``sources`` inputs of shape (1, channels, H, W), one output), or what differs."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    c = meta["model_args"]["channels"]
    if len(inputs) != meta["sources"] or len(outputs) != 1:
        return (f"the graph takes {len(inputs)} input(s) and gives {len(outputs)}; its metadata says "
                f"{meta['sources']} and 1")
    for i in inputs:  # a dynamic axis is a name (str) or None; the channel axis is exported fixed
        if len(i.shape) != 4 or (isinstance(i.shape[1], int) and i.shape[1] != c):
            return f"input {i.name} has shape {i.shape}; its metadata says (1, {c}, H, W)"
    return None


class OnnxNetwork:
    """An exported fusion graph run by onnxruntime, with :class:`utils.fusion.TorchNetwork`'s
    call: a (N,C,h,w) float32 array of sources -> the fused (1,C,h,w) float32 array."""

    #: The tile size ``--tile 0`` picks (``utils.fusion.auto_tile``). Untiled, onnxruntime is
    #: memory-bound as PyTorch is: a 1536x1152 pair took 7.6 s and 3.8 GB whole, 4.3 s and 0.39 GB
    #: in 256-pixel tiles; 512-pixel tiles were no faster and the arena kept ~1.2 GB (one block per
    #: tile shape). A 4K pair in 256-pixel tiles peaks at ~0.5 GB (docs/deploy.md).
    auto_tile = 256

    def __init__(self, path: Path, threads: int | None = None, meta: dict | None = None):
        """``meta``: the file's :func:`read_metadata`, when the caller has read it already."""
        self.meta = meta or read_metadata(path)
        if self.meta["part"] != "fusion":
            raise WeightsError(f"{path} holds the {self.meta['part']} alone; fusing needs a whole fusion graph "
                               f"(export without --part)")
        self.session = session(path, threads)
        if problem := graph_problem(self.session, self.meta):
            raise WeightsError(f"{path}: {problem}; export the file again")
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.channels = self.meta["model_args"]["channels"]
        self.halo = RECEPTIVE_RADIUS + (self.meta["l1_radius"] or 0)  # None unless the strategy takes one

    @property
    def sources(self) -> int:
        return len(self.inputs)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] != self.sources:
            raise ValueError(f"this ONNX graph fuses {self.sources} sources, got {x.shape[0]}")
        arrays = np.ascontiguousarray(x, dtype=np.float32)
        feeds = {name: arrays[k:k + 1] for k, name in enumerate(self.inputs)}
        try:
            out = self.session.run(None, feeds)[0]
        except Exception as e:  # onnxruntime's own types; a graph that loads but cannot run these inputs
            from utils.fusion import FusionError
            reason = str(e).strip()[:300] or type(e).__name__
            raise FusionError(f"onnxruntime failed on this graph ({reason})") from None
        return out
