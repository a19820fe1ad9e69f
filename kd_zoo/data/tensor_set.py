"""A split of small fixed-size images (CIFAR's 32x32) decoded once into tensors, and cached.

`TensorImageSet` holds a split decoded once into a uint8 `[N, 3, H, W]` tensor (with labels, `sample_idx`, class
names and the split's fingerprint), cached as a safetensors file keyed by the content hash, so later runs skip the
decoding. `TensorBatchLoader` (`kd_zoo.data.tensor_loader`) batches and augments it on the training device.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import ClassLabel, Dataset, Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..constants import IMAGE_COLUMN, INDEX_COLUMN, LABEL_COLUMN
from ._images import decode_rgb, warn_converted_once
from .cache import resolve_cache_dir
from .errors import DataSchemaError
from .fingerprint import FINGERPRINT_KEYS, dataset_fingerprint
from .sources import load_split, resolve_source

logger = logging.getLogger(__name__)

_FORMAT = "kd_zoo.TensorImageSet/1"
_DECODE_BATCH_ROWS = 2048


@dataclass
class TensorImageSet:
    """A split decoded once: uint8 images, labels, the stable `sample_idx`, class names and the fingerprint.

    Attributes:
        images: uint8 `[N, 3, H, W]`.
        labels: int64 `[N]`, in `[0, len(class_names))`.
        sample_idx: int64 `[N]`, the row keys scores and masks are joined on.
        class_names: one name per class, in label order.
        fingerprint: the split's `dataset_fingerprint`.
    """

    images: torch.Tensor
    labels: torch.Tensor
    sample_idx: torch.Tensor
    class_names: list[str]
    fingerprint: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.images.shape[0] if self.images.ndim else 0
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise DataSchemaError(
                f"images must be uint8 [N, 3, H, W], got {self.images.dtype} {list(self.images.shape)}"
            )
        for attr in ("labels", "sample_idx"):
            value = getattr(self, attr)
            if value.dtype != torch.int64 or value.shape != (n,):
                raise DataSchemaError(f"{attr} must be int64 [{n}], got {value.dtype} {list(value.shape)}")
        if n == 0:
            raise DataSchemaError("a TensorImageSet needs at least one image")
        if not self.class_names:
            raise DataSchemaError("class_names is empty")
        low, high = int(self.labels.min()), int(self.labels.max())
        if low < 0 or high >= len(self.class_names):
            raise DataSchemaError(f"labels span [{low}, {high}], outside [0, {len(self.class_names)})")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width)."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    @classmethod
    def from_dataset(
        cls,
        ds: Dataset,
        *,
        name: str,
        split: str,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        use_cache: bool = True,
        num_threads: int | None = None,
    ) -> TensorImageSet:
        """Decode a split in the kd_zoo schema (from `load_split`) once, or read it from the tensor cache.

        Args:
            ds: the split, with columns image, label (ClassLabel) and sample_idx.
            name: data set name (for the fingerprint and the cache file name).
            split: split name.
            revision: Hub revision, if any.
            cache_dir: kd_zoo cache folder; tensors go to `<cache_dir>/tensors/`.
            use_cache: read / write the safetensors cache (keyed by the content hash, so stale files are never used).
            num_threads: decoding threads (default: up to 8, the CPU count).

        Raises:
            DataSchemaError: not the kd_zoo schema, or images of different sizes.
        """
        missing = [c for c in (IMAGE_COLUMN, LABEL_COLUMN, INDEX_COLUMN) if c not in ds.features]
        if missing or not isinstance(ds.features[LABEL_COLUMN], ClassLabel):
            raise DataSchemaError(
                f"TensorImageSet.from_dataset needs the kd_zoo schema (image, label ClassLabel, sample_idx); "
                f"missing {missing or ['a ClassLabel label']} in {list(ds.features)}. Load with kd_zoo.data.load_split"
            )
        fingerprint = dataset_fingerprint(ds, name=name, split=split, revision=revision)
        path = tensor_cache_path(fingerprint, cache_dir)
        if use_cache and path.is_file():
            try:
                cached = cls.load(path)
                if all(cached.fingerprint.get(k) == fingerprint[k] for k in ("num_rows", "content_sha256")):
                    cached.fingerprint = fingerprint  # the name / revision of this load
                    return cached
                logger.warning("tensor cache %s holds other data; rebuilding it", path)
            except Exception as e:  # an unreadable cache is rebuilt
                logger.warning("tensor cache %s is unreadable (%s); rebuilding it", path, e)
        images, modes = _decode_images(ds, num_threads)
        warn_converted_once(name, split, modes, len(ds), len(ds))
        columns = ds.select_columns([LABEL_COLUMN, INDEX_COLUMN]).with_format("arrow")[:]
        data = cls(
            images=images,
            labels=torch.from_numpy(np.array(columns[LABEL_COLUMN].to_numpy(), dtype=np.int64)),
            sample_idx=torch.from_numpy(np.array(columns[INDEX_COLUMN].to_numpy(), dtype=np.int64)),
            class_names=list(ds.features[LABEL_COLUMN].names),
            fingerprint=fingerprint,
        )
        if use_cache:
            try:
                data.save(path)
            except OSError as e:  # a read-only cache folder costs speed, not correctness
                logger.warning("cannot write the tensor cache %s (%s); decoding again next time", path, e)
        return data

    def save(self, path: str | os.PathLike) -> None:
        """Write to one safetensors file (tensors + class names and fingerprint as metadata), atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        tensors = {"images": self.images.contiguous(), "labels": self.labels, "sample_idx": self.sample_idx}
        metadata = {
            "format": _FORMAT,
            "class_names": json.dumps(self.class_names),
            "fingerprint": json.dumps(self.fingerprint),
        }
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TensorImageSet:
        """Read a file written by `save`."""
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        if metadata.get("format") != _FORMAT:
            raise DataSchemaError(f"{path} is not a {_FORMAT} file (format {metadata.get('format')!r})")
        tensors = load_file(str(path))
        return cls(
            images=tensors["images"],
            labels=tensors["labels"],
            sample_idx=tensors["sample_idx"],
            class_names=json.loads(metadata["class_names"]),
            fingerprint=json.loads(metadata["fingerprint"]),
        )


def tensor_cache_path(fingerprint: dict[str, Any], cache_dir: str | os.PathLike | None = None) -> Path:
    """Where `TensorImageSet.from_dataset` caches a split: named after the data set, keyed by its content hash."""
    missing = [k for k in FINGERPRINT_KEYS if k not in fingerprint]
    if missing:
        raise ValueError(f"not a fingerprint: lacks {missing}")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", str(fingerprint["name"])).strip("_")[-80:] or "dataset"
    split = re.sub(r"[^A-Za-z0-9._-]+", "_", str(fingerprint["split"]))
    return (
        resolve_cache_dir(cache_dir) / "tensors" / f"{slug}--{split}--{fingerprint['content_sha256'][:24]}.safetensors"
    )


def _decode_images(ds: Dataset, num_threads: int | None) -> tuple[torch.Tensor, Counter]:
    """Decode every image to uint8 `[N, 3, H, W]`, refusing mixed sizes; returns it and the original modes."""
    raw = ds.select_columns([IMAGE_COLUMN]).cast_column(IMAGE_COLUMN, Image(decode=False)).with_format("arrow")
    n = len(ds)
    first, _ = decode_rgb(raw[0:1].column(IMAGE_COLUMN)[0].as_py(), 0)
    height, width = first.shape[:2]
    out = np.empty((n, height, width, 3), dtype=np.uint8)

    def decode_cells(start: int, cells: list[dict[str, Any] | None]) -> Counter:
        modes: Counter = Counter()
        for i, cell in enumerate(cells, start):
            pixels, mode = decode_rgb(cell, i)
            if pixels.shape != (height, width, 3):
                raise DataSchemaError(
                    f"row {i} is {pixels.shape[1]}x{pixels.shape[0]} but row 0 is {width}x{height}: the tensor fast "
                    "path needs images of one size. Resize them first, or use make_image_dataloader (per-sample "
                    "transforms)"
                )
            out[i] = pixels
            modes[mode] += 1
        return modes

    modes: Counter = Counter()
    # PIL releases the GIL while decoding, so threads decode in parallel; the Arrow reads stay in this thread.
    with ThreadPoolExecutor(max_workers=num_threads or min(8, os.cpu_count() or 1)) as pool:
        jobs = [
            pool.submit(decode_cells, start, batch.column(IMAGE_COLUMN).to_pylist())
            for start, batch in zip(
                range(0, n, _DECODE_BATCH_ROWS), raw.iter(batch_size=_DECODE_BATCH_ROWS), strict=True
            )
        ]
        for job in jobs:
            modes.update(job.result())
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(), modes


def load_tensor_split(
    source: str | os.PathLike | None,
    split: str = "train",
    *,
    revision: str | None = None,
    label: str = "fine",
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> TensorImageSet:
    """`load_split` + `TensorImageSet.from_dataset`: a split of small fixed-size images, decoded (or cached) once."""
    ds = load_split(source, split, revision=revision, label=label, token=token, cache_dir=cache_dir)
    name = resolve_source(source).name
    return TensorImageSet.from_dataset(ds, name=name, split=split, revision=revision, cache_dir=cache_dir)
