"""DenseFuse network and fusion strategies."""
from models.densefuse import DenseFuse
from models.fusion import STRATEGIES, get_strategy

__all__ = ["STRATEGIES", "DenseFuse", "get_strategy"]
