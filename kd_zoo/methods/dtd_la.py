"""DTD-LA: Dynamic Temperature Distillation with Label Adjustment.

"Preparing Lessons: Improve Knowledge Distillation with Better Supervision" (Wen, Lai & Qian, arXiv 1911.07471),
as compared in the LR+DS paper (Tables V, VI):
- LA (the paper's "knowledge adjustment" by probability shift): where the teacher's top class is not the label,
  swap the teacher's top-class and true-class values. Swapping the two logits before temperature softening
  equals swapping the two probabilities after it.
- DTD: a per-sample temperature T_x = T0 + (mean_batch(w) - w_x) * beta, so harder samples (larger w) get
  a lower temperature and the batch mean stays T0; w_x = (1 - cos(z_s, z_t))^gamma on the raw logits ("flsw"),
  or 1 / max softmax(z_s) ("cwsm"). Each sample's KL is scaled by its own T_x^2; CE is added as in KD.

Provenance of the constants: the paper's text was not available to us, so its CIFAR-100 values are unchecked.
The formulas follow shared/reference/methods.md and TextBrewer's `schedulers.py` (which cites arXiv
1911.07471); T0 = 4 is the LR+DS paper's KD temperature (Sec. IV-A); beta = 1, gamma = 1 are the values of the
public FLSW adaptations (LTP / TextBrewer); CE 0.1 / KD 0.9 are the CRD weights used for every KD variant in
the LR+DS comparison. `min_temperature` (kd_zoo's) keeps T_x positive, which the formula alone does not.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import DistillMethod, ModelOutputs, StepContext, register_method
from .kd import KD_TEMPERATURE, ce_and_kd_terms


def label_adjustment(teacher_logits: Tensor, labels: Tensor) -> Tensor:
    """Probability shift: swap the top-class and true-class logits where the teacher is wrong."""
    top = teacher_logits.argmax(dim=1)
    rows = torch.arange(teacher_logits.shape[0], device=teacher_logits.device)
    adjusted = teacher_logits.clone()
    adjusted[rows, top] = teacher_logits[rows, labels]
    adjusted[rows, labels] = teacher_logits[rows, top]
    return adjusted


def dynamic_temperature(
    student_logits: Tensor,
    teacher_logits: Tensor,
    base: float = 4.0,
    beta: float = 1.0,
    gamma: float = 1.0,
    weight: Literal["flsw", "cwsm"] = "flsw",
    min_temperature: float = 1.0,
) -> Tensor:
    """Per-sample temperatures [batch] (no gradient: they weight the loss, they are not trained)."""
    with torch.no_grad():
        if weight == "flsw":
            cos = F.cosine_similarity(student_logits.float(), teacher_logits.float(), dim=1)
            w = (1.0 - cos).clamp_min(0.0) ** gamma
        elif weight == "cwsm":
            w = 1.0 / student_logits.float().softmax(dim=1).amax(dim=1)
        else:
            raise ValueError(f"weight must be 'flsw' or 'cwsm', got {weight!r}")
        return (base + (w.mean() - w) * beta).clamp_min(min_temperature)


@register_method
class DTDLA(DistillMethod):
    """DTD-LA.

    Args:
        base_temperature: T0, the batch-mean temperature (4).
        beta: scale of the temperature offsets (1).
        gamma: FLSW exponent (1).
        weight: 'flsw' (default) or 'cwsm'.
        min_temperature: lower clamp of T_x (1).
        ce_weight: CE weight (0.1).
        kd_weight: KD weight (0.9).
    """

    name = "dtd_la"
    label_revision = "targets"

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        base_temperature: float = KD_TEMPERATURE,
        beta: float = 1.0,
        gamma: float = 1.0,
        weight: Literal["flsw", "cwsm"] = "flsw",
        min_temperature: float = 1.0,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
    ):
        super().__init__(student, teacher)
        if weight not in ("flsw", "cwsm"):
            raise ValueError(f"weight must be 'flsw' or 'cwsm', got {weight!r}")
        self.base_temperature, self.beta, self.gamma, self.weight = base_temperature, beta, gamma, weight
        self.min_temperature, self.ce_weight, self.kd_weight = min_temperature, ce_weight, kd_weight

    def forward(
        self, student: ModelOutputs, teacher: ModelOutputs, labels: Tensor, ctx: StepContext
    ) -> dict[str, Tensor]:
        teacher_logits = label_adjustment(teacher.logits, labels)
        temperature = dynamic_temperature(
            student.logits,
            teacher_logits,
            self.base_temperature,
            self.beta,
            self.gamma,
            self.weight,
            self.min_temperature,
        )
        return ce_and_kd_terms(student.logits, teacher_logits, labels, self.ce_weight, self.kd_weight, temperature)
