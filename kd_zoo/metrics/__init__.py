"""`evaluate` metric modules shipped with kd_zoo (loaded by path, so they work offline)."""

from pathlib import Path

TOPK_ACCURACY = str(Path(__file__).parent / "topk_accuracy")

__all__ = ["TOPK_ACCURACY"]
