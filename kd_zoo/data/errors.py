"""The data layer's errors: each says what is wrong and how to fix it, and all share the base `DataError`."""

from __future__ import annotations

from ..registry import UnknownNameError


class DataError(Exception):
    """Base class of every kd_zoo.data error (catch this to handle any bad-data case)."""


class DataSchemaError(DataError, ValueError):
    """A data set that cannot be mapped to the kd_zoo schema (columns, labels, empty split, image sizes)."""


class UnknownDatasetError(DataError, UnknownNameError):
    """A source that is neither a known name, an existing local path, nor a Hub id."""


class UnknownSplitError(DataError, LookupError):
    """A split name the data set does not have; the message lists the ones it has."""


class DatasetUnavailableError(DataError, RuntimeError):
    """A Hub data set that cannot be reached now (offline, no token, gated, not found); says how to fix it."""


class FingerprintMismatchError(DataError, ValueError):
    """Stored results (scores, masks, checkpoints) were computed on other data than the data in use."""
