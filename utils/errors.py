"""Error types shared by several modules (a leaf module: it imports nothing of the project)."""
from __future__ import annotations


class JobError(RuntimeError):
    """A fusion job that cannot run as asked (flags, layout, inputs, outputs): reported by
    ``run_infer.py`` as one ``error:`` line with exit code 2."""


class WeightsError(ValueError):
    """A weight file that cannot be used; the message names the file (and key) at fault."""
