"""Loading one split from any source into the kd_zoo schema (`kd_zoo.data.schema`).

A source is a known name (`demo`, `cifar100`, `imagenet-1k`), a Hub id (`uoft-cs/cifar100` with `img` /
`fine_label` / `coarse_label`; `ILSVRC/imagenet-1k` with `image` / `label`), a `save_to_disk` folder, parquet files
(a file, a folder or a glob) or an image folder (one sub-folder per class; `imagefolder:` prefix or detected).
`None` is the embedded demo set (scikit-learn's digits), so every recipe runs offline.

Bad input is refused here, before training: an unknown split or data set name, and an unreachable or gated Hub
data set (`DatasetUnavailableError` says how to authenticate or how to pass a local copy); the schema checks are
`to_schema`'s.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
from datasets import Dataset, DatasetDict

from ..constants import CIFAR100_HUB_ID, DEMO_DATASET, IMAGENET_HUB_ID
from ..registry import close_matches
from .cache import resolve_cache_dir
from .demo import demo_dataset
from .errors import DataSchemaError, DatasetUnavailableError, UnknownDatasetError, UnknownSplitError
from .hub_errors import hub_failure_reason, unavailable_message
from .schema import to_schema

logger = logging.getLogger(__name__)

# Short names a recipe may use instead of a Hub id; `demo` is the embedded digits.
KNOWN_DATASETS: dict[str, str] = {
    DEMO_DATASET: DEMO_DATASET,
    "cifar100": CIFAR100_HUB_ID,
    "cifar-100": CIFAR100_HUB_ID,
    "imagenet": IMAGENET_HUB_ID,
    "imagenet-1k": IMAGENET_HUB_ID,
}

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")


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
    class_names: Sequence[str] | None = None,
) -> Dataset:
    """Load one split of a data set in the kd_zoo schema (see the module docstring).

    Args:
        source: a known name, a Hub id, a local path (save_to_disk folder, parquet file / folder / glob, image
            folder, optionally prefixed `imagefolder:` / `parquet:` / `disk:`), or None for the demo data set.
        split: the split name ('train', 'test', 'validation', ...). Slices like 'train[:10%]' are refused: take the
            full split and `select` rows, so `sample_idx` keeps the full split's numbering.
        revision: Hub revision (branch, tag or commit); Hub ids only.
        label: 'fine' (default) or 'coarse' for CIFAR-100's two label sets, or the name of the label column.
        token: Hub token (default: the one `hf auth login` / `HF_TOKEN` provides).
        cache_dir: kd_zoo cache folder (the demo data set lives there); for other sources, `datasets`' own cache
            goes to `<cache_dir>/hf_datasets` when given, else to its default.
        class_names: names for an integer label column that is not a `ClassLabel` (e.g. parquet written by
            pandas); ignored when the data set has its own `ClassLabel`, unless they differ (an error).

    Returns:
        A `datasets.Dataset` with columns image, label, sample_idx.

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
        raw = _pick_split(demo_dataset(cache_dir), split, src.name)
    elif src.kind == "hub":
        raw = _load_hub(src.location, split, revision, token, _hf_cache(cache_dir))
    elif src.kind == "disk":
        raw = _load_disk(Path(src.location), split)
    else:
        raw = _load_files(src, split, _hf_cache(cache_dir))
    return to_schema(raw, label=label, class_names=class_names, name=src.name, split=split)


def _hf_cache(cache_dir: str | os.PathLike | None) -> str | None:
    return None if cache_dir is None else str(resolve_cache_dir(cache_dir) / "hf_datasets")


def _pick_split(dd: DatasetDict, split: str, name: str) -> Dataset:
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


def _load_files(src: ResolvedSource, split: str, cache_dir: str | None) -> Dataset:
    """Parquet or image-folder sources through `datasets`' packaged builders."""
    builder = "parquet" if src.kind == "parquet" else "imagefolder"
    kwargs: dict[str, Any] = {"cache_dir": cache_dir}
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
    except ValueError as e:
        _raise_if_empty(e, src.name, split)
        raise
    return _pick_split(dd, split, src.name)


def _raise_if_empty(error: ValueError, name: str, split: str) -> None:
    """`datasets` reports a split with no rows as 'Instruction "test" corresponds to no data!': say it plainly."""
    if "corresponds to no data" in str(error):
        raise DataSchemaError(
            f"data set {name!r}: a split has no rows ({error}); the run needs rows in split {split!r}: check the "
            "source, or name another split (data.train_split / data.eval_split)"
        ) from error


def _load_hub(
    hub_id: str, split: str, revision: str | None, token: str | bool | None, cache_dir: str | None
) -> Dataset:
    try:
        return datasets.load_dataset(hub_id, split=split, revision=revision, token=token, cache_dir=cache_dir)
    except ValueError as e:
        match = re.search(r"Unknown split \"?([^\".]+)\"?\. Should be one of (\[.*?\])", str(e))
        if match:
            raise UnknownSplitError(
                f"data set {hub_id!r} has no split {split!r}; available splits: {match.group(2)}"
            ) from e
        _raise_if_empty(e, hub_id, split)
        raise
    except Exception as e:
        reason = hub_failure_reason(e)
        if reason is None:
            raise
        raise DatasetUnavailableError(unavailable_message(hub_id, split, reason)) from e
