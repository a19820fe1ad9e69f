"""What every run sets up before training: the Accelerator and its trackers, the data loaders, the hardware line.

Small functions with explicit arguments (`kd_zoo.workflow` fills them from a recipe config).
"""

from __future__ import annotations

import platform
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


def hardware_summary(accelerator: Accelerator) -> str:
    """`1 x NVIDIA H100` / `2 x x86_64 CPU (4 threads)`: what a run's card says it was trained on."""
    if accelerator.device.type == "cuda":
        device = torch.cuda.get_device_name(accelerator.device)
    else:
        threads = torch.get_num_threads()
        device = f"{platform.processor() or platform.machine()} CPU ({threads} thread{'s' if threads != 1 else ''})"
    return f"{accelerator.num_processes} x {device}"
