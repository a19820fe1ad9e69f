"""The steps the recipes take, each filled from a recipe config: the one library module that reads a `RecipeConfig`.

Every other module takes explicit arguments; this one maps the config's sections onto them, so that a recipe reads
top to bottom in a few lines: start the run, build the data, get the teacher, select the distilled samples, build
the distiller, train, export.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from accelerate import Accelerator
from timm.data import resolve_data_config
from timm.models import get_pretrained_cfg
from torch import Tensor, nn

from .config import ConfigError, RecipeConfig
from .data import DataError
from .engine import (
    Distiller,
    FitOptions,
    FitResult,
    RunData,
    TeacherInput,
    build_accelerator,
    build_data,
    evaluate_accuracy,
    hardware_summary,
    step_lr,
    train_supervised,
)
from .engine.checkpoint import CheckpointManager
from .engine.loop import TrainingDivergedError, check_num_processes, scaled_milestones
from .engine.run_folder import RunFolder, RunFolderExistsError, RunFolderInUseError
from .engine.tracking import flat_config
from .engine.validation import DataMismatchError
from .hub import (
    CardTemplateError,
    PublishError,
    export_model,
    export_run,
    export_scores,
    public_path,
    resolve_token,
    run_card_fields,
)
from .loading import create_model, load_model, weights_fingerprint
from .methods import create_method
from .models import (
    CheckpointMismatchError,
    PretrainedWeightsError,
    ReferenceCheckpointError,
    ReferenceKeyError,
    UnknownModelError,
)
from .pairs import weight_tag
from .revision import LabelRevision
from .selection import ScoreSet, ScoreSetError, score_dataset
from .teacher_cache import TeacherCache, TeacherCacheError

# Keys a resumed run may change: how long it trains and how it logs, checkpoints, evaluates and publishes.
RESUMABLE_KEYS = (
    "train.epochs",
    "data.eval_batch_size",
    "data.num_workers",
    "teacher.cache_placement",
    "run.output_dir",
    "run.resume",
    "run.overwrite",
    "run.checkpoint_every",
    "run.keep_last",
    "run.log_every",
    "run.report_to",
    "run.num_processes",
    "run.cpu",
    "run.push_to_hub",
    "run.dry_run",
)


# What a user can fix: a recipe reports these as one line (`run_main`), never as a traceback.
USER_ERRORS = (
    ConfigError,
    RunFolderExistsError,
    RunFolderInUseError,
    PublishError,
    CardTemplateError,
    DataError,
    ScoreSetError,
    PretrainedWeightsError,
    CheckpointMismatchError,
    UnknownModelError,
    ReferenceCheckpointError,
    ReferenceKeyError,
    DataMismatchError,
    TrainingDivergedError,
    TeacherCacheError,
    PermissionError,
    FileNotFoundError,
    FileExistsError,
)


def run_main(main: Callable[[], None]) -> None:
    """Run a recipe's `main`: an error the user can fix ends it with one clear message and exit status 2 (a bad
    config) or 1, not a traceback."""
    try:
        main()
    except USER_ERRORS as err:
        print(f"{Path(sys.argv[0]).name}: error: {err}", file=sys.stderr)
        sys.exit(2 if isinstance(err, ConfigError) else 1)


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and key != "args":
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_resume(cfg: RecipeConfig, run_dir: Path) -> None:
    """A resumed run must train what its folder started: only `RESUMABLE_KEYS` may differ from the saved config, and
    there must be epochs left to train."""
    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        return  # nothing started yet: the run starts from scratch
    saved = _flat(yaml.safe_load(saved_file.read_text()) or {})
    new = _flat(cfg.to_dict())
    changed = [k for k in sorted(set(saved) | set(new)) if saved.get(k) != new.get(k) and k not in RESUMABLE_KEYS]
    if changed:
        lines = "\n".join(f"  - {k}: the run has {saved.get(k)!r}, now {new.get(k)!r}" for k in changed)
        raise ConfigError(
            f"run.resume: {run_dir} was started with another config:\n{lines}\nA resumed run may change only "
            f"{', '.join(RESUMABLE_KEYS)}. Resume with the run's own config (--config {saved_file}), or start a new "
            "run in another run.output_dir (or replace this one with run.overwrite=true)."
        )
    latest = CheckpointManager(run_dir / "checkpoints", None).latest_state()
    if latest is not None and latest.get("epochs_done", 0) >= cfg.train.epochs:
        raise ConfigError(
            f"run.resume: {run_dir} has already trained {latest['epochs_done']} of train.epochs={cfg.train.epochs} "
            "epochs: nothing is left to train. Pass a larger train.epochs to train further."
        )


@contextlib.contextmanager
def start_run(cfg: RecipeConfig, project: str) -> Iterator[tuple[Accelerator, Path]]:
    """The run's Accelerator and folder, everything checked before anything is written (see `RunFolder`).

    Checks: a Hub token when the run will publish, the process count, the folder (a finished or partial run needs
    run.resume or run.overwrite; a folder in use is refused), and a resumed run's config. Then the resolved config is
    saved next to the run and the trackers start. On leaving, the trackers end and the folder is released; a run
    that fails before its first checkpoint leaves no files behind.
    """
    if cfg.run.push_to_hub and not cfg.run.dry_run:
        resolve_token()  # PublishError now, not after the training
    run_dir = Path(cfg.run.output_dir)
    accelerator = build_accelerator(
        run_dir,
        mixed_precision=cfg.train.mixed_precision,
        gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
        seed=cfg.train.seed,
        report_to=cfg.run.report_to,
        cpu=cfg.run.cpu,
    )
    check_num_processes(accelerator, cfg.run.num_processes)
    resume = cfg.run.resume is not False
    if resume:
        check_resume(cfg, run_dir)
    folder = RunFolder(run_dir, accelerator, resume=resume, overwrite=cfg.run.overwrite).open()
    failed = True
    try:
        if accelerator.is_main_process:
            cfg.save(run_dir / "config.yaml")
        accelerator.init_trackers(project, config=flat_config(cfg.to_dict()))
        yield accelerator, run_dir
        failed = False
    finally:
        accelerator.end_training()
        folder.close(failed)


def data_config(model_name: str) -> dict[str, Any]:
    """timm's data config (input size, mean, std, crop, interpolation) of `model_name`'s pretrained cfg."""
    return resolve_data_config(pretrained_cfg=get_pretrained_cfg(model_name).to_dict())


def run_data(accelerator: Accelerator, cfg: RecipeConfig, model_name: str) -> RunData:
    """Both splits and their loaders, preprocessed as `model_name` expects (its pretrained cfg)."""
    return build_data(
        accelerator,
        cfg.data.name,
        batch_size=cfg.train.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        seed=cfg.train.seed,
        data_config=data_config(model_name),
        revision=cfg.data.revision,
        label=cfg.data.label,
        class_names=cfg.data.class_names,
        train_split=cfg.data.train_split,
        eval_split=cfg.data.eval_split,
        num_workers=cfg.data.num_workers,
    )


def fit_options(cfg: RecipeConfig, name: str) -> FitOptions:
    """`fit`'s options from the config's `train` and `run` sections; `name` labels the progress bar."""
    return FitOptions(
        num_epochs=cfg.train.epochs,
        lr_schedule=step_lr(cfg.train.lr, cfg.train.milestones, cfg.train.lr_decay),
        checkpoint_every=cfg.run.checkpoint_every,
        keep_last=cfg.run.keep_last,
        resume=cfg.run.resume,
        log_every=cfg.run.log_every,
        channels_last=cfg.train.channels_last,
        name=name,
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
        fit_options(cfg, cfg.teacher.model),
        run_dir=run_dir,
        lr=cfg.train.lr,
        momentum=cfg.train.momentum,
        weight_decay=cfg.train.weight_decay,
    )


def prepare_teacher(cfg: RecipeConfig, accelerator: Accelerator, data: RunData, run_dir: Path) -> nn.Module:
    """The frozen teacher in evaluation mode on the device: `teacher.weights` loaded, or, in the demo only (no
    weights, no data set named), trained here with cross-entropy for `teacher.train_epochs` epochs on the recipe's
    decay schedule scaled to them, and exported to `run_dir/teacher/model` (usable as `teacher.weights`)."""
    if cfg.teacher.weights is not None or cfg.data.name is not None:
        return load_model(cfg.teacher.model, cfg.teacher.weights).to(accelerator.device).eval()
    epochs = cfg.teacher.train_epochs
    options = FitOptions(
        num_epochs=epochs,
        lr_schedule=step_lr(cfg.teacher.train_lr, scaled_milestones(epochs)),
        checkpoint_every=cfg.run.checkpoint_every,
        keep_last=cfg.run.keep_last,
        resume=cfg.run.resume is not False,
        log_every=cfg.run.log_every,
        log_prefix="teacher/",
        name=f"teacher {cfg.teacher.model}",
    )
    teacher, result = train_supervised(
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
    accelerator.free_memory()  # the student's checkpoints hold the student alone (Accelerate: between two trainings)
    # trained on the student's loaders: it expects their preprocessing, whatever its architecture's default says
    teacher.pretrained_cfg = {
        **teacher.pretrained_cfg,
        "mean": data.mean,
        "std": data.std,
        "input_size": data.input_size,
    }
    if accelerator.is_main_process:
        fields = run_card_fields(
            result,
            model_id=f"{cfg.teacher.model}.{weight_tag('ce', None, data.name)}",
            summary=f"{cfg.teacher.model} trained with cross-entropy as the demo's teacher.",
            **_common_card_fields(cfg, accelerator, run_dir, data),
        )
        export_model(teacher, run_dir / "teacher" / "model", fields, **_export_options(data, fields))
    return teacher.to(accelerator.device).eval()


def teacher_input(teacher: nn.Module, data: RunData) -> TeacherInput | None:
    """How the teacher's inputs must differ from the loaders' (which are the student's): its own normalisation
    (and size, for a teacher of fixed input size) from its `pretrained_cfg`; None when it expects the same."""
    return TeacherInput.between(data.mean, data.std, data.input_size, teacher)


def teacher_accuracy(accelerator: Accelerator, teacher: nn.Module, data: RunData) -> float:
    """The teacher's top-1 on the evaluation split, fed as it expects."""
    conversion = teacher_input(teacher, data)
    if conversion is not None:
        accelerator.print(conversion.describe())
        teacher = conversion.to(accelerator.device).wrap(teacher)
    return evaluate_accuracy(accelerator, teacher, data.eval_loader)["top1"]


def open_teacher_cache(
    cfg: RecipeConfig, accelerator: Accelerator, teacher: nn.Module, data: RunData
) -> TeacherCache | None:
    """`teacher.cache` opened on the training device and checked against this run (teacher weights, data, crop
    padding and size, the normalisation the teacher is fed, the samples it covers): refused before training if
    anything differs; None without a cache."""
    if cfg.teacher.cache is None:
        return None
    conversion = teacher_input(teacher, data)
    if conversion is not None and conversion.teacher_size is not None:
        raise TeacherCacheError(
            f"teacher.cache: the teacher takes {conversion.teacher_size[0]}x{conversion.teacher_size[1]} inputs, the "
            f"data is {data.input_size[-2]}x{data.input_size[-1]}; a cache holds the views at the data's size: train "
            "with the live teacher (drop teacher.cache)"
        )
    with accelerator.main_process_first():  # a Hub id is downloaded once per machine
        cache = TeacherCache.open(cfg.teacher.cache, device=accelerator.device, placement=cfg.teacher.cache_placement)
    fed = conversion.teacher_normalization if conversion is not None else None
    cache.check_run(teacher, data.train_loader, normalization=fed)
    accelerator.print(f"teacher outputs from {cache!r}")
    return cache


@dataclass(frozen=True)
class Selection:
    """Data Selection's outcome: the distill mask (indexed by `sample_idx`, True = distilled) and what it did."""

    mask: Tensor
    summary: str


def data_selection(
    cfg: RecipeConfig,
    accelerator: Accelerator,
    teacher: nn.Module,
    data: RunData,
    run_dir: Path,
    cache: TeacherCache | None = None,
) -> Selection | None:
    """The distill mask from `selection.scores`, or from scores computed here (from the teacher cache's centre views
    when there is one, with no teacher inference; else one teacher pass), written to `run_dir/scores`; None when
    Data Selection is off."""
    sel = cfg.selection
    if not sel.enabled:
        return None
    if sel.scores:
        scores = ScoreSet.load(sel.scores)
    elif cache is not None:
        scores = cache.score_set(sel.scorer, accelerator=accelerator, fraction=sel.fraction)
        if accelerator.is_main_process:
            export_scores(scores, run_dir / "scores", overwrite=True, class_names=data.class_names)
    else:
        conversion = teacher_input(teacher, data)  # scored as the teacher expects its inputs
        fed = conversion.teacher_normalization if conversion is not None else {"mean": data.mean, "std": data.std}
        scores = score_dataset(
            teacher,
            data.train_split,
            sel.scorer,
            batch_size=cfg.data.eval_batch_size,
            accelerator=accelerator,
            mean=fed["mean"],
            std=fed["std"],
            weights=cfg.teacher.weights,
            fraction=sel.fraction,
        )
        if accelerator.is_main_process:
            export_scores(scores, run_dir / "scores", overwrite=True, class_names=data.class_names)
    aligned = scores.join(data.train_split, teacher)
    mask = aligned.distill_mask(sel.fraction, sel.strategy, sel.seed)
    mistakes = aligned.mistakes(sel.fraction, sel.seed)
    summary = (
        f"{sel.scorer}, {sel.strategy} {sel.fraction:.0%} ({int(mask.sum())}/{data.num_train} distilled); the "
        f"teacher is wrong on {mistakes['count']} training samples, {mistakes['in_distilled'][sel.strategy]} of "
        "them distilled"
    )
    return Selection(mask, summary)


def build_distiller(
    cfg: RecipeConfig, teacher: nn.Module, data: RunData, cache: TeacherCache | None = None
) -> Distiller:
    """The student, the method (sized from the models' `feature_info`) and Label Revision, as one module; with a
    teacher cache, the distilled rows' teacher logits come from it; a teacher that expects other preprocessing than
    the student is fed as it expects (`teacher_input`)."""
    student = create_model(cfg.student.model, num_classes=data.num_classes, drop_rate=cfg.student.drop_rate)
    method = create_method(cfg.method.name, student, teacher, **cfg.method.args)
    lr = cfg.label_revision
    revision = LabelRevision(lr.eta, lr.lambda1, lr.lambda2) if lr.enabled else None
    conversion = teacher_input(teacher, data)
    return Distiller(
        student, method, revision, ds_weighting=cfg.train.ds_weighting, teacher_cache=cache, teacher_input=conversion
    )


def dataset_revision(cfg: RecipeConfig, data: RunData) -> str:
    """What identifies the training data in a card: a Hub commit when one was asked for, else the content hash."""
    revision = cfg.data.revision
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    return f"sha256:{data.fingerprint['content_sha256']}"


def _common_card_fields(cfg: RecipeConfig, accelerator: Accelerator, run_dir: Path, data: RunData) -> dict[str, Any]:
    return dict(
        dataset=public_path(data.name),
        dataset_revision=dataset_revision(cfg, data),
        seed=cfg.train.seed,
        hardware=hardware_summary(accelerator),
        config_yaml=(run_dir / "config.yaml").read_text(),
    )


def _export_options(data: RunData, fields: dict[str, Any]) -> dict[str, Any]:
    """What the exported config.json records besides the weights: the classes, the preprocessing the model was
    trained with, and its own tag and Hub repo."""
    tag = str(fields["model_id"]).split(".", 1)[1]
    return dict(
        label_names=data.class_names,
        pretrained_cfg={
            "input_size": list(data.input_size),
            "mean": list(data.mean),
            "std": list(data.std),
            "num_classes": data.num_classes,
            "tag": tag,
            "hf_hub_id": fields["repo_id"],
        },
    )


def teacher_repo(cfg: RecipeConfig, teacher: nn.Module) -> str | None:
    """The teacher's Hub repo when its weights came from the Hub (the default tag, a zoo tag or `hf-hub:`)."""
    weights = cfg.teacher.weights
    if weights is not None and weights.startswith("hf-hub:"):
        return weights.removeprefix("hf-hub:")
    if weights is None or ("." in weights and "/" not in weights and not Path(weights).exists()):
        return (getattr(teacher, "pretrained_cfg", None) or {}).get("hf_hub_id")
    return None


def trained_card_fields(
    cfg: RecipeConfig, accelerator: Accelerator, run_dir: Path, result: FitResult, data: RunData
) -> dict[str, Any]:
    """The model-card fields of `teacher.model` trained alone with cross-entropy."""
    model = cfg.teacher.model
    return run_card_fields(
        result,
        model_id=f"{model}.{weight_tag('ce', None, data.name)}",
        summary=f"{model} trained with cross-entropy.",
        repo_id=cfg.run.push_to_hub,
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
    cache: TeacherCache | None = None,
) -> dict[str, Any]:
    """The model-card fields of a student distilled with the config's method, Label Revision and Data Selection
    (and, with a teacher cache, where the teacher's logits came from)."""
    revision = cfg.label_revision
    lr_on, ds_on = revision.enabled, selection is not None
    parts = [cfg.method.name] + ["Label Revision"] * lr_on + ["Data Selection"] * ds_on
    tag = weight_tag(cfg.method.name, cfg.teacher.model, data.name, lr_on, ds_on)
    repo = teacher_repo(cfg, teacher)
    return run_card_fields(
        result,
        model_id=f"{cfg.student.model}.{tag}",
        summary=f"{cfg.student.model} distilled from {cfg.teacher.model} with {' + '.join(parts)}.",
        teacher=f"{cfg.teacher.model} (top-1 {teacher_top1:.2f}, weights {weights_fingerprint(teacher)[:16]})"
        + (
            f", its logits from the cache {public_path(cfg.teacher.cache)} ({cache.metadata['dtype']}, "
            f"{cache.num_views} views a sample)"
            if cache
            else ""
        ),
        teacher_repo=repo,
        method=f"{cfg.method.name} {cfg.method.args or ''}".strip(),
        label_revision=repr(LabelRevision(revision.eta, revision.lambda1, revision.lambda2)) if lr_on else "off",
        data_selection=selection.summary if selection is not None else "off",
        repo_id=cfg.run.push_to_hub,
        **_common_card_fields(cfg, accelerator, run_dir, data),
    )


def export_trained(
    run_dir: Path, model: nn.Module, result: FitResult, data: RunData, fields: dict[str, Any], **summary: Any
) -> Path | None:
    """The run's `result.json` and exported `model/` folder (`kd_zoo.hub.export_run`); None, with a message, when
    this call trained no epoch (nothing new to export)."""
    if result.epochs_trained == 0:
        print(f"no epoch was trained in this call: {run_dir} keeps its earlier export")
        return None
    return export_run(run_dir, model, fields, summary={**result.to_dict(), **summary}, **_export_options(data, fields))


def result_table(rows: Sequence[tuple[str, str, str, str]]) -> str:
    """The recipes' closing table: model, best and last top-1, training time."""
    lines = [f"{'model':<34}{'top-1 best':>11}{'top-1 last':>11}{'time':>8}"]
    lines += [f"{name:<34}{best:>11}{last:>11}{seconds:>8}" for name, best, last, seconds in rows]
    return "\n".join(lines)
