"""The kd_zoo schema: map a `datasets` data set to `image`, `label`, `sample_idx`, and check it.

Whatever the source, a split has exactly three columns:

* `image`: a `datasets.Image(mode="RGB")` feature. Grayscale, palette or RGBA images decode as RGB (a documented
  conversion, announced by one warning per split).
* `label`: a `ClassLabel`; class names are the data set's own (`ds.features["label"].names`), never hard-coded.
* `sample_idx`: int64, the row's position in the split's stored order (0..N-1), the key that influence scores and
  the distill mask are joined on. A source that already has a `sample_idx` column (a saved kd_zoo split, or a
  subset of one) keeps it, so a subset still joins on the full split's numbering.

Columns are found generically: the single `Image` feature, and the `ClassLabel` feature (`label="fine"` /
`"coarse"` picks `fine_label` / `coarse_label`; any other value names the column). Bad input is refused here,
before training: missing or ambiguous columns, labels outside `[0, num_classes)`, an empty split.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import ClassLabel, Dataset, Features, Image, Value

from ..constants import IMAGE_COLUMN, INDEX_COLUMN, LABEL_COLUMN
from ._images import open_cell, warn_converted_once
from .errors import DataSchemaError

IMAGE_ALIASES = ("image", "img")
LABEL_ALIASES = ("label", "labels", "target", "class")

# Image modes are read from the headers of every row up to this many rows, of an even sample beyond.
MODE_SCAN_FULL_ROWS = 60_000
MODE_SCAN_SAMPLE_ROWS = 5_000

SCHEMA_FEATURES_DOC = "image (datasets.Image), label (ClassLabel with names), sample_idx (int64)"


def to_schema(
    ds: Dataset,
    *,
    label: str = "fine",
    class_names: Sequence[str] | None = None,
    name: str = "dataset",
    split: str = "train",
) -> Dataset:
    """Map a `datasets` data set to the kd_zoo schema and check it (what `load_split` does after loading).

    Args:
        ds: the data set, with one image column and one label column (see the module docstring).
        label: 'fine', 'coarse' or a label column name.
        class_names: names for an integer label column that is not a `ClassLabel`.
        name: the data set name used in messages.
        split: the split name used in messages.

    Returns:
        The data set with exactly the columns image, label, sample_idx.

    Raises:
        DataSchemaError: a missing or ambiguous column, a label column without class names, labels outside
            `[0, num_classes)`, an empty split, or a bad `sample_idx` column.
    """
    features = ds.features
    image_col = _find_image_column(features, name)
    label_col = _find_label_column(features, label, name)
    has_index = INDEX_COLUMN in features and INDEX_COLUMN not in (image_col, label_col)
    ds = ds.select_columns([image_col, label_col] + ([INDEX_COLUMN] if has_index else []))
    renames = {c: t for c, t in ((image_col, IMAGE_COLUMN), (label_col, LABEL_COLUMN)) if c != t}
    if renames:
        ds = ds.rename_columns(renames)
    ds = ds.cast_column(IMAGE_COLUMN, Image(mode="RGB"))
    label_feature = ds.features[LABEL_COLUMN]
    if not isinstance(label_feature, ClassLabel):
        if class_names is None:
            raise DataSchemaError(
                f"data set {name!r}: label column {label_col!r} is {label_feature}, not a ClassLabel, so its class "
                f"names are unknown. Pass class_names=[...] (the recipes: data.class_names=[...]; one name per class, "
                f"in label order), or cast it: "
                f"ds = ds.cast_column({label_col!r}, datasets.ClassLabel(names=[...]))"
            )
        if not (isinstance(label_feature, Value) and pa.types.is_integer(label_feature.pa_type)):
            raise DataSchemaError(
                f"data set {name!r}: label column {label_col!r} is {label_feature}; class_names only applies to an "
                "integer column (encode string labels with ds.class_encode_column)"
            )
        ds = ds.cast_column(LABEL_COLUMN, ClassLabel(names=list(class_names)))
    elif class_names is not None and list(class_names) != list(label_feature.names):
        raise DataSchemaError(
            f"data set {name!r}: class_names {_preview(class_names)} differ from the data set's own ClassLabel names "
            f"{_preview(label_feature.names)}; drop class_names to use the data set's"
        )
    num_classes = ds.features[LABEL_COLUMN].num_classes
    if num_classes < 1:
        raise DataSchemaError(f"data set {name!r}: the label ClassLabel has no class names")
    if len(ds) == 0:
        raise DataSchemaError(f"data set {name!r} split {split!r} is empty (0 rows); check the source and split name")
    _check_labels(ds, num_classes, name, split)
    if has_index:
        ds = _check_index(ds, name, split)
    else:
        ds = ds.add_column(INDEX_COLUMN, np.arange(len(ds), dtype=np.int64), feature=Value("int64"))
    ds = ds.select_columns([IMAGE_COLUMN, LABEL_COLUMN, INDEX_COLUMN])
    _scan_modes(ds, name, split)
    return ds


def _find_image_column(features: Features, name: str) -> str:
    image_cols = [c for c, f in features.items() if isinstance(f, Image)]
    if len(image_cols) == 1:
        return image_cols[0]
    if len(image_cols) > 1:
        aliased = [c for c in image_cols if c in IMAGE_ALIASES]
        if len(aliased) == 1:
            return aliased[0]
        raise DataSchemaError(
            f"data set {name!r} has several image columns {image_cols}; keep one (ds.select_columns / "
            f"remove_columns) or rename the one to use to {IMAGE_COLUMN!r}. Columns: {_describe(features)}"
        )
    # Parquet written without `datasets`' metadata stores images as a plain {bytes, path} struct.
    structs = [c for c, f in features.items() if isinstance(f, dict) and set(f) == {"bytes", "path"}]
    if len(structs) == 1:
        return structs[0]
    raise DataSchemaError(
        f"data set {name!r} has no image column (no datasets.Image feature). Columns: {_describe(features)}. Cast "
        f"the image column with ds.cast_column(col, datasets.Image()); kd_zoo needs {SCHEMA_FEATURES_DOC}."
    )


def _find_label_column(features: Features, label: str, name: str) -> str:
    if label not in ("fine", "coarse"):
        if label in features:
            return label
        raise DataSchemaError(
            f"data set {name!r} has no label column {label!r}; label is 'fine', 'coarse' or a column name. "
            f"Columns: {_describe(features)}"
        )
    if f"{label}_label" in features:
        return f"{label}_label"
    if label == "coarse":
        raise DataSchemaError(
            f"data set {name!r} has no coarse labels (no 'coarse_label' column; CIFAR-100 has one). Use "
            f"label='fine' or name the label column. Columns: {_describe(features)}"
        )
    class_cols = [c for c, f in features.items() if isinstance(f, ClassLabel)]
    if len(class_cols) == 1:
        return class_cols[0]
    candidates = class_cols or [c for c in features if c in LABEL_ALIASES]
    aliased = [c for c in candidates if c in LABEL_ALIASES]
    if len(candidates) == 1:
        return candidates[0]
    if len(aliased) == 1:
        return aliased[0]
    if candidates:
        raise DataSchemaError(
            f"data set {name!r} has several label columns {candidates}; pass label='<column>' to choose. "
            f"Columns: {_describe(features)}"
        )
    raise DataSchemaError(
        f"data set {name!r} has no label column (no ClassLabel feature and none of {', '.join(LABEL_ALIASES)}). "
        f"Columns: {_describe(features)}. Pass label='<column>' or cast one with datasets.ClassLabel."
    )


def _preview(names: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(map(repr, list(names)[:limit]))
    return f"[{shown}{', ...' if len(names) > limit else ''}] ({len(names)} names)"


def _describe(features: Features) -> str:
    return ", ".join(f"{c} ({type(f).__name__})" for c, f in features.items())


def _check_labels(ds: Dataset, num_classes: int, name: str, split: str) -> None:
    labels = ds.select_columns([LABEL_COLUMN]).with_format("arrow")[:][LABEL_COLUMN]
    if labels.null_count:
        rows = np.flatnonzero(np.asarray(labels.is_null()))[:5].tolist()
        raise DataSchemaError(
            f"data set {name!r} split {split!r}: {labels.null_count} rows have no label (rows {rows})"
        )
    values = np.asarray(labels.to_numpy(), dtype=np.int64)
    bad = np.flatnonzero((values < 0) | (values >= num_classes))
    if bad.size:
        examples = ", ".join(f"row {i}: {values[i]}" for i in bad[:5])
        hint = (
            " All labels are -1: this split is unlabelled (ImageNet's 'test' split is); evaluate on 'validation'."
            if bad.size == values.size and (values == -1).all()
            else " Fix or drop those rows, or declare all classes in the ClassLabel."
        )
        raise DataSchemaError(
            f"data set {name!r} split {split!r}: {bad.size} labels outside [0, {num_classes}) ({examples}).{hint}"
        )


def _check_index(ds: Dataset, name: str, split: str) -> Dataset:
    feature = ds.features[INDEX_COLUMN]
    if not (isinstance(feature, Value) and pa.types.is_integer(feature.pa_type)):
        raise DataSchemaError(f"data set {name!r}: column {INDEX_COLUMN!r} is {feature}, not an integer")
    values = ds.select_columns([INDEX_COLUMN]).with_format("arrow")[:][INDEX_COLUMN]
    if values.null_count or pc.min(values).as_py() < 0 or len(pc.unique(values)) != len(values):
        raise DataSchemaError(
            f"data set {name!r} split {split!r}: column {INDEX_COLUMN!r} must hold distinct non-negative integers "
            "(the stable row key); drop the column to number rows 0..N-1"
        )
    if feature.dtype != "int64":
        ds = ds.cast_column(INDEX_COLUMN, Value("int64"))
    return ds


def _scan_modes(ds: Dataset, name: str, split: str) -> None:
    """Read image headers (every row, or an even sample of a big split) and warn once about non-RGB modes."""
    total = len(ds)
    if total > MODE_SCAN_FULL_ROWS:
        rows = np.linspace(0, total - 1, MODE_SCAN_SAMPLE_ROWS).round().astype(np.int64)
        sub = ds.select(rows)
    else:
        rows, sub = np.arange(total), ds
    modes: Counter = Counter()
    position = 0
    for batch in sub.select_columns([IMAGE_COLUMN]).with_format("arrow").iter(batch_size=1024):
        for cell in batch.column(IMAGE_COLUMN).to_pylist():
            with open_cell(cell, int(rows[position])) as im:
                modes[im.mode] += 1
            position += 1
    warn_converted_once(name, split, modes, len(rows), total)
