"""Training data: a folder of natural images, searched recursively, read as float32 [0, 1], gray
(the paper's network) or RGB (``run_train.py --no-gray``)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from utils.images import ImageReadError, as_rgb, is_image_file, load_image


def list_images(root: str | os.PathLike) -> list[Path]:
    """All image files below ``root`` (recursive, hidden files and folders skipped), sorted
    by path. Symlinked folders are not followed, so link loops cannot hang the search."""
    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in filenames if is_image_file(Path(f)))
    return sorted(found)


def check_readable(paths: list[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Split ``paths`` into files whose header Pillow can parse and (path, reason) failures.
    Only headers are read, so this is fast even for tens of thousands of files."""
    good, bad = [], []
    for p in paths:
        try:
            if p.stat().st_size == 0:
                raise OSError("empty file")
            with Image.open(p) as img:
                img.size  # noqa: B018 - parsing the header is the check
            good.append(p)
        except Exception as e:  # any failure means "skip this file"
            bad.append((p, f"{type(e).__name__}: {e}"))
    return good, bad


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float32 (H, W) or (H, W, C) image to (h, w) with Pillow (antialiased),
    channel by channel (Pillow has no float colour mode)."""
    h, w = size
    if img.ndim == 3:
        return np.stack([_resize(np.ascontiguousarray(img[..., c]), size) for c in range(img.shape[2])], -1)
    return np.asarray(Image.fromarray(img, mode="F").resize((w, h), Image.BILINEAR), dtype=np.float32)


class NaturalImages(Dataset):
    """Training images as (1, S, S) float32 tensors in [0, 1], or (3, S, S) RGB ones with
    ``gray=False`` (gray files replicated to three channels).

    ``crop=False``: each image is resized to SxS (the paper). ``crop=True``: a random SxS crop
    (images smaller than S are first scaled up so that the short side is S). ``flip``: random
    horizontal/vertical flips. ``zoom=(lo, hi)`` with ``crop``: each crop covers S/z x S/z
    source pixels, z uniform in [lo, hi], resized to SxS (z > 1 magnifies, z < 1 shrinks).
    Randomness comes from ``(seed, epoch, index)`` only, so the same epoch gives the same
    samples whatever the number of workers or where a run was resumed.
    """

    def __init__(self, paths: list[Path], size: int = 256, crop: bool = False,
                 flip: bool = False, seed: int = 0, zoom: tuple[float, float] = (1.0, 1.0), gray: bool = True):
        self.paths, self.size, self.crop, self.flip, self.seed = paths, size, crop, flip, seed
        self.gray = gray
        self.zoom = (float(zoom[0]), float(zoom[1]))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> np.ndarray:
        img = load_image(self.paths[index], gray=self.gray)
        return img if self.gray else as_rgb(img)

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        try:
            img = self.load(index)
        except ImageReadError as e:
            # A file that passed the header check but fails to decode: warn and use a
            # neighbour, so a single bad file in 80k does not stop a long run.
            warnings.warn(f"skipping unreadable training image: {e}", stacklevel=2)
            return self[(index + 1) % len(self)]
        s = self.size
        if self.crop:
            lo, hi = self.zoom
            # No draw for a fixed zoom, so runs without --zoom keep their exact crops.
            z = lo if lo == hi else lo + (hi - lo) * rng.random()
            c = max(2, round(s / z))  # source pixels covered by the crop
            h, w = img.shape[:2]
            if min(h, w) < c:
                scale = c / min(h, w)
                img = _resize(img, (max(c, round(h * scale)), max(c, round(w * scale))))
                h, w = img.shape[:2]
            y, x = rng.integers(0, h - c + 1), rng.integers(0, w - c + 1)
            img = img[y:y + c, x:x + c]
            if c != s:
                img = _resize(np.ascontiguousarray(img), (s, s))
        else:
            img = _resize(img, (s, s))
        if self.flip:
            if rng.random() < 0.5:
                img = img[:, ::-1]
            if rng.random() < 0.5:
                img = img[::-1, :]
        chw = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
        return torch.from_numpy(np.array(chw, dtype=np.float32, copy=True))


def epoch_order(n: int, epoch_size: int, seed: int, epoch: int) -> list[int]:
    """Indices visited in ``epoch``: ``epoch_size`` items from repeated shuffles of range(n),
    a pure function of (seed, epoch) so that a resumed run sees the same order."""
    rng = np.random.default_rng([seed, epoch, 7919])
    reps = -(-epoch_size // n)
    order = np.concatenate([rng.permutation(n) for _ in range(reps)])[:epoch_size]
    return order.tolist()
