"""Run set-up shared by the recipes: the Accelerator, the data loaders, the optimiser.

Small functions with explicit arguments, so a recipe reads top to bottom and names no method.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn

from ..data import (
    TensorBatchLoader,
    TensorImageSet,
    dataset_fingerprint,
    load_split,
    make_image_dataloader,
    resolve_source,
)
from .tracking import make_trackers

SMALL_IMAGE = 64  # images up to this size take the on-device tensor path; larger ones the worker pipeline


def build_accelerator(
    run_dir: str | Path, *, mixed_precision: str = "no", gradient_accumulation_steps: int = 1, seed: int = 0
) -> Accelerator:
    """An Accelerator logging to `run_dir` (JSONL always, TensorBoard when installed), seeds set everywhere."""
    if mixed_precision not in ("no", "fp16", "bf16"):
        raise ValueError(f"mixed_precision must be 'no', 'fp16' or 'bf16', got {mixed_precision!r}")
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=gradient_accumulation_steps,
        log_with=make_trackers(run_dir),
        project_dir=str(run_dir),
    )
    set_seed(seed)
    return accelerator


@dataclass
class RunData:
    """A run's data: the training split (for scores and masks), the loaders, and what the models must match."""

    train_split: Any  # TensorImageSet on the fast path, a datasets.Dataset otherwise
    train_loader: Any
    eval_loader: Any
    num_classes: int
    class_names: list[str]
    fingerprint: dict[str, Any]
    name: str
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @property
    def num_train(self) -> int:
        return len(self.train_split)


def build_data(
    accelerator: Accelerator,
    source: str | None,
    *,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    revision: str | None = None,
    label: str = "fine",
    train_split: str = "train",
    eval_split: str = "test",
    num_workers: int = 4,
    img_size: int = 224,
) -> RunData:
    """Load both splits and build the loaders: the tensor path for small images, the worker pipeline otherwise."""
    name = resolve_source(source).name
    train_ds = load_split(source, train_split, revision=revision, label=label)
    eval_ds = load_split(source, eval_split, revision=revision, label=label)
    class_names = list(train_ds.features["label"].names)
    shard = dict(process_index=accelerator.process_index, num_processes=accelerator.num_processes)
    first = train_ds[0]["image"]
    if max(first.size) <= SMALL_IMAGE:
        train = TensorImageSet.from_dataset(train_ds, name=name, split=train_split, revision=revision)
        test = TensorImageSet.from_dataset(eval_ds, name=name, split=eval_split, revision=revision)
        device = accelerator.device
        common = dict(mean=mean, std=std, device=device, **shard)
        train_loader = TensorBatchLoader(train, batch_size, train=True, seed=seed, **common)
        eval_loader = TensorBatchLoader(test, eval_batch_size, train=False, seed=seed, **common)
        return RunData(
            train, train_loader, eval_loader, len(class_names), class_names, train.fingerprint, name, mean, std
        )

    per_process = batch_size // accelerator.num_processes
    if per_process * accelerator.num_processes != batch_size:
        raise ValueError(f"batch_size {batch_size} must be a multiple of the {accelerator.num_processes} processes")
    loader_args = dict(num_workers=num_workers, seed=seed, img_size=img_size)
    train_loader = make_image_dataloader(train_ds, per_process, train=True, **loader_args)
    eval_per_process = max(1, eval_batch_size // accelerator.num_processes)
    eval_loader = make_image_dataloader(eval_ds, eval_per_process, train=False, **loader_args)
    train_loader, eval_loader = accelerator.prepare(train_loader, eval_loader)
    fingerprint = dataset_fingerprint(train_ds, name=name, split=train_split, revision=revision)
    return RunData(train_ds, train_loader, eval_loader, len(class_names), class_names, fingerprint, name, mean, std)


def build_recipe_data(accelerator: Accelerator, cfg: Any, model_name: str) -> RunData:
    """`build_data` from a recipe config, normalised as `model_name` expects (its pretrained_cfg mean / std)."""
    from ..factory import create_model

    probe = create_model(model_name, num_classes=1).pretrained_cfg
    return build_data(
        accelerator,
        cfg.data.name,
        batch_size=cfg.train.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        seed=cfg.train.seed,
        mean=tuple(probe["mean"]),
        std=tuple(probe["std"]),
        revision=cfg.data.revision,
        label=cfg.data.label,
        train_split=cfg.data.train_split,
        eval_split=cfg.data.eval_split,
        num_workers=cfg.data.num_workers,
    )


def sgd(model: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4) -> torch.optim.SGD:
    """SGD over every trainable parameter of the student and the method's extras (CRD's optimiser)."""
    return torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=lr, momentum=momentum, weight_decay=weight_decay
    )


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> flat {"a.b": scalar} that every tracker accepts."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, name + "."))
        else:
            flat[name] = value if isinstance(value, bool | int | float | str) or value is None else str(value)
    return flat


def start_run(cfg: Any, project: str) -> tuple[Accelerator, Path]:
    """Check the output folder, build the Accelerator, check the process count, save the resolved config,
    start the trackers. `cfg` is a `kd_zoo.config.RecipeConfig`."""
    from .checkpoint import check_writable
    from .loop import check_num_processes

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
    accelerator.init_trackers(project, config=_flat(cfg.to_dict()))
    return accelerator, run_dir


def fit_options(cfg: Any) -> dict[str, Any]:
    """`fit` keyword arguments from a recipe config's `train` and `run` sections."""
    from .loop import step_lr

    return dict(
        num_epochs=cfg.train.epochs,
        lr_schedule=step_lr(cfg.train.lr, cfg.train.milestones, cfg.train.lr_decay),
        checkpoint_every=cfg.run.checkpoint_every,
        keep_last=cfg.run.keep_last,
        resume=cfg.run.resume,
        log_every=cfg.run.log_every,
        channels_last=cfg.train.channels_last,
    )


def hardware_summary(accelerator: Accelerator) -> str:
    import platform

    if accelerator.device.type == "cuda":
        device = torch.cuda.get_device_name(accelerator.device)
    else:
        threads = torch.get_num_threads()
        device = f"{platform.processor() or platform.machine()} CPU ({threads} thread{'s' if threads != 1 else ''})"
    return f"{accelerator.num_processes} x {device}"
