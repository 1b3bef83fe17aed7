"""The error of a training run that cannot go on (reported as one ``error:`` line)."""
from __future__ import annotations


class TrainingError(RuntimeError):
    """A problem reported as one ``error:`` line and a non-zero exit."""


def fail(msg: str):
    raise TrainingError(msg)
