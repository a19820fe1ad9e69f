"""Score sets: one score per training sample, as a `datasets.Dataset`, with what they were computed from.

Columns: `sample_idx` (int64, the key), `score` (float64), `teacher_pred` (int64, the teacher's top-1 class),
`teacher_correct` (bool) and `label` (int64). Metadata (`ScoreSet.metadata`): the format tag, the scorer and its
settings (the damping used, ...), the teacher (architecture, weights, `weights_fingerprint`), the data fingerprint
of the split (`kd_zoo.data.dataset_fingerprint`), the kd_zoo version, N, the number of processes, and where the
teacher's mistakes fall (`mistakes_report`).

On disk, a score set is the folder `kd_zoo.hub.export_scores` writes, which the Hub and
`datasets.load_dataset(folder, split="train")` read as is:

    folder/
      README.md                           data set card (model_cards/scores_card.md); its YAML front matter holds
                                          the metadata under `kd_zoo:`
      data/train-00000-of-00001.parquet   the columns (`ScoreSet.to_arrow`); the metadata JSON also in the schema
                                          metadata (key `kd_zoo`), so a bare parquet file keeps it

`ScoreSet.load` reads such a folder, a bare parquet file, or a `save_to_disk` folder of `ScoreSet.dataset` (the
metadata JSON is kept in `dataset.info.description`). `ScoreSet.join(train)` aligns the scores with a split,
refusing scores of other data, of another teacher, and missing, duplicated or foreign indices; the aligned scores
give the distill mask (`AlignedScores.distill_mask`, through `kd_zoo.selection.select`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml
from datasets import Dataset, DatasetInfo, Features, Value, load_from_disk
from datasets.table import InMemoryTable
from torch import Tensor, nn

from ..constants import (
    INDEX_COLUMN,
    LABEL_COLUMN,
    SCORE_COLUMN,
    TEACHER_CORRECT_COLUMN,
    TEACHER_PRED_COLUMN,
)
from ..data import FingerprintMismatchError, TensorImageSet, check_fingerprint, dataset_fingerprint
from ..loading import weights_fingerprint
from .errors import ScoreSetFormatError, ScoreSetIndexError, TeacherMismatchError
from .strategies import DEFAULT_FRACTION, DEFAULT_STRATEGY, mask_by_index, mistakes_report, select

FORMAT = "kd_zoo.ScoreSet/1"
METADATA_KEY = b"kd_zoo"
PARQUET_PATH = "data/train-00000-of-00001.parquet"
FEATURES = Features(
    {
        INDEX_COLUMN: Value("int64"),
        SCORE_COLUMN: Value("float64"),
        TEACHER_PRED_COLUMN: Value("int64"),
        TEACHER_CORRECT_COLUMN: Value("bool"),
        LABEL_COLUMN: Value("int64"),
    }
)
_NUMPY_DTYPES = {
    INDEX_COLUMN: np.int64,
    SCORE_COLUMN: np.float64,
    TEACHER_PRED_COLUMN: np.int64,
    TEACHER_CORRECT_COLUMN: np.bool_,
    LABEL_COLUMN: np.int64,
}
RECOMPUTE_COMMAND = (
    "`python recipes/score.py teacher.model=ARCH teacher.weights=WEIGHTS data.name=DATA data.train_split=SPLIT "
    "run.output_dir=DIR` (or `accelerate launch recipes/score.py ...`)"
)
RECOMPUTE_HINT = (
    f"Fix: recompute the scores for this teacher and split with {RECOMPUTE_COMMAND}, or use the teacher and data "
    "the score set was computed with."
)


def _examples(values: np.ndarray, n: int = 5) -> str:
    shown = ", ".join(str(int(v)) for v in values[:n])
    return f"[{shown}{', ...' if len(values) > n else ''}]"


@dataclass
class AlignedScores:
    """Scores aligned with a split's rows (`ScoreSet.join`): position i is the split's sample `sample_idx[i]`."""

    sample_idx: Tensor
    scores: Tensor
    teacher_pred: Tensor
    teacher_correct: Tensor
    metadata: dict[str, Any]

    def distill_mask(
        self, fraction: float = DEFAULT_FRACTION, strategy: str = DEFAULT_STRATEGY, seed: int = 0
    ) -> Tensor:
        """bool, indexed by `sample_idx` value (True = distilled, Dt), as `kd_zoo.engine.fit(distill_mask=...)`
        reads it: `kd_zoo.selection.select` over the split's scores."""
        return mask_by_index(select(self.scores, self.sample_idx, fraction, strategy, seed), self.sample_idx)

    def mistakes(self, fraction: float = DEFAULT_FRACTION, seed: int = 0) -> dict[str, Any]:
        """Where the teacher's mistakes fall under each strategy (`kd_zoo.selection.mistakes_report`)."""
        return mistakes_report(self.scores, self.sample_idx, self.teacher_correct, fraction, seed)


class ScoreSet:
    """One score per sample of a split, with metadata (see the module docstring).

    Args:
        dataset: a `datasets.Dataset` with the columns sample_idx, score, teacher_pred, teacher_correct, label.
        metadata: at least `format`, `scorer`, `data_fingerprint` and `teacher.weights_fingerprint`.
    """

    def __init__(self, dataset: Dataset, metadata: dict[str, Any]):
        missing = [c for c in FEATURES if c not in dataset.column_names]
        if missing:
            raise ScoreSetFormatError(
                f"a score set needs the columns {list(FEATURES)}; missing {missing} in {dataset.column_names}"
            )
        _check_metadata(metadata)
        table = dataset.select_columns(list(FEATURES)).with_format("arrow")[:]
        self._columns = {c: np.asarray(table.column(c).to_numpy(), dtype=_NUMPY_DTYPES[c]) for c in FEATURES}
        self.metadata = metadata

    # -- construction ----------------------------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        sample_idx: Tensor | np.ndarray,
        scores: Tensor | np.ndarray,
        teacher_pred: Tensor | np.ndarray,
        teacher_correct: Tensor | np.ndarray,
        labels: Tensor | np.ndarray,
        metadata: dict[str, Any],
    ) -> ScoreSet:
        """A score set from one array per column (any order of rows)."""
        arrays = (sample_idx, scores, teacher_pred, teacher_correct, labels)
        columns = {
            c: np.asarray(a.detach().cpu().numpy() if isinstance(a, Tensor) else a, dtype=_NUMPY_DTYPES[c])
            for c, a in zip(FEATURES, arrays, strict=True)
        }
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            raise ValueError(f"the columns have different lengths: { {c: len(v) for c, v in columns.items()} }")
        return cls(_dataset(columns), metadata)

    # -- access ----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._columns[INDEX_COLUMN])

    def __repr__(self) -> str:
        teacher = self.metadata.get("teacher", {})
        return (
            f"ScoreSet(scorer={self.scorer!r}, rows={len(self)}, teacher={teacher.get('name')!r} "
            f"{str(teacher.get('weights_fingerprint'))[:12]}, data={self.metadata['data_fingerprint'].get('name')!r}/"
            f"{self.metadata['data_fingerprint'].get('split')!r})"
        )

    @property
    def scorer(self) -> str:
        return str(self.metadata["scorer"])

    @property
    def dataset(self) -> Dataset:
        """The columns as a `datasets.Dataset` (the metadata JSON in `info.description`, kept by `save_to_disk`)."""
        return _dataset(self._columns, description=json.dumps(self.metadata, sort_keys=True))

    def column(self, name: str) -> np.ndarray:
        """One column as a numpy array (a copy)."""
        return self._columns[name].copy()

    @property
    def sample_idx(self) -> np.ndarray:
        return self.column(INDEX_COLUMN)

    @property
    def scores(self) -> np.ndarray:
        return self.column(SCORE_COLUMN)

    @property
    def teacher_correct(self) -> np.ndarray:
        return self.column(TEACHER_CORRECT_COLUMN)

    # -- disk ------------------------------------------------------------------------------------------------
    def to_arrow(self, metadata: dict[str, Any] | None = None) -> pa.Table:
        """The columns as a pyarrow Table whose schema metadata carries the metadata JSON (and the HF features);
        `metadata` replaces `self.metadata` there (`kd_zoo.hub.export_scores` writes the public copy)."""
        table = pa.table({c: pa.array(v) for c, v in self._columns.items()})
        schema_metadata = {
            METADATA_KEY: json.dumps(self.metadata if metadata is None else metadata, sort_keys=True).encode(),
            b"huggingface": json.dumps({"info": {"features": FEATURES.to_dict()}}).encode(),
        }
        return table.replace_schema_metadata(schema_metadata)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ScoreSet:
        """Read a score set folder (`kd_zoo.hub.export_scores`), a bare parquet file, or a `save_to_disk` folder of
        `ScoreSet.dataset`."""
        path = Path(path)
        if path.is_file():
            if path.suffix != ".parquet":
                raise ScoreSetFormatError(f"{path} is not a parquet file; pass a score set folder or its .parquet")
            files = [path]
        elif (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
            ds = load_from_disk(str(path))
            try:
                metadata = json.loads(ds.info.description or "")
            except json.JSONDecodeError:
                raise ScoreSetFormatError(
                    f"{path} is a save_to_disk folder without score-set metadata in its info.description; save "
                    "ScoreSet.dataset (not a bare Dataset), or write the folder with kd_zoo.hub.export_scores"
                ) from None
            return cls(ds, metadata)
        elif path.is_dir():
            files = sorted((path / "data").glob("*.parquet")) or sorted(path.glob("*.parquet"))
            if not files:
                raise ScoreSetFormatError(
                    f"no score set in {path}: expected data/*.parquet (kd_zoo.hub.export_scores), a .parquet file, "
                    "or a save_to_disk folder"
                )
        else:
            raise FileNotFoundError(f"score set {path} not found")
        tables = [pq.read_table(f) for f in files]
        raw = (tables[0].schema.metadata or {}).get(METADATA_KEY)
        if raw is not None:
            metadata = json.loads(raw)
        else:
            metadata = _card_metadata(files[0].parent.parent / "README.md") or _card_metadata(
                files[0].parent / "README.md"
            )
            if metadata is None:
                raise ScoreSetFormatError(
                    f"{files[0]} has no kd_zoo metadata (schema key 'kd_zoo', or a README.md with a 'kd_zoo:' "
                    "section): it was not written by kd_zoo.hub.export_scores"
                )
        table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables])
        missing = [c for c in FEATURES if c not in table.column_names]
        if missing:
            raise ScoreSetFormatError(f"{path} lacks the columns {missing} (has {table.column_names})")
        columns = {c: np.asarray(table.column(c).to_numpy(), dtype=_NUMPY_DTYPES[c]) for c in FEATURES}
        return cls(_dataset(columns), metadata)

    # -- joining ---------------------------------------------------------------------------------------------
    def join(
        self, train: TensorImageSet | Dataset, teacher_fingerprint: str | nn.Module | None = None
    ) -> AlignedScores:
        """The scores aligned with `train`'s rows, after checking they belong to this data and teacher.

        Args:
            train: the split (a `TensorImageSet`, or a `datasets.Dataset` in the kd_zoo schema).
            teacher_fingerprint: the teacher in use (a module, or its `kd_zoo.weights_fingerprint`);
                None skips the teacher check.

        Raises:
            TeacherMismatchError: the scores come from other teacher weights.
            FingerprintMismatchError: the scores come from other data.
            ScoreSetIndexError: an index of the split is missing, or the score set has duplicated or foreign
                indices, or labels that disagree with the split's.
        """
        what = f"the score set ({self.scorer}, teacher {self.metadata['teacher'].get('name')})"
        if teacher_fingerprint is not None:
            if isinstance(teacher_fingerprint, nn.Module):
                teacher_fingerprint = weights_fingerprint(teacher_fingerprint)
            stored = self.metadata["teacher"]["weights_fingerprint"]
            if teacher_fingerprint != stored:
                raise TeacherMismatchError(
                    f"{what} was computed with other teacher weights:\n  - stored weights_fingerprint {stored}\n"
                    f"  - in use                    {teacher_fingerprint}\n"
                    f"(stored weights: {self.metadata['teacher'].get('weights')!r}). {RECOMPUTE_HINT}"
                )
        stored_fp = self.metadata["data_fingerprint"]
        if isinstance(train, TensorImageSet):
            actual_fp, train_idx, train_labels = train.fingerprint, train.sample_idx.numpy(), train.labels.numpy()
        elif isinstance(train, Dataset):
            actual_fp = dataset_fingerprint(
                train, name=str(stored_fp.get("name")), split=str(stored_fp.get("split")), revision=None
            )
            train_idx = np.asarray(train[INDEX_COLUMN], dtype=np.int64)
            train_labels = np.asarray(train[LABEL_COLUMN], dtype=np.int64)
        else:
            raise TypeError(f"train must be a TensorImageSet or a datasets.Dataset, got {type(train).__name__}")
        try:
            check_fingerprint(stored_fp, actual_fp, what)
        except FingerprintMismatchError as e:
            raise FingerprintMismatchError(f"{e}\nTo recompute the scores: {RECOMPUTE_COMMAND}.") from None

        idx = self._columns[INDEX_COLUMN]
        unique, counts = np.unique(idx, return_counts=True)
        duplicated = unique[counts > 1]
        missing = np.setdiff1d(train_idx, idx)
        foreign = np.setdiff1d(idx, train_idx)
        if len(duplicated) or len(missing) or len(foreign) or len(np.unique(train_idx)) != len(train_idx):
            problems = []
            if len(missing):
                problems.append(f"{len(missing)} sample_idx of the split have no score, e.g. {_examples(missing)}")
            if len(duplicated):
                problems.append(
                    f"{len(duplicated)} sample_idx appear more than once in the score set, e.g. {_examples(duplicated)}"
                )
            if len(foreign):
                problems.append(
                    f"{len(foreign)} sample_idx of the score set are not in the split, e.g. {_examples(foreign)}"
                )
            if len(np.unique(train_idx)) != len(train_idx):
                problems.append("the split itself has duplicated sample_idx")
            raise ScoreSetIndexError(
                f"{what} ({len(idx)} rows) does not cover the split ({len(train_idx)} rows) exactly once:\n  - "
                + "\n  - ".join(problems)
                + f"\n{RECOMPUTE_HINT}"
            )
        order = np.argsort(idx, kind="stable")
        pos = order[np.searchsorted(idx[order], train_idx)]
        labels = self._columns[LABEL_COLUMN][pos]
        wrong = np.flatnonzero(labels != train_labels)
        if len(wrong):
            raise ScoreSetIndexError(
                f"{what}: {len(wrong)} samples have another label in the score set than in the split (e.g. "
                f"sample_idx {_examples(train_idx[wrong])}): its sample_idx do not refer to these rows. "
                f"{RECOMPUTE_HINT}"
            )
        return AlignedScores(
            sample_idx=torch.from_numpy(np.ascontiguousarray(train_idx)).clone(),
            scores=torch.from_numpy(self._columns[SCORE_COLUMN][pos]),
            teacher_pred=torch.from_numpy(self._columns[TEACHER_PRED_COLUMN][pos]),
            teacher_correct=torch.from_numpy(self._columns[TEACHER_CORRECT_COLUMN][pos]),
            metadata=self.metadata,
        )


def _dataset(columns: dict[str, np.ndarray], description: str | None = None) -> Dataset:
    """A `datasets.Dataset` straight from Arrow arrays (`Dataset.from_dict` encodes value by value in Python)."""
    table = pa.table({c: pa.array(columns[c]) for c in FEATURES}, schema=FEATURES.arrow_schema)
    return Dataset(InMemoryTable(table), info=DatasetInfo(description=description, features=FEATURES))


def _check_metadata(metadata: dict[str, Any]) -> None:
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        found = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
        raise ScoreSetFormatError(f"not {FORMAT} metadata (format {found!r})")
    missing = [k for k in ("scorer", "data_fingerprint", "teacher") if k not in metadata]
    if missing or "weights_fingerprint" not in metadata.get("teacher", {}):
        raise ScoreSetFormatError(
            f"score-set metadata lacks {missing or ['teacher.weights_fingerprint']}; it has {sorted(metadata)}"
        )


def _card_metadata(readme: Path) -> dict[str, Any] | None:
    """The `kd_zoo:` section of a dataset card's YAML front matter, if any."""
    if not readme.is_file():
        return None
    match = re.match(r"^---\n(.*?)\n---", readme.read_text(encoding="utf-8"), flags=re.S)
    if not match:
        return None
    front = yaml.safe_load(match.group(1)) or {}
    return front.get("kd_zoo") if isinstance(front, dict) else None
