"""Content fingerprints of data set splits, stored next to scores, masks and checkpoints.

A fingerprint is `{"name", "revision", "split", "num_rows", "num_classes", "content_sha256"}`. The hash covers, in
row order, the labels and the encoded image bytes (the PNG / JPEG bytes `datasets` stores, or the file an image
folder row points to), not decoded pixels, so it reads each byte once and decodes nothing: a 50,000-image split
hashes in a fraction of a second. It does not depend on how Arrow chunks the table, so the same rows saved with
`save_to_disk`, written to parquet or read from an image folder of the same files hash the same.

`check_fingerprint` compares a stored fingerprint with the one of the data in use. The content decides: the same
rows under another name (a local copy of a Hub data set) match; anything else raises `FingerprintMismatchError`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import ClassLabel, Dataset, Image

from ..constants import IMAGE_COLUMN, LABEL_COLUMN
from ._images import cell_bytes
from .errors import DataError, DataSchemaError, FingerprintMismatchError

FINGERPRINT_KEYS = ("name", "revision", "split", "num_rows", "num_classes", "content_sha256")
# Fields that must agree for two fingerprints to describe the same data.
CONTENT_KEYS = ("num_rows", "num_classes", "content_sha256")
_HASH_VERSION = b"kd_zoo.data content v1\n"
_BATCH_ROWS = 4096

# content hashes of data sets seen in this process, keyed by the data set's own `_fingerprint`
_CONTENT_CACHE: dict[str, str] = {}


def dataset_fingerprint(ds: Dataset, *, name: str, split: str, revision: str | None = None) -> dict[str, Any]:
    """The fingerprint of one split in the kd_zoo schema (see the module docstring).

    Args:
        ds: a `datasets.Dataset` with an `image` (Image) and a `label` (ClassLabel) column, e.g. from `load_split`.
        name: the data set name (Hub id, path or 'demo').
        split: the split name.
        revision: the Hub revision the data came from, if any.

    Returns:
        `{"name", "revision", "split", "num_rows", "num_classes", "content_sha256"}`.
    """
    if not isinstance(ds, Dataset):
        raise DataError(
            f"dataset_fingerprint needs a map-style datasets.Dataset, got {type(ds).__name__} (a streaming data set "
            "cannot be hashed without reading it all: load it without streaming)"
        )
    image_feature, label_feature = ds.features.get(IMAGE_COLUMN), ds.features.get(LABEL_COLUMN)
    if not isinstance(image_feature, Image) or not isinstance(label_feature, ClassLabel):
        raise DataSchemaError(
            f"dataset_fingerprint needs the kd_zoo schema (an {IMAGE_COLUMN!r} Image and a {LABEL_COLUMN!r} "
            f"ClassLabel column), got {dict(ds.features)}; load the data with kd_zoo.data.load_split"
        )
    key = ds._fingerprint
    content = _CONTENT_CACHE.get(key) if key else None
    if content is None:
        content = _content_sha256(ds)
        if key:
            _CONTENT_CACHE[key] = content
    return {
        "name": name,
        "revision": revision,
        "split": split,
        "num_rows": len(ds),
        "num_classes": label_feature.num_classes,
        "content_sha256": content,
    }


def _content_sha256(ds: Dataset) -> str:
    labels, lengths, data = hashlib.sha256(), hashlib.sha256(), hashlib.sha256()
    table_rows = ds.select_columns([IMAGE_COLUMN, LABEL_COLUMN]).with_format("arrow")
    row = 0
    for batch in table_rows.iter(batch_size=_BATCH_ROWS):
        labels.update(np.asarray(batch.column(LABEL_COLUMN).to_numpy(), dtype="<i8").tobytes())
        for chunk in batch.column(IMAGE_COLUMN).chunks:
            _hash_images(chunk, row, lengths, data)
            row += len(chunk)
    final = hashlib.sha256(_HASH_VERSION)
    for part in (labels, lengths, data):
        final.update(part.digest())
    return final.hexdigest()


def _hash_images(chunk: pa.StructArray, first_row: int, lengths: Any, data: Any) -> None:
    """Hash one chunk of an Image column: byte lengths into `lengths`, the bytes themselves into `data`."""
    encoded = pc.struct_field(chunk, "bytes")
    offset_type = {pa.binary(): np.int32, pa.large_binary(): np.int64}.get(encoded.type)
    if offset_type is not None and chunk.null_count == 0 and encoded.null_count == 0:
        # The fast path: the value buffer holds every image back to back.
        offsets = np.frombuffer(encoded.buffers()[1], dtype=offset_type)[
            encoded.offset : encoded.offset + len(encoded) + 1
        ]
        lengths.update(np.diff(offsets).astype("<i8").tobytes())
        values = encoded.buffers()[2]
        if values is not None:
            data.update(memoryview(values)[int(offsets[0]) : int(offsets[-1])])
        return
    # Rows that point to files (image folders) or mix both: one row at a time, same byte stream.
    for i, cell in enumerate(chunk.to_pylist()):
        payload = cell_bytes(cell, first_row + i)
        lengths.update(np.int64(len(payload)).astype("<i8").tobytes())
        data.update(payload)


def check_fingerprint(expected: dict[str, Any], actual: dict[str, Any], what: str) -> None:
    """Raise if `what` (stored with the fingerprint `expected`) does not belong to the data of fingerprint `actual`.

    The content decides (num_rows, num_classes, content_sha256): the same rows under another name or revision
    (a local copy of a Hub data set) pass.

    Args:
        expected: the fingerprint stored with the scores / mask / checkpoint.
        actual: the fingerprint of the data in use (`dataset_fingerprint` / `TensorImageSet.fingerprint`).
        what: what was stored, for the message (e.g. "influence scores kd-zoo/scores-resnet32x4").

    Raises:
        FingerprintMismatchError: naming each differing field with both values, and how to fix it.
        ValueError: a fingerprint lacks one of the fields.
    """
    for label, fp in (("expected", expected), ("actual", actual)):
        missing = [k for k in FINGERPRINT_KEYS if k not in fp]
        if missing:
            raise ValueError(f"the {label} fingerprint of {what} lacks {missing}; a fingerprint has {FINGERPRINT_KEYS}")
    if all(expected[k] == actual[k] for k in CONTENT_KEYS):
        return
    differences = "\n".join(
        f"  - {k}: stored {expected[k]!r}, in use {actual[k]!r}" for k in FINGERPRINT_KEYS if expected[k] != actual[k]
    )
    raise FingerprintMismatchError(
        f"{what} was computed on other data than the data in use:\n{differences}\n"
        f"Fix: recompute {what} on this data, or load the data it was computed on "
        f"(data set {expected['name']!r}, split {expected['split']!r}, revision {expected['revision']!r})."
    )
