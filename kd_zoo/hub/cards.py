"""Model and data set cards: rendered from the templates in `model_cards/` with huggingface_hub's card tools.

A model card carries `model-index` metadata (top-1 / top-5) and, under `kd_zoo:`, the run's settings that
`kd_zoo.hub.runs` reads back; a score set's data set card carries the score set's public metadata under `kd_zoo:`.
Every template field must be provided: a missing one raises `CardTemplateError` before anything is written.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from collections.abc import Mapping
from typing import Any

import jinja2
import jinja2.meta
import yaml
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData

from ..constants import CIFAR100_HUB_ID, HF_ORG, MODEL_PREFIX
from ..pairs import dataset_tag
from ..version import __version__
from .privacy import WEIGHT_FILE_SUFFIXES, is_hub_id, public_config, public_dataset_name, public_metadata, public_path

CARD_METADATA_FIELDS = ("model_id", "dataset", "best_top1", "best_top5")
# Card fields also kept, machine-readable, under `kd_zoo:` in a model card's YAML (read by kd_zoo.hub.runs).
CARD_RUN_FIELDS = (
    "teacher",
    "teacher_repo",
    "method",
    "label_revision",
    "data_selection",
    "seed",
    "best_epoch",
    "dataset_revision",
    "kd_zoo_version",
)
SCORES_CARD_TAGS = ("kd-zoo", "knowledge-distillation", "data-selection", "influence-scores")
SCORES_REPO_SUFFIX = "-scores"

PAPER_URL = "https://arxiv.org/abs/2404.03693"
TRAINED_ON = CIFAR100_HUB_ID  # what the CRD / mdistiller reference teachers were trained on
HUB_URL = "https://huggingface.co"
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


def usage_snippet(repo_id: str) -> str:
    """The card's usage example (tests run it against an offline Hub cache); the card says above it that it needs
    `pip install kd-zoo`, because the architectures exist in timm only once `kd_zoo` is imported."""
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


def _measured(fields: Mapping[str, Any]) -> bool:
    """Whether the card's top-1 / top-5 are numbers (an imported checkpoint not evaluated has none: no model-index)."""
    try:
        return all(float(fields[key]) == float(fields[key]) for key in ("best_top1", "best_top5"))  # NaN != NaN
    except (TypeError, ValueError):
        return False


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
        kd_zoo={key: fields[key] for key in CARD_RUN_FIELDS if fields.get(key) is not None} or None,
        eval_results=None
        if not _measured(fields)
        else [
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
    teacher_repo: str | None = None,
    method: str = "cross-entropy",
    label_revision: str = "off",
    data_selection: str = "off",
    repo_id: str | None = None,
) -> dict[str, Any]:
    """The model-card fields of a finished run (`result`: a `kd_zoo.engine.FitResult`).

    A local data set is named by its folder name (never its path); `dataset_revision` should identify the data (a
    commit, or `sha256:<content hash>`); `teacher_repo` (the teacher's Hub repo, when it has one) is linked.
    """
    on_hub = is_hub_id(dataset)
    teacher_text = f"{teacher}, [{teacher_repo}]({HUB_URL}/{teacher_repo})" if teacher_repo else teacher
    return {
        "model_id": model_id,
        "repo_id": repo_id or f"{HF_ORG}/{model_id}",
        "summary": summary,
        "dataset": dataset if on_hub else public_dataset_name(dataset),
        "dataset_on_hub": on_hub,
        "dataset_revision": dataset_revision or "unknown",
        "teacher": teacher_text,
        "teacher_repo": teacher_repo,
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
        "config_yaml": public_config(config_yaml),
    }


def imported_card_fields(
    ckpt: Any,
    arch: str,
    model_id: str,
    repo_id: str,
    metrics: Mapping[str, Any] | None,
    *,
    origin: str | None = None,
    prefix: str | None = None,
) -> dict[str, Any]:
    """The model-card fields of a reference (CRD / mdistiller) checkpoint imported by `recipes/import_checkpoint.py`
    (`ckpt`: a `kd_zoo.models.ReferenceCheckpoint`; `metrics`: `kd_zoo.engine.validate_model`'s, or None when it
    was not evaluated: the card then says so and has no model-index)."""
    origin = origin or "not given (pass origin=...)"
    recorded = ", ".join(f"{k} {v:g}" for k, v in ckpt.info.items()) or "nothing besides the weights"
    dataset = public_dataset_name(metrics["data"]) if metrics else TRAINED_ON
    if metrics:
        measured = (
            f"Top-1 / top-5 below were measured by kd_zoo on {dataset} / {metrics['split']} ({metrics['count']} "
            f"images, {metrics['hardware']})."
        )
    else:
        measured = "Not evaluated by kd_zoo (run recipes/validate.py on this folder)."
    top1 = f"{metrics['top1']:.2f}" if metrics else "not measured"
    top5 = f"{metrics['top5']:.2f}" if metrics else "not measured"
    record = {
        "source_file": ckpt.path.name,
        "source_sha256": ckpt.sha256,
        "origin": origin,
        "source_entries": ckpt.entries,
        "source_records": ckpt.info,
        "architecture": arch,
        "prefix": prefix,
        "evaluation": {k: metrics[k] for k in ("split", "revision", "top1", "top5", "loss", "count")}
        | {"data": dataset}
        if metrics
        else None,
    }
    epoch = ckpt.info.get("epoch")
    return {
        "model_id": model_id,
        "repo_id": repo_id,
        "provenance": f"Converted by kd_zoo from the CRD / mdistiller reference checkpoint `{ckpt.path.name}`.",
        "summary": (
            f"`{arch}` with the weights of `{ckpt.path.name}` (sha256 `{ckpt.sha256}`), origin: {origin}. It was "
            "trained with cross-entropy by the CRD / mdistiller reference code and converted by "
            f"`recipes/import_checkpoint.py` (tensor names mapped, values unchanged). The file records {recorded}. "
            f"{measured}"
        ),
        "dataset": dataset,
        "dataset_on_hub": is_hub_id(dataset),
        "dataset_revision": (metrics or {}).get("revision") or "not recorded",
        "eval_split": metrics["split"] if metrics else "test",
        "teacher": "none (cross-entropy training by the reference code)",
        "method": "cross-entropy (an imported CRD / mdistiller checkpoint)",
        "label_revision": "off",
        "data_selection": "off",
        "best_epoch": f"{epoch:g} (the imported checkpoint)" if epoch is not None else "the imported checkpoint",
        "best_top1": top1,
        "best_top5": top5,
        "last_top1": top1,
        "last_top5": top5,
        "seed": "not recorded",
        "train_time": "not recorded",
        "hardware": "the reference authors' hardware",
        "kd_zoo_version": __version__,
        "config_yaml": yaml.safe_dump(record, sort_keys=False).strip(),
        "tags": ["reference-checkpoint", f"trained-on-{dataset_tag(TRAINED_ON)}"],
    }


def dataset_card(fields: Mapping[str, Any], card_data: DatasetCardData, template: str | None = None) -> DatasetCard:
    """A data set card (score sets) from `model_cards/scores_card.md`."""
    fields = {"citation": PAPER_CITATION, **fields, "card_data": card_data.to_yaml()}
    return DatasetCard(render_template(template or template_text("scores_card.md"), fields))


# -- score sets as data set repos -------------------------------------------------------------------------------
def _repo_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:96]


def scores_repo_name(metadata: Mapping[str, Any]) -> str:
    """The zoo's data set repo name for a score set: `<data>-<teacher>-<scorer>-scores`, e.g.
    `cifar100-resnet32x4-influence-scores` (data tag as in `kd_zoo.pairs.weight_tag`, teacher without `lrds_`)."""
    data = public_path(str(metadata.get("data_fingerprint", {}).get("name") or "data"))
    teacher = str(metadata.get("teacher", {}).get("name") or "teacher").removeprefix(MODEL_PREFIX)
    return _repo_safe(f"{dataset_tag(data)}-{teacher}-{metadata['scorer']}{SCORES_REPO_SUFFIX}")


def _is_zoo_reference(weights: str | None) -> bool:
    """Whether recorded weights can be loaded anywhere: an `hf-hub:` id or a zoo tag (`lrds_resnet32x4.cifar100`)."""
    text = str(weights or "")
    if text.startswith("hf-hub:"):
        return True
    return "." in text and "/" not in text and not text.startswith(".") and not text.endswith(WEIGHT_FILE_SUFFIXES)


def scores_usage_snippet(repo_id: str, metadata: Mapping[str, Any]) -> str:
    """The data set card's usage example: the rows with `datasets`, then the checked join with a training split."""
    data = metadata.get("data_fingerprint", {})
    teacher = metadata.get("teacher", {})
    loadable = _is_zoo_reference(teacher.get("weights"))
    lines = [
        "import datasets",
        "from huggingface_hub import snapshot_download",
        "",
        *(["from kd_zoo import load_model"] if loadable else []),
        "from kd_zoo.data import load_tensor_split",
        "from kd_zoo.selection import ScoreSet",
        "",
        "# the rows: sample_idx, score, teacher_pred, teacher_correct, label",
        f'rows = datasets.load_dataset("{repo_id}", split="train")',
        "# the same rows with the teacher's and the data's fingerprints, to join them safely",
        f'scores = ScoreSet.load(snapshot_download("{repo_id}", repo_type="dataset"))',
        "# the split that was scored (any copy with the same content)",
        f'train = load_tensor_split("{data.get("name")}", "{data.get("split", "train")}")',
    ]
    if loadable:
        lines += [
            f'teacher = load_model("{teacher.get("name")}", "{teacher.get("weights")}")',
            "# refuses scores of other data or another teacher, and missing or duplicated samples",
            "aligned = scores.join(train, teacher)",
        ]
    else:
        lines += [
            "# refuses scores of other data and missing or duplicated samples; scores.join(train, teacher) also",
            "# checks that `teacher` has the weights the scores were computed with",
            "aligned = scores.join(train)",
        ]
    lines += [
        "distill_mask = aligned.distill_mask(fraction=0.8)  # for kd_zoo.engine.fit(distill_mask=...)",
        'print(f"{int(distill_mask.sum())} of {len(aligned.scores)} samples distilled")',
    ]
    return "\n".join(lines)


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def score_set_card_fields(metadata: Mapping[str, Any], repo_id: str, num_rows: int) -> dict[str, Any]:
    """The fields of `model_cards/scores_card.md` for a score set's (public) metadata."""
    teacher, data = metadata.get("teacher", {}), metadata.get("data_fingerprint", {})
    mistakes = metadata.get("teacher_mistakes") or {}
    if mistakes:
        in_dt = (mistakes.get("in_distilled") or {}).get("highest")
        mistakes_text = (
            f"{mistakes.get('count')} ({100 * mistakes.get('rate', 0):.2f} %); {in_dt} of them in the distilled "
            f"{100 * mistakes.get('fraction', 0):.0f} % under the default selection (highest scores); by score "
            f"decile, lowest first: {mistakes.get('by_score_decile')}"
        )
    else:
        mistakes_text = "not recorded"
    accuracy = teacher.get("accuracy")
    return {
        "repo_id": repo_id,
        "title": f"`{metadata['scorer']}` scores of {data.get('name')} / {data.get('split')} by {teacher.get('name')}",
        "summary": (
            "One score per training sample, for Data Selection (Lan et al., arXiv 2404.03693): the samples with the "
            "highest scores are distilled from the teacher, the rest trained on their labels only."
        ),
        "dataset": data.get("name"),
        "dataset_revision": data.get("revision") or "main",
        "split": data.get("split"),
        "num_rows": metadata.get("num_rows", num_rows),
        "content_sha256": data.get("content_sha256"),
        "teacher": teacher.get("name"),
        "teacher_weights": teacher.get("weights"),
        "teacher_fingerprint": teacher.get("weights_fingerprint"),
        "teacher_accuracy": "not recorded" if accuracy is None else f"{100 * float(accuracy):.2f} %",
        "scorer": metadata["scorer"],
        "settings": json.dumps(metadata.get("settings", {}), sort_keys=True),
        "teacher_mistakes": mistakes_text,
        "kd_zoo_version": metadata.get("kd_zoo_version", "not recorded"),
        "usage": scores_usage_snippet(repo_id, metadata),
    }


def score_set_card(
    metadata: Mapping[str, Any], *, num_rows: int, repo_id: str | None = None, template: str | None = None
) -> DatasetCard:
    """A score set's data set card: YAML front matter with the public metadata under `kd_zoo:`, then
    `model_cards/scores_card.md` (`CardTemplateError` for a missing field). No `configs:` block: `datasets` finds
    `data/train-*.parquet` as the train split by its name, and a local folder whose card pins `configs:` is cached
    by the folder's name alone (two different `scores/` folders would share one cache entry).

    `repo_id` names the repo in the usage snippet (default `HF_ORG/scores_repo_name(metadata)`)."""
    public = public_metadata(metadata)
    repo_id = repo_id or f"{HF_ORG}/{scores_repo_name(public)}"
    card_data = DatasetCardData(
        license="apache-2.0",
        pretty_name=f"{public['scorer']} scores ({scores_repo_name(public)})",
        size_categories=_size_category(int(public.get("num_rows", num_rows))),
        tags=list(SCORES_CARD_TAGS),
        kd_zoo=public,
    )
    return dataset_card(score_set_card_fields(public, repo_id, num_rows), card_data, template)
