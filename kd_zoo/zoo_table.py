"""The zoo of finished runs: find them, read their cards, publish them, and write the results table from the cards.

A finished run is a folder holding `model/` (written by `kd_zoo.hub.export_model`: `README.md`, `config.json`,
`model.safetensors`) and, optionally, `scores/` (a score set written by `ScoreSet.save`, or one folder per scorer).
`recipes/train_teacher.py` and `recipes/distill.py` lay their runs out that way; `recipes/push_zoo.py` is the
command line over this module:

    zoo = collect_zoo("runs/")               # every run checked first: ZooRunError names each bad folder
    publish_zoo(zoo, "kd-zoo")               # one create_repo + upload_folder per repo (kd_zoo.hub.publish_folder)
    write_tables(zoo, "kd-zoo", readme="README.md", table="model_cards/zoo_results.md")

Repos: a model goes to `ORG/<model_id>` (the card's `model_name`, e.g. `lrds_resnet8x4.lrds_resnet32x4_cifar100`);
a score set to the data set repo `ORG/<data>-<teacher>-<scorer>-scores` (`kd_zoo.hub.scores_repo_name`), published
once when several runs hold the same scores. Several seeds of one model id share its repo: the run whose top-1 is
closest to the mean of the seeds is published, and the table reports mean +- sample standard deviation over n.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .constants import HF_ORG
from .hub import (
    MODEL_FILES,
    PublishError,
    _remote_architecture,
    find_private_content,
    publish_folder,
    require_token,
    scores_repo_name,
)

README_START = "<!-- zoo-results:start -->"
README_END = "<!-- zoo-results:end -->"
HUB_URL = "https://huggingface.co"
NO_RUNS = "No runs have been published yet."
_REPO_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
# rows of the model card template (model_cards/model_card.md), for cards without the `kd_zoo:` metadata
_CARD_ROWS = {
    "teacher": "teacher",
    "method": "method",
    "Label Revision": "label_revision",
    "Data Selection": "data_selection",
    "seed": "seed",
}


class ZooRunError(ValueError):
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
class Zoo:
    """The finished runs found under a folder."""

    runs_dir: Path
    models: list[ModelResult]
    score_sets: list[ScoreSetFolder]


@dataclass(frozen=True)
class Upload:
    folder: Path
    repo_id: str
    repo_type: str  # "model" or "dataset"


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


# -- finding and reading runs -----------------------------------------------------------------------------------
def find_run_dirs(runs_dir: str | Path) -> list[Path]:
    """Folders under `runs_dir` (itself included) with a `model/` folder holding an exported model's files."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise ZooRunError(f"{runs_dir} is not a folder of runs")
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
        ZooRunError: files are missing, the card cannot be read or lacks its model name or top-1 / top-5.
    """
    from huggingface_hub import ModelCard

    folder = Path(folder)
    missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if missing:
        raise ZooRunError(
            f"{folder} lacks {missing}: not a finished export (kd_zoo.hub.export_model writes {list(MODEL_FILES)})"
        )
    try:
        card = ModelCard.load(folder / "README.md")
    except Exception as err:  # huggingface_hub raises several types for a malformed card
        raise ZooRunError(f"{folder / 'README.md'} is not a readable model card: {err}") from None
    data = card.data
    metrics = {r.metric_name: r.metric_value for r in (data.eval_results or [])}
    absent_metrics = [name for name in ("top-1", "top-5") if not isinstance(metrics.get(name), int | float)]
    lacking = ([] if data.model_name else ["the model name"]) + (
        [f"the metric(s) {absent_metrics}"] if absent_metrics else []
    )
    if lacking:
        raise ZooRunError(
            f"{folder / 'README.md'} lacks {' and '.join(lacking)} in its model-index metadata: re-export the run's "
            "model with kd_zoo.hub.export_model (run_card_fields gives the fields)"
        )
    try:
        architecture = json.loads((folder / "config.json").read_text()).get("architecture") or "?"
    except json.JSONDecodeError as err:
        raise ZooRunError(f"{folder / 'config.json'} is not valid JSON: {err}") from None
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
        ZooRunError: `scores/` holds no score set, or one without its card or metadata.
    """
    from .selection import ScoreSet

    scores = Path(run_dir) / "scores"
    if not scores.is_dir():
        return []

    def is_score_set(path: Path) -> bool:
        return (path / "README.md").is_file() or (path / "data").is_dir()

    folders = [scores] if is_score_set(scores) else sorted(p for p in scores.iterdir() if is_score_set(p))
    if not folders:
        raise ZooRunError(f"{scores} holds no score set (README.md + data/*.parquet, as ScoreSet.save writes)")
    found = []
    for folder in folders:
        if not (folder / "README.md").is_file():
            raise ZooRunError(f"{folder} has no README.md data set card: save it again with ScoreSet.save")
        try:
            metadata = ScoreSet.load(folder).metadata
        except Exception as err:  # ScoreSetFormatError, or an unreadable parquet file
            raise ZooRunError(f"{folder} is not a readable score set: {err}") from None
        found.append(ScoreSetFolder(folder, scores_repo_name(metadata), metadata))
    return found


def collect_zoo(runs_dir: str | Path, *, check_private: bool = True) -> Zoo:
    """Every finished run under `runs_dir`, all checked before anything else happens.

    Checks: each run's model card has its model name and top-1 / top-5, each score set loads, no two runs of a
    model share a seed, and (with `check_private`) no folder holds a token or a local absolute path
    (`kd_zoo.hub.find_private_content`).

    Raises:
        ZooRunError: no finished run, or the list of every bad folder and why.
    """
    runs_dir = Path(runs_dir)
    run_dirs = find_run_dirs(runs_dir)
    if not run_dirs:
        raise ZooRunError(
            f"no finished run under {runs_dir}: a run folder holds model/ with {list(MODEL_FILES)} (written by "
            "recipes/train_teacher.py or recipes/distill.py)"
        )
    models, score_sets, problems = [], [], []
    for run_dir in run_dirs:
        try:
            model = read_model(run_dir / "model")
            sets = read_score_sets(run_dir)
        except ZooRunError as err:
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
        raise ZooRunError(
            f"{len(problems)} problem(s) under {runs_dir}; nothing was published:\n  - " + "\n  - ".join(problems)
        )
    return Zoo(runs_dir, models, score_sets)


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


def _check_repo_name(name: str, where: Path) -> None:
    if not name or len(name) > 96 or set(name) - _REPO_NAME_CHARS or name.startswith(("-", ".")):
        raise ZooRunError(f"{where}: {name!r} is not a valid Hub repo name (letters, digits, '.', '_', '-'; 96 max)")


def plan_uploads(zoo: Zoo, org: str = HF_ORG, *, include_scores: bool = True) -> list[Upload]:
    """The repos to create and the folder uploaded to each: one model repo per model id, one data set repo per
    distinct score set.

    Raises:
        ZooRunError: an invalid repo name, or two runs with different score sets for the same repo name (another
            teacher's weights, data or scorer settings under the same names).
    """
    if not org or "/" in org:
        raise ZooRunError(f"--org must be an organisation or user name, got {org!r}")
    uploads = []
    for row in group_results(zoo.models):
        chosen = row.published
        _check_repo_name(chosen.model_id, chosen.folder)
        uploads.append(Upload(chosen.folder, f"{org}/{chosen.model_id}", "model"))
    if include_scores:
        by_name: dict[str, list[ScoreSetFolder]] = defaultdict(list)
        for score_set in zoo.score_sets:
            by_name[score_set.name].append(score_set)
        for name, sets in sorted(by_name.items()):
            _check_repo_name(name, sets[0].folder)
            if len({s.identity for s in sets}) > 1:
                folders = "\n  - ".join(f"{s.folder} (teacher weights {s.identity[0][:16]})" for s in sets)
                raise ZooRunError(
                    f"these score sets would all go to {org}/{name} but differ (teacher weights, data or scorer "
                    f"settings):\n  - {folders}\npublish one of them under its own name with `python "
                    "recipes/score.py ... --push-to-hub ORG/NAME`, and the models with --no-scores"
                )
            uploads.append(Upload(sets[0].folder, f"{org}/{name}", "dataset"))
    return uploads


def publish_zoo(
    zoo: Zoo,
    org: str = HF_ORG,
    *,
    api: Any = None,
    token: str | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
    include_scores: bool = True,
) -> list[Upload]:
    """Publish every repo of `plan_uploads` with `kd_zoo.hub.publish_folder` (one create_repo + upload_folder each).

    Everything that can refuse is checked before the first upload: the plan, the token (`PublishError` without
    one), and, unless `overwrite`, that no model repo already holds another architecture. `dry_run` prints what
    would be uploaded and touches nothing.
    """
    from huggingface_hub import HfApi

    uploads = plan_uploads(zoo, org, include_scores=include_scores)
    for upload in uploads:
        if upload.repo_id not in (upload.folder / "README.md").read_text(encoding="utf-8"):
            print(f"note: the card in {upload.folder} names another repo than {upload.repo_id} in its usage snippet")
    if dry_run:
        for upload in uploads:
            publish_folder(upload.folder, upload.repo_id, repo_type=upload.repo_type, dry_run=True)
        return uploads
    token = require_token(token)
    api = api or HfApi()
    if not overwrite:
        clashes = []
        for upload in (u for u in uploads if u.repo_type == "model"):
            local = json.loads((upload.folder / "config.json").read_text()).get("architecture")
            remote = _remote_architecture(api, upload.repo_id, token)
            if remote is not None and remote != local:
                clashes.append(f"{upload.repo_id} holds a {remote} model, {upload.folder} is a {local}")
        if clashes:
            raise PublishError(
                "refusing to overwrite (nothing was uploaded; pass --overwrite / overwrite=True if intended):\n  - "
                + "\n  - ".join(clashes)
            )
    for upload in uploads:
        print(f"publishing {upload.folder} -> {upload.repo_type} repo {upload.repo_id}")
        publish_folder(
            upload.folder, upload.repo_id, repo_type=upload.repo_type, token=token, overwrite=overwrite, api=api
        )
    return uploads


# -- the results table ------------------------------------------------------------------------------------------
def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _short(text: str) -> str:
    """A card value without its parenthesised details: `lrds_resnet32x4 (top-1 79.42, ...)` -> `lrds_resnet32x4`."""
    return text.split(" (", 1)[0].strip()


def _mean_std(row: ResultRow, metric: str) -> str:
    mean, std = row.mean_std(metric)
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def _seeds(runs: Sequence[ModelResult]) -> str:
    return ", ".join("?" if r.seed is None else str(r.seed) for r in runs)


def _describe(model: ModelResult) -> list[str]:
    teacher = _short(model.teacher)
    return [
        "-" if teacher in ("none", "?") else f"`{teacher}`",
        _short(model.method),
        "off" if model.label_revision == "off" else "on",
        "off" if model.data_selection == "off" else _short(model.data_selection),
        model.dataset,
    ]


def results_table(models: Iterable[ModelResult], org: str = HF_ORG) -> str:
    """The zoo's table, one row per model id: top-1 / top-5 as mean ± sample std over its n seeds."""
    rows = group_results(models)
    if not rows:
        return NO_RUNS
    lines = [
        "| model | teacher | method | LR | DS | data set | top-1 | top-5 | n | seeds | weights |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        repo = f"{org}/{row.first.model_id}"
        cells = [
            f"`{row.first.model_id}`",
            *_describe(row.first),
            _mean_std(row, "top1"),
            _mean_std(row, "top5"),
            str(row.n),
            _seeds(row.runs),
            f"[{repo}]({HUB_URL}/{repo})",
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def readme_section(zoo: Zoo, org: str = HF_ORG) -> str:
    """What goes between the README markers."""
    if not zoo.models:
        return NO_RUNS
    return (
        "<!-- generated by recipes/push_zoo.py from the model cards: do not edit by hand -->\n"
        f"{results_table(zoo.models, org)}\n\n"
        "top-1 / top-5: accuracy (%) on the evaluation split at the best epoch, from each model card's "
        "`model-index`; with several seeds, mean ± sample standard deviation over n (the Hub repo holds the seed "
        "closest to the mean). Every run and the published score sets: "
        "[model_cards/zoo_results.md](model_cards/zoo_results.md)."
    )


def zoo_results_markdown(zoo: Zoo, org: str = HF_ORG) -> str:
    """`model_cards/zoo_results.md`: the table, every run, and the score sets."""
    lines = [
        "# kd_zoo results",
        "",
        "Generated by `python recipes/push_zoo.py RUNS_DIR` from the model cards of the finished runs; do not edit "
        "by hand.",
        "",
        "## Models",
        "",
        results_table(zoo.models, org),
    ]
    if zoo.models:
        lines += [
            "",
            "top-1 / top-5: accuracy (%) on the evaluation split at the best epoch (the card's `model-index`); with "
            "several seeds, mean ± sample standard deviation over n.",
            "",
            "## Runs",
            "",
            "| model | seed | top-1 | top-5 | on the Hub |",
            "|---|---|---|---|---|",
        ]
        for row in group_results(zoo.models):
            published = row.published
            for run in row.runs:
                seed = "?" if run.seed is None else str(run.seed)
                hub = "yes" if run is published else "no"
                lines.append(f"| `{_cell(run.model_id)}` | {seed} | {run.top1:.2f} | {run.top5:.2f} | {hub} |")
    if zoo.score_sets:
        lines += [
            "",
            "## Score sets",
            "",
            "| data set | split | teacher | scorer | rows | teacher mistakes | repo |",
            "|---|---|---|---|---|---|---|",
        ]
        seen = set()
        for score_set in sorted(zoo.score_sets, key=lambda s: s.name):
            if score_set.name in seen:
                continue
            seen.add(score_set.name)
            meta = score_set.metadata
            data, teacher = meta["data_fingerprint"], meta["teacher"]
            mistakes = (meta.get("teacher_mistakes") or {}).get("count", "?")
            repo = f"{org}/{score_set.name}"
            cells = [
                data.get("name"),
                data.get("split"),
                f"`{teacher.get('name')}`",
                f"`{meta['scorer']}`",
                meta.get("num_rows", data.get("num_rows")),
                mistakes,
                f"[{repo}]({HUB_URL}/datasets/{repo})",
            ]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def replace_section(text: str, body: str, start: str = README_START, end: str = README_END) -> str:
    """`text` with what lies between the `start` and `end` markers (each present once, in order) set to `body`."""
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"expected the markers {start!r} then {end!r}, once each; the table goes between them")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body.strip()}\n{end}{tail}"


def table_texts(zoo: Zoo, org: str = HF_ORG, *, readme: str | Path | None, table: str | Path | None) -> dict[Path, str]:
    """The new text of the README (its section between the markers replaced) and of the full table file, keyed by
    the file each goes to; nothing is written, so a README without its markers is refused before publishing."""
    texts = {}
    if readme is not None:
        readme = Path(readme)
        try:
            texts[readme] = replace_section(readme.read_text(encoding="utf-8"), readme_section(zoo, org))
        except (OSError, ValueError) as err:
            raise ZooRunError(f"{readme}: {err}") from None
    if table is not None:
        texts[Path(table)] = zoo_results_markdown(zoo, org)
    return texts


def write_tables(zoo: Zoo, org: str = HF_ORG, *, readme: str | Path | None, table: str | Path | None) -> list[Path]:
    """Write the README section (between the markers) and the full table file; returns the files written."""
    texts = table_texts(zoo, org, readme=readme, table=table)
    for path, text in texts.items():
        path.write_text(text, encoding="utf-8")
    return list(texts)
