"""Atomic file writes: a crash at any moment leaves the old file or the new one, never half."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(fh)`` on a temporary file in ``path``'s folder, fsync, then rename it over
    ``path``. Temporary names start with a dot and end in ``.tmp``; one is removed on failure.
    Two processes writing the same path each rename a complete file; the last one wins."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp makes 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(folder: str | os.PathLike, probe_bytes: int = 1 << 20) -> str | None:
    """None if ``folder`` can be created and ``probe_bytes`` written into it, else the reason.
    Called before long work so a read-only folder or a full disk fails first, not last."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write_test.", dir=folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(b"\0" * probe_bytes)
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as e:
        return f"cannot write to {folder}: {e.strerror or e}"
    return None


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files :func:`atomic_write` left in ``folder`` when its process was
    killed outright (SIGKILL, power loss: no handler runs) and return them. Only for a folder
    this process owns, such as a claimed run folder: another writer's file would go too."""
    stale = sorted(p for p in Path(folder).glob(".*.tmp") if p.is_file())
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
