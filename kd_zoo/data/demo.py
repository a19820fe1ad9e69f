"""The embedded demo data set: scikit-learn's bundled handwritten digits as 32x32 RGB images.

`sklearn.datasets.load_digits` ships 1,797 real 8x8 digits (10 classes, values 0-16) inside the scikit-learn
package, so this data set builds with no download. Each digit is scaled to 0-255, upsampled to 32x32 with PIL's
bilinear filter, replicated to RGB and PNG-encoded; a stratified split with a fixed seed gives 1,437 training and
360 test rows (80 / 20), each kept in the original digits order. The result is in the kd_zoo schema (image, label
with class names "0".."9", sample_idx) and is saved with `save_to_disk` under `<cache>/datasets/` after the first
build; a missing or unreadable cache is rebuilt. Every recipe falls back to it when no data set is named.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value, load_from_disk
from PIL import Image as PILImage

from ..constants import IMAGE_COLUMN, INDEX_COLUMN, LABEL_COLUMN
from .cache import resolve_cache_dir

logger = logging.getLogger(__name__)

# Bump when the build changes, so that caches of an older build are not used.
DEMO_VERSION = 1
DEMO_SEED = 0
DEMO_TEST_FRACTION = 0.2
DEMO_IMAGE_SIZE = 32
DEMO_CLASS_NAMES = [str(d) for d in range(10)]

DEMO_FEATURES = Features(
    {IMAGE_COLUMN: Image(), LABEL_COLUMN: ClassLabel(names=DEMO_CLASS_NAMES), INDEX_COLUMN: Value("int64")}
)
_META_FILE = "kd_zoo_demo.json"


def demo_cache_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder the demo data set is saved to."""
    return resolve_cache_dir(cache_dir) / "datasets" / f"demo-digits-v{DEMO_VERSION}"


def build_demo_dataset() -> DatasetDict:
    """Build the demo data set from scikit-learn alone (no cache); see the module docstring."""
    # Imported here: scikit-learn takes about a second to import, and only a first build (no cache yet) needs it.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # values 0..16 -> 0..255
    targets = digits.target.astype(np.int64)
    train_rows, test_rows = train_test_split(
        np.arange(len(targets)), test_size=DEMO_TEST_FRACTION, stratify=targets, random_state=DEMO_SEED
    )
    splits = {}
    for split, rows in (("train", np.sort(train_rows)), ("test", np.sort(test_rows))):
        splits[split] = Dataset.from_dict(
            {
                IMAGE_COLUMN: [{"bytes": _to_png(pixels[i]), "path": None} for i in rows],
                LABEL_COLUMN: targets[rows].tolist(),
                INDEX_COLUMN: np.arange(len(rows), dtype=np.int64).tolist(),
            },
            features=DEMO_FEATURES,
            split=split,
        )
    return DatasetDict(splits)


def _to_png(digit: np.ndarray) -> bytes:
    size = (DEMO_IMAGE_SIZE, DEMO_IMAGE_SIZE)
    image = PILImage.fromarray(digit).resize(size, PILImage.Resampling.BILINEAR).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def demo_dataset(cache_dir: str | os.PathLike | None = None) -> DatasetDict:
    """The demo data set (`train` / `test`), from the cache, or built and cached on first use.

    Args:
        cache_dir: kd_zoo cache folder (default `$KD_ZOO_CACHE` or `~/.cache/kd_zoo`).

    Returns:
        A `DatasetDict` with `train` (1,437 rows) and `test` (360 rows) in the kd_zoo schema.
    """
    path = demo_cache_path(cache_dir)
    cached = _load_cached(path)
    if cached is not None:
        return cached
    if path.exists():  # unreadable, or of another build: replace it, unless another process just wrote it
        if (cached := _load_cached(path)) is not None:
            return cached
        stale = path.parent / f".{path.name}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        with contextlib.suppress(OSError):
            os.rename(path, stale)  # atomic: a reader sees the old folder or none, never half of it
        shutil.rmtree(stale, ignore_errors=True)
    dd = build_demo_dataset()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Build in a private folder, then rename: processes that start together never see a half-written cache.
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        dd.save_to_disk(str(tmp))
        meta = {"version": DEMO_VERSION, "num_rows": {s: len(d) for s, d in dd.items()}}
        (tmp / _META_FILE).write_text(json.dumps(meta))
        try:
            os.rename(tmp, path)
        except OSError:  # another process renamed its copy first; use that one
            logger.debug("demo cache %s was written by another process", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cached = _load_cached(path)
    if cached is None:
        raise RuntimeError(f"the demo data set was built but cannot be read back from {path}; check that folder")
    logger.info("built the demo data set (scikit-learn digits) in %s", path)
    return cached


def _load_cached(path: Path) -> DatasetDict | None:
    """The cached demo data set, or None if it is missing, of another build, or unreadable."""
    meta_file = path / _META_FILE
    if not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text())
        dd = load_from_disk(str(path))
        ok = (
            meta.get("version") == DEMO_VERSION
            and isinstance(dd, DatasetDict)
            and set(dd) == {"train", "test"}
            and all(dd[s].features == DEMO_FEATURES and len(dd[s]) == meta["num_rows"][s] for s in dd)
        )
    except Exception as e:  # any read failure means: rebuild
        logger.warning("the demo data set cache %s is unreadable (%s); rebuilding it", path, e)
        return None
    if not ok:
        logger.warning("the demo data set cache %s does not match this build; rebuilding it", path)
        return None
    return dd
