"""Checkpoints: atomic, self-describing saves and safe loading of every supported weight file.

A project checkpoint is a dict ``{"format", "model", "model_args", "config", "epoch", "step",
"optimizer", "scheduler", ...}`` saved with ``torch.save`` from the bare module and loaded with
``torch.load(weights_only=True)``, which refuses pickles that would run code. ``model_args`` are
the constructor arguments of :class:`DenseFuse` (nanoGPT's convention); loading builds the model
from them. Exported weights (``run_scripts/export_weights.py``) are ``{"format", "model",
"model_args"}``. The shipped files are bare state_dicts of the gray paper network (a file
without ``model_args`` means that network); their SHA-256 is checked whenever they are loaded.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from torch import nn

from models.densefuse import DenseFuse
from utils import official
from utils.errors import WeightsError
from utils.files import atomic_write, sha256_file

FORMAT = "densefuse-pytorch/1"
#: Exported weights: the model and its arguments only.
WEIGHTS_FORMAT = "densefuse-weights/1"
#: What a file without ``model_args`` holds: the gray paper network.
DEFAULT_MODEL_ARGS = {"channels": 1, "final_relu": False}

__all__ = ["FORMAT", "WEIGHTS_FORMAT", "WeightsError", "load_model", "save_checkpoint", "torch_load"]


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
    model = bare_module(model)
    payload = {
        "format": FORMAT,
        "model": model.state_dict(),
        "model_args": model.model_args(),
        "config": dict(config),
        "epoch": epoch,
        "step": step,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        **extra,
    }
    atomic_torch_save(payload, path)


def torch_load(path: str | os.PathLike):
    """``torch.load(weights_only=True)`` on CPU with errors that name the file. A refused file
    is never answered with PyTorch's advice to load it with ``weights_only=False``: that would
    run whatever code the file carries."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: empty file (0 bytes), not a weights file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise WeightsError(f"{path}: refused: not a plain weights file (loading it would need "
                           f"arbitrary code, or it is not a PyTorch file at all)") from None
    except Exception as e:  # torch raises many types on corrupt files; all mean "unusable"
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): "
                           f"{type(e).__name__}") from None


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


def check_model_args(args, source: str) -> dict:
    """``args`` completed with the defaults, or a WeightsError naming what is wrong with them."""
    if not isinstance(args, dict) or set(args) - set(DEFAULT_MODEL_ARGS):
        raise WeightsError(f"{source}: malformed model_args {args!r}; expected keys {sorted(DEFAULT_MODEL_ARGS)}")
    args = {**DEFAULT_MODEL_ARGS, **args}
    channels = args["channels"]  # True == 1.0 == 1 in Python: only an int is read as a channel count
    if type(channels) is not int or channels not in (1, 3) or not isinstance(args["final_relu"], bool):
        raise WeightsError(f"{source}: model_args {args!r}: channels must be 1 or 3, final_relu true/false")
    return args


def model_from_state(state: dict, source: str, model_args: dict | None = None) -> DenseFuse:
    """A DenseFuse built from ``model_args`` (default: the gray paper network) with ``state``
    loaded after :func:`check_state_dict`, in eval mode."""
    model = DenseFuse(**check_model_args(model_args or {}, source))
    check_state_dict(state, model.state_dict(), source)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()


def load_model(path: str | os.PathLike, ssim_weight: int | None = None,
               sha256: str | None = None) -> tuple[DenseFuse, dict]:
    """Load any supported weight file as a model that takes [0, 1] inputs.

    Detected by content: a project checkpoint or exported weights (dict with ``format``), a bare
    project state_dict (the shipped weights), or an official DenseFuse release (TensorFlow
    checkpoint files/folder/zip, or the PyTorch port's ``.model``; see ``utils/official.py``).
    A shipped file's SHA-256 is checked against ``configs.SHIPPED_BY_LAMBDA``; ``sha256`` checks
    any other file. ``ssim_weight`` picks lambda in an official release holding several.
    Returns ``(model, info)`` where ``info`` describes what was loaded: ``kind``, ``sha256`` of
    the file (None for a TF checkpoint folder or prefix), epoch/step/config of checkpoints. The
    file is hashed once here; callers reuse the digest (it identifies the weights in
    ``fusion_settings.json``).
    """
    from configs import expected_sha256  # the shipped files' table

    path = Path(path)
    if not path.exists() and not Path(str(path) + ".index").exists():
        raise WeightsError(f"{path}: weights file not found")
    expected = sha256 or expected_sha256(path)
    digest = sha256_file(path) if path.is_file() else None  # once: identifies the weights downstream
    if expected is not None and digest != expected:
        raise WeightsError(f"{path}: SHA-256 {str(digest)[:16]}... does not match the expected "
                           f"{expected[:16]}...; the file is corrupt or was replaced")
    model, info = _load_by_content(path, ssim_weight, shipped=expected is not None)
    return model, {**info, "sha256": digest}


def _load_by_content(path: Path, ssim_weight: int | None, shipped: bool) -> tuple[DenseFuse, dict]:
    if official.is_tensorflow_checkpoint(path):
        state, info = official.load_tensorflow(path, ssim_weight)
        return model_from_state(state, str(path)), info
    obj = torch_load(path)
    if isinstance(obj, dict) and obj.get("format") in (FORMAT, WEIGHTS_FORMAT):
        return _from_project_file(obj, path, shipped)
    if isinstance(obj, dict) and official.is_official_pytorch(obj):
        state = official.convert_official_pytorch(obj, str(path))
        channels = state[f"{official.FIRST}.weight"].shape[1]
        kind = "official PyTorch port (.model)" + (", RGB" if channels == 3 else "")
        return model_from_state(state, str(path), {"final_relu": True, "channels": channels}), {
            "kind": kind, "final_relu": True}
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return model_from_state(obj, str(path)), {"kind": "shipped weights" if shipped else "project state_dict"}
    raise WeightsError(f"{path}: not a DenseFuse checkpoint (unrecognised content)")


def _from_project_file(obj: dict, path: Path, shipped: bool = False) -> tuple[DenseFuse, dict]:
    """A project checkpoint or exported file, checked field by field (a hand-edited or damaged
    file gives a WeightsError naming what is missing, never a KeyError)."""
    if "model" not in obj:
        raise WeightsError(f"{path}: checkpoint has no 'model' entry (damaged or not written by this project)")
    cfg = obj.get("config", {})
    if not isinstance(cfg, dict):
        raise WeightsError(f"{path}: checkpoint 'config' is a {type(cfg).__name__}, not a dict (damaged?)")
    # Checkpoints from before model_args recorded an imported port's ReLU in their config.
    args = obj.get("model_args", {"final_relu": bool(cfg.get("final_relu", False))})
    model = model_from_state(obj["model"], str(path), args)
    if obj["format"] == WEIGHTS_FORMAT:
        kind = "shipped weights" if shipped else "exported weights"  # the shipped RGB files are exported ones
        return model, {"kind": kind, "model_args": model.model_args()}
    return model, {"kind": "project checkpoint", "epoch": obj.get("epoch"), "step": obj.get("step"),
                   "config": cfg, "model_args": model.model_args()}
