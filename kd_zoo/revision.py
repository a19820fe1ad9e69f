"""Label Revision (LR): correct the teacher's wrong soft labels with the ground truth.

"Improve Knowledge Distillation via Label Revision and Data Selection" (Lan et al., arXiv 2404.03693), Sec. III-B.
Where the teacher's prediction is wrong, its distribution is mixed with the one-hot label (Eq. 7)

    p = beta * p_t + (1 - beta) * onehot(y),   beta = eta / (p_t_max - p_t_y + 1)          (Eq. 8-9)

so that the true class becomes the most probable while the teacher's relative probabilities survive. The paper's
worked example: p_t = [0.1, 0.1, 0.5, 0.3], y = 3, eta = 0.9 -> p = [0.075, 0.075, 0.375, 0.475].

The LR loss (Eq. 10-11) on the distilled samples splits them by the teacher's correctness:
right part: CE(s, y) + lambda1 * MSE(s, t) on raw logits; wrong part: lambda2 * MSE(softmax(s), p). As in the
public reference code, each part's terms are means over that part (MSE: over its elements).

How LR composes with a distillation method (`DistillMethod.label_revision`):
- "loss" (vanilla KD and the feature methods, as in the paper's Tables III, V, VI): the method's CE and
  logit-KD terms are replaced by the LR loss above; its other terms (feature terms) stay.
- "targets" (DKD, DTD-LA, CTKD, whose logit loss is their contribution): the method keeps its own loss but
  reads the revised teacher distribution (as logits `log p`). The paper applies only DS to these on CIFAR-100
  and reports CTKD+LR on ImageNet without details; this composition is kd_zoo's, documented as such.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

# Paper defaults (CIFAR-100). eta: "When conducting LR, the hyper-parameter eta is set as 0.8" (Sec. IV-A).
# lambda1 = 4: Table VIII's best, = Table IV's "Our" 76.60 (ResNet32x4 -> ResNet8x4); the ablations of Tables III,
# VIII and IX use lambda1 = lambda2 = 1 ("we fix the other one as 1"), hence the paper's 75.76 there.
ETA = 0.8
LAMBDA1 = 4.0
LAMBDA2 = 1.0

EtaRule = float | Literal["pt_max", "pt_target"]


def _check_probs_labels(probs: Tensor, labels: Tensor, what: str = "teacher_probs") -> None:
    if probs.ndim != 2:
        raise ValueError(f"{what} must be [batch, classes], got shape {tuple(probs.shape)}")
    if labels.ndim != 1 or labels.shape[0] != probs.shape[0]:
        raise ValueError(f"labels must be [batch] = [{probs.shape[0]}], got shape {tuple(labels.shape)}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        bad = labels[(labels < 0) | (labels >= probs.shape[1])].unique().tolist()
        raise ValueError(f"labels must lie in [0, {probs.shape[1]}), found {bad[:10]}")


def resolve_eta(eta: EtaRule, pt_max: Tensor, pt_target: Tensor) -> Tensor:
    """Per-sample eta: a fixed value in (0, 1), or the teacher's max / target probability (Table IX)."""
    if isinstance(eta, str):
        if eta == "pt_max":
            return pt_max
        if eta == "pt_target":
            return pt_target
        raise ValueError(f"eta must be a number in (0, 1), 'pt_max' or 'pt_target', got {eta!r}")
    if isinstance(eta, bool) or not isinstance(eta, int | float) or not 0.0 < float(eta) < 1.0:
        raise ValueError(
            f"eta must lie in (0, 1), got {eta!r}: Eq. 9 calls it 'a coefficient that is smaller than 1', and at "
            "eta = 1 the true class only ties with the teacher's wrong prediction. Use the paper's 0.8 (Table IX), "
            "another value below 1 such as 0.95, or the per-sample 'pt_max' / 'pt_target'"
        )
    return torch.full_like(pt_max, float(eta))


def _revise64(probs: Tensor, labels: Tensor, eta: EtaRule) -> tuple[Tensor, Tensor]:
    """Eq. 7-9 in float64 (a margin of 1 - eta survives for eta close to 1): revised rows, and the wrong-row mask."""
    probs = probs.to(torch.float64)
    pt_max, predicted = probs.max(dim=1)
    pt_target = probs.gather(1, labels[:, None]).squeeze(1)
    beta = resolve_eta(eta, pt_max, pt_target) / (pt_max - pt_target + 1.0)
    onehot = F.one_hot(labels, probs.shape[1]).to(probs.dtype)
    revised = beta[:, None] * probs + (1.0 - beta[:, None]) * onehot
    wrong = predicted != labels
    return torch.where(wrong[:, None], revised, probs), wrong


def _true_class_on_top(values: Tensor, labels: Tensor, rows: Tensor) -> Tensor:
    """`values` with the true class raised, on `rows`, to one floating-point step above the largest other class
    wherever it does not already exceed it (a tie from eta_i = pt_max = 1.0, or a margin 1 - eta below the dtype's
    resolution). Elsewhere the values are returned unchanged."""
    target = values.gather(1, labels[:, None]).squeeze(1)
    others = values.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
    lifted = torch.nextafter(others, torch.full_like(others, float("inf")))
    raise_rows = rows & (target <= others)
    return values.scatter(1, labels[:, None], torch.where(raise_rows, lifted, target)[:, None])


def revise_soft_labels(teacher_probs: Tensor, labels: Tensor, eta: EtaRule = ETA) -> Tensor:
    """Revised teacher distributions (Eq. 7-9); rows where the teacher's argmax is the label are unchanged.

    Eq. 9 keeps the true class strictly on top exactly when eta < 1 (its margin over the wrong argmax is 1 - eta),
    so a fixed eta must lie in (0, 1). The per-sample `pt_max` can reach 1.0 in float (a saturated wrong teacher),
    and a margin 1 - eta can fall below the resolution of the output dtype: where the mixture ties, the true class
    is raised by one floating-point step above the largest other class, the smallest change that keeps it on top.

    Args:
        teacher_probs: teacher softmax probabilities, [batch, classes].
        labels: true classes, [batch].
        eta: a fixed eta in (0, 1), or 'pt_max' / 'pt_target' for the per-sample variants of Table IX.

    Returns:
        [batch, classes] in `teacher_probs`' dtype; on the revised rows the maximum is at the label, strictly.

    Example:
        >>> p = revise_soft_labels(torch.tensor([[0.1, 0.1, 0.5, 0.3]]), torch.tensor([3]), eta=0.9)
        >>> [round(v, 6) for v in p[0].tolist()]
        [0.075, 0.075, 0.375, 0.475]
    """
    _check_probs_labels(teacher_probs, labels)
    revised, wrong = _revise64(teacher_probs, labels, eta)
    return _true_class_on_top(revised.to(teacher_probs.dtype), labels, wrong)


def revised_teacher_logits(teacher_logits: Tensor, labels: Tensor, eta: EtaRule = ETA) -> Tensor:
    """Teacher logits whose softmax is the revised distribution: raw logits where the teacher is right,
    `log p` where it is wrong (for methods that consume logits, `label_revision = "targets"`); the true class keeps
    the largest logit, strictly, on the revised rows."""
    _check_probs_labels(teacher_logits, labels, "teacher_logits")
    revised, _ = _revise64(teacher_logits.to(torch.float64).softmax(dim=1), labels, eta)
    wrong = teacher_logits.argmax(dim=1) != labels
    log_revised = revised.clamp_min(torch.finfo(torch.float32).tiny).log().to(teacher_logits.dtype)
    log_revised = _true_class_on_top(log_revised, labels, wrong)
    return torch.where(wrong[:, None], log_revised, teacher_logits)


def _part_mean(values: Tensor, anchor: Tensor) -> Tensor:
    """Mean of `values`, or a zero that keeps `anchor` in the graph when the part is empty."""
    return values.mean() if values.numel() else anchor.sum() * 0.0


def label_revision_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    eta: EtaRule = ETA,
    lambda1: float = LAMBDA1,
    lambda2: float = LAMBDA2,
) -> dict[str, Tensor]:
    """The LR loss of Eq. 10-11, as named, already weighted terms.

    Returns:
        `loss_lr_ce`: CE(s_r, y_r) over the samples the teacher gets right;
        `loss_lr_right`: lambda1 * MSE(s_r, t_r) on raw logits;
        `loss_lr_wrong`: lambda2 * MSE(softmax(s_w), p_w) against the revised labels.
        An empty part contributes an exact zero that keeps the graph connected.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits must have the same shape, got {tuple(student_logits.shape)} and "
            f"{tuple(teacher_logits.shape)}: check that both models have the same number of classes"
        )
    _check_probs_labels(teacher_logits, labels, "teacher_logits")
    teacher_logits = teacher_logits.detach()
    wrong = teacher_logits.argmax(dim=1) != labels
    right = ~wrong
    s_right, s_wrong = student_logits[right], student_logits[wrong]
    ce = F.cross_entropy(s_right, labels[right], reduction="none")
    mse_right = (s_right - teacher_logits[right]).pow(2)
    revised = revise_soft_labels(teacher_logits[wrong].float().softmax(dim=1), labels[wrong], eta)
    mse_wrong = (s_wrong.float().softmax(dim=1) - revised).pow(2)
    return {
        "loss_lr_ce": _part_mean(ce, student_logits),
        "loss_lr_right": lambda1 * _part_mean(mse_right, student_logits),
        "loss_lr_wrong": lambda2 * _part_mean(mse_wrong, student_logits),
    }


class LabelRevision:
    """LR settings bound together, as the distillation step uses them.

    Args:
        eta: Eq. 9's coefficient in (0, 1), or 'pt_max' / 'pt_target' (Table IX). Paper default 0.8.
        lambda1: weight of the right part's logit MSE (Table VIII). Paper default 4.
        lambda2: weight of the wrong part's probability MSE (Table VIII). Paper default 1.
    """

    def __init__(self, eta: EtaRule = ETA, lambda1: float = LAMBDA1, lambda2: float = LAMBDA2):
        resolve_eta(eta, torch.ones(1), torch.ones(1))  # validates
        if lambda1 < 0 or lambda2 < 0:
            raise ValueError(f"lambda1 and lambda2 must be >= 0, got {lambda1} and {lambda2}")
        self.eta, self.lambda1, self.lambda2 = eta, float(lambda1), float(lambda2)

    def loss(self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
        return label_revision_loss(
            student_logits, teacher_logits, labels, eta=self.eta, lambda1=self.lambda1, lambda2=self.lambda2
        )

    def revise_logits(self, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        return revised_teacher_logits(teacher_logits, labels, self.eta)

    def __repr__(self) -> str:
        return f"LabelRevision(eta={self.eta!r}, lambda1={self.lambda1}, lambda2={self.lambda2})"
