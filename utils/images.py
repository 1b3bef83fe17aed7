"""Reading and writing images.

Conventions: images are returned as float32 NumPy arrays in [0, 1] (8-bit files divided by 255,
16-bit files by 65535), shape (H, W) for grayscale or (H, W, 3) for colour. Written images are
8-bit, with explicit rounding ``floor(255 * x + 0.5)`` after clipping to [0, 1]. Nothing is
silently rescaled.

Decisions for unusual files (documented in the README):
- EXIF orientation of JPEGs is applied (the image as a viewer shows it).
- Alpha channels (RGBA, LA) are dropped, not composited; palette, CMYK, bilevel and YCbCr
  images are converted to RGB or gray; RGB images whose three channels are equal count as gray.
- 16-bit images are scaled by 1/65535; 32-bit float images are refused (no known range).
- Pillow's decompression-bomb limit is kept and reported as a clear error.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from utils.files import atomic_write, is_symlink_loop

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class ImageReadError(ValueError):
    """An image file that cannot be used; the message names the file and the reason."""


def is_image_file(path: Path) -> bool:
    """A visible (not dot-prefixed) file with one of :data:`IMAGE_EXTENSIONS`."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _to_array(img: Image.Image, path: Path) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img, dtype=np.uint16).astype(np.float32) / 65535.0
    if mode == "I":
        arr = np.asarray(img)
        if arr.min() < 0 or arr.max() > 65535:
            raise ImageReadError(f"{path}: 32-bit integer image outside 0..65535 is not supported")
        return arr.astype(np.float32) / 65535.0
    if mode == "F":
        raise ImageReadError(f"{path}: 32-bit float images have no defined range; save as 8 or 16 bit")
    if mode in ("L", "LA", "1"):
        img = img.convert("L")
    elif mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        img = img.convert("RGB")
    else:  # RGB, RGBA, CMYK, YCbCr, LAB, HSV, ...
        img = img.convert("RGB")
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 3 and (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all():
        arr = arr[..., 0]
    return arr.astype(np.float32) / 255.0


def load_image(path: str | os.PathLike, gray: bool = False) -> np.ndarray:
    """Read an image as float32 in [0, 1]: (H, W) if gray (or ``gray=True``), else (H, W, 3).

    Colour is reduced to gray with ITU-R BT.601 luma (as Pillow's ``convert('L')``).
    Raises :class:`ImageReadError` naming the file for anything unreadable or too small.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise ImageReadError(f"{path}: is a folder, not an image")
        if is_symlink_loop(path):
            raise ImageReadError(f"{path}: a symlink loop (it leads back to itself), not an image")
        if path.is_symlink() and not path.exists():
            raise ImageReadError(f"{path}: a dangling link (to {os.readlink(path)}), not an image")
        if path.exists() and not path.is_file():
            raise ImageReadError(f"{path}: not a regular file (a FIFO, socket or device), not an image")
        if path.stat().st_size == 0:
            raise ImageReadError(f"{path}: empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if getattr(img, "n_frames", 1) > 1:
                    warnings.warn(f"{path}: {img.n_frames} frames (animated or multi-page); the first is used",
                                  ImageWarning, stacklevel=2)
                img = ImageOps.exif_transpose(img)
                img.load()
                arr = _to_array(img, path)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"{path}: too many pixels for a safe decode ({e})") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file Pillow can read") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageReadError(f"{path}: corrupt or truncated image ({e})") from None
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise ImageReadError(f"{path}: image is {arr.shape[1]}x{arr.shape[0]}; at least 2x2 is needed")
    if gray and arr.ndim == 3:
        arr = rgb_to_gray(arr)
    return arr


class ImageWarning(UserWarning):
    """Something about an image file the user should know, though it was read (run_infer.py
    prints these as ``warning:`` lines)."""


#: EXIF orientations that turn the stored image by 90 degrees (width and height swap).
EXIF_QUARTER_TURNS = {5, 6, 7, 8}


def exif_rotated(path: str | os.PathLike) -> bool:
    """Whether the file's EXIF orientation swaps its width and height (read from the header only)."""
    try:
        with Image.open(path) as img:
            return img.getexif().get(0x0112, 1) in EXIF_QUARTER_TURNS
    except Exception:  # unreadable files are reported by load_image
        return False


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) as :func:`load_image` will return it (EXIF turns applied), from the header
    only; an unreadable file is an :class:`ImageReadError` naming it."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            turned = img.getexif().get(0x0112, 1) in EXIF_QUARTER_TURNS
    except Exception as e:
        raise ImageReadError(f"{path}: cannot read the image ({e})") from e
    return (h, w) if turned else (w, h)


def as_rgb(img: np.ndarray) -> np.ndarray:
    """(H, W, 3): a gray (H, W) image replicated to three channels, a colour one as it is (what an
    RGB network is given for a gray file)."""
    return img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of an (H, W, 3) image in [0, 1]."""
    return (rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.float32)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """Full-range BT.601 (JPEG) RGB -> YCbCr, all in [0, 1], (H, W, 3) -> (H, W, 3)."""
    m = np.array([[0.299, 0.587, 0.114],
                  [-0.168736, -0.331264, 0.5],
                  [0.5, -0.418688, -0.081312]], dtype=np.float32)
    ycc = rgb @ m.T
    ycc[..., 1:] += 0.5
    return ycc.astype(np.float32)


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr` (not clipped)."""
    y, cb, cr = ycc[..., 0], ycc[..., 1] - 0.5, ycc[..., 2] - 0.5
    r = y + 1.402 * cr
    g = y - 0.344136 * cb - 0.714136 * cr
    b = y + 1.772 * cb
    return np.stack([r, g, b], axis=-1).astype(np.float32)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8 with clipping and round-half-up: floor(255 x + 0.5)."""
    return np.floor(np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_image(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write an 8-bit image atomically (temporary file in the same folder, then rename),
    so an interrupted run never leaves a truncated file under the final name.

    ``img``: uint8, or float in [0, 1] (converted with :func:`to_uint8`); (H,W) or (H,W,3).
    """
    path = Path(path)
    data = img if img.dtype == np.uint8 else to_uint8(img)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image extension {path.suffix!r}")
    atomic_write(path, lambda fh: Image.fromarray(data).save(fh, format=fmt))
