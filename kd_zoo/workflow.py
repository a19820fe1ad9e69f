"""The steps the recipes take, each filled from a recipe config: the one library module that reads a `RecipeConfig`.

Every other module takes explicit arguments; this one maps the config's sections onto them, so that a recipe reads
top to bottom in a few lines: start the run, build the data, get the teacher, select the distilled samples, build
the distiller, train, export.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from timm.models import get_pretrained_cfg
from torch import Tensor, nn

from .config import RecipeConfig
from .engine import (
    Distiller,
    FitOptions,
    FitResult,
    RunData,
    build_accelerator,
    build_data,
    hardware_summary,
    step_lr,
    train_supervised,
)
from .engine.checkpoint import check_writable
from .engine.loop import check_num_processes, scaled_milestones
from .engine.tracking import flat_config
from .hub import export_scores, run_card_fields
from .loading import create_model, load_model, weights_fingerprint
from .methods import create_method
from .pairs import weight_tag
from .revision import LabelRevision
from .selection import ScoreSet, score_dataset


def start_run(cfg: RecipeConfig, project: str) -> tuple[Accelerator, Path]:
    """Check the output folder, build the Accelerator, check the process count, save the resolved config next to
    the run, start the trackers."""
    run_dir = check_writable(cfg.run.output_dir)
    accelerator = build_accelerator(
        run_dir,
        mixed_precision=cfg.train.mixed_precision,
        gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
        seed=cfg.train.seed,
    )
    check_num_processes(accelerator, cfg.run.num_processes)
    if accelerator.is_main_process:
        cfg.save(run_dir / "config.yaml")
    accelerator.init_trackers(project, config=flat_config(cfg.to_dict()))
    return accelerator, run_dir


def run_data(accelerator: Accelerator, cfg: RecipeConfig, model_name: str) -> RunData:
    """Both splits and their loaders, normalised as `model_name` expects (its pretrained cfg's mean / std)."""
    pretrained = get_pretrained_cfg(model_name)
    return build_data(
        accelerator,
        cfg.data.name,
        batch_size=cfg.train.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        seed=cfg.train.seed,
        mean=tuple(pretrained.mean),
        std=tuple(pretrained.std),
        revision=cfg.data.revision,
        label=cfg.data.label,
        train_split=cfg.data.train_split,
        eval_split=cfg.data.eval_split,
        num_workers=cfg.data.num_workers,
    )


def fit_options(cfg: RecipeConfig) -> FitOptions:
    """`fit`'s options from the config's `train` and `run` sections."""
    return FitOptions(
        num_epochs=cfg.train.epochs,
        lr_schedule=step_lr(cfg.train.lr, cfg.train.milestones, cfg.train.lr_decay),
        checkpoint_every=cfg.run.checkpoint_every,
        keep_last=cfg.run.keep_last,
        resume=cfg.run.resume,
        log_every=cfg.run.log_every,
        channels_last=cfg.train.channels_last,
    )


def train_model(
    cfg: RecipeConfig, accelerator: Accelerator, data: RunData, run_dir: Path
) -> tuple[nn.Module, FitResult]:
    """`teacher.model` trained with cross-entropy on the `train` schedule (`recipes/train_teacher.py`)."""
    model = create_model(cfg.teacher.model, num_classes=data.num_classes)
    return train_supervised(
        accelerator,
        model,
        data.train_loader,
        data.eval_loader,
        fit_options(cfg),
        run_dir=run_dir,
        lr=cfg.train.lr,
        momentum=cfg.train.momentum,
        weight_decay=cfg.train.weight_decay,
    )


def prepare_teacher(cfg: RecipeConfig, accelerator: Accelerator, data: RunData, run_dir: Path) -> nn.Module:
    """The frozen teacher in evaluation mode on the device: `teacher.weights` loaded, or, in the demo only (no
    weights, no data set named), trained here with cross-entropy for `teacher.train_epochs` epochs on the recipe's
    decay schedule scaled to them."""
    if cfg.teacher.weights is not None or cfg.data.name is not None:
        teacher = load_model(cfg.teacher.model, cfg.teacher.weights)
    else:
        epochs = cfg.teacher.train_epochs
        options = FitOptions(
            num_epochs=epochs,
            lr_schedule=step_lr(cfg.teacher.train_lr, scaled_milestones(epochs)),
            checkpoint_every=epochs,
            resume=cfg.run.resume,
            log_every=cfg.run.log_every,
            log_prefix="teacher/",
        )
        teacher, _ = train_supervised(
            accelerator,
            create_model(cfg.teacher.model, num_classes=data.num_classes),
            data.train_loader,
            data.eval_loader,
            options,
            run_dir=run_dir / "teacher",
            lr=cfg.teacher.train_lr,
            momentum=cfg.train.momentum,
            weight_decay=cfg.train.weight_decay,
        )
    return teacher.to(accelerator.device).eval()


@dataclass(frozen=True)
class Selection:
    """Data Selection's outcome: the distill mask (indexed by `sample_idx`, True = distilled) and what it did."""

    mask: Tensor
    summary: str


def data_selection(
    cfg: RecipeConfig, accelerator: Accelerator, teacher: nn.Module, data: RunData, run_dir: Path
) -> Selection | None:
    """The distill mask from `selection.scores`, or from scores computed here (and written to `run_dir/scores`);
    None when Data Selection is off."""
    sel = cfg.selection
    if not sel.enabled:
        return None
    if sel.scores:
        scores = ScoreSet.load(sel.scores)
    else:
        scores = score_dataset(
            teacher,
            data.train_split,
            sel.scorer,
            batch_size=cfg.data.eval_batch_size,
            accelerator=accelerator,
            mean=data.mean,
            std=data.std,
            weights=cfg.teacher.weights,
            fraction=sel.fraction,
        )
        if accelerator.is_main_process:
            export_scores(scores, run_dir / "scores", overwrite=True)
    aligned = scores.join(data.train_split, teacher)
    mask = aligned.distill_mask(sel.fraction, sel.strategy, sel.seed)
    mistakes = aligned.mistakes(sel.fraction, sel.seed)
    summary = (
        f"{sel.scorer}, {sel.strategy} {sel.fraction:.0%} ({int(mask.sum())}/{data.num_train} distilled); the "
        f"teacher is wrong on {mistakes['count']} training samples, {mistakes['in_distilled'][sel.strategy]} of "
        "them distilled"
    )
    return Selection(mask, summary)


def build_distiller(cfg: RecipeConfig, teacher: nn.Module, data: RunData) -> Distiller:
    """The student, the method (sized from the models' `feature_info`) and Label Revision, as one module."""
    student = create_model(cfg.student.model, num_classes=data.num_classes, drop_rate=cfg.student.drop_rate)
    method = create_method(cfg.method.name, student, teacher, **cfg.method.args)
    lr = cfg.label_revision
    revision = LabelRevision(lr.eta, lr.lambda1, lr.lambda2) if lr.enabled else None
    return Distiller(student, method, revision, ds_weighting=cfg.train.ds_weighting)


def _common_card_fields(cfg: RecipeConfig, accelerator: Accelerator, run_dir: Path, data: RunData) -> dict[str, Any]:
    return dict(
        dataset=data.name,
        dataset_revision=cfg.data.revision,
        seed=cfg.train.seed,
        hardware=hardware_summary(accelerator),
        config_yaml=(run_dir / "config.yaml").read_text(),
    )


def trained_card_fields(
    cfg: RecipeConfig, accelerator: Accelerator, run_dir: Path, result: FitResult, data: RunData
) -> dict[str, Any]:
    """The model-card fields of `teacher.model` trained alone with cross-entropy."""
    model = cfg.teacher.model
    return run_card_fields(
        result,
        model_id=f"{model}.{weight_tag('ce', None, data.name)}",
        summary=f"{model} trained with cross-entropy.",
        **_common_card_fields(cfg, accelerator, run_dir, data),
    )


def distilled_card_fields(
    cfg: RecipeConfig,
    accelerator: Accelerator,
    run_dir: Path,
    result: FitResult,
    data: RunData,
    *,
    teacher: nn.Module,
    teacher_top1: float,
    selection: Selection | None,
) -> dict[str, Any]:
    """The model-card fields of a student distilled with the config's method, Label Revision and Data Selection."""
    revision = cfg.label_revision
    lr_on, ds_on = revision.enabled, selection is not None
    parts = [cfg.method.name] + ["Label Revision"] * lr_on + ["Data Selection"] * ds_on
    tag = weight_tag(cfg.method.name, cfg.teacher.model, data.name, lr_on, ds_on)
    return run_card_fields(
        result,
        model_id=f"{cfg.student.model}.{tag}",
        summary=f"{cfg.student.model} distilled from {cfg.teacher.model} with {' + '.join(parts)}.",
        teacher=f"{cfg.teacher.model} (top-1 {teacher_top1:.2f}, weights {weights_fingerprint(teacher)[:16]})",
        method=f"{cfg.method.name} {cfg.method.args or ''}".strip(),
        label_revision=repr(LabelRevision(revision.eta, revision.lambda1, revision.lambda2)) if lr_on else "off",
        data_selection=selection.summary if selection is not None else "off",
        **_common_card_fields(cfg, accelerator, run_dir, data),
    )


def result_table(rows: Sequence[tuple[str, str, str, str]]) -> str:
    """The recipes' closing table: model, best and last top-1, training time."""
    lines = [f"{'model':<34}{'top-1 best':>11}{'top-1 last':>11}{'time':>8}"]
    lines += [f"{name:<34}{best:>11}{last:>11}{seconds:>8}" for name, best, last, seconds in rows]
    return "\n".join(lines)
