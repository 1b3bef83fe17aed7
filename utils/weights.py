"""Which weights a fusion job uses and how they are loaded: a shipped file chosen by λ (gray or
RGB), a file given with ``--weights``, or an exported ONNX graph run by onnxruntime.

Everything here raises :class:`utils.errors.JobError` with a message for the user; the loaders
below it (``utils.checkpoint``, ``utils.onnx_backend``) raise ``WeightsError``.
"""
from __future__ import annotations

from pathlib import Path

from utils.errors import JobError, WeightsError

#: λ of the shipped file taken when neither ``--weights`` nor ``--ssim_weight`` is given.
DEFAULT_LAMBDA = 100


def pick_weights(weights: Path | None, ssim_weight: int | None, rgb: bool) -> Path:
    """``weights``, or the shipped file of ``ssim_weight``'s λ (gray, or RGB with ``rgb``)."""
    from configs import SHIPPED_BY_LAMBDA, SHIPPED_RGB_BY_LAMBDA
    lam = ssim_weight or DEFAULT_LAMBDA
    if rgb and weights is not None:
        raise JobError("--rgb picks a shipped RGB file; with --weights the file's own network decides, "
                       "leave out --rgb")
    if rgb and lam not in SHIPPED_RGB_BY_LAMBDA:
        raise JobError(f"no shipped RGB network for lambda = {lam}; shipped: "
                       f"{', '.join(map(str, sorted(SHIPPED_RGB_BY_LAMBDA)))}")
    if weights is None:
        return (SHIPPED_RGB_BY_LAMBDA if rgb else SHIPPED_BY_LAMBDA)[lam][0]
    return weights


#: Networks loaded in this process, by (file, its time and size, λ): a long-lived process (the web
#: demo) loads each once; a changed file is loaded again.
_LOADED: dict = {}


def load_torch_weights(path: Path, ssim_weight: int | None, explicit: bool):
    """``(model, info)`` of :func:`utils.checkpoint.load_model`; ``ssim_weight`` with an
    ``explicit`` file that holds one network is an error (it would be silently ignored)."""
    import os

    from utils.checkpoint import load_model
    st = os.stat(path) if os.path.isfile(path) else None  # else load_model says what is wrong
    key = st and (os.path.realpath(path), st.st_mtime_ns, st.st_size, ssim_weight)
    try:
        loaded = _LOADED.get(key) or load_model(path, ssim_weight)
    except WeightsError as e:
        raise JobError(str(e)) from None
    if key:
        if len(_LOADED) >= 6:
            _LOADED.clear()
        _LOADED[key] = loaded
    model, info = loaded
    if explicit and ssim_weight is not None and not info["kind"].startswith("official TensorFlow"):
        raise JobError(f"--ssim_weight {ssim_weight} was given with --weights {path}, which holds one "
                       f"network ({info['kind']}): leave out --weights to take the shipped lambda = "
                       f"{ssim_weight} file, or leave out --ssim_weight")
    return model, info


def onnx_fusion_metadata(weights: Path | None, strategy: str | None, l1_radius: int | None) -> dict:
    """The checked metadata of the fusion graph ``weights`` (``--backend onnxruntime``): what it
    computes is fixed at export, so a ``strategy`` or ``l1_radius`` asked for must agree with it."""
    if weights is None or weights.suffix.lower() != ".onnx":
        raise JobError("--backend onnxruntime needs --weights FILE.onnx (python -m run_scripts.export_onnx "
                       "WEIGHTS -o FILE.onnx)")
    from utils.onnx_backend import read_metadata
    if not weights.is_file():
        raise JobError(f"{weights}: file not found")
    try:
        meta = read_metadata(weights)
    except WeightsError as e:
        raise JobError(str(e)) from None
    if meta["part"] != "fusion":
        raise JobError(f"{weights} holds the {meta['part']} alone; run_infer.py fuses with a whole fusion graph "
                       f"(export without --part)")
    for flag, ours, theirs in (("--strategy", strategy, meta["strategy"]), ("--l1_radius", l1_radius,
                                                                          meta["l1_radius"])):
        if ours is not None and theirs is not None and ours != theirs:
            raise JobError(f"{flag} {ours} was given, but {weights} was exported with {theirs}; export the file "
                           f"again with {flag} {ours}, or leave the flag out")
    return meta


def load_onnx_network(path: Path, meta: dict):
    """``(OnnxNetwork, info)`` for an exported graph whose metadata was read already."""
    from utils.files import sha256_file
    from utils.onnx_backend import OnnxNetwork
    try:
        net = OnnxNetwork(path, meta=meta)
    except WeightsError as e:
        raise JobError(str(e)) from None
    return net, {"sha256": sha256_file(path), "ssim_weight": None, "kind": "ONNX fusion graph, onnxruntime"}
