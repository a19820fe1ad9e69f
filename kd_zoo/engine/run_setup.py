"""What every run sets up before training: the Accelerator and its trackers, the data loaders, the hardware line.

Small functions with explicit arguments (`kd_zoo.workflow` fills them from a recipe config).
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from ..data import (
    TensorBatchLoader,
    TensorImageSet,
    dataset_fingerprint,
    imagenet_transforms,
    load_split,
    make_image_dataloader,
    resolve_source,
)
from ..data.imagenet import IMAGENET_CROP_PCT
from .tracking import make_trackers

SMALL_IMAGE = 64  # images up to this size take the on-device tensor path; larger ones the worker pipeline


def build_accelerator(
    run_dir: str | Path,
    *,
    mixed_precision: str = "no",
    gradient_accumulation_steps: int = 1,
    seed: int = 0,
    report_to: Sequence[str] = ("tensorboard",),
    cpu: bool = False,
) -> Accelerator:
    """An Accelerator logging to `run_dir` (JSONL always, plus `report_to`), seeds set everywhere."""
    if mixed_precision not in ("no", "fp16", "bf16"):
        raise ValueError(f"mixed_precision must be 'no', 'fp16' or 'bf16', got {mixed_precision!r}")
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=gradient_accumulation_steps,
        log_with=make_trackers(run_dir, report_to),
        project_dir=str(run_dir),
    )
    set_seed(seed)
    return accelerator


@dataclass
class RunData:
    """A run's data: the training split (for scores and masks), the loaders, and what the models must match.

    `input_size`, `mean` and `std` are what the loaders feed the models (the exported model records them).
    """

    train_split: Any  # TensorImageSet on the fast path, a datasets.Dataset otherwise
    train_loader: Any
    eval_loader: Any
    num_classes: int
    class_names: list[str]
    fingerprint: dict[str, Any]
    name: str
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_train(self) -> int:
        return len(self.train_split)


def _load(
    accelerator: Accelerator,
    source: str | None,
    split: str,
    revision: str | None,
    label: str,
    class_names: list[str] | None,
) -> tuple[Any, TensorImageSet | None]:
    """One split in the kd_zoo schema, and its decoded tensors when its images are small (the main process loads
    and caches first, the others read its caches)."""
    name = resolve_source(source).name
    with accelerator.main_process_first():
        ds = load_split(source, split, revision=revision, label=label, class_names=class_names)
        small = max(ds[0]["image"].size) <= SMALL_IMAGE
        tensors = TensorImageSet.from_dataset(ds, name=name, split=split, revision=revision) if small else None
    return ds, tensors


def _transforms(data_config: dict[str, Any], train: bool) -> Any:
    """timm's transforms of the worker pipeline, from a model's data config."""
    return imagenet_transforms(
        train,
        data_config["input_size"][-1],
        mean=tuple(data_config["mean"]),
        std=tuple(data_config["std"]),
        crop_pct=data_config.get("crop_pct") or IMAGENET_CROP_PCT,
        interpolation=data_config.get("interpolation") or "bilinear",
    )


def build_eval_loader(
    accelerator: Accelerator,
    source: str | None,
    split: str,
    *,
    data_config: dict[str, Any],
    batch_size: int,
    seed: int = 0,
    revision: str | None = None,
    label: str = "fine",
    class_names: list[str] | None = None,
    num_workers: int = 4,
) -> tuple[Any, list[str], tuple[int, int, int]]:
    """An evaluation split's loader, each sample once across the processes, its class names and input size.

    Small images take the on-device tensor path at their own size; larger ones the worker pipeline with the
    evaluation transform of `data_config` (timm's `resolve_data_config` of the model). `batch_size` is global.
    """
    ds, tensors = _load(accelerator, source, split, revision, label, class_names)
    names = list(ds.features["label"].names)
    mean, std = tuple(data_config["mean"]), tuple(data_config["std"])
    if tensors is not None:
        loader = TensorBatchLoader(
            tensors,
            batch_size,
            train=False,
            seed=seed,
            mean=mean,
            std=std,
            device=accelerator.device,
            process_index=accelerator.process_index,
            num_processes=accelerator.num_processes,
        )
        return loader, names, (3, *tensors.image_size)
    per_process = max(1, batch_size // accelerator.num_processes)
    loader = make_image_dataloader(
        ds, per_process, train=False, num_workers=num_workers, seed=seed, transform=_transforms(data_config, False)
    )
    return accelerator.prepare_data_loader(loader), names, tuple(data_config["input_size"])


def build_data(
    accelerator: Accelerator,
    source: str | None,
    *,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    data_config: dict[str, Any],
    revision: str | None = None,
    label: str = "fine",
    class_names: list[str] | None = None,
    train_split: str = "train",
    eval_split: str = "test",
    num_workers: int = 4,
) -> RunData:
    """Load both splits and build the loaders: the tensor path for small images (at their own size), the worker
    pipeline otherwise (transforms from `data_config`, timm's `resolve_data_config` of the model to train)."""
    name = resolve_source(source).name
    mean, std = tuple(data_config["mean"]), tuple(data_config["std"])
    options = dict(revision=revision, label=label, class_names=class_names)
    train_ds, train = _load(accelerator, source, train_split, **options)
    eval_loader, names, input_size = build_eval_loader(
        accelerator,
        source,
        eval_split,
        data_config=data_config,
        batch_size=eval_batch_size,
        seed=seed,
        num_workers=num_workers,
        **options,
    )
    if train is not None:
        shard = dict(process_index=accelerator.process_index, num_processes=accelerator.num_processes)
        common = dict(mean=mean, std=std, device=accelerator.device, **shard)
        train_loader = TensorBatchLoader(train, batch_size, train=True, seed=seed, **common)
        input_size = (3, *train.image_size)
        return RunData(
            train, train_loader, eval_loader, len(names), names, train.fingerprint, name, input_size, mean, std
        )

    per_process = batch_size // accelerator.num_processes
    if per_process * accelerator.num_processes != batch_size:
        raise ValueError(f"batch_size {batch_size} must be a multiple of the {accelerator.num_processes} processes")
    train_loader = make_image_dataloader(
        train_ds, per_process, train=True, num_workers=num_workers, seed=seed, transform=_transforms(data_config, True)
    )
    train_loader = accelerator.prepare_data_loader(train_loader)
    fingerprint = dataset_fingerprint(train_ds, name=name, split=train_split, revision=revision)
    return RunData(train_ds, train_loader, eval_loader, len(names), names, fingerprint, name, input_size, mean, std)


def hardware_summary(accelerator: Accelerator) -> str:
    """`1 x NVIDIA H100` / `2 x x86_64 CPU (4 threads)`: what a run's card says it was trained on."""
    if accelerator.device.type == "cuda":
        device = torch.cuda.get_device_name(accelerator.device)
    else:
        threads = torch.get_num_threads()
        device = f"{platform.processor() or platform.machine()} CPU ({threads} thread{'s' if threads != 1 else ''})"
    return f"{accelerator.num_processes} x {device}"
