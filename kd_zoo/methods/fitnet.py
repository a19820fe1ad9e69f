"""FitNet: hint-based feature distillation.

"FitNets: Hints for Thin Deep Nets" (Romero et al., ICLR 2015, arXiv 1412.6550): a regressor maps the
student's hint-layer output onto the teacher's, and L = ce_weight * CE(s, y) + weight * MSE(r(f_s[h]), f_t[h]),
the MSE an element mean. Single-stage, as in the CIFAR benchmarks of CRD (Tian et al., arXiv 1910.10699,
`ConvReg` + `HintLoss`) and mdistiller, whose semantics this was checked against; CIFAR-100 defaults (CRD /
mdistiller; CRD's script `-a 0 -b 100`): hint layer 2 (stem = 0; SemCKD / SimKD use 1: pass `hint_layer=1`),
weight 100, CE 1, no KD term (SemCKD's scripts keep KD on for every method, `-r 1 -a 1`: pass `kd_weight=1`).

The regressor is chosen from the two hint maps' spatial sizes, which come from `feature_info` (`reduction`) and
the input size (the student's `pretrained_cfg`, 32 x 32 for the CIFAR zoo), never from a dummy forward:
- student map twice as large: 3x3 conv, stride 2, padding 1;
- student map half as large: 4x4 transposed conv, stride 2, padding 1;
- student map at least as large otherwise: a conv of kernel 1 + H_s - H_t (1x1 for equal sizes);
- student map smaller but not half (e.g. a quarter, only with `teacher_hint_layer` set across architectures):
  3x3 conv, padding 1, and the teacher map average-pooled to the student's size (SemCKD's `ConvReg`; CRD's
  raises here);
then BatchNorm + ReLU. The conv keeps its bias, as in the references.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import (
    DistillMethod,
    FeatureRequest,
    ModelOutputs,
    StepContext,
    model_input_size,
    register_method,
    resolve_stage,
    stage_shapes,
)
from .kd import KD_TEMPERATURE, ce_and_kd_terms


def fitnet_loss(regressed: Tensor, teacher_hint: Tensor) -> Tensor:
    """MSE (element mean) between the regressed student hint and the teacher hint, both [B, C_t, H, W]."""
    if regressed.shape != teacher_hint.shape:
        raise ValueError(
            f"FitNet: regressed student hint {tuple(regressed.shape)} and teacher hint {tuple(teacher_hint.shape)} "
            "must have the same shape"
        )
    if regressed.numel() == 0:
        return regressed.sum() * 0.0
    return F.mse_loss(regressed, teacher_hint)


class HintRegressor(nn.Module):
    """Maps a student hint map [B, C_s, H_s, W_s] onto the teacher's [B, C_t, H_t, W_t] (see the module docstring).

    Args:
        student_shape: (C_s, H_s, W_s).
        teacher_shape: (C_t, H_t, W_t).
        use_relu: end with ReLU after the BatchNorm (the references' default).
    """

    def __init__(self, student_shape: tuple[int, int, int], teacher_shape: tuple[int, int, int], use_relu: bool = True):
        super().__init__()
        (s_c, s_h, s_w), (t_c, t_h, t_w) = student_shape, teacher_shape
        self.pool_teacher_to: tuple[int, int] | None = None
        if (s_h, s_w) == (2 * t_h, 2 * t_w):
            self.conv: nn.Module = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
        elif (2 * s_h, 2 * s_w) == (t_h, t_w):
            self.conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
        elif s_h >= t_h and s_w >= t_w:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
        else:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=3, padding=1)
            self.pool_teacher_to = (s_h, s_w)
        self.bn = nn.BatchNorm2d(t_c)
        self.act = nn.ReLU() if use_relu else nn.Identity()

    def forward(self, student_hint: Tensor, teacher_hint: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (regressed student hint, teacher hint), the latter pooled when the student map is smaller."""
        if self.pool_teacher_to is not None:
            teacher_hint = F.adaptive_avg_pool2d(teacher_hint, self.pool_teacher_to)
        return self.act(self.bn(self.conv(student_hint))), teacher_hint


@register_method
class FitNet(DistillMethod):
    """FitNet (single hint layer).

    Args:
        hint_layer: stage index of the hint (stem = 0, negative from the end) in both models (2: CRD, mdistiller;
            1: SemCKD, SimKD).
        teacher_hint_layer: the teacher's stage, when it differs from the student's (default: `hint_layer`).
        weight: weight of the hint MSE (100, CRD / mdistiller).
        ce_weight: weight of the CE term (1, CRD / mdistiller).
        kd_weight: weight of an extra KD term (0, CRD / mdistiller; 1 in SemCKD's scripts).
        temperature: KD temperature, used only when `kd_weight` > 0 (4).
        input_size: (H, W) of the training images, to size the regressor (default: the student's
            `pretrained_cfg["input_size"]`, 32 x 32 for the CIFAR zoo).
    """

    name = "fitnet"

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        hint_layer: int = 2,
        teacher_hint_layer: int | None = None,
        weight: float = 100.0,
        ce_weight: float = 1.0,
        kd_weight: float = 0.0,
        temperature: float = KD_TEMPERATURE,
        input_size: int | tuple[int, int] | None = None,
    ):
        super().__init__(student, teacher)
        self.input_size = model_input_size(student, input_size)
        s_shapes, t_shapes = stage_shapes(student, self.input_size), stage_shapes(teacher, self.input_size)
        t_hint = hint_layer if teacher_hint_layer is None else teacher_hint_layer
        self.student_stage = resolve_stage(hint_layer, len(s_shapes), student, "hint_layer")
        self.teacher_stage = resolve_stage(t_hint, len(t_shapes), teacher, "teacher_hint_layer")
        self.regressor = HintRegressor(s_shapes[self.student_stage], t_shapes[self.teacher_stage])
        self.weight, self.ce_weight, self.kd_weight, self.temperature = weight, ce_weight, kd_weight, temperature

    @property
    def student_request(self) -> FeatureRequest:
        return FeatureRequest(stages=(self.student_stage,))

    @property
    def teacher_request(self) -> FeatureRequest:
        return FeatureRequest(stages=(self.teacher_stage,))

    def forward(
        self, student: ModelOutputs, teacher: ModelOutputs, labels: Tensor, ctx: StepContext
    ) -> dict[str, Tensor]:
        regressed, target = self.regressor(student.stages[0], teacher.stages[0])
        if regressed.shape[2:] != target.shape[2:]:
            raise ValueError(
                f"FitNet's regressor was sized for {self.input_size[0]}x{self.input_size[1]} inputs, but the hint "
                f"maps are {tuple(student.stages[0].shape[2:])} (student) and {tuple(target.shape[2:])} (teacher), "
                f"which it maps to {tuple(regressed.shape[2:])}. Create the method with input_size=(H, W) of the "
                "training images."
            )
        return {
            **ce_and_kd_terms(student.logits, teacher.logits, labels, self.ce_weight, self.kd_weight, self.temperature),
            "loss_fitnet": self.weight * fitnet_loss(regressed, target),
        }
