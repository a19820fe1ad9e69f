"""Training machinery: the distillation step (and, with the recipes, the loop, evaluation and checkpoints)."""

from .step import Distiller, StepOutput, Supervised, freeze, run_model

__all__ = ["Distiller", "StepOutput", "Supervised", "freeze", "run_model"]
