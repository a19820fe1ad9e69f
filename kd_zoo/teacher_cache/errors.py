"""Errors of kd_zoo.teacher_cache: each says what is wrong with a cache and what to do about it."""

from __future__ import annotations


class TeacherCacheError(ValueError):
    """Base class: a teacher-output cache that cannot be used as it is."""


class CacheFormatError(TeacherCacheError):
    """A folder or file that is not a kd_zoo teacher cache, or a shard that is truncated or corrupt."""


class IncompleteCacheError(TeacherCacheError):
    """A build that has not finished (missing shards or no manifest): run the build again to resume it."""


class CacheMismatchError(TeacherCacheError):
    """A cache of another teacher, other data, another augmentation or normalisation than the run's."""


class CacheDeviceError(TeacherCacheError):
    """A cache the training device cannot hold (its dtype, or its size when it is moved there whole)."""


class CacheMethodError(TeacherCacheError):
    """A distillation method that needs more of the teacher than its logits, asked to read them from a cache."""
