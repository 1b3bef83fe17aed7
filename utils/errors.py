"""Error types shared by several modules (a leaf module: it imports nothing of the project)."""
from __future__ import annotations


class WeightsError(ValueError):
    """A weight file that cannot be used; the message names the file (and key) at fault."""
