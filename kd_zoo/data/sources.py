"""Loading one split from any source into the kd_zoo schema: `image`, `label`, `sample_idx`.

A source is a known name (`demo`, `cifar100`, `imagenet-1k`), a Hub id (`uoft-cs/cifar100` with `img` /
`fine_label` / `coarse_label`; `ILSVRC/imagenet-1k` with `image` / `label`), a `save_to_disk` folder, parquet files
(a file, a folder or a glob) or an image folder (one sub-folder per class; `imagefolder:` prefix or detected).
`None` is the embedded demo set (scikit-learn's digits), so every recipe runs offline.

Whatever the source, the result has exactly three columns:

* `image`: a `datasets.Image(mode="RGB")` feature. Grayscale, palette or RGBA images decode as RGB (a documented
  conversion, announced by one warning per split).
* `label`: a `ClassLabel`; class names are the data set's own (`ds.features["label"].names`), never hard-coded.
* `sample_idx`: int64, the row's position in the split's stored order (0..N-1), the key that influence scores and
  the distill mask are joined on. A source that already has a `sample_idx` column (a saved kd_zoo split, or a
  subset of one) keeps it, so a subset still joins on the full split's numbering.

Columns are found generically: the single `Image` feature, and the `ClassLabel` feature (`label="fine"` /
`"coarse"` picks `fine_label` / `coarse_label`; any other value names the column). Bad input is refused here,
before training: missing or ambiguous columns, labels outside `[0, num_classes)`, an empty split, an unknown split
or data set name, and an unreachable or gated Hub data set (`DatasetUnavailableError` says how to authenticate or
how to pass a local copy).
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, IterableDataset, Value

from ..constants import (
    CIFAR100_HUB_ID,
    DEMO_DATASET,
    IMAGE_COLUMN,
    IMAGENET_HUB_ID,
    INDEX_COLUMN,
    LABEL_COLUMN,
)
from ..registry import close_matches
from ._images import open_cell, warn_converted_once
from .cache import resolve_cache_dir
from .errors import DataSchemaError, DatasetUnavailableError, UnknownDatasetError, UnknownSplitError

logger = logging.getLogger(__name__)

# Short names a recipe may use instead of a Hub id; `demo` is the embedded digits.
KNOWN_DATASETS: dict[str, str] = {
    DEMO_DATASET: DEMO_DATASET,
    "cifar100": CIFAR100_HUB_ID,
    "cifar-100": CIFAR100_HUB_ID,
    "imagenet": IMAGENET_HUB_ID,
    "imagenet-1k": IMAGENET_HUB_ID,
}

# Column names taken as the image / label when the features alone do not decide.
IMAGE_ALIASES = ("image", "img")
LABEL_ALIASES = ("label", "labels", "target", "class")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# Image modes are read from the headers of every row up to this many rows, of an even sample beyond.
MODE_SCAN_FULL_ROWS = 60_000
MODE_SCAN_SAMPLE_ROWS = 5_000

SCHEMA_FEATURES_DOC = "image (datasets.Image), label (ClassLabel with names), sample_idx (int64)"

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
_LOCAL_COPY_HINT = (
    "pass a local copy as the source instead: a `save_to_disk` folder, parquet files (a file, a folder or a glob), "
    "or an image folder with one sub-folder per class (`imagefolder:/path/to/dir`)"
)


@dataclass(frozen=True)
class ResolvedSource:
    """What a source string means: its kind, where it is, and the name recorded in fingerprints.

    Attributes:
        kind: 'demo', 'hub', 'disk' (a `save_to_disk` folder), 'parquet' or 'imagefolder'.
        location: the Hub id, the absolute path, or the parquet glob.
        name: the data set name for fingerprints (the Hub id, the path, or 'demo').
    """

    kind: str
    location: str
    name: str


def resolve_source(source: str | os.PathLike | None) -> ResolvedSource:
    """Decide what kind of source `source` is (see the module docstring), without loading anything.

    Raises:
        UnknownDatasetError: `source` is not a known name, an existing path, a parquet glob or a Hub id.
    """
    if source is None:
        return ResolvedSource("demo", DEMO_DATASET, DEMO_DATASET)
    text = os.fspath(source)
    if not text.strip():
        raise UnknownDatasetError("the data set source is an empty string; pass None for the demo data set")
    if text.lower() in KNOWN_DATASETS:
        target = KNOWN_DATASETS[text.lower()]
        return ResolvedSource("demo" if target == DEMO_DATASET else "hub", target, target)
    for prefix in ("imagefolder:", "parquet:", "disk:"):
        if text.startswith(prefix):
            path = Path(text[len(prefix) :]).expanduser().resolve()
            kind = prefix[:-1]
            if kind == "parquet" and glob.has_magic(str(path)):
                return _parquet_glob(str(path), text)
            if not path.exists():
                raise UnknownDatasetError(f"{text!r}: {path} does not exist")
            return ResolvedSource(kind, str(path), str(path))
    path = Path(text).expanduser()
    if path.exists():
        path = path.resolve()
        return ResolvedSource(_local_kind(path), str(path), str(path))
    if glob.has_magic(text):
        return _parquet_glob(str(Path(text).expanduser().absolute()), text)
    if _HUB_ID.match(text):
        return ResolvedSource("hub", text, text)
    hint = close_matches(text.lower(), list(KNOWN_DATASETS))
    hint_text = f" Did you mean {', '.join(map(repr, hint))}?" if hint else ""
    raise UnknownDatasetError(
        f"unknown data set {text!r}.{hint_text} A source is a known name ({', '.join(sorted(KNOWN_DATASETS))}), "
        f"a Hub id 'owner/name', or an existing local path (a save_to_disk folder, parquet files or an image "
        f"folder); no local path {Path(text).expanduser().absolute()} exists. Pass None for the demo data set."
    )


def _parquet_glob(pattern: str, text: str) -> ResolvedSource:
    matches = sorted(glob.glob(pattern, recursive=True))
    parquet = [m for m in matches if m.endswith(".parquet")]
    if not parquet:
        raise UnknownDatasetError(f"{text!r}: the pattern matches no parquet file ({len(matches)} other paths)")
    return ResolvedSource("parquet", pattern, pattern)


def _local_kind(path: Path) -> str:
    """'disk', 'parquet' or 'imagefolder' for an existing local path."""
    if path.is_file():
        if path.suffix == ".parquet":
            return "parquet"
        raise UnknownDatasetError(
            f"{path} is a file but not a parquet file; a local source is a save_to_disk folder, parquet files or an "
            "image folder"
        )
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return "disk"
    for file in path.rglob("*"):  # the first data file decides (an ImageNet folder has a million files)
        if file.suffix == ".parquet":
            return "parquet"
        if file.suffix.lower() in IMAGE_EXTENSIONS:
            return "imagefolder"
    raise UnknownDatasetError(
        f"{path} holds no data set kd_zoo can read: no dataset_dict.json / state.json (save_to_disk), no .parquet "
        f"file and no image ({', '.join(IMAGE_EXTENSIONS)})"
    )


def load_split(
    source: str | os.PathLike | None,
    split: str = "train",
    *,
    revision: str | None = None,
    label: str = "fine",
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    streaming: bool = False,
    class_names: Sequence[str] | None = None,
) -> Dataset | IterableDataset:
    """Load one split of a data set in the kd_zoo schema (see the module docstring).

    Args:
        source: a known name, a Hub id, a local path (save_to_disk folder, parquet file / folder / glob, image
            folder, optionally prefixed `imagefolder:` / `parquet:` / `disk:`), or None for the demo data set.
        split: the split name ('train', 'test', 'validation', ...). Slices like 'train[:10%]' are refused: take the
            full split and `select` rows, so `sample_idx` keeps the full split's numbering.
        revision: Hub revision (branch, tag or commit); Hub ids only.
        label: 'fine' (default) or 'coarse' for CIFAR-100's two label sets, or the name of the label column.
        token: Hub token (default: the one `huggingface-cli login` / `HF_TOKEN` provides).
        cache_dir: kd_zoo cache folder (the demo data set lives there); for other sources, `datasets`' own cache
            goes to `<cache_dir>/hf_datasets` when given, else to its default.
        streaming: return an `IterableDataset` (Hub and file sources) that reads rows as it goes; labels are then
            checked as rows arrive, and `sample_idx` counts rows in stream order.
        class_names: names for an integer label column that is not a `ClassLabel` (e.g. parquet written by
            pandas); ignored when the data set has its own `ClassLabel`, unless they differ (an error).

    Returns:
        A `datasets.Dataset` (an `IterableDataset` when streaming) with columns image, label, sample_idx.

    Raises:
        UnknownDatasetError, UnknownSplitError, DatasetUnavailableError, DataSchemaError (see the module docstring).
    """
    if not isinstance(split, str) or not re.fullmatch(r"[\w.-]+", split):
        raise UnknownSplitError(
            f"split {split!r} is not a plain split name. Load the full split and take rows with `ds.select(...)` / "
            "`ds.filter(...)`, so that sample_idx keeps the full split's numbering."
        )
    src = resolve_source(source)
    if revision is not None and src.kind != "hub":
        raise ValueError(f"revision={revision!r} applies to Hub ids only; {src.name!r} is a {src.kind} source")
    if src.kind == "demo":
        from .demo import demo_dataset  # demo imports this module

        raw: Dataset | IterableDataset = _pick_split(demo_dataset(cache_dir), split, src.name)
        if streaming:
            raw = raw.to_iterable_dataset()
    elif src.kind == "hub":
        raw = _load_hub(src.location, split, revision, token, _hf_cache(cache_dir), streaming)
    elif src.kind == "disk":
        raw = _load_disk(Path(src.location), split)
        if streaming:
            raw = raw.to_iterable_dataset()
    else:
        raw = _load_files(src, split, _hf_cache(cache_dir), streaming)
    return to_schema(raw, label=label, class_names=class_names, name=src.name, split=split)


def _hf_cache(cache_dir: str | os.PathLike | None) -> str | None:
    return None if cache_dir is None else str(resolve_cache_dir(cache_dir) / "hf_datasets")


def _pick_split(dd: DatasetDict | datasets.IterableDatasetDict, split: str, name: str) -> Any:
    if split not in dd:
        available = list(dd)
        hint = close_matches(split, available)
        hint_text = f" Did you mean {', '.join(map(repr, hint))}?" if hint else ""
        raise UnknownSplitError(
            f"data set {name!r} has no split {split!r}.{hint_text} Available splits: {', '.join(available) or 'none'}."
        )
    return dd[split]


def _load_disk(path: Path, split: str) -> Dataset:
    obj = datasets.load_from_disk(str(path))
    if isinstance(obj, DatasetDict):
        return _pick_split(obj, split, str(path))
    stored = obj.split
    if stored is not None and str(stored) != split:
        raise UnknownSplitError(
            f"{path} holds the single split {str(stored)!r}, not {split!r}; pass split={str(stored)!r}, or save a "
            "DatasetDict with every split"
        )
    if stored is None:
        logger.info("%s holds one data set without a split name; using it as split %r", path, split)
    return obj


def _load_files(src: ResolvedSource, split: str, cache_dir: str | None, streaming: bool) -> Any:
    """Parquet or image-folder sources through `datasets`' packaged builders."""
    builder = "parquet" if src.kind == "parquet" else "imagefolder"
    kwargs: dict[str, Any] = {"cache_dir": cache_dir, "streaming": streaming}
    if src.kind == "parquet" and not Path(src.location).is_dir():
        # One file or a glob is one split: the one asked for.
        kwargs["data_files"] = {split: src.location}
    else:
        # A folder's splits come from its file / sub-folder names (train-*.parquet, test/...), as `datasets` infers.
        kwargs["data_dir"] = src.location
    try:
        dd = datasets.load_dataset(builder, **kwargs)
    except (datasets.exceptions.DatasetGenerationError, pa.ArrowInvalid, OSError) as e:
        raise DataSchemaError(f"cannot read {src.kind} data set {src.location}: {e}") from e
    return _pick_split(dd, split, src.name)


# -- the Hub --------------------------------------------------------------------------------------------------------
def _load_hub(
    hub_id: str, split: str, revision: str | None, token: str | bool | None, cache_dir: str | None, streaming: bool
) -> Any:
    try:
        return datasets.load_dataset(
            hub_id, split=split, revision=revision, token=token, cache_dir=cache_dir, streaming=streaming
        )
    except ValueError as e:
        match = re.search(r"Unknown split \"?([^\".]+)\"?\. Should be one of (\[.*?\])", str(e))
        if match:
            raise UnknownSplitError(
                f"data set {hub_id!r} has no split {split!r}; available splits: {match.group(2)}"
            ) from e
        raise
    except Exception as e:
        reason = hub_failure_reason(e)
        if reason is None:
            raise
        raise DatasetUnavailableError(_unavailable_message(hub_id, split, reason)) from e


def hub_failure_reason(error: BaseException) -> str | None:
    """Why a Hub load failed, if it is an access problem (offline, no token, gated, not found); else None."""
    from huggingface_hub import errors as hub_errors

    access_types: tuple[type[BaseException], ...] = (
        ConnectionError,
        TimeoutError,
        hub_errors.OfflineModeIsEnabled,
        hub_errors.GatedRepoError,
        hub_errors.LocalTokenNotFoundError,
        hub_errors.RepositoryNotFoundError,
        datasets.exceptions.DatasetNotFoundError,
    )
    try:
        import httpx

        access_types += (httpx.TransportError,)
    except ImportError:  # huggingface_hub < 1.0 uses requests, whose errors are ConnectionError subclasses
        pass
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        status = getattr(getattr(current, "response", None), "status_code", None)
        if isinstance(current, access_types) or status in (401, 403, 404):
            text = str(current).strip().splitlines()[0] if str(current).strip() else type(current).__name__
            return f"{type(current).__name__}: {text}"
        current = current.__cause__ or current.__context__
    return None


def _offline_flags() -> list[str]:
    true_values = datasets.config.ENV_VARS_TRUE_VALUES
    flags = [v for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if os.environ.get(v, "").upper() in true_values]
    if not flags and getattr(datasets.config, "HF_HUB_OFFLINE", False):
        flags.append("datasets.config.HF_HUB_OFFLINE")
    return flags


def _unavailable_message(hub_id: str, split: str, reason: str) -> str:
    offline = _offline_flags()
    offline_text = f" Offline mode is on ({', '.join(offline)}); unset it to reach the Hub." if offline else ""
    return (
        f"cannot load split {split!r} of the Hub data set {hub_id!r}: {reason}.{offline_text} To fix it, either\n"
        f"  - authenticate: accept the data set's terms on https://huggingface.co/datasets/{hub_id} (gated data "
        "sets such as ImageNet), then run `huggingface-cli login` or set HF_TOKEN (or pass token=...), with the "
        "Hub reachable; or\n"
        f"  - {_LOCAL_COPY_HINT}.\n"
        f"(If you meant a local folder: no path {Path(hub_id).absolute()} exists.)"
    )


# -- the schema -----------------------------------------------------------------------------------------------------
def to_schema(
    ds: Dataset | IterableDataset,
    *,
    label: str = "fine",
    class_names: Sequence[str] | None = None,
    name: str = "dataset",
    split: str = "train",
) -> Dataset | IterableDataset:
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
    if features is None:
        raise DataSchemaError(
            f"data set {name!r} split {split!r}: its features are unknown (a streaming source without metadata), so "
            "the image and label columns cannot be found; load it without streaming"
        )
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
                f"names are unknown. Pass class_names=[...] (one name per class, in label order), or cast it: "
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
    if isinstance(ds, IterableDataset):
        return _stream_schema(ds, has_index, num_classes, name, split)
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


def _stream_schema(ds: IterableDataset, has_index: bool, num_classes: int, name: str, split: str) -> IterableDataset:
    """Streaming: one generator numbers rows in stream order and checks labels as they arrive."""
    raw = ds.cast_column(IMAGE_COLUMN, Image(decode=False))  # pass bytes through; decode at the consumer
    features = Features(
        {IMAGE_COLUMN: Image(mode="RGB"), LABEL_COLUMN: ds.features[LABEL_COLUMN], INDEX_COLUMN: Value("int64")}
    )
    return IterableDataset.from_generator(
        _stream_rows,
        features=features,
        gen_kwargs={"stream": raw, "has_index": has_index, "num_classes": num_classes, "where": f"{name!r} {split!r}"},
    )


def _stream_rows(stream: IterableDataset, has_index: bool, num_classes: int, where: str) -> Iterator[dict]:
    count = 0
    for position, row in enumerate(stream):
        value = row[LABEL_COLUMN]
        if value is None or not 0 <= value < num_classes:
            raise DataSchemaError(f"data set {where}: row {position} has label {value}, outside [0, {num_classes})")
        index = row[INDEX_COLUMN] if has_index else position
        count += 1
        yield {IMAGE_COLUMN: row[IMAGE_COLUMN], LABEL_COLUMN: value, INDEX_COLUMN: index}
    if count == 0:
        raise DataSchemaError(f"data set {where} is empty (0 rows); check the source and split name")
