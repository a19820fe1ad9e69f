"""Training machinery: the distillation step, the loop with evaluation and checkpoints, and the run set-up.

`step` (the one step: any method x LR x DS), `loop` (`fit`, `evaluate_accuracy`, the lr schedule,
`train_supervised`), `checkpoint` (atomic `save_state` checkpoints), `tracking` (the JSONL tracker), `run_setup`
(the Accelerator, the data loaders).
"""

from .loop import FitOptions, FitResult, evaluate_accuracy, fit, sgd, step_lr, train_supervised
from .run_setup import RunData, build_accelerator, build_data, build_eval_loader, hardware_summary
from .step import Distiller, StepOutput, Supervised, freeze, run_model
from .teacher_input import TeacherInput
from .validation import DataMismatchError, validate_model

__all__ = [
    "DataMismatchError",
    "Distiller",
    "FitOptions",
    "FitResult",
    "RunData",
    "StepOutput",
    "Supervised",
    "TeacherInput",
    "build_accelerator",
    "build_data",
    "build_eval_loader",
    "evaluate_accuracy",
    "fit",
    "freeze",
    "hardware_summary",
    "run_model",
    "sgd",
    "step_lr",
    "train_supervised",
    "validate_model",
]
