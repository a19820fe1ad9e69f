"""The teacher's view of a batch: the student's inputs re-normalised (and resized) for a teacher that expects others.

The loaders normalise images as the student expects (its `pretrained_cfg`). A teacher trained with other statistics
(a timm ImageNet teacher with a CIFAR student, a ViT with mean 0.5) or at another input size would otherwise be fed
wrong inputs silently. `TeacherInput.between(...)` is None when both expect the same; otherwise it undoes the
student's normalisation and applies the teacher's, on the device (as timm's distillation task re-normalises for its
teachers), and resizes for a teacher of fixed input size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TeacherInput(nn.Module):
    """x_teacher = resize((x * std_s + mean_s - mean_t) / std_t) (see the module docstring).

    Args:
        student_mean: the mean the loader normalised with.
        student_std: the std the loader normalised with.
        teacher_mean: the mean the teacher expects.
        teacher_std: the std the teacher expects.
        teacher_size: (H, W) the teacher expects, or None to keep the batch's size.
    """

    def __init__(
        self,
        student_mean: Sequence[float],
        student_std: Sequence[float],
        teacher_mean: Sequence[float],
        teacher_std: Sequence[float],
        teacher_size: tuple[int, int] | None = None,
    ):
        super().__init__()
        for name, values in (
            ("student_mean", student_mean),
            ("student_std", student_std),
            ("teacher_mean", teacher_mean),
            ("teacher_std", teacher_std),
        ):
            # not persistent: a checkpoint of the module that holds this one keeps only what it trains
            values = torch.tensor(list(values), dtype=torch.float32).view(1, -1, 1, 1)
            self.register_buffer(name, values, persistent=False)
        self.teacher_size = None if teacher_size is None else (int(teacher_size[0]), int(teacher_size[1]))

    @classmethod
    def between(
        cls,
        student_mean: Sequence[float],
        student_std: Sequence[float],
        input_size: Sequence[int],
        teacher: nn.Module,
    ) -> TeacherInput | None:
        """The conversion from the loader's inputs (normalised with `student_mean` / `student_std`, of
        `input_size` = (C, H, W)) to what `teacher`'s `pretrained_cfg` says it expects; None when they agree.

        The size changes only for a teacher whose cfg says `fixed_input_size` (timm's flag, e.g. ViTs): the CIFAR
        networks pool globally and are trained at the data's own size, which their default cfg does not record.
        """
        cfg = getattr(teacher, "pretrained_cfg", None) or {}
        mean, std = tuple(cfg.get("mean") or student_mean), tuple(cfg.get("std") or student_std)
        size = tuple(cfg.get("input_size") or input_size)[-2:]
        same_stats = len(mean) == len(student_mean) and len(std) == len(student_std)
        same_stats = same_stats and torch.allclose(
            torch.tensor(mean, dtype=torch.float64), torch.tensor(student_mean, dtype=torch.float64)
        )
        same_stats = same_stats and torch.allclose(
            torch.tensor(std, dtype=torch.float64), torch.tensor(student_std, dtype=torch.float64)
        )
        resize = bool(cfg.get("fixed_input_size")) and tuple(size) != tuple(input_size)[-2:]
        if same_stats and not resize:
            return None
        return cls(student_mean, student_std, mean, std, (int(size[0]), int(size[1])) if resize else None)

    @property
    def teacher_normalization(self) -> dict[str, list[float]]:
        """The mean and std the teacher is fed with (0-1 scale)."""
        return {"mean": self.teacher_mean.flatten().tolist(), "std": self.teacher_std.flatten().tolist()}

    def forward(self, images: Tensor) -> Tensor:
        dtype = images.dtype
        x = images.float() * self.student_std + self.student_mean
        x = (x - self.teacher_mean) / self.teacher_std
        if self.teacher_size is not None and tuple(x.shape[-2:]) != self.teacher_size:
            x = F.interpolate(x, size=self.teacher_size, mode="bilinear", align_corners=False, antialias=True)
        return x.to(dtype)

    def describe(self) -> str:
        """One line for the run log."""
        values = {n: [round(v, 4) for v in getattr(self, n).flatten().tolist()] for n, _ in self.named_buffers()}
        text = (
            f"the teacher's inputs are re-normalised from the student's mean {values['student_mean']} / std "
            f"{values['student_std']} to the teacher's mean {values['teacher_mean']} / std {values['teacher_std']}"
        )
        return text + (f" and resized to {self.teacher_size[0]}x{self.teacher_size[1]}" if self.teacher_size else "")

    def wrap(self, teacher: nn.Module) -> nn.Module:
        """A module that feeds `teacher` through this conversion (e.g. to evaluate it on the student's loader)."""
        return nn.Sequential(self, teacher)
