"""What the scripts say: one logger, rank-aware (BasicSR and timm do the same).

``log.info`` goes to stdout as it is; ``log.warning`` and ``log.error`` go to stderr as
``warning: ...`` and ``error: ...`` lines (``extra={"plain": True}``: to stderr without the
prefix, for the indented lines of a list). Under torchrun only rank 0 speaks: every rank meets
the same inputs, settings and errors, so one voice reports them; a record made with
``extra={"every_rank": True}`` (what happened to this rank alone: a collective that failed, a
file that broke in this rank's loader) is written by every rank. The streams are looked up for
each record, so pytest's capture and a redirected ``sys.stdout`` see everything.
"""
from __future__ import annotations

import logging
import sys

from utils.distributed import main_process

NAME = "densefuse"
_PREFIX = {logging.WARNING: "warning: ", logging.ERROR: "error: "}


class _Console(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if not (main_process() or getattr(record, "every_rank", False)):
            return
        stream = sys.stdout if record.levelno < logging.WARNING else sys.stderr
        prefix = "" if getattr(record, "plain", False) else _PREFIX.get(record.levelno, "")
        stream.write(f"{prefix}{record.getMessage()}\n")
        stream.flush()


def get_logger() -> logging.Logger:
    log = logging.getLogger(NAME)
    if not log.handlers:
        log.addHandler(_Console())
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


log = get_logger()


def progress_bar(iterable, **kwargs):
    """``tqdm(iterable, **kwargs)``, or the iterable as it is where tqdm is not installed (the
    torch-free deploy install, requirements-deploy.txt, goes without it)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, **kwargs)
