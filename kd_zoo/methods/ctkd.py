"""Curriculum Temperature Knowledge Distillation, global-temperature variant.

"Curriculum Temperature for Knowledge Distillation" (Li et al., AAAI 2023, arXiv 2211.16231; reference code
github.com/zhengli97/CTKD): vanilla KD whose temperature T = t_start + t_end * sigmoid(theta) is learned with
the student by the same optimiser, behind a gradient-reversal layer, so that theta *ascends* the KD loss the
student descends. The reversal's strength follows a cosine from 0 to 1 over the first `reversal_epochs` epochs
(the reference's `CosineDecay(max 0, min -1, loops 10)`, evaluated at 1-based epochs), so the curriculum
moves from easy to hard. CIFAR-100: theta 1.0, t_start 1, t_end 20, 10 epochs, CE 0.1 / KD 0.9; ImageNet: 5 epochs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import DistillMethod, ModelOutputs, StepContext, register_method
from .kd import ce_and_kd_terms


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by `scale` (negative: gradient reversal)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def reversal_strength(epoch: int, reversal_epochs: int) -> float:
    """lambda in [0, 1]: (1 - cos(pi * min(epoch + 1, n) / n)) / 2, epochs counted from 0."""
    i = min(max(epoch + 1, 0), reversal_epochs)
    return (1.0 - math.cos(math.pi * i / reversal_epochs)) / 2.0


@register_method
class CTKD(DistillMethod):
    """KD with a learnable, adversarial global temperature.

    Args:
        t_start: lowest temperature (1).
        t_end: temperature range above `t_start` (20).
        theta_init: initial value of the temperature parameter (1.0).
        reversal_epochs: epochs over which the reversal strength rises from 0 to 1 (CIFAR-100: 10; ImageNet: 5).
        ce_weight: CE weight (0.1).
        kd_weight: KD weight (0.9).
    """

    name = "ctkd"
    label_revision = "targets"

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        t_start: float = 1.0,
        t_end: float = 20.0,
        theta_init: float = 1.0,
        reversal_epochs: int = 10,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
    ):
        super().__init__(student, teacher)
        if reversal_epochs < 1:
            raise ValueError(f"reversal_epochs must be >= 1, got {reversal_epochs}")
        self.theta = nn.Parameter(torch.tensor([float(theta_init)]))
        self.t_start, self.t_end, self.reversal_epochs = t_start, t_end, reversal_epochs
        self.ce_weight, self.kd_weight = ce_weight, kd_weight

    def temperature(self, ctx: StepContext | None = None) -> Tensor:
        theta = (
            self.theta
            if ctx is None
            else _ScaleGradient.apply(self.theta, -reversal_strength(ctx.epoch, self.reversal_epochs))
        )
        return self.t_start + self.t_end * torch.sigmoid(theta)

    def forward(
        self, student: ModelOutputs, teacher: ModelOutputs, labels: Tensor, ctx: StepContext
    ) -> dict[str, Tensor]:
        return ce_and_kd_terms(
            student.logits,
            teacher.logits,
            labels,
            self.ce_weight,
            self.kd_weight,
            self.temperature(ctx).squeeze(0),
        )

    def diagnostics(self) -> dict[str, float]:
        return {"ctkd_temperature": float(self.temperature().detach())}
