"""Device selection and process-wide speed settings."""
from __future__ import annotations

import ctypes
import sys

import torch

#: glibc's mallopt parameters (malloc.h) and the largest mmap threshold it accepts on 64-bit.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_MMAP_THRESHOLD_MAX = 32 << 20


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda if available, else mps if available, else cpu; other names are checked.

    Raises ValueError with a one-line message for a name that is not a device or names a CUDA
    or MPS device this machine does not have (the entry points report it as ``error: ...``).
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type not in ("cpu", "cuda", "mps"):  # meta, xla, ...: nothing here computes there
        raise ValueError(f"--device {name}: not a device this project computes on; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name} requested but CUDA is not available; use --device cpu")
        n = torch.cuda.device_count()
        if device.index is not None and device.index >= n:
            raise ValueError(f"--device {name} requested but this machine has {n} CUDA device(s), "
                             f"cuda:0 to cuda:{n - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name} requested but MPS (Apple GPU) is not available; use --device cpu")
    return device


def keep_freed_memory(large_blocks: bool = False) -> bool:
    """Make glibc keep freed tensor memory for reuse instead of returning it to the kernel.

    Why: a training step, or a tiled fusion, allocates and frees the same multi-megabyte
    activations over and over. By default glibc serves large blocks with fresh ``mmap`` calls
    (unmapped again on free) and trims the top of its heap, so each step page-faults its
    activations back in and the kernel zeroes every page. On the 2-core development machine
    that was ~75,000 faults per batch-2 training step at 256x256 (a fifth of the step) and
    ~230,000 per 1024x768 fusion (0.97 s -> 0.70 s with this setting).
    This raises the mmap threshold to glibc's ceiling (32 MiB) and turns trimming off. It is
    the in-process, dependency-free counterpart of preloading jemalloc or tcmalloc, which
    PyTorch's CPU performance guides recommend for the same reason. Cost: the process keeps
    its peak heap until it exits.

    ``large_blocks``: also keep blocks over 32 MiB, by never using mmap. Right for training,
    whose steps allocate the same blocks every time (2x64x256x256 activations are 33.5 MB; a
    batch-2 step went from ~310 to ~290 ms); wrong for one-off huge allocations, which then
    fragment the heap (an untiled 3840x2160 fusion peaked at 15.6 GB instead of 11.5 GB).
    Returns False, changing nothing, where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another C library: no such knobs
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))
    return ok and (not large_blocks or bool(mallopt(_M_MMAP_MAX, 0)))
