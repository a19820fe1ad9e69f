"""Finished runs as the zoo publishes them: find them under a folder and read their cards and score sets.

A finished run is a folder holding `model/` (written by `kd_zoo.hub.export_model`: `README.md`, `config.json`,
`model.safetensors`) and, optionally, `scores/` (a score set written by `kd_zoo.hub.export_scores`, or one folder
per scorer). `recipes/train_teacher.py` and `recipes/distill.py` lay their runs out that way (`export_run`), and
`recipes/push_zoo.py` publishes them (`kd_zoo.hub.publish`) and writes the results table (`kd_zoo.hub.tables`):

    runs = collect_runs("runs/")             # every run checked first: RunFolderError names each bad folder
    publish_runs(runs, "kd-zoo")             # one create_repo + upload_folder per repo
    write_tables(runs, "kd-zoo", readme="README.md", table="model_cards/zoo_results.md")

Repos: a model goes to `ORG/<model_id>` (the card's `model_name`, e.g. `lrds_resnet8x4.lrds_resnet32x4_cifar100`);
a score set to the data set repo `ORG/<data>-<teacher>-<scorer>-scores` (`kd_zoo.hub.scores_repo_name`), published
once when several runs hold the same scores. Several seeds of one model id share its repo: the run whose top-1 is
closest to the mean of the seeds is published, and the table reports mean +- sample standard deviation over n.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard

from ..selection import ScoreSet
from .cards import scores_repo_name
from .export import MODEL_FILES
from .privacy import find_private_content

_CARD_ROWS = {
    "teacher": "teacher",
    "method": "method",
    "Label Revision": "label_revision",
    "Data Selection": "data_selection",
    "seed": "seed",
}


class RunFolderError(ValueError):
    """A run folder cannot be published or tabulated (the message names it); raised before anything is uploaded."""


@dataclass(frozen=True)
class ModelResult:
    """One finished run's model, as its card describes it."""

    folder: Path
    model_id: str
    architecture: str
    dataset: str
    teacher: str
    method: str
    label_revision: str
    data_selection: str
    seed: int | None
    top1: float
    top5: float

    @property
    def run_dir(self) -> Path:
        return self.folder.parent


@dataclass(frozen=True)
class ScoreSetFolder:
    """A score set folder of a finished run."""

    folder: Path
    name: str  # the data set repo name (without the organisation)
    metadata: dict[str, Any]

    @property
    def identity(self) -> tuple[Any, ...]:
        """What makes two score sets the same: teacher weights, data content, scorer and its settings."""
        meta = self.metadata
        return (
            meta["teacher"]["weights_fingerprint"],
            meta["data_fingerprint"].get("content_sha256"),
            meta["scorer"],
            json.dumps(meta.get("settings", {}), sort_keys=True),
        )


@dataclass
class FinishedRuns:
    """The finished runs found under a folder."""

    runs_dir: Path
    models: list[ModelResult]
    score_sets: list[ScoreSetFolder]


@dataclass(frozen=True)
class ResultRow:
    """One model id of the table: its runs (one per seed) aggregated."""

    runs: tuple[ModelResult, ...]

    @property
    def first(self) -> ModelResult:
        return self.runs[0]

    @property
    def n(self) -> int:
        return len(self.runs)

    def mean_std(self, metric: str) -> tuple[float, float | None]:
        values = [getattr(r, metric) for r in self.runs]
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None

    @property
    def published(self) -> ModelResult:
        """The run whose weights go to the repo: top-1 closest to the mean over seeds (ties: lower seed)."""
        mean = self.mean_std("top1")[0]
        return min(self.runs, key=lambda r: (abs(r.top1 - mean), r.seed if r.seed is not None else 1 << 62))


def find_run_dirs(runs_dir: str | Path) -> list[Path]:
    """Folders under `runs_dir` (itself included) with a `model/` folder holding an exported model's files."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise RunFolderError(f"{runs_dir} is not a folder of runs")
    found = {
        model.parent
        for model in runs_dir.rglob("model")
        if model.is_dir() and any((model / name).exists() for name in MODEL_FILES)
    }
    return sorted(found)


def _card_rows(text: str) -> dict[str, str]:
    """The `| key | value |` rows of a model card's table that `model_cards/model_card.md` writes."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] in _CARD_ROWS:
            rows[_CARD_ROWS[cells[0]]] = cells[1]
    return rows


def read_model(folder: str | Path) -> ModelResult:
    """A run's exported model folder, read back from its card (`model-index` top-1 / top-5, `kd_zoo:` metadata).

    Raises:
        RunFolderError: files are missing, the card cannot be read or lacks its model name or top-1 / top-5.
    """
    folder = Path(folder)
    missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if missing:
        raise RunFolderError(
            f"{folder} lacks {missing}: not a finished export (kd_zoo.hub.export_model writes {list(MODEL_FILES)})"
        )
    try:
        card = ModelCard.load(folder / "README.md")
    except Exception as err:  # huggingface_hub raises several types for a malformed card
        raise RunFolderError(f"{folder / 'README.md'} is not a readable model card: {err}") from None
    data = card.data
    metrics = {r.metric_name: r.metric_value for r in (data.eval_results or [])}
    absent_metrics = [name for name in ("top-1", "top-5") if not isinstance(metrics.get(name), int | float)]
    lacking = ([] if data.model_name else ["the model name"]) + (
        [f"the metric(s) {absent_metrics}"] if absent_metrics else []
    )
    if lacking:
        raise RunFolderError(
            f"{folder / 'README.md'} lacks {' and '.join(lacking)} in its model-index metadata: re-export the run's "
            "model with kd_zoo.hub.export_model (run_card_fields gives the fields)"
        )
    try:
        architecture = json.loads((folder / "config.json").read_text()).get("architecture") or "?"
    except json.JSONDecodeError as err:
        raise RunFolderError(f"{folder / 'config.json'} is not valid JSON: {err}") from None
    meta = {**_card_rows(card.text), **(data.to_dict().get("kd_zoo") or {})}
    seed = meta.get("seed")
    try:
        seed = int(seed) if seed is not None else None
    except (TypeError, ValueError):
        seed = None
    result = data.eval_results[0]
    return ModelResult(
        folder=folder,
        model_id=str(data.model_name),
        architecture=str(architecture),
        dataset=str(result.dataset_name or result.dataset_type),
        teacher=str(meta.get("teacher", "?")),
        method=str(meta.get("method", "?")),
        label_revision=str(meta.get("label_revision", "?")),
        data_selection=str(meta.get("data_selection", "?")),
        seed=seed,
        top1=float(metrics["top-1"]),
        top5=float(metrics["top-5"]),
    )


def read_score_sets(run_dir: str | Path) -> list[ScoreSetFolder]:
    """A run's `scores/` folder: one score set, or one per sub-folder (several scorers); none without `scores/`.

    Raises:
        RunFolderError: `scores/` holds no score set, or one without its card or metadata.
    """
    scores = Path(run_dir) / "scores"
    if not scores.is_dir():
        return []

    def is_score_set(path: Path) -> bool:
        return (path / "README.md").is_file() or (path / "data").is_dir()

    folders = [scores] if is_score_set(scores) else sorted(p for p in scores.iterdir() if is_score_set(p))
    if not folders:
        raise RunFolderError(
            f"{scores} holds no score set (README.md + data/*.parquet, as kd_zoo.hub.export_scores writes)"
        )
    found = []
    for folder in folders:
        if not (folder / "README.md").is_file():
            raise RunFolderError(
                f"{folder} has no README.md data set card: write it again with kd_zoo.hub.export_scores"
            )
        try:
            metadata = ScoreSet.load(folder).metadata
        except Exception as err:  # ScoreSetFormatError, or an unreadable parquet file
            raise RunFolderError(f"{folder} is not a readable score set: {err}") from None
        found.append(ScoreSetFolder(folder, scores_repo_name(metadata), metadata))
    return found


def collect_runs(runs_dir: str | Path, *, check_private: bool = True) -> FinishedRuns:
    """Every finished run under `runs_dir`, all checked before anything else happens.

    Checks: each run's model card has its model name and top-1 / top-5, each score set loads, no two runs of a
    model share a seed, and (with `check_private`) no folder holds a token or a local absolute path
    (`kd_zoo.hub.find_private_content`).

    Raises:
        RunFolderError: no finished run, or the list of every bad folder and why.
    """
    runs_dir = Path(runs_dir)
    run_dirs = find_run_dirs(runs_dir)
    if not run_dirs:
        raise RunFolderError(
            f"no finished run under {runs_dir}: a run folder holds model/ with {list(MODEL_FILES)} (written by "
            "recipes/train_teacher.py or recipes/distill.py)"
        )
    models, score_sets, problems = [], [], []
    for run_dir in run_dirs:
        try:
            model = read_model(run_dir / "model")
            sets = read_score_sets(run_dir)
        except RunFolderError as err:
            problems.append(str(err))
            continue
        if check_private:
            for folder in [model.folder, *(s.folder for s in sets)]:
                problems += [
                    f"{folder}: {finding} (remove it from the folder; nothing may be published with it)"
                    for finding in find_private_content(folder, [runs_dir.resolve()])
                ]
        models.append(model)
        score_sets += sets
    first_of: dict[tuple[str, int], ModelResult] = {}
    for model in models:  # n counts seeds: two runs of one model with the same seed are a copy or a re-run
        other = first_of.setdefault((model.model_id, model.seed), model) if model.seed is not None else model
        if other is not model:
            problems.append(
                f"{other.run_dir} and {model.run_dir} are both {model.model_id} with seed {model.seed}: keep one run "
                "per seed (move the other out of the runs folder)"
            )
    if problems:
        raise RunFolderError(
            f"{len(problems)} problem(s) under {runs_dir}; nothing was published:\n  - " + "\n  - ".join(problems)
        )
    return FinishedRuns(runs_dir, models, score_sets)


# -- publishing -------------------------------------------------------------------------------------------------
def group_results(models: Iterable[ModelResult]) -> list[ResultRow]:
    """One row per model id, its runs in seed order; rows by data set, then model id."""
    groups: dict[str, list[ModelResult]] = defaultdict(list)
    for model in models:
        groups[model.model_id].append(model)
    rows = [
        ResultRow(tuple(sorted(runs, key=lambda r: (r.seed is None, r.seed or 0, str(r.folder)))))
        for runs in groups.values()
    ]
    return sorted(rows, key=lambda row: (row.first.dataset, row.first.model_id))
