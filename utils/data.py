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

from utils.images import ImageReadError, ImageWarning, as_rgb, is_image_file, load_image


def list_images(root: str | os.PathLike) -> list[Path]:
    """All image files below ``root`` (recursive, hidden files and folders skipped), sorted
    by path. Symlinked folders are not followed, so link loops cannot hang the search."""
    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in filenames if is_image_file(Path(f)))
    return sorted(found)


def check_decodable(paths: list[Path], gray: bool = True, workers: int = 4,
                    progress: bool = True) -> tuple[list[Path], list[tuple[Path, str]], list[Path]]:
    """Decode every file in ``paths`` once, as training will: (good, [(path, reason)] failures,
    files with several frames). A file whose header parses but whose data is truncated fails
    here, before anything is written, instead of mid-run. Pillow releases the GIL while it
    decodes, so the files are read on ``workers`` threads (the 500 BSDS JPEGs: 2.6 s on 2 busy cores)."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    def check(path: Path) -> str | None:
        try:
            load_image(path, gray=gray)
        except ImageReadError as e:
            return str(e)
        return None

    good, bad = [], []
    # One catch_warnings around all threads: it swaps process-wide state, so a per-thread one
    # would hand a warning to the wrong file's list (the warnings module is not thread-safe).
    with warnings.catch_warnings(record=True) as caught, ThreadPoolExecutor(max(1, workers)) as pool:
        warnings.simplefilter("always", ImageWarning)
        bar = tqdm(pool.map(check, paths), total=len(paths), desc="checking training images", unit="image",
                   leave=False, disable=None if progress and len(paths) >= 200 else True)
        for path, problem in zip(paths, bar, strict=True):
            if problem is None:
                good.append(path)
            else:
                bad.append((path, problem))
    said = [str(w.message) for w in caught if issubclass(w.category, ImageWarning)]
    multi = [p for p in good if any(m.startswith(f"{p}: ") for m in said)]  # messages name their file first
    return good, bad, multi


def image_record(root: str | os.PathLike, paths: list[Path]) -> dict:
    """What a checkpoint records of its training images: how many, and the SHA-256 of their
    names relative to ``root`` (one per line, in order), so that a resume can check that a moved
    folder holds the same files in the same order, the order every epoch's draw depends on."""
    import hashlib
    names = "\n".join(relative_names(root, paths))
    return {"count": len(paths), "names_sha256": hashlib.sha256(names.encode()).hexdigest()}


def relative_names(root: str | os.PathLike, paths: list[Path]) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float32 (H, W) or (H, W, C) image to (h, w) with Pillow (antialiased),
    channel by channel (Pillow has no float colour mode)."""
    h, w = size
    if img.ndim == 3:
        return np.stack([_resize(np.ascontiguousarray(img[..., c]), size) for c in range(img.shape[2])], -1)
    return np.asarray(Image.fromarray(img, mode="F").resize((w, h), Image.BILINEAR), dtype=np.float32)


def as_chw(img: np.ndarray) -> np.ndarray:
    """(H, W) -> (1, H, W); (H, W, C) -> (C, H, W) (views, no copy)."""
    return img[None] if img.ndim == 2 else img.transpose(2, 0, 1)


def flipped_chw(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``--flip``: a horizontal, then a vertical flip, each with probability 1/2 (two draws from
    ``rng``, always, so that later draws do not depend on them), as (C, H, W)."""
    if rng.random() < 0.5:
        img = img[:, ::-1]
    if rng.random() < 0.5:
        img = img[::-1, :]
    return as_chw(img)


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
        self.failed: set[Path] = set()  # files found undecodable during the run

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> np.ndarray:
        """Image ``index``, or, if it cannot be decoded, the next one that can (every file was
        decoded once before training, see :func:`check_decodable`; this covers a file that
        changes during the run). Each such file is named once per process on stderr; if
        none can be read, the error says so."""
        for k in range(len(self.paths)):
            path = self.paths[(index + k) % len(self.paths)]
            if path in self.failed:
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ImageWarning)  # named once by the check
                    img = load_image(path, gray=self.gray)
                return img if self.gray else as_rgb(img)
            except ImageReadError as e:
                self.failed.add(path)
                from utils.log import log
                log.warning(f"{e}; the next image is used instead (named once)", extra={"every_rank": True})
        raise ImageReadError(f"none of the {len(self.paths)} training images can be decoded any more")

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        img = self.load(index)
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
        chw = flipped_chw(img, rng) if self.flip else as_chw(img)
        return torch.from_numpy(np.array(chw, dtype=np.float32, copy=True))


def epoch_order(n: int, epoch_size: int, seed: int, epoch: int) -> list[int]:
    """Indices visited in ``epoch``: ``epoch_size`` items from repeated shuffles of range(n),
    a pure function of (seed, epoch) so that a resumed run sees the same order."""
    rng = np.random.default_rng([seed, epoch, 7919])
    reps = -(-epoch_size // n)
    order = np.concatenate([rng.permutation(n) for _ in range(reps)])[:epoch_size]
    return order.tolist()
