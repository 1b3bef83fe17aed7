"""Prepared training data: every image decoded and resized once, stored as uint8 samples in one
memory-mapped file, so that training reads slices instead of decoding JPEGs (nanoGPT's
``prepare.py`` -> ``np.memmap``).

A prepared folder holds ``samples.u8`` (N x S x S, or N x S x S x 3, uint8, C order) and
``index.json``: the tool's format and version, the sample size and mode, the resize rule, and per
sample its source file (relative to the image folder) and the SHA-256 of that file's bytes; the
files that did not decode are listed with the reason. ``run_train.py --image_path DATA`` detects
the index and trains from it (:class:`PreparedImages`).

Resize rules: ``bilinear`` (default) is the folder loader's, Pillow's antialiased bilinear on the
float image, then rounded to 8 bits; ``nearest`` is the only resize in the official repository
(``scipy.misc.imresize(..., interp='nearest')`` in its ``utils.get_images``). Its training code
itself (``get_train_images``) resizes nothing: it reads 256x256 gray files prepared beforehand,
by a step the repository does not include. Nearest-neighbour downscaling of 640-pixel COCO
photographs to 256 aliases fine texture, which the autoencoder would learn to reproduce, hence
the default.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

FORMAT = "densefuse-prepared/1"
INDEX, SAMPLES = "index.json", "samples.u8"
RULES = ("bilinear", "nearest")
#: The index is rewritten (atomically) every this many files: a kill loses at most that much work.
CHECKPOINT_EVERY = 256


class PreparedError(ValueError):
    """A prepared folder that cannot be used or continued; the message names it."""


def is_prepared(path: str | os.PathLike) -> bool:
    return (Path(path) / INDEX).is_file()


def read_index(folder: Path) -> dict:
    try:
        index = json.loads((folder / INDEX).read_text())
    except (OSError, ValueError) as e:
        raise PreparedError(f"{folder / INDEX}: unreadable ({e}); prepare the data again") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise PreparedError(f"{folder / INDEX}: not an index of run_scripts.prepare_data ({FORMAT})")
    return index


def shape(index: dict, n: int | None = None) -> tuple[int, ...]:
    s = index["size"]
    n = index["count"] if n is None else n
    return (n, s, s) if index["gray"] else (n, s, s, 3)


def sample(path: Path, size: int, gray: bool, rule: str) -> tuple[np.ndarray | None, str, str]:
    """(uint8 sample or None, SHA-256 of the file, why it failed): one file decoded and resized."""
    from PIL import Image

    from utils.data import _resize
    from utils.images import ImageReadError, as_rgb, load_image, to_uint8
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        img = load_image(path, gray=gray)
    except (OSError, ImageReadError) as e:
        return None, "", str(e)
    img = img if gray else as_rgb(img)
    if rule == "nearest":
        pil = Image.fromarray(to_uint8(img))
        return np.asarray(pil.resize((size, size), Image.NEAREST)), digest, ""
    return to_uint8(_resize(img, (size, size))), digest, ""


def _work(args):
    return sample(*args)


def settings_of(index: dict) -> tuple:
    return index["size"], index["gray"], index["rule"], index["sources_listed"]


def prepare(image_path: Path, out: Path, size: int, gray: bool, rule: str, workers: int,
            progress: bool = True) -> dict:
    """Decode every image below ``image_path`` once, in parallel, into ``out``; continues a
    prepared folder that a kill interrupted (same images and settings), else refuses to touch
    an existing one. Returns the index."""
    from multiprocessing import Pool

    from tqdm import tqdm

    from utils.data import list_images, relative_names
    from utils.files import write_text
    from utils.log import log
    paths = list_images(image_path)
    if not paths:
        raise PreparedError(f"no images (jpg/jpeg/png/bmp/tif/tiff) found under {image_path}")
    names = relative_names(image_path, paths)
    listed = hashlib.sha256("\n".join(names).encode()).hexdigest()
    index = {"format": FORMAT, "version": 1, "size": size, "gray": gray, "rule": rule, "sources_listed": listed,
             "image_path": str(image_path), "count": 0, "done": 0, "complete": False, "sources": [],
             "sha256": [], "skipped": []}
    if is_prepared(out):
        old = read_index(out)
        if old.get("complete") or settings_of(old) != settings_of(index):
            raise PreparedError(f"{out} already holds prepared data ({old.get('count')} samples"
                                f"{'' if old.get('complete') else ', other images or settings'}); choose another -o")
        index = old
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PreparedError(f"{out} exists and is not a prepared folder; choose another -o (nothing is written "
                            f"into a folder of other files)")
    out.mkdir(parents=True, exist_ok=True)
    samples = np.memmap(out / SAMPLES, np.uint8, "r+" if (out / SAMPLES).exists() else "w+", shape=shape(index,
                                                                                                         len(paths)))
    todo = [(p, size, gray, rule) for p in paths[index["done"]:]]
    with Pool(max(1, workers)) as pool:
        bar = tqdm(pool.imap(_work, todo, chunksize=4), total=len(paths), initial=index["done"], unit="image",
                   desc=f"preparing {out}", disable=None if progress else True)
        for (path, *_), (arr, digest, why) in zip(todo, bar, strict=True):
            if arr is None:
                index["skipped"].append(f"{path}: {why}")
                log.warning(f"skipping {why}")
            else:
                samples[index["count"]] = arr
                index["count"] += 1
                index["sources"].append(path.relative_to(image_path).as_posix())
                index["sha256"].append(digest)
            index["done"] += 1
            if index["done"] % CHECKPOINT_EVERY == 0:
                samples.flush()
                write_text(out / INDEX, json.dumps(index))
    samples.flush()
    del samples
    os.truncate(out / SAMPLES, int(np.prod(shape(index))))  # the skipped files' slots
    index["complete"] = True
    write_text(out / INDEX, json.dumps(index, indent=0))
    return index


def size_problem(folder: Path, index: dict, size: int, crop: bool) -> str | None:
    """Why samples of the stored size cannot give training images of ``size``, or None."""
    stored = index["size"]
    if size > stored or (size < stored and not crop):
        return (f"{folder} holds {stored}x{stored} samples; train with --image_size {stored}"
                + (", or a smaller size with --crop" if size < stored else ""))
    return None


class PreparedImages:
    """A prepared folder as a training data set: uint8 tensors (C, S', S') of its samples, S' the
    training size: the stored sample itself, or with ``crop`` a random S'xS' crop of it where the
    stored size allows; ``flip`` as the folder loader. Randomness from ``(seed, epoch, index)``.
    The float conversion happens on the training device (uint8 is a quarter of the bytes to move)."""

    def __init__(self, folder: Path, size: int, crop: bool = False, flip: bool = False, seed: int = 0):
        self.index = read_index(folder)
        if not self.index.get("complete"):
            raise PreparedError(f"{folder}: preparation was interrupted; run run_scripts.prepare_data again "
                                f"to finish it")
        if problem := size_problem(folder, self.index, size, crop):
            raise PreparedError(problem)
        self.folder, self.size, self.crop, self.flip, self.seed = folder, size, crop, flip, seed
        self.samples = np.memmap(folder / SAMPLES, np.uint8, "r", shape=shape(self.index))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.index["count"]

    def __getitem__(self, index: int):
        import torch

        from utils.data import as_chw, flipped_chw
        rng = np.random.default_rng([self.seed, self.epoch, index])
        img = self.samples[index]
        s, stored = self.size, self.index["size"]
        if s < stored:
            y, x = rng.integers(0, stored - s + 1), rng.integers(0, stored - s + 1)
            img = img[y:y + s, x:x + s]
        chw = flipped_chw(img, rng) if self.flip else as_chw(img)
        return torch.from_numpy(np.array(chw, copy=True))  # the memmap is read-only; one sample is small
