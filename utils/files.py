"""Atomic file writes: a crash at any moment leaves the old file or the new one, never half.
Also the path checks every writer shares: resolving links without tracebacks on loops, and
whether an output resolves to an input."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(fh)`` on a temporary file in ``path``'s folder, fsync, then rename it over
    ``path``. Temporary names start with a dot and end in ``.tmp``; one is removed on failure,
    and an OSError names ``path`` (``e.filename``).
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
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except OSError as e:  # name the file being written, not the temporary one
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """:func:`atomic_write` of ``src``'s bytes to ``dst``. A copy, not a hard link: with links,
    a tool that later writes one name in place (``torch.save`` over ``best.pt``) would silently
    change the others too."""
    with open(src, "rb") as fh:
        atomic_write(dst, lambda out: shutil.copyfileobj(fh, out, 1 << 20))


def write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


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


def resolved(path: str | os.PathLike) -> Path:
    """``path`` absolute with every link followed, as far as they lead: never an exception, even
    for a symlink loop (``Path.resolve`` raises RuntimeError there before Python 3.13)."""
    return Path(os.path.realpath(path))


def is_symlink_loop(path: str | os.PathLike) -> bool:
    try:
        os.stat(path)
    except OSError as e:
        return e.errno == 40  # ELOOP
    return False


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether writing ``a`` would write ``b``: the same path after links, or (both existing) the
    same inode, which also catches hard links."""
    if resolved(a) == resolved(b):
        return True
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)
    return False


#: The temporary files :func:`atomic_write` names: ``.<final name>.<8 random characters>.tmp``.
TEMP_NAME = re.compile(r"^\.(?P<final>.+)\.[A-Za-z0-9_]{8}\.tmp$")


@contextlib.contextmanager
def writing_into(folder: str | os.PathLike, final_names: re.Pattern):
    """Hold ``folder`` as one of its writers; yields the temporary files that writers killed
    outright (SIGKILL, power loss) left there, which it removed. Those are only the ones whose
    final name matches ``final_names`` (a writer's own pattern), and only when no other process
    is writing into the folder now: every writer holds a shared ``flock`` on the folder itself
    while it writes, and the removal needs it exclusively (so a concurrent run's file in progress
    is never taken for a leftover). Without ``fcntl`` (Windows) nothing is removed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield []
        return
    fd = os.open(folder, os.O_RDONLY)
    removed = []
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another writer is at work here: its temporary files are not leftovers
            fcntl.flock(fd, fcntl.LOCK_SH)
        else:
            for p in sorted(folder.iterdir()):
                m = TEMP_NAME.match(p.name)
                if m and final_names.fullmatch(m["final"]) and p.is_file() and not p.is_symlink():
                    p.unlink(missing_ok=True)
                    removed.append(p)
            fcntl.flock(fd, fcntl.LOCK_SH)
        yield removed
    finally:
        os.close(fd)  # releases the lock


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, hex (read in 1 MiB pieces)."""
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
