"""Decoupled Knowledge Distillation.

"Decoupled Knowledge Distillation" (Zhao et al., CVPR 2022, arXiv 2203.08679): with both distributions at
temperature T, TCKD = KL between the binary [p_target, 1 - p_target] distributions and NCKD = KL between the
distributions over the non-target classes; each summed and divided by the batch, times T^2.
L = CE + min(epoch / warmup, 1) * (alpha * TCKD + beta * NCKD). CIFAR-100 defaults (mdistiller configs):
alpha 1, beta 8, T 4, warm-up 20 epochs; beta is per pair (`kd_zoo.pairs.dkd_beta`). ImageNet: beta 0.5, T 1,
warm-up 1. mdistiller counts epochs from 1, so the warm-up factor here is (epoch + 1) / warmup.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..pairs import DKD_DEFAULT_BETA
from .base import DistillMethod, ModelOutputs, StepContext, cross_entropy, register_method
from .kd import KD_TEMPERATURE


def _binary_and_nontarget_log_probs(logits: Tensor, labels: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """log [p_target, 1 - p_target] ([B, 2]) and log-softmax over the non-target classes ([B, C - 1]), stably."""
    z = logits / temperature
    target = F.one_hot(labels, z.shape[1]).bool()
    z_target = z[target]
    z_rest = z[~target].reshape(z.shape[0], z.shape[1] - 1)
    log_total = torch.logsumexp(z, dim=1)
    log_rest = torch.logsumexp(z_rest, dim=1)
    binary = torch.stack([z_target - log_total, log_rest - log_total], dim=1)
    return binary, z_rest - log_rest[:, None]


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> Tensor:
    """alpha * TCKD + beta * NCKD (without CE or warm-up)."""
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    s_bin, s_rest = _binary_and_nontarget_log_probs(student_logits, labels, temperature)
    t_bin, t_rest = _binary_and_nontarget_log_probs(teacher_logits, labels, temperature)
    batch = student_logits.shape[0]
    tckd = (t_bin.exp() * (t_bin - s_bin)).sum() / batch * temperature**2
    nckd = (t_rest.exp() * (t_rest - s_rest)).sum() / batch * temperature**2
    return alpha * tckd + beta * nckd


@register_method
class DKD(DistillMethod):
    """DKD.

    Args:
        alpha: TCKD weight (CIFAR-100: 1).
        beta: NCKD weight (CIFAR-100: 8, per pair 2 / 6 / 8; ImageNet 0.5).
        temperature: T (CIFAR-100: 4; ImageNet: 1).
        warmup: epochs of linear warm-up of the DKD term (CIFAR-100: 20; ImageNet: 1).
        ce_weight: CE weight (1).
    """

    name = "dkd"
    label_revision = "targets"

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        alpha: float = 1.0,
        beta: float = DKD_DEFAULT_BETA,
        temperature: float = KD_TEMPERATURE,
        warmup: int = 20,
        ce_weight: float = 1.0,
    ):
        super().__init__(student, teacher)
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 epoch, got {warmup}")
        self.alpha, self.beta, self.temperature, self.warmup, self.ce_weight = (
            alpha,
            beta,
            temperature,
            warmup,
            ce_weight,
        )

    def forward(
        self, student: ModelOutputs, teacher: ModelOutputs, labels: Tensor, ctx: StepContext
    ) -> dict[str, Tensor]:
        ramp = min((ctx.epoch + 1) / self.warmup, 1.0)
        dkd = dkd_loss(student.logits, teacher.logits, labels, self.alpha, self.beta, self.temperature)
        return {"loss_ce": self.ce_weight * cross_entropy(student.logits, labels), "loss_dkd": ramp * dkd}
