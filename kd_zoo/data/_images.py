"""Reading the raw image cells of a `datasets` Image column (`{"bytes", "path"}`) without its decoder, and the
one warning that says non-RGB images are converted."""

from __future__ import annotations

import io
import warnings
from collections import Counter
from typing import Any

import numpy as np
from PIL import Image as PILImage

from .errors import DataSchemaError

# (name, split) pairs already warned about in this process: the conversion warning is once per split.
_WARNED: set[tuple[str, str]] = set()


def cell_bytes(cell: dict[str, Any] | None, row: int) -> bytes:
    """The encoded bytes of one Image cell (its `bytes`, or the file at its `path`)."""
    if cell is None or (cell.get("bytes") is None and cell.get("path") is None):
        raise DataSchemaError(f"row {row} has no image (the cell is empty); drop or fix that row before training")
    if cell.get("bytes") is not None:
        return cell["bytes"]
    with open(cell["path"], "rb") as f:
        return f.read()


def open_cell(cell: dict[str, Any] | None, row: int) -> PILImage.Image:
    """A lazily opened PIL image (header only) for one Image cell."""
    if cell is None or (cell.get("bytes") is None and cell.get("path") is None):
        raise DataSchemaError(f"row {row} has no image (the cell is empty); drop or fix that row before training")
    source = io.BytesIO(cell["bytes"]) if cell.get("bytes") is not None else cell["path"]
    try:
        return PILImage.open(source)
    except Exception as e:  # PIL raises several types for unreadable data
        where = "its bytes" if cell.get("bytes") is not None else cell["path"]
        raise DataSchemaError(f"row {row}: cannot read the image ({where}): {e}") from e


def decode_rgb(cell: dict[str, Any] | None, row: int) -> tuple[np.ndarray, str]:
    """Decode one Image cell to an `[H, W, 3]` uint8 array; returns it and the image's original mode."""
    with open_cell(cell, row) as im:
        mode = im.mode
        rgb = im if mode == "RGB" else im.convert("RGB")
        return np.asarray(rgb, dtype=np.uint8), mode


def warn_converted_once(name: str, split: str, modes: Counter, scanned: int, total: int) -> None:
    """Warn, once per (name, split) and process, that images of other modes are decoded as RGB."""
    other = {m: c for m, c in modes.items() if m != "RGB"}
    if not other or (name, split) in _WARNED:
        return
    _WARNED.add((name, split))
    found = ", ".join(f"{c} {m}" for m, c in sorted(other.items()))
    scope = f"all {total}" if scanned >= total else f"a sample of {scanned} of {total}"
    warnings.warn(
        f"data set {name!r} split {split!r}: {found} image(s) in {scope} rows are not RGB; kd_zoo decodes every "
        "image as RGB (grayscale is replicated to 3 channels, an alpha channel is dropped).",
        UserWarning,
        stacklevel=3,
    )
