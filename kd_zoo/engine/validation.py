"""A model's accuracy on an evaluation split, as timm's `validate.py` reports it: top-1, top-5, loss, throughput.

Each sample is counted once across the processes; images are preprocessed as the model's data config says (timm's
`resolve_data_config`), so a teacher imported from the CIFAR reference code and a timm ImageNet model are both
measured the way they were trained.
"""

from __future__ import annotations

import time
from typing import Any

import timm
import torch
from accelerate import Accelerator
from torch import nn

from .loop import evaluate_accuracy
from .run_setup import build_eval_loader, hardware_summary


class DataMismatchError(ValueError):
    """The model predicts another number of classes than the evaluation data has."""


def validate_model(
    accelerator: Accelerator,
    model: nn.Module,
    source: str | None,
    split: str = "test",
    *,
    batch_size: int = 256,
    revision: str | None = None,
    label: str = "fine",
    num_workers: int = 4,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Evaluate `model` on `split` of `source` (None: the embedded digits); returns the metrics and what they were
    measured on (`data` is `source` as given: publish it through `kd_zoo.hub.public_dataset_name`)."""
    data_config = timm.data.resolve_data_config({}, model=model)
    loader, class_names, input_size = build_eval_loader(
        accelerator,
        source,
        split,
        data_config=data_config,
        batch_size=batch_size,
        revision=revision,
        label=label,
        num_workers=num_workers,
    )
    data_name = source or "demo"
    if model.num_classes != len(class_names):
        raise DataMismatchError(
            f"the model predicts {model.num_classes} classes and {data_name} / {split} has {len(class_names)}: "
            "evaluate on the data set the model was trained for, or with the matching label column"
        )
    model = model.to(accelerator.device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    start = time.perf_counter()
    metrics = evaluate_accuracy(accelerator, model, loader, topk=(1, 5), channels_last=channels_last)
    seconds = time.perf_counter() - start
    return {
        "data": data_name,
        "split": split,
        "revision": revision,
        "top1": round(metrics["top1"], 4),
        "top5": round(metrics["top5"], 4),
        "loss": round(metrics["loss"], 6),
        "count": metrics["count"],
        "unique": metrics["unique"],
        "seconds": round(seconds, 3),
        "images_per_second": round(metrics["count"] / seconds, 1),
        "input_size": list(input_size),
        "mean": list(data_config["mean"]),
        "std": list(data_config["std"]),
        "num_processes": accelerator.num_processes,
        "hardware": hardware_summary(accelerator),
    }
