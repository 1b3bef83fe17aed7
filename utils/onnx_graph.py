"""ONNX export of the fusion graph (run_scripts/export_onnx.py); running it is utils/onnx_backend.py.

The exported graph is the whole of paper Fig. 3 for N sources: inputs ``source0 .. source{N-1}``,
each float32 (1, C, H, W) in [0, 1] in the order given, output ``fused`` (1, C, H, W): the
decoder's raw output, before any 8-bit conversion (``utils.fusion.postprocess`` does that, for
both backends). Height and width are dynamic. ``part="encoder"`` exports ``image`` (B,C,H,W) ->
``features`` (B,64,H,W) and ``part="decoder"`` the reverse, for people who fuse features
themselves. Every strategy exports (they are sums, products, maxima, an average pool and a
``Where``); the file records which one it holds, with the network's arguments and the weights'
hash, in its metadata (``densefuse`` key, JSON), so that a run can say what made its pixels.

onnx and onnxscript (the exporter) are optional: only exporting needs them, and a missing one is
an error naming the package. Exporting needs torch; running the file (utils/onnx_backend.py) does not.
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from models.densefuse import DenseFuse
from models.fusion import get_strategy, takes_radius
from utils.errors import WeightsError
from utils.onnx_backend import FORMAT, METADATA_KEY, PARTS, require

#: Recent and supported by onnxruntime's CPU provider; the dynamo exporter's own default.
OPSET = 18


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
