"""kd_zoo.teacher_cache: the frozen teacher's outputs for every augmented view, built once, read by every student.

Why: the teacher's forward pass is most of a distillation step (benchmarks/results/train_step_speed.md), yet the
teacher is frozen and CIFAR's augmentation is finite: a pad-4 random crop and a horizontal flip give 9 x 9 x 2 =
162 views of each 32x32 image (`kd_zoo.data.tensor_loader`: every training batch carries each row's `view` next
to its `sample_idx`). Run the teacher once on all of them, and every later student of that teacher (the LR+DS
paper, arXiv 2404.03693, trains dozens per teacher, 240 epochs each) distils at the cost of cross-entropy.

* `build`: `build_teacher_cache(teacher, train, folder)`: every view of every sample, large batches, sharded with
  Accelerate, resumable; also stores the centre view's head inputs for Data Selection.
* `storage`: the folder (manifest, plan, safetensors shards) and its crash-safe writes.
* `reader`: `TeacherCache.open(folder_or_hub_id, device=...)`, `check_run(teacher, loader)`, `lookup(sample_idx,
  view)`, `score_sets(...)` (the score sets of `recipes/score.py`, with no teacher inference).
* `methods`: which methods a cache serves (`logit_only_methods`, `check_method`).
* `rounding`: the bound on how much a float16 cache can change the KD loss.
* `kd_zoo.hub.cache_export` writes the data set card; `recipes/cache_teacher.py` does it all from the command line.

Example:
    >>> from kd_zoo.data import TensorBatchLoader, load_tensor_split
    >>> from kd_zoo.engine import Distiller
    >>> from kd_zoo.teacher_cache import TeacherCache, build_teacher_cache
    >>> train = load_tensor_split(None, "train")
    >>> build_teacher_cache(teacher, train, "caches/digits-resnet8")  # doctest: +SKIP
    >>> loader = TensorBatchLoader(train, 64, train=True)
    >>> cache = TeacherCache.open("caches/digits-resnet8")  # doctest: +SKIP
    >>> cache.check_run(teacher, loader)  # doctest: +SKIP
    >>> distiller = Distiller(student, method, teacher_cache=cache)  # doctest: +SKIP
"""

from .build import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CPU_BATCH_SIZE,
    DEFAULT_DTYPE,
    DEFAULT_PAD,
    BuildReport,
    build_teacher_cache,
    default_shard_rows,
    pixels_sha256,
)
from .errors import (
    CacheDeviceError,
    CacheFormatError,
    CacheMethodError,
    CacheMismatchError,
    IncompleteCacheError,
    TeacherCacheError,
)
from .methods import check_method, logit_only_methods
from .reader import TeacherCache, resolve_cache_folder
from .rounding import fp16_rounding, kd_loss_rounding_bound, kl_rounding_bound
from .storage import FORMAT, MANIFEST

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CPU_BATCH_SIZE",
    "DEFAULT_DTYPE",
    "DEFAULT_PAD",
    "FORMAT",
    "MANIFEST",
    "BuildReport",
    "CacheDeviceError",
    "CacheFormatError",
    "CacheMethodError",
    "CacheMismatchError",
    "IncompleteCacheError",
    "TeacherCache",
    "TeacherCacheError",
    "build_teacher_cache",
    "check_method",
    "default_shard_rows",
    "fp16_rounding",
    "kd_loss_rounding_bound",
    "kl_rounding_bound",
    "logit_only_methods",
    "pixels_sha256",
    "resolve_cache_folder",
]
