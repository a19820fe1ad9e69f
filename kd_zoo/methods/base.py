"""The shape every distillation method has: what it asks of the models, what it returns, what it owns.

A method is a small `nn.Module` built from the student and teacher *descriptions* (`feature_info`,
`num_features`, the teacher's classifier), never by a dummy forward. It declares a `FeatureRequest` per model;
the distillation step runs each model once, with exactly that request, and hands the method `ModelOutputs` of
the rows it distils, the labels, and an explicit `StepContext`. The method returns named, already weighted loss
terms (`loss_<term>`). It never calls the models. Its trainable extras (regressors, a learnable temperature) are
sub-modules, so they train, checkpoint and synchronise with the student.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Registry


@dataclass(frozen=True)
class FeatureRequest:
    """What a method needs from one model, beyond its logits.

    Attributes:
        stages: indices into `forward_intermediates` (stem = 0), in the order the method wants them.
        preact: stage outputs before their last activation (`forward_intermediates(..., preact=True)`).
        pooled: the pooled pre-logits vector (`forward_head(x, pre_logits=True)`).
    """

    stages: tuple[int, ...] = ()
    preact: bool = False
    pooled: bool = False


@dataclass
class ModelOutputs:
    """One model's outputs on a batch: logits plus what was requested."""

    logits: Tensor
    stages: list[Tensor] = field(default_factory=list)
    pooled: Tensor | None = None

    def select(self, rows: Tensor) -> ModelOutputs:
        """These outputs restricted to `rows` (a boolean mask or an index tensor)."""
        return ModelOutputs(
            logits=self.logits[rows],
            stages=[f[rows] for f in self.stages],
            pooled=None if self.pooled is None else self.pooled[rows],
        )

    def with_logits(self, logits: Tensor) -> ModelOutputs:
        return replace(self, logits=logits)


@dataclass(frozen=True)
class StepContext:
    """Where training is, for schedule-dependent losses (DKD warm-up, CTKD's reversal schedule).

    Attributes:
        epoch: current epoch, counted from 0.
        num_epochs: epochs in the run.
        step: optimiser step within the epoch, counted from 0.
        steps_per_epoch: optimiser steps per epoch.
    """

    epoch: int = 0
    num_epochs: int = 1
    step: int = 0
    steps_per_epoch: int = 1

    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1]."""
        return min(1.0, (self.epoch + self.step / max(self.steps_per_epoch, 1)) / max(self.num_epochs, 1))


class DistillMethod(nn.Module):
    """Base class of the registered methods (see the module docstring).

    Class attributes:
        name: registry name.
        label_revision: how LR composes with the method: "loss" (LR's loss replaces the terms in
            `lr_replaces`) or "targets" (the method reads the revised teacher logits). See `kd_zoo.revision`.
        lr_replaces: the method's terms that LR's loss replaces in "loss" mode (its CE and logit-KD terms).
    """

    name: ClassVar[str] = ""
    label_revision: ClassVar[Literal["loss", "targets"]] = "loss"
    lr_replaces: ClassVar[tuple[str, ...]] = ("loss_ce", "loss_kd")

    def __init__(self, student: nn.Module, teacher: nn.Module):
        super().__init__()
        s_classes, t_classes = _num_classes(student), _num_classes(teacher)
        if s_classes != t_classes:
            raise ValueError(
                f"student and teacher must predict the same classes: student has {s_classes}, teacher has "
                f"{t_classes}. Create the student with num_classes={t_classes}."
            )
        self.num_classes = t_classes

    @property
    def student_request(self) -> FeatureRequest:
        return FeatureRequest()

    @property
    def teacher_request(self) -> FeatureRequest:
        return FeatureRequest()

    def forward(
        self, student: ModelOutputs, teacher: ModelOutputs, labels: Tensor, ctx: StepContext
    ) -> dict[str, Tensor]:
        raise NotImplementedError

    def diagnostics(self) -> dict[str, float]:
        """Scalars worth logging besides the losses (e.g. CTKD's temperature)."""
        return {}


def _num_classes(model: nn.Module) -> int:
    num_classes = getattr(model, "num_classes", None)
    if not isinstance(num_classes, int) or num_classes <= 0:
        raise ValueError(
            f"{type(model).__name__} has no classifier (num_classes={num_classes!r}); distillation needs logits"
        )
    return num_classes


METHODS: Registry[type[DistillMethod]] = Registry("distillation method")


def register_method(cls: type[DistillMethod]) -> type[DistillMethod]:
    """Class decorator: add a `DistillMethod` to the registry under its `name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a `name`")
    return METHODS.register(cls.name)(cls)


def check_method_args(name: str, hparams: dict[str, Any]) -> type[DistillMethod]:
    """The registered method `name`, after checking that it takes every hyperparameter in `hparams`.

    Raises:
        UnknownNameError: no such method (the message lists close matches).
        TypeError: an unknown hyperparameter (the message lists the valid ones).
    """
    cls = METHODS.get(name)
    params = inspect.signature(cls.__init__).parameters
    valid = [p for p in params if p not in ("self", "student", "teacher")]
    unknown = [k for k in hparams if k not in valid]
    if unknown:
        raise TypeError(f"unknown hyperparameter(s) {unknown} for method {name!r}; valid: {valid}")
    return cls


def create_method(name: str, student: nn.Module, teacher: nn.Module, **hparams: Any) -> DistillMethod:
    """Build a registered method; an unknown hyperparameter names the valid ones."""
    return check_method_args(name, hparams)(student, teacher, **hparams)


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean CE, or a graph-connected zero on an empty batch."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    return torch.nn.functional.cross_entropy(logits, labels)


# -- what feature methods read from a model's description ---------------------------------------------------------
DEFAULT_INPUT_SIZE = (32, 32)  # the CIFAR zoo's input, when a model's pretrained_cfg does not say


def stage_channels(model: nn.Module) -> list[int]:
    """Output channels of every stage (stem first), from `feature_info`."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise ValueError(f"{type(model).__name__} has no `feature_info`; feature distillation needs its stages")
    return [int(f["num_chs"]) for f in info]


def stage_shapes(model: nn.Module, input_size: tuple[int, int]) -> list[tuple[int, int, int]]:
    """(channels, height, width) of every stage output (stem first), from `feature_info` and the input size."""
    h, w = input_size
    # Stride-2 convs with padding round up, so a map is ceil(input / reduction).
    return [
        (c, -(-h // int(f["reduction"])), -(-w // int(f["reduction"])))
        for c, f in zip(stage_channels(model), model.feature_info, strict=True)
    ]


def resolve_stage(index: int, num_stages: int, model: nn.Module, what: str) -> int:
    """A stage index (negative from the end) as a non-negative index, or a ValueError naming the valid range."""
    if not -num_stages <= index < num_stages:
        raise ValueError(
            f"{what} {index} is out of range for {type(model).__name__}, which has {num_stages} stage outputs "
            f"(0 = stem ... {num_stages - 1}); pass an index in [-{num_stages}, {num_stages - 1}]"
        )
    return index % num_stages


def model_input_size(model: nn.Module, input_size: int | tuple[int, int] | None = None) -> tuple[int, int]:
    """(H, W) of the training images: `input_size` if given, else the model's `pretrained_cfg["input_size"]`."""
    if input_size is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        size = cfg.get("input_size")
        return (int(size[-2]), int(size[-1])) if size else DEFAULT_INPUT_SIZE
    if isinstance(input_size, int):
        return (input_size, input_size)
    return (int(input_size[0]), int(input_size[1]))


def match_spatial(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """Average-pool the larger of two maps to the smaller one's spatial size (by height, as the references)."""
    s_h, t_h = student.shape[2], teacher.shape[2]
    if s_h > t_h:
        student = F.adaptive_avg_pool2d(student, teacher.shape[2:])
    elif s_h < t_h:
        teacher = F.adaptive_avg_pool2d(teacher, student.shape[2:])
    return student, teacher
