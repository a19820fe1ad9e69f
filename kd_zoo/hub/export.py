"""Export to folders that are exactly Hub repos: a model (weights, timm config, model card) and a score set.

An exported model folder holds `model.safetensors`, timm's `config.json` (architecture, num_classes, label names,
pretrained_cfg) and a `README.md` model card; `timm.create_model("local-dir:<folder>", pretrained=True)` loads it,
and once uploaded `timm.create_model("hf-hub:<org>/<name>", pretrained=True)` does the same. A score-set folder
holds `README.md` (data set card) and `data/train-00000-of-00001.parquet`, which `datasets.load_dataset` and
`kd_zoo.selection.ScoreSet.load` read. Neither holds a local path (`kd_zoo.hub.privacy`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from datasets import ClassLabel
from timm.models import save_for_hf
from torch import nn

from ..constants import HF_ORG, LABEL_COLUMN, TEACHER_PRED_COLUMN
from ..selection import ScoreSet
from ..selection.score_set import FEATURES, PARQUET_PATH
from .cards import PAPER_CITATION, model_card, score_set_card, usage_snippet
from .privacy import public_metadata

MODEL_FILES = ("README.md", "config.json", "model.safetensors")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export_model(
    model: nn.Module,
    folder: str | Path,
    fields: Mapping[str, Any],
    *,
    label_names: list[str] | None = None,
    pretrained_cfg: Mapping[str, Any] | None = None,
    template: str | None = None,
) -> Path:
    """Write `model` as a Hub-ready folder: weights, timm config, model card (exactly `MODEL_FILES`).

    `pretrained_cfg` replaces entries of the model's own in `config.json`: what the weights were trained with
    (`input_size`, `mean`, `std`), and their `tag` and `hf_hub_id`, so a loader preprocesses as the training did.

    `fields` fills the card template (`model_cards/model_card.md`): `model_id`, `summary`, `dataset`, ... and the
    accuracies `best_top1`, `best_top5`, `last_top1`, `last_top5` ("not measured" leaves out the model-index);
    `architecture`, `num_params`, `num_classes`, `weights_sha256`, `usage`, `citation` and `provenance` (how the
    weights came to be, "Trained with kd_zoo." by default) are filled in here when absent. Everything is checked
    before the folder is touched: a template field that is missing raises `CardTemplateError` and writes nothing.
    """
    folder = Path(folder)
    architecture = model.pretrained_cfg.get("architecture") if hasattr(model, "pretrained_cfg") else None
    fields = {
        "architecture": architecture or type(model).__name__,
        "num_params": f"{sum(p.numel() for p in model.parameters()):,}",
        "num_classes": getattr(model, "num_classes", None),
        "usage": usage_snippet(fields.get("repo_id", f"{HF_ORG}/{fields.get('model_id', architecture)}")),
        "citation": PAPER_CITATION,
        "provenance": "Trained with kd_zoo.",
        "weights_sha256": "(filled in after saving)",
        **fields,
    }
    model_card(fields, template)  # validate the card before writing anything
    folder.mkdir(parents=True, exist_ok=True)
    model_config: dict[str, Any] = {"pretrained_cfg": dict(pretrained_cfg or {})}
    if label_names:
        model_config["label_names"] = list(label_names)
    save_for_hf(model, str(folder), model_config=model_config, safe_serialization=True)
    fields["weights_sha256"] = file_sha256(folder / "model.safetensors")
    model_card(fields, template).save(str(folder / "README.md"))
    return folder


def export_scores(
    scores: ScoreSet,
    folder: str | Path,
    *,
    overwrite: bool = False,
    repo_id: str | None = None,
    template: str | None = None,
    class_names: list[str] | None = None,
) -> Path:
    """Write a score set as a Hub-ready data set folder (see the module docstring); returns it.

    With `class_names`, `label` and `teacher_pred` are `ClassLabel` columns with those names (still integers).

    What is written holds no local path (`public_metadata`: the teacher's weights as a file name, a zoo tag or an
    `hf-hub:` id); the fingerprints are kept. `repo_id` names the repo in the card's usage snippet (default:
    `kd-zoo/<data>-<teacher>-<scorer>-scores`); `template` replaces the card template.

    Raises:
        FileExistsError: the folder already holds files and `overwrite` is False.
        CardTemplateError: the card template needs a field that is missing (nothing is written).
    """
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{folder} is not empty; pass overwrite=True (recipes: run.overwrite=true) or another folder"
        )
    public = public_metadata(scores.metadata)
    card = score_set_card(public, num_rows=len(scores), repo_id=repo_id, template=template)  # checked first
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for stale in (folder / "data").glob("*.parquet"):  # other shard counts of an older score set
        stale.unlink()
    table = scores.to_arrow(public)
    if class_names:
        features = FEATURES.copy()
        features[LABEL_COLUMN] = features[TEACHER_PRED_COLUMN] = ClassLabel(names=list(class_names))
        metadata = dict(table.schema.metadata)
        metadata[b"huggingface"] = json.dumps({"info": {"features": features.to_dict()}}).encode()
        table = table.replace_schema_metadata(metadata)
    pq.write_table(table, folder / PARQUET_PATH)
    card.save(str(folder / "README.md"))
    return folder


def export_run(
    run_dir: str | Path,
    model: nn.Module,
    fields: Mapping[str, Any],
    *,
    summary: Mapping[str, Any],
    label_names: list[str] | None = None,
    pretrained_cfg: Mapping[str, Any] | None = None,
) -> Path:
    """A finished run's outputs: `result.json` (`summary` plus the card fields) and the exported `model/` folder.

    `kd_zoo.hub.runs` reads runs laid out this way; returns the model folder.
    """
    run_dir = Path(run_dir)
    (run_dir / "result.json").write_text(json.dumps({**summary, "card": dict(fields)}, indent=2))
    return export_model(model, run_dir / "model", fields, label_names=label_names, pretrained_cfg=pretrained_cfg)
