"""Errors of kd_zoo.selection: each says what is wrong and how to fix it."""

from __future__ import annotations


class ScoreSetError(ValueError):
    """Base class: a score set that cannot be used as it is."""


class ScoreSetFormatError(ScoreSetError):
    """A file or folder that is not a kd_zoo score set (missing columns, types or metadata)."""


class ScoreSetIndexError(ScoreSetError):
    """A score set whose `sample_idx` do not match the split's: missing, duplicated or foreign indices."""


class TeacherMismatchError(ScoreSetError):
    """A score set computed with other teacher weights than the teacher in use."""
