"""The Hugging Face Hub: export a model to a folder that is exactly its Hub repo, and publish folders.

An exported folder holds `model.safetensors`, timm's `config.json` (architecture, num_classes, label names,
pretrained_cfg) and a `README.md` model card rendered from `model_cards/model_card.md` with huggingface_hub's
card tools (`model-index` metadata with top-1 / top-5). `timm.create_model("local-dir:<folder>", pretrained=True)`
loads it, and once uploaded `timm.create_model("hf-hub:<org>/<name>", pretrained=True)` does the same.

Publishing is one `create_repo` + one `upload_folder`, with the token from `HF_TOKEN` or the saved login; the
token is never logged or written into the folder. A dry run prints what would be uploaded.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, HfApi, ModelCard, ModelCardData
from timm.models import save_for_hf
from torch import nn

from .constants import HF_ORG

MODEL_FILES = ("README.md", "config.json", "model.safetensors")
CARD_METADATA_FIELDS = ("model_id", "dataset", "best_top1", "best_top5")

PAPER_CITATION = """@article{lan2025lrds,
  title   = {Improve Knowledge Distillation via Label Revision and Data Selection},
  author  = {Lan, Weichao and Cheung, Yiu-ming and Xu, Qing and Liu, Buhua and Hu, Zhikai and Li, Mengke
             and Chen, Zhenghua},
  journal = {IEEE Transactions on Cognitive and Developmental Systems},
  volume  = {17},
  number  = {6},
  pages   = {1377--1388},
  year    = {2025},
  note    = {arXiv:2404.03693}
}"""


class CardTemplateError(ValueError):
    """A card template uses fields that were not provided (or cannot be read)."""


class PublishError(RuntimeError):
    """Publishing was refused before anything was uploaded."""


def template_text(name: str) -> str:
    """A card template shipped in `kd_zoo.model_cards` (the repository's `model_cards/`)."""
    return importlib.resources.files("kd_zoo.model_cards").joinpath(name).read_text()


def render_template(template: str, fields: Mapping[str, Any]) -> str:
    """Render a Jinja template, refusing one that uses a field missing from `fields` (named in the error)."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    try:
        wanted = jinja2.meta.find_undeclared_variables(env.parse(template))
    except jinja2.TemplateSyntaxError as err:
        raise CardTemplateError(f"card template is not valid Jinja (line {err.lineno}: {err.message})") from err
    missing = sorted(wanted - set(fields))
    if missing:
        raise CardTemplateError(
            f"card template needs field(s) {missing} that were not provided; provided: {sorted(fields)}"
        )
    return env.from_string(template).render(**fields)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def usage_snippet(repo_id: str) -> str:
    """The card's usage example (tests run it against an offline Hub cache)."""
    return (
        "import kd_zoo  # registers the lrds_* architectures in timm\n"
        "import timm\n"
        "import torch\n\n"
        f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True).eval()\n'
        "config = timm.data.resolve_data_config({}, model=model)\n"
        "transform = timm.data.create_transform(**config)  # for PIL images\n"
        "with torch.no_grad():\n"
        '    logits = model(torch.randn(1, *config["input_size"]))\n'
        "print(logits.softmax(-1).topk(5))"
    )


def model_card(fields: Mapping[str, Any], template: str | None = None) -> ModelCard:
    """A model card with `model-index` metadata, from `fields` (see `export_model`) and the template."""
    missing = [key for key in CARD_METADATA_FIELDS if key not in fields]
    if missing:
        raise CardTemplateError(f"model card metadata needs field(s) {missing}; provided: {sorted(fields)}")
    data = ModelCardData(
        library_name="timm",
        license=fields.get("license", "apache-2.0"),
        tags=["image-classification", "timm", "knowledge-distillation", "kd_zoo", *fields.get("tags", [])],
        datasets=[fields["dataset"]] if fields.get("dataset_on_hub") else None,
        metrics=["accuracy"],
        model_name=fields["model_id"],
        pipeline_tag="image-classification",
        eval_results=[
            EvalResult(
                task_type="image-classification",
                dataset_type=fields["dataset"],
                dataset_name=fields["dataset"],
                dataset_split=fields.get("eval_split", "test"),
                dataset_revision=fields.get("dataset_revision"),
                metric_type="accuracy",
                metric_name=name,
                metric_value=round(float(fields[key]), 2),
            )
            for name, key in (("top-1", "best_top1"), ("top-5", "best_top5"))
        ],
    )
    text = render_template(template or template_text("model_card.md"), {**fields, "card_data": data.to_yaml()})
    return ModelCard(text)


def run_card_fields(
    result: Any,
    *,
    model_id: str,
    summary: str,
    dataset: str,
    config_yaml: str,
    hardware: str,
    seed: int,
    dataset_revision: str | None = None,
    teacher: str = "none (cross-entropy training)",
    method: str = "cross-entropy",
    label_revision: str = "off",
    data_selection: str = "off",
    repo_id: str | None = None,
) -> dict[str, Any]:
    """The model-card fields of a finished run (`result`: a `kd_zoo.engine.loop.FitResult`)."""
    from . import __version__

    return {
        "model_id": model_id,
        "repo_id": repo_id or f"{HF_ORG}/{model_id}",
        "summary": summary,
        "dataset": dataset,
        "dataset_on_hub": "/" in dataset and not Path(dataset).exists(),
        "dataset_revision": dataset_revision or "main",
        "teacher": teacher,
        "method": method,
        "label_revision": label_revision,
        "data_selection": data_selection,
        "best_epoch": result.best_epoch + 1,
        "best_top1": f"{result.best_top1:.2f}",
        "best_top5": f"{result.best_top5:.2f}",
        "last_top1": f"{result.last_top1:.2f}",
        "last_top5": f"{result.last_top5:.2f}",
        "seed": seed,
        "train_time": f"{result.train_seconds:.0f} s",
        "hardware": hardware,
        "kd_zoo_version": __version__,
        "config_yaml": config_yaml.strip(),
    }


def export_model(
    model: nn.Module,
    folder: str | Path,
    fields: Mapping[str, Any],
    *,
    label_names: list[str] | None = None,
    template: str | None = None,
) -> Path:
    """Write `model` as a Hub-ready folder: weights, timm config, model card (exactly `MODEL_FILES`).

    `fields` fills the card template (`model_cards/model_card.md`): `model_id`, `summary`, `dataset`, ... and the
    accuracies `best_top1`, `best_top5`, `last_top1`, `last_top5`; `architecture`, `num_params`, `num_classes`,
    `weights_sha256`, `usage` and `citation` are filled in here when absent. Everything is checked before the
    folder is touched: a template field that is missing raises `CardTemplateError` and writes nothing.
    """
    folder = Path(folder)
    architecture = model.pretrained_cfg.get("architecture") if hasattr(model, "pretrained_cfg") else None
    fields = {
        "architecture": architecture or type(model).__name__,
        "num_params": f"{sum(p.numel() for p in model.parameters()):,}",
        "num_classes": getattr(model, "num_classes", None),
        "usage": usage_snippet(fields.get("repo_id", f"{HF_ORG}/{fields.get('model_id', architecture)}")),
        "citation": PAPER_CITATION,
        "weights_sha256": "(filled in after saving)",
        **fields,
    }
    model_card(fields, template)  # validate the card before writing anything
    folder.mkdir(parents=True, exist_ok=True)
    model_config = {"label_names": list(label_names)} if label_names else None
    save_for_hf(model, str(folder), model_config=model_config, safe_serialization=True)
    fields["weights_sha256"] = file_sha256(folder / "model.safetensors")
    model_card(fields, template).save(str(folder / "README.md"))
    return folder


def _token(token: str | None) -> str:
    if token:
        return token
    from huggingface_hub import get_token

    found = os.environ.get("HF_TOKEN") or get_token()
    if not found:
        raise PublishError(
            "no Hugging Face token: set HF_TOKEN or run `huggingface-cli login` (a token with write access to the "
            "target organisation); nothing was uploaded"
        )
    return found


def _remote_architecture(api: Any, repo_id: str, token: str) -> str | None:
    """The architecture in an existing repo's config.json, or None when the repo or file does not exist."""
    if not api.file_exists(repo_id, "config.json", token=token):
        return None
    path = api.hf_hub_download(repo_id=repo_id, filename="config.json", token=token)
    return json.loads(Path(path).read_text()).get("architecture")


def publish_folder(
    folder: str | Path,
    repo_id: str,
    *,
    repo_type: str = "model",
    token: str | None = None,
    private: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
    commit_message: str | None = None,
    api: Any = None,
) -> list[str]:
    """Upload an exported folder to `repo_id` with one `create_repo` + one `upload_folder`.

    Refuses (before uploading) without a token, and, for models, when the repo already holds a different
    architecture unless `overwrite=True`. Returns the uploaded file names; `dry_run` prints and returns them.
    """
    folder = Path(folder)
    if "/" not in repo_id:
        raise PublishError(f"repo_id must be 'ORG/NAME', got {repo_id!r}")
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    if not files:
        raise PublishError(f"{folder} is empty: export a model or a score set into it first")
    if dry_run:
        print(f"dry run: would upload to {repo_type} repo {repo_id}:")
        for name in files:
            print(f"  {name} ({(folder / name).stat().st_size:,} bytes)")
        return files
    token = _token(token)
    api = api or HfApi()
    if repo_type == "model" and (folder / "config.json").is_file():
        local = json.loads((folder / "config.json").read_text()).get("architecture")
        remote = _remote_architecture(api, repo_id, token)
        if remote is not None and remote != local and not overwrite:
            raise PublishError(
                f"{repo_id} already holds a {remote} model and this folder is a {local}: refusing to overwrite; "
                "pass overwrite=True (--overwrite) if that is intended"
            )
    api.create_repo(repo_id, token=token, repo_type=repo_type, private=private, exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type=repo_type,
        token=token,
        commit_message=commit_message or f"Upload from kd_zoo ({len(files)} files)",
    )
    return files


def dataset_card(fields: Mapping[str, Any], card_data: DatasetCardData, template: str | None = None) -> DatasetCard:
    """A data set card (score sets) from `model_cards/scores_card.md`."""
    fields = {"citation": PAPER_CITATION, **fields, "card_data": card_data.to_yaml()}
    return DatasetCard(render_template(template or template_text("scores_card.md"), fields))
