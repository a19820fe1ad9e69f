"""PKT: Probabilistic Knowledge Transfer.

"Learning Deep Representations with Probabilistic Knowledge Transfer" (Passalis & Tefas, ECCV 2018,
arXiv 1803.10837): match the two models' distributions of pairwise similarities over the batch. With the pooled
pre-logits vectors L2-normalised, the cosine-similarity matrices (B x B) are mapped to [0, 1] by (x + 1) / 2,
each row normalised to a distribution, and L = KL(P_t || P_s) averaged over all B^2 entries (hence the large
weight); eps = 1e-7 inside the norms and the log, as in the authors' code (also CRD's and mdistiller's
`cosine_similarity_loss`, whose semantics this was checked against).

CIFAR-100 defaults (CRD's script `-a 0 -b 30000`, mdistiller): weight 30000, CE 1, no KD term. SemCKD's scripts
keep KD on (`-r 1 -a 1 -b 30000`): pass `kd_weight=1`. PKT has no trainable extras.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import DistillMethod, FeatureRequest, ModelOutputs, StepContext, register_method
from .kd import KD_TEMPERATURE, ce_and_kd_terms


def _similarity_distribution(features: Tensor, eps: float) -> Tensor:
    """Rows of the [0, 1]-mapped cosine-similarity matrix, each normalised to sum to 1."""
    x = features.flatten(1)
    if x.dtype not in (torch.float32, torch.float64):  # half precision under autocast: compute in float32
        x = x.float()
    x = x / (x.norm(dim=1, keepdim=True) + eps)
    similarity = (x @ x.t() + 1.0) / 2.0
    return similarity / similarity.sum(dim=1, keepdim=True)


def pkt_loss(student_features: Tensor, teacher_features: Tensor, eps: float = 1e-7) -> Tensor:
    """KL(P_t || P_s) between the similarity distributions, averaged over the B^2 entries.

    Args:
        student_features: [B, D_s] (any trailing shape is flattened).
        teacher_features: [B, D_t]; D_t need not equal D_s.
        eps: added to the norms and inside the log, as in the reference.
    """
    if student_features.shape[0] != teacher_features.shape[0]:
        raise ValueError(
            f"PKT needs the same samples from both models, got {student_features.shape[0]} student and "
            f"{teacher_features.shape[0]} teacher rows"
        )
    if student_features.shape[0] == 0:
        return student_features.sum() * 0.0
    # Float32 (or float64) even under autocast: the KL of near-uniform rows is small and half precision drowns it.
    with torch.autocast(device_type=student_features.device.type, enabled=False):
        p_s = _similarity_distribution(student_features, eps)
        p_t = _similarity_distribution(teacher_features.detach(), eps)
        return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


@register_method
class PKT(DistillMethod):
    """PKT on the pooled pre-logits vectors.

    Args:
        weight: weight of the PKT term (30000, CRD / mdistiller).
        ce_weight: weight of the CE term (1, CRD / mdistiller).
        kd_weight: weight of an extra KD term (0, CRD / mdistiller; 1 in SemCKD's scripts).
        temperature: KD temperature, used only when `kd_weight` > 0 (4).
        eps: the reference's numerical epsilon (1e-7).
    """

    name = "pkt"

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        weight: float = 30000.0,
        ce_weight: float = 1.0,
        kd_weight: float = 0.0,
        temperature: float = KD_TEMPERATURE,
        eps: float = 1e-7,
    ):
        super().__init__(student, teacher)
        self.weight, self.ce_weight, self.kd_weight, self.temperature = weight, ce_weight, kd_weight, temperature
        self.eps = eps

    @property
    def student_request(self) -> FeatureRequest:
        return FeatureRequest(pooled=True)

    @property
    def teacher_request(self) -> FeatureRequest:
        return FeatureRequest(pooled=True)

    def forward(
        self, student: ModelOutputs, teacher: ModelOutputs, labels: Tensor, ctx: StepContext
    ) -> dict[str, Tensor]:
        return {
            **ce_and_kd_terms(student.logits, teacher.logits, labels, self.ce_weight, self.kd_weight, self.temperature),
            "loss_pkt": self.weight * pkt_loss(student.pooled, teacher.pooled, self.eps),
        }
