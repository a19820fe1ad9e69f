"""The worker-based pipeline for large, variable-size images (ImageNet): timm transforms per sample.

Training: RandomResizedCrop + horizontal flip (timm's `create_transform` with colour jitter off); evaluation:
resize to `img_size / crop_pct` (256 for 224) + centre crop; both normalised with the ImageNet mean / std.
`make_image_dataloader` wraps a split in the kd_zoo schema in a plain `torch.utils.data.DataLoader` whose batches
are `{"image", "label", "sample_idx"}` dicts, like `TensorBatchLoader`'s, and which `accelerator.prepare` shards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from datasets import ClassLabel, Dataset
from timm.data import create_transform
from torch.utils.data import DataLoader

from ..constants import IMAGE_COLUMN, IMAGENET_MEAN, IMAGENET_STD, INDEX_COLUMN, LABEL_COLUMN
from .errors import DataError, DataSchemaError

# 224 / 256: the standard ImageNet evaluation crop.
IMAGENET_CROP_PCT = 0.875


def imagenet_transforms(
    train: bool,
    img_size: int = 224,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crop_pct: float = IMAGENET_CROP_PCT,
    interpolation: str = "bilinear",
) -> Callable[[Any], torch.Tensor]:
    """timm's ImageNet transforms: RandomResizedCrop + flip (train), resize + centre crop (eval), then normalise.

    Args:
        train: training or evaluation transform.
        img_size: output side (224).
        mean: normalisation mean.
        std: normalisation standard deviation.
        crop_pct: evaluation crop fraction: resize the short side to `img_size / crop_pct`, then centre-crop.
        interpolation: resampling filter.
    """
    return create_transform(
        img_size,
        is_training=train,
        color_jitter=None,  # timm adds colour jitter by default; the recipes use crop + flip only
        hflip=0.5,
        interpolation=interpolation,
        mean=tuple(mean),
        std=tuple(std),
        crop_pct=None if train else crop_pct,
    )


class SchemaImageDataset(torch.utils.data.Dataset):
    """A map-style torch Dataset over a kd_zoo-schema split: `(transform(image), label, sample_idx)` per row."""

    def __init__(self, ds: Dataset, transform: Callable[[Any], torch.Tensor]):
        if not isinstance(ds, Dataset):
            raise DataError(
                f"make_image_dataloader needs a map-style datasets.Dataset, got {type(ds).__name__}; for a streaming "
                "data set, iterate it directly or load it without streaming"
            )
        missing = [c for c in (IMAGE_COLUMN, LABEL_COLUMN, INDEX_COLUMN) if c not in ds.features]
        if missing or not isinstance(ds.features[LABEL_COLUMN], ClassLabel):
            raise DataSchemaError(
                f"expected the kd_zoo schema (image, label ClassLabel, sample_idx); missing "
                f"{missing or ['a ClassLabel label']} in {list(ds.features)}. Load the data with kd_zoo.data.load_split"
            )
        if len(ds) == 0:
            raise DataSchemaError("the split is empty (0 rows)")
        self.ds = ds
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        row = self.ds[int(index)]
        image = row[IMAGE_COLUMN]
        if image.mode != "RGB":  # load_split's Image(mode="RGB") already did this; other data sets may not
            image = image.convert("RGB")
        return self.transform(image), row[LABEL_COLUMN], row[INDEX_COLUMN]


def collate_image_batch(items: list[tuple[torch.Tensor, int, int]]) -> dict[str, torch.Tensor]:
    """Stack `(image, label, sample_idx)` samples into the kd_zoo batch dict."""
    images, labels, indices = zip(*items, strict=True)
    return {
        "image": torch.stack(images),
        "label": torch.tensor(labels, dtype=torch.int64),
        "sample_idx": torch.tensor(indices, dtype=torch.int64),
    }


def _seed_worker(worker_id: int) -> None:
    # torch seeds `random` and torch in each worker from the loader's generator; numpy too, for any numpy transform.
    np.random.seed(torch.initial_seed() % 2**32)


def make_image_dataloader(
    ds: Dataset,
    batch_size: int,
    *,
    train: bool,
    num_workers: int,
    seed: int = 0,
    transform: Callable[[Any], torch.Tensor] | None = None,
    img_size: int = 224,
    drop_last: bool | None = None,
    pin_memory: bool | None = None,
) -> DataLoader:
    """A DataLoader over a kd_zoo-schema split with per-sample transforms in worker processes.

    Args:
        ds: the split (from `load_split`).
        batch_size: batch size per DataLoader (per process once `accelerator.prepare` shards it).
        train: shuffle + training transform, or fixed order + evaluation transform.
        num_workers: worker processes decoding and transforming images.
        seed: seeds the shuffle and the workers' random transforms (reproducible for a given sequence of epochs
            and number of workers; with `num_workers=0` the transforms draw from the process's global RNGs, which
            `accelerate.utils.set_seed` seeds).
        transform: replaces `imagenet_transforms(train, img_size)`.
        img_size: output side of the default transforms.
        drop_last: drop the incomplete last batch (default: when training).
        pin_memory: default: when CUDA is available.

    Returns:
        A DataLoader yielding `{"image": float [b, 3, S, S], "label": int64 [b], "sample_idx": int64 [b]}`.
    """
    if batch_size < 1 or num_workers < 0:
        raise ValueError(f"batch_size must be >= 1 and num_workers >= 0, got {batch_size} and {num_workers}")
    dataset = SchemaImageDataset(ds, transform or imagenet_transforms(train, img_size))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        num_workers=num_workers,
        collate_fn=collate_image_batch,
        drop_last=train if drop_last is None else drop_last,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=_seed_worker,
        persistent_workers=num_workers > 0,
    )
