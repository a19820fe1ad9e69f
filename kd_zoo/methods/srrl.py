"""SRRL: Softmax Regression Representation Learning.

"Knowledge Distillation via Softmax Regression Representation Learning" (Yang et al., ICLR 2021): a connector
(1x1 conv without bias + BatchNorm + ReLU, applied to the pooled vector; here the equivalent `Linear` +
`BatchNorm1d`) maps the student's pooled pre-logits feature to the teacher's width, and
L_feat = MSE(conn(f_s), f_t), L_logit = MSE(W_t conn(f_s) + b_t, t), both element means, with the teacher's
classifier (W_t, b_t) frozen. Checked against the SRRL module and loss of the SimKD / CTKD code
(Chen et al., arXiv 2203.14001; Li et al., arXiv 2211.16231). CIFAR-100 runs keep the KD term on:
CE 0.1 / KD 0.9 at T 4 (CTKD's scripts), both MSE weights 1.

The teacher's classifier is copied at construction (`teacher.get_classifier()`, an `nn.Linear`) into two
buffers: never optimised, not a second owner of the teacher's parameters, broadcast by DDP, saved with the
method. Build the method after the teacher's weights are loaded; the first training step checks that the copy
reproduces the teacher's logits and raises otherwise. Gradients flow through the copy to the connector and the
student.

A single distilled row (possible with Data Selection) has no batch statistics: the connector's BatchNorm then
normalises with its running statistics and leaves them unchanged (rule of kd_zoo; the reference would crash).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import DistillMethod, FeatureRequest, ModelOutputs, StepContext, register_method
from .kd import KD_TEMPERATURE, ce_and_kd_terms


def srrl_loss(
    projected: Tensor,
    teacher_features: Tensor,
    teacher_logits: Tensor,
    classifier_weight: Tensor,
    classifier_bias: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """(MSE(conn(f_s), f_t), MSE(W_t conn(f_s) + b_t, t)), both element means.

    Args:
        projected: the connector's output conn(f_s), [B, D_t].
        teacher_features: the teacher's pooled pre-logits f_t, [B, D_t].
        teacher_logits: t, [B, classes].
        classifier_weight: the teacher classifier's weight, [classes, D_t].
        classifier_bias: its bias, [classes], or None.
    """
    if projected.shape != teacher_features.shape:
        raise ValueError(
            f"SRRL: projected student feature {tuple(projected.shape)} and teacher feature "
            f"{tuple(teacher_features.shape)} must have the same shape"
        )
    if projected.shape[0] == 0:
        zero = projected.sum() * 0.0
        return zero, zero
    student_logits = F.linear(projected, classifier_weight.to(projected.dtype), _cast(classifier_bias, projected))
    return F.mse_loss(projected, teacher_features), F.mse_loss(student_logits, teacher_logits.to(projected.dtype))


def _cast(bias: Tensor | None, like: Tensor) -> Tensor | None:
    return None if bias is None else bias.to(like.dtype)


class Connector(nn.Module):
    """Linear (no bias) + BatchNorm1d + ReLU; one row in training mode uses the running statistics."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.bn = nn.BatchNorm1d(out_features)

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear(x.flatten(1))
        if self.training and x.shape[0] == 1:
            bn = self.bn
            x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps)
        else:
            x = self.bn(x)
        return F.relu(x)


@register_method
class SRRL(DistillMethod):
    """SRRL with the KD term.

    Args:
        feat_weight: weight of MSE(conn(f_s), f_t) (1).
        logit_weight: weight of MSE(teacher_fc(conn(f_s)), t) (1).
        ce_weight: weight of the CE term (0.1, CTKD's scripts).
        kd_weight: weight of the KD term (0.9, CTKD's scripts; `kd_weight=0, ce_weight=1` gives CE + SRRL only).
        temperature: KD temperature (4).
    """

    name = "srrl"

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        feat_weight: float = 1.0,
        logit_weight: float = 1.0,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
        temperature: float = KD_TEMPERATURE,
    ):
        super().__init__(student, teacher)
        classifier = teacher.get_classifier()
        t_dim = int(teacher.num_features)
        if not isinstance(classifier, nn.Linear) or classifier.in_features != t_dim:
            raise ValueError(
                f"SRRL needs the teacher's classifier as an nn.Linear on its {t_dim}-dim pooled feature, got "
                f"{classifier!r} from {type(teacher).__name__}.get_classifier()"
            )
        self.connector = Connector(int(student.num_features), t_dim)
        self.register_buffer("teacher_weight", classifier.weight.detach().clone())
        bias = classifier.bias.detach().clone() if classifier.bias is not None else None
        self.register_buffer("teacher_bias", bias)
        self.feat_weight, self.logit_weight = feat_weight, logit_weight
        self.ce_weight, self.kd_weight, self.temperature = ce_weight, kd_weight, temperature
        self._classifier_checked = False

    @property
    def student_request(self) -> FeatureRequest:
        return FeatureRequest(pooled=True)

    @property
    def teacher_request(self) -> FeatureRequest:
        return FeatureRequest(pooled=True)

    def check_teacher_classifier(self, teacher: ModelOutputs, rtol: float = 1e-2) -> None:
        """Raise if the frozen classifier copy does not map the teacher's pooled features to its logits."""
        if teacher.pooled is None or teacher.logits.shape[0] == 0:
            return
        want = teacher.logits.float()
        got = F.linear(teacher.pooled.float(), self.teacher_weight.float(), _cast(self.teacher_bias, want))
        error = float((got - want).norm() / (want.norm() + 1e-6))
        if error > rtol:
            raise ValueError(
                f"SRRL's copy of the teacher classifier does not reproduce the teacher's logits (relative error "
                f"{error:.3g}): the teacher's weights changed after the method was built. Create the method after "
                "loading the teacher's weights."
            )

    def forward(
        self, student: ModelOutputs, teacher: ModelOutputs, labels: Tensor, ctx: StepContext
    ) -> dict[str, Tensor]:
        if self.training and not self._classifier_checked:
            self.check_teacher_classifier(teacher)
            self._classifier_checked = True
        projected = self.connector(student.pooled)
        feat, logit = srrl_loss(projected, teacher.pooled, teacher.logits, self.teacher_weight, self.teacher_bias)
        return {
            **ce_and_kd_terms(student.logits, teacher.logits, labels, self.ce_weight, self.kd_weight, self.temperature),
            "loss_srrl_feat": self.feat_weight * feat,
            "loss_srrl_logit": self.logit_weight * logit,
        }
