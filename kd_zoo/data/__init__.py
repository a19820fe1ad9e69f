"""kd_zoo.data: CIFAR-100, ImageNet and the embedded demo set through `datasets`, with a fast 32x32 path.

* `load_split(source, split)` (`sources`): a Hub id, a `save_to_disk` folder, parquet files, an image folder, or None
  for the demo set, mapped to one schema (`schema`): `image`, `label` (ClassLabel with the data set's class
  names), `sample_idx`; `hub_errors` turns an unreachable or gated Hub data set into a message that says the fix.
* `demo_dataset()`: scikit-learn's bundled digits as 32x32 RGB images (train 1,437 / test 360), cached locally.
* `TensorImageSet` (`tensor_set`) + `TensorBatchLoader` (`tensor_loader`): a split decoded once into a uint8
  tensor, then crop / flip / normalise / batch on the training device, reproducible from (seed, epoch) and
  identical for any number of processes.
* `imagenet_transforms` + `make_image_dataloader`: the worker-based pipeline for ImageNet-size images.
* `dataset_fingerprint` / `check_fingerprint`: a content hash per split, stored next to scores and checkpoints.

Example:
    >>> from kd_zoo.data import load_tensor_split, TensorBatchLoader
    >>> train = load_tensor_split(None, "train")  # the demo digits, offline
    >>> loader = TensorBatchLoader(train, batch_size=64, train=True, seed=0)
    >>> loader.set_epoch(0)
    >>> batch = next(iter(loader))
    >>> batch["image"].shape, batch["label"].dtype, batch["sample_idx"].shape
    (torch.Size([64, 3, 32, 32]), torch.int64, torch.Size([64]))
"""

from .cache import resolve_cache_dir
from .demo import build_demo_dataset, demo_cache_path, demo_dataset
from .errors import (
    DataError,
    DataSchemaError,
    DatasetUnavailableError,
    FingerprintMismatchError,
    UnknownDatasetError,
    UnknownSplitError,
)
from .fingerprint import check_fingerprint, dataset_fingerprint
from .imagenet import collate_image_batch, imagenet_transforms, make_image_dataloader
from .schema import to_schema
from .sources import KNOWN_DATASETS, ResolvedSource, load_split, resolve_source
from .tensor_loader import TensorBatchLoader, random_crop_flip
from .tensor_set import TensorImageSet, load_tensor_split, tensor_cache_path

__all__ = [
    "KNOWN_DATASETS",
    "DataError",
    "DataSchemaError",
    "DatasetUnavailableError",
    "FingerprintMismatchError",
    "ResolvedSource",
    "TensorBatchLoader",
    "TensorImageSet",
    "UnknownDatasetError",
    "UnknownSplitError",
    "build_demo_dataset",
    "check_fingerprint",
    "collate_image_batch",
    "dataset_fingerprint",
    "demo_cache_path",
    "demo_dataset",
    "imagenet_transforms",
    "load_split",
    "load_tensor_split",
    "make_image_dataloader",
    "random_crop_flip",
    "resolve_cache_dir",
    "resolve_source",
    "tensor_cache_path",
    "to_schema",
]
