"""Distillation methods: one module per method, each a pure loss function plus a registered class.

`METHODS.names()` lists them; `create_method(name, student, teacher, **hparams)` builds one.
"""

from . import ctkd, dkd, dtd_la, fitnet, kd, pkt, semckd, srrl, vid
from .base import (
    METHODS,
    DistillMethod,
    FeatureRequest,
    ModelOutputs,
    StepContext,
    check_method_args,
    create_method,
    register_method,
)

__all__ = [
    "METHODS",
    "DistillMethod",
    "FeatureRequest",
    "ModelOutputs",
    "StepContext",
    "check_method_args",
    "create_method",
    "ctkd",
    "dkd",
    "dtd_la",
    "fitnet",
    "kd",
    "pkt",
    "register_method",
    "semckd",
    "srrl",
    "vid",
]
