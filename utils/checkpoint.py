"""Checkpoints: atomic, self-describing saves and safe loading of every supported weight file.

A project checkpoint is a dict ``{"format", "model", "config", "epoch", "step", "optimizer",
"scheduler", ...}`` saved with ``torch.save`` from the bare module and loaded with
``torch.load(weights_only=True)``, which refuses pickles that would run code. Shipped weights
are a bare state_dict whose SHA-256 is checked before loading.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import torch
from torch import nn

from models.densefuse import DenseFuse
from utils.files import atomic_write

FORMAT = "densefuse-pytorch/1"


class WeightsError(ValueError):
    """A weight file that cannot be used; the message names the file (and key) at fault."""


def bare_module(model: nn.Module) -> nn.Module:
    """Unwrap DataParallel/DDP and torch.compile wrappers so saved keys are plain."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``:
    a crash at any moment leaves either the old file or the new one, never half of one."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


def save_checkpoint(path, model: nn.Module, config: dict, epoch: int, step: int,
                    optimizer=None, scheduler=None, **extra) -> None:
    """Write a resumable, self-describing checkpoint atomically."""
    payload = {
        "format": FORMAT,
        "model": bare_module(model).state_dict(),
        "config": dict(config),
        "epoch": epoch,
        "step": step,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        **extra,
    }
    atomic_torch_save(payload, path)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def torch_load(path: str | os.PathLike):
    """``torch.load(weights_only=True)`` on CPU with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightsError(
            f"{path}: refused: the file needs arbitrary code to load (not a plain weights file), "
            f"or is not a PyTorch file ({str(e).splitlines()[0]})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): "
                           f"{str(e).splitlines()[0]}") from None


def check_state_dict(state: dict, reference: dict, source: str) -> None:
    """Refuse missing/unexpected keys, wrong shapes and non-finite values, naming the key."""
    if not isinstance(state, dict):
        raise WeightsError(f"{source}: expected a state_dict, found {type(state).__name__}")
    missing = [k for k in reference if k not in state]
    unexpected = [k for k in state if k not in reference]
    if missing or unexpected:
        raise WeightsError(f"{source}: not a DenseFuse checkpoint: missing keys {missing[:4]}, "
                           f"unexpected keys {unexpected[:4]}")
    for k, ref in reference.items():
        t = state[k]
        if not isinstance(t, torch.Tensor):
            raise WeightsError(f"{source}: key {k!r} is not a tensor")
        if tuple(t.shape) != tuple(ref.shape):
            raise WeightsError(f"{source}: key {k!r} has shape {tuple(t.shape)}, "
                               f"expected {tuple(ref.shape)}")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise WeightsError(f"{source}: key {k!r} contains NaN or inf")


def model_from_state(state: dict, source: str, final_relu: bool = False) -> DenseFuse:
    """A gray DenseFuse with ``state`` loaded after :func:`check_state_dict`."""
    model = DenseFuse()
    check_state_dict(state, model.state_dict(), source)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    model.decoder.layers[-1].relu = final_relu
    return model.eval()


def load_model(path: str | os.PathLike, expected_sha256: str | None = None,
               ssim_weight: int | None = None) -> tuple[DenseFuse, dict]:
    """Load any supported weight file as a model that takes [0, 1] inputs.

    Detected by content: a project checkpoint (dict with ``format``), a bare project
    state_dict (the shipped weights), or an official DenseFuse release (TensorFlow checkpoint
    files/folder/zip, or the PyTorch port's ``.model``; see ``utils/official.py``).
    Returns ``(model, info)`` where ``info`` describes what was loaded.
    """
    from utils import official  # local import: utils.official imports WeightsError from here

    path = Path(path)
    if not path.exists() and not Path(str(path) + ".index").exists():
        raise WeightsError(f"{path}: weights file not found")
    if expected_sha256 is not None:
        digest = sha256_file(path)
        if digest != expected_sha256:
            raise WeightsError(f"{path}: SHA-256 {digest[:16]}... does not match the expected "
                               f"{expected_sha256[:16]}...; the file is corrupt or was replaced")
    if official.is_tensorflow_checkpoint(path):
        state, info = official.load_tensorflow(path, ssim_weight)
        return model_from_state(state, str(path)), info
    obj = torch_load(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        cfg = obj.get("config", {})
        model = model_from_state(obj["model"], str(path), bool(cfg.get("final_relu", False)))
        return model, {"kind": "project checkpoint", "epoch": obj.get("epoch"),
                       "step": obj.get("step"), "config": cfg}
    if isinstance(obj, dict) and official.is_official_pytorch(obj):
        state = official.convert_official_pytorch(obj, str(path))
        return model_from_state(state, str(path), final_relu=True), {
            "kind": "official PyTorch port (.model)", "final_relu": True}
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return model_from_state(obj, str(path)), {"kind": "project state_dict"}
    raise WeightsError(f"{path}: not a DenseFuse checkpoint (unrecognised content)")
