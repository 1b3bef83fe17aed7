"""ONNX export of the fusion graph, and onnxruntime as a fusion backend.

The exported graph is the whole of paper Fig. 3 for N sources: inputs ``source0 .. source{N-1}``,
each float32 (1, C, H, W) in [0, 1] in the order given, output ``fused`` (1, C, H, W): the
decoder's raw output, before any 8-bit conversion (``utils.fusion.postprocess`` does that, for
both backends). Height and width are dynamic. ``part="encoder"`` exports ``image`` (B,C,H,W) ->
``features`` (B,64,H,W) and ``part="decoder"`` the reverse, for people who fuse features
themselves. Every strategy exports (they are sums, products, maxima, an average pool and a
``Where``); the file records which one it holds, with the network's arguments and the weights'
hash, in its metadata (``densefuse`` key, JSON), so that a run can say what made its pixels.

onnx, onnxscript (the exporter) and onnxruntime are optional: only exporting and
``--backend onnxruntime`` need them, and a missing one is an error naming the package.
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.densefuse import DenseFuse
from models.fusion import STRATEGIES, get_strategy, strategy_radius, takes_radius
from utils.errors import WeightsError

#: Recent and supported by onnxruntime's CPU provider; the dynamo exporter's own default.
OPSET = 18
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


class FusionGraph(nn.Module):
    """N source images (each (1,C,H,W)) -> fused image (1,C,H,W): encode as one batch, fuse, decode."""

    def __init__(self, model: DenseFuse, strategy: str, radius: int):
        super().__init__()
        self.model, self.fn = model, get_strategy(strategy, radius)

    def forward(self, *sources: torch.Tensor) -> torch.Tensor:
        return self.model.fuse(sources, self.fn)


class Part(nn.Module):
    """The encoder or the decoder alone (batched)."""

    def __init__(self, model: DenseFuse, part: str):
        super().__init__()
        self.model, self.part = model, part

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x) if self.part == "encoder" else self.model.decode(x)


def graph_and_inputs(model: DenseFuse, part: str, strategy: str, radius: int, sources: int):
    """The module to export, example inputs, input and output names, and their dynamic axes."""
    c = model.model_args()["channels"]
    hw = {2: torch.export.Dim("height", min=2), 3: torch.export.Dim("width", min=2)}
    if part == "fusion":
        names = [f"source{k}" for k in range(sources)]
        example = tuple(torch.rand(1, c, 40, 52) for _ in range(sources))
        return FusionGraph(model, strategy, radius), example, names, ["fused"], ((hw,) * sources,)
    batch = {0: torch.export.Dim("batch", min=1), **hw}
    inp, out = ("image", "features") if part == "encoder" else ("features", "image")
    example = (torch.rand(2, c if part == "encoder" else 64, 40, 52),)
    return Part(model, part), example, [inp], [out], (batch,)


def export_onnx(model: DenseFuse, path: Path, *, part: str = "fusion", strategy: str = "add", radius: int = 1,
                sources: int = 2, provenance: dict | None = None, opset: int = OPSET) -> dict:
    """Write ``model``'s graph to ``path`` (atomically), check it with ``onnx.checker``, and
    return the metadata recorded in it. ``provenance``: what to record about the weights."""
    onnx = require("onnx")
    require("onnxscript")
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; choose from {PARTS}")
    if part == "fusion" and sources < 2:
        raise ValueError(f"a fusion graph needs at least 2 sources, got {sources}")
    model = model.float().eval()
    module, example, inputs, outputs, dynamic = graph_and_inputs(model, part, strategy, radius, sources)
    for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)  # "torchvision is not installed" and the like
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on axis names and deprecations
        program = torch.onnx.export(module, example, input_names=inputs, output_names=outputs,
                                    opset_version=opset, dynamo=True, dynamic_shapes=dynamic, verbose=False)
    proto = program.model_proto
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:
        raise WeightsError(f"opset {opset} was asked for, but the exporter wrote opset {written}; "
                           f"choose an opset from 18 to {onnx.defs.onnx_opset_version()}")
    meta = {"format": FORMAT, "part": part, "model_args": model.model_args(), **(provenance or {})}
    if part == "fusion":
        meta.update(strategy=strategy, l1_radius=radius if takes_radius(strategy) else None, sources=sources)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.checker.check_model(proto, full_check=True)
    from utils.files import atomic_write
    atomic_write(Path(path), lambda fh: fh.write(proto.SerializeToString()))
    return {**meta, "opset": written}


#: Sessions by (file, its size and time, threads), the few last used: reading the metadata and
#: fusing share one load of the graph.
_SESSIONS: OrderedDict = OrderedDict()


def session(path: Path, threads: int | None = None):
    """An onnxruntime session of ``path`` on the CPU (``threads``: intra-op threads, None =
    onnxruntime's default); a WeightsError naming the file when onnxruntime cannot load it
    (not ONNX, a broken graph, external data outside the graph's folder)."""
    ort = require("onnxruntime")
    try:
        st = os.stat(path)
    except OSError as e:
        raise WeightsError(f"{path}: {e.strerror or e}") from None
    key = (os.path.realpath(path), st.st_mtime_ns, st.st_size, threads)
    if key not in _SESSIONS:
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            _SESSIONS[key] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
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
    if strategy not in STRATEGIES:
        return f"strategy {strategy!r} is not one of {sorted(STRATEGIES)}"
    if takes_radius(strategy) and not (_is_int(radius) and 0 <= radius <= 1000):
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
    call: a (N,C,h,w) CPU tensor of sources -> the fused (1,C,h,w) tensor."""

    #: Untiled unless huge (``utils.fusion.auto_tile``): onnxruntime fuses a 1024x768 pair
    #: ~1.5x faster in one call than in 192-pixel tiles (run_scripts/benchmark.py; each call
    #: pays for reordering into its blocked layout and for the halo), while PyTorch gains from
    #: tiles that keep activations in cache.
    whole_images = True

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
        self.halo = DenseFuse.RECEPTIVE_RADIUS + strategy_radius(self.meta["strategy"], self.meta["l1_radius"] or 0)

    @property
    def sources(self) -> int:
        return len(self.inputs)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self.sources:
            raise ValueError(f"this ONNX graph fuses {self.sources} sources, got {x.shape[0]}")
        arrays = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        feeds = {name: arrays[k:k + 1] for k, name in enumerate(self.inputs)}
        try:
            out = self.session.run(None, feeds)[0]
        except Exception as e:  # onnxruntime's own types; a graph that loads but cannot run these inputs
            from utils.fusion import FusionError
            reason = str(e).strip()[:300] or type(e).__name__
            raise FusionError(f"onnxruntime failed on this graph ({reason})") from None
        return torch.from_numpy(out)
