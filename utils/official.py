"""Placeholder for the official-weights importer (issue 4)."""
from pathlib import Path


def is_tensorflow_checkpoint(path: Path) -> bool:
    return False


def is_official_pytorch(obj: dict) -> bool:
    return False
