"""VID: Variational Information Distillation.

"Variational Information Distillation for Knowledge Transfer" (Ahn et al., CVPR 2019, arXiv 1904.05835):
maximise a variational lower bound on the mutual information between teacher and student features by fitting,
per stage pair, a Gaussian q(f_t | f_s) = N(mu(f_s), sigma^2) with a learned per-channel variance.
Per pair, the larger map is average-pooled to the smaller one's size; mu is a 1x1-conv regressor
(C_s -> C_t, ReLU, C_t -> C_t, ReLU, C_t -> C_t, no biases); sigma^2 = softplus(log_scale) + 1e-5 per teacher
channel, initialised to 5.0; the loss is the mean of 0.5 * ((mu - f_t)^2 / sigma^2 + log sigma^2), summed over
the stage pairs. Checked against the authors' code as CRD (Tian et al., arXiv 1910.10699) ships it.

`log_scale` is an `nn.Parameter` registered on the module, so it trains with the student (mdistiller keeps it in
a plain Python list, so it is never optimised or saved: the bug this avoids).

Stage pairing: the stage outputs after the stem (CRD's `feat[1:-1]`, stages 1 .. N-1 here), the student's and the
teacher's zipped from the first and truncated to the shorter list, as in the reference (for WRN-40-2 ->
MobileNetV2, MobileNetV2's fifth stage is unused). Pass `stage_pairs` to choose them explicitly.

CIFAR-100 defaults (CRD's script `-a 0 -b 1`, mdistiller): weight 1, CE 1, no KD term (SemCKD's scripts keep
KD on, `-r 1 -a 1`: pass `kd_weight=1`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import (
    DistillMethod,
    FeatureRequest,
    ModelOutputs,
    StepContext,
    match_spatial,
    register_method,
    resolve_stage,
    stage_channels,
)
from .kd import KD_TEMPERATURE, ce_and_kd_terms


def vid_loss(mean: Tensor, target: Tensor, variance: Tensor) -> Tensor:
    """Gaussian negative log-likelihood without the constant: mean of 0.5 * ((mu - t)^2 / var + log var).

    Args:
        mean: predicted mu, [B, C, H, W].
        target: teacher features, [B, C, H, W].
        variance: per-channel variance, [C].
    """
    if mean.shape != target.shape:
        raise ValueError(f"VID: predicted mean {tuple(mean.shape)} and target {tuple(target.shape)} must match")
    if mean.numel() == 0:
        return mean.sum() * 0.0 + variance.sum() * 0.0
    if mean.dtype in (torch.float16, torch.bfloat16):  # under autocast: the NLL in float32
        mean, target = mean.float(), target.float()
    var = variance.reshape(1, -1, *([1] * (mean.ndim - 2))).to(mean.dtype)
    return (0.5 * ((mean - target.to(mean.dtype)) ** 2 / var + torch.log(var))).mean()


def _conv1x1(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=1, bias=False)


class VIDRegressor(nn.Module):
    """mu(f_s) and the trained per-channel variance of one stage pair.

    Args:
        student_channels: C_s.
        teacher_channels: C_t (also the hidden width, as in the reference).
        init_variance: sigma^2 at initialisation (5.0).
        eps: variance floor added after the softplus (1e-5).
    """

    def __init__(self, student_channels: int, teacher_channels: int, init_variance: float = 5.0, eps: float = 1e-5):
        super().__init__()
        if init_variance <= eps:
            raise ValueError(f"init_variance must exceed eps={eps}, got {init_variance}")
        c_s, c_t = student_channels, teacher_channels
        self.mean = nn.Sequential(_conv1x1(c_s, c_t), nn.ReLU(), _conv1x1(c_t, c_t), nn.ReLU(), _conv1x1(c_t, c_t))
        # softplus(log_scale) + eps = init_variance  <=>  log_scale = log(exp(init_variance - eps) - 1).
        self.log_scale = nn.Parameter(torch.full((c_t,), math.log(math.expm1(init_variance - eps))))
        self.eps = eps

    @property
    def variance(self) -> Tensor:
        return F.softplus(self.log_scale) + self.eps

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        student, teacher = match_spatial(student, teacher)
        return vid_loss(self.mean(student), teacher, self.variance)


@register_method
class VID(DistillMethod):
    """VID over the stage outputs after the stem.

    Args:
        weight: weight of the summed VID term (1, CRD / mdistiller).
        ce_weight: weight of the CE term (1, CRD / mdistiller).
        kd_weight: weight of an extra KD term (0, CRD / mdistiller; 1 in SemCKD's scripts).
        temperature: KD temperature, used only when `kd_weight` > 0 (4).
        init_variance: initial per-channel variance (5.0, the authors' code).
        eps: variance floor (1e-5, the authors' code).
        stage_pairs: explicit (student stage, teacher stage) pairs (stem = 0, negative from the end); default:
            stages 1, 2, ... of both zipped to the shorter list.
    """

    name = "vid"

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        weight: float = 1.0,
        ce_weight: float = 1.0,
        kd_weight: float = 0.0,
        temperature: float = KD_TEMPERATURE,
        init_variance: float = 5.0,
        eps: float = 1e-5,
        stage_pairs: Sequence[tuple[int, int]] | None = None,
    ):
        super().__init__(student, teacher)
        s_chs, t_chs = stage_channels(student), stage_channels(teacher)
        if stage_pairs is None:
            stage_pairs = list(zip(range(1, len(s_chs)), range(1, len(t_chs)), strict=False))  # the shorter list
        pairs = [
            (resolve_stage(s, len(s_chs), student, "student stage"), resolve_stage(t, len(t_chs), teacher, "stage"))
            for s, t in stage_pairs
        ]
        if not pairs:
            raise ValueError("VID needs at least one (student stage, teacher stage) pair")
        self.stage_pairs = tuple(pairs)
        self.regressors = nn.ModuleList(VIDRegressor(s_chs[s], t_chs[t], init_variance, eps) for s, t in pairs)
        self.weight, self.ce_weight, self.kd_weight, self.temperature = weight, ce_weight, kd_weight, temperature

    @property
    def student_request(self) -> FeatureRequest:
        return FeatureRequest(stages=tuple(s for s, _ in self.stage_pairs))

    @property
    def teacher_request(self) -> FeatureRequest:
        return FeatureRequest(stages=tuple(t for _, t in self.stage_pairs))

    def forward(
        self, student: ModelOutputs, teacher: ModelOutputs, labels: Tensor, ctx: StepContext
    ) -> dict[str, Tensor]:
        vid = sum(r(f_s, f_t) for r, f_s, f_t in zip(self.regressors, student.stages, teacher.stages, strict=True))
        return {
            **ce_and_kd_terms(student.logits, teacher.logits, labels, self.ce_weight, self.kd_weight, self.temperature),
            "loss_vid": self.weight * vid,
        }
