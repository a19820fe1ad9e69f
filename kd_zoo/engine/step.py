"""The one distillation step: any method, with Label Revision on or off, with Data Selection on or off.

As in the LR+DS paper's Fig. 1 and Algorithm 1 (arXiv 2404.03693): each batch carries a boolean distill mask
(True = the sample is in Dt, the teacher-supervised part; False = Ds, ground truth only). The teacher runs,
without gradients, only on the Dt rows (so DS saves teacher compute); the student runs on the whole batch; Ds rows
get plain CE; Dt rows get the method's terms, with LR applied as the method declares
(`DistillMethod.label_revision`, see `kd_zoo.revision`). Every term is returned by name.

How the two parts weigh (the paper: "the overall loss is the summation of these two losses"): by default
("share") each part's mean loss is weighted by its share of the batch, so every sample weighs the same whatever
the mix, and with DS off the loss is exactly the method's. "sum" adds the two per-part means instead. A batch
without Dt rows is CE only; one without Ds rows is the method only. The method's own parameters are then
still kept in the graph (with a zero), so data-parallel training sees a gradient for each of them.

Where the teacher's outputs come from is one choice, made in `_teacher_outputs`: the live teacher, run with the
method's `teacher_request`, or a teacher cache (`kd_zoo.teacher_cache`), which returns the teacher's logits of the
distilled rows by their (`sample_idx`, `view`) for a method whose request is empty (kd, dkd, dtd_la, ctkd, any of
them with LR). A method that needs the teacher's features is refused with a cache when the `Distiller` is built.
A live teacher that expects other preprocessing than the student gets its inputs through `TeacherInput`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from ..methods.base import DistillMethod, FeatureRequest, ModelOutputs, StepContext, cross_entropy
from ..revision import LabelRevision
from ..teacher_cache import CacheMismatchError, TeacherCache, check_method
from .teacher_input import TeacherInput


def run_model(model: nn.Module, images: Tensor, request: FeatureRequest) -> ModelOutputs:
    """One forward pass of a timm model, returning its logits and exactly what `request` asks for."""
    stages: list[Tensor] = []
    if request.stages:
        num_stages = len(model.feature_info)
        wanted = [i % num_stages for i in request.stages]
        order = sorted(set(wanted))
        kwargs = {"preact": True} if request.preact else {}
        features, intermediates = model.forward_intermediates(images, indices=order, **kwargs)
        stages = [intermediates[order.index(i)] for i in wanted]
    else:
        features = model.forward_features(images)
    pooled = model.forward_head(features, pre_logits=True) if request.pooled else None
    return ModelOutputs(logits=model.forward_head(features), stages=stages, pooled=pooled)


def check_label_range(labels: Tensor, num_classes: int) -> None:
    """Labels must index the logits: a clear error instead of a crash (or a device assert) inside the loss."""
    lo, hi = labels.aminmax()
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), found min {int(lo)} and max {int(hi)}")


def freeze(model: nn.Module) -> nn.Module:
    """Teacher set-up: evaluation mode, no gradients."""
    model.eval()
    model.requires_grad_(False)
    return model


@dataclass
class StepOutput:
    """What one step produced: the loss to minimise, its named terms, and the student's logits."""

    loss: Tensor
    terms: dict[str, Tensor]
    logits: Tensor
    num_distilled: int
    diagnostics: dict[str, float] = field(default_factory=dict)


class Distiller(nn.Module):
    """The trainable module: the student plus the method's extras; `forward` computes one step's losses.

    Accelerate prepares this module (DDP wraps it); the teacher is passed to `forward` and stays outside, frozen
    and unwrapped. With a `teacher_cache`, `forward` reads the teacher's logits of the distilled rows from it by
    their `sample_idx` and `view` (which `kd_zoo.engine.fit` passes from each batch) and needs no teacher (pass
    `teacher=None`); the cache is a plain attribute, not a module, so it is never part of the state dict or
    broadcast by DDP. Check it against the run first: `teacher_cache.check_run(teacher, train_loader)`.

    Args:
        student: a timm model.
        method: a `DistillMethod` built for this student and teacher.
        label_revision: LR settings, or None for LR off.
        ds_weighting: "share" (default) or "sum", see the module docstring.
        teacher_cache: an open `kd_zoo.teacher_cache.TeacherCache` of the teacher, or None for the live teacher.
        teacher_input: how the live teacher's inputs differ from the student's (`TeacherInput.between`), or None
            when the teacher expects the student's normalisation and size.

    Raises:
        CacheMethodError: a teacher cache with a method that needs the teacher's features (the message names the
            methods a cache serves).
    """

    def __init__(
        self,
        student: nn.Module,
        method: DistillMethod,
        label_revision: LabelRevision | None = None,
        ds_weighting: Literal["share", "sum"] = "share",
        teacher_cache: TeacherCache | None = None,
        teacher_input: TeacherInput | None = None,
    ):
        super().__init__()
        if ds_weighting not in ("share", "sum"):
            raise ValueError(f"ds_weighting must be 'share' or 'sum', got {ds_weighting!r}")
        if teacher_cache is not None:
            check_method(method)
        self.student = student
        self.method = method
        self.label_revision = label_revision
        self.ds_weighting = ds_weighting
        self.teacher_cache = teacher_cache
        self.teacher_input = teacher_input

    def forward(
        self,
        images: Tensor,
        labels: Tensor,
        distill_mask: Tensor | None = None,
        *,
        teacher: nn.Module | None,
        ctx: StepContext,
        sample_idx: Tensor | None = None,
        view: Tensor | None = None,
    ) -> StepOutput:
        batch = images.shape[0]
        mask = self._check_inputs(images, labels, distill_mask, teacher, sample_idx, view)
        num_distilled = int(mask.sum())
        rows = mask if num_distilled < batch else slice(None)
        # The teacher first: its temporaries are freed before the student's activations are held for backward,
        # which measured ~9 % faster per step on CPU than the other order (benchmarks/train_step_speed.py).
        teacher_out = None
        if num_distilled:
            teacher_out = self._teacher_outputs(images, rows, teacher, sample_idx, view)
        student_out = run_model(self.student, images, self.method.student_request)
        num_classes = student_out.logits.shape[1]
        check_label_range(labels, num_classes)

        share = (lambda n: n / batch) if self.ds_weighting == "share" else (lambda n: 1.0 if n else 0.0)
        terms: dict[str, Tensor] = {}
        if num_distilled < batch:
            keep = ~mask
            terms["loss_ce_ds"] = share(batch - num_distilled) * cross_entropy(student_out.logits[keep], labels[keep])
        if teacher_out is not None:
            if teacher_out.logits.shape[1] != num_classes:
                raise ValueError(
                    f"teacher logits have {teacher_out.logits.shape[1]} classes, student logits {num_classes}: "
                    "both models must predict the same classes"
                )
            weight = share(num_distilled)
            distilled = self._distill_terms(student_out.select(rows), teacher_out, labels[rows], ctx)
            for name, value in distilled.items():
                terms[name] = weight * value if weight != 1.0 else value
        _keep_method_parameters_in_graph(terms, self.method)
        loss = torch.stack([t.float() for t in terms.values()]).sum()
        return StepOutput(loss, terms, student_out.logits.detach(), num_distilled, self.method.diagnostics())

    def _teacher_outputs(
        self, images: Tensor, rows: Tensor | slice, teacher: nn.Module | None, sample_idx: Tensor, view: Tensor
    ) -> ModelOutputs:
        """The teacher's outputs on the distilled rows: from the cache (logits only), or from the live teacher."""
        if self.teacher_cache is not None:
            return ModelOutputs(logits=self.teacher_cache.lookup(sample_idx[rows], view[rows]).to(images.device))
        with torch.no_grad():
            inputs = images[rows] if self.teacher_input is None else self.teacher_input(images[rows])
            return run_model(teacher, inputs, self.method.teacher_request)

    def _distill_terms(
        self, student: ModelOutputs, teacher: ModelOutputs, labels: Tensor, ctx: StepContext
    ) -> dict[str, Tensor]:
        method, lr = self.method, self.label_revision
        if lr is not None and method.label_revision == "targets":
            teacher = teacher.with_logits(lr.revise_logits(teacher.logits, labels))
        terms = method(student, teacher, labels, ctx)
        if lr is not None and method.label_revision == "loss":
            terms = {k: v for k, v in terms.items() if k not in method.lr_replaces}
            terms.update(lr.loss(student.logits, teacher.logits, labels))
        return terms

    def _check_inputs(
        self,
        images: Tensor,
        labels: Tensor,
        mask: Tensor | None,
        teacher: nn.Module | None,
        sample_idx: Tensor | None,
        view: Tensor | None,
    ) -> Tensor:
        batch = images.shape[0]
        if labels.shape != (batch,):
            raise ValueError(f"labels must have shape ({batch},) for {batch} images, got {tuple(labels.shape)}")
        if mask is None:
            mask = torch.ones(batch, dtype=torch.bool, device=images.device)
        elif mask.shape != (batch,) or mask.dtype != torch.bool:
            raise ValueError(
                f"distill_mask must be a bool tensor of shape ({batch},), got {mask.dtype} {tuple(mask.shape)}: "
                "it marks each sample of the batch as distilled (True) or CE-only (False)"
            )
        if self.teacher_cache is not None:
            if sample_idx is None or view is None or sample_idx.shape != (batch,) or view.shape != (batch,):
                raise CacheMismatchError(
                    "a teacher cache looks the teacher's logits up by each row's sample_idx and view: pass both "
                    f"(shape ({batch},)) to the Distiller; kd_zoo.engine.fit does, from batches of "
                    "kd_zoo.data.TensorBatchLoader, which carry a `view` (the worker pipeline's batches do not)"
                )
        elif teacher is None:
            raise ValueError("no teacher: pass teacher=... (or build the Distiller with a teacher_cache)")
        elif teacher.training:
            raise RuntimeError("the teacher is in training mode; call kd_zoo.engine.freeze(teacher) first")
        return mask


def _keep_method_parameters_in_graph(terms: dict[str, Tensor], method: DistillMethod) -> None:
    params = [p for p in method.parameters() if p.requires_grad]
    if params:
        anchor = sum(p.sum() for p in params) * 0.0
        first = next(iter(terms))
        terms[first] = terms[first] + anchor


class Supervised(nn.Module):
    """Plain CE training behind the `Distiller` interface: teachers and the CE-only baseline use the same loop."""

    def __init__(self, student: nn.Module):
        super().__init__()
        self.student = student

    def forward(
        self,
        images: Tensor,
        labels: Tensor,
        distill_mask: Tensor | None = None,
        *,
        teacher: nn.Module | None = None,
        ctx: StepContext,
        sample_idx: Tensor | None = None,
        view: Tensor | None = None,
    ) -> StepOutput:
        logits = self.student(images)
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        check_label_range(labels, logits.shape[1])
        loss = cross_entropy(logits, labels)
        return StepOutput(loss, {"loss_ce": loss}, logits.detach(), 0)
