"""The Hugging Face Hub: export a model to a folder that is exactly its Hub repo, and publish folders.

An exported folder holds `model.safetensors`, timm's `config.json` (architecture, num_classes, label names,
pretrained_cfg) and a `README.md` model card rendered from `model_cards/model_card.md` with huggingface_hub's
card tools (`model-index` metadata with top-1 / top-5). `timm.create_model("local-dir:<folder>", pretrained=True)`
loads it, and once uploaded `timm.create_model("hf-hub:<org>/<name>", pretrained=True)` does the same.

Score sets (`kd_zoo.selection.ScoreSet.save`) get a data set card the same way (`score_set_card`, from
`model_cards/scores_card.md`), with local paths reduced to file names (`public_metadata`) so that the folder can be
published as it is. `find_private_content` checks a folder for tokens and local absolute paths.

Publishing is one `create_repo` + one `upload_folder`, with the token from `HF_TOKEN` or the saved login; the
token is never logged or written into the folder. A dry run prints what would be uploaded.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.resources
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import jinja2
import jinja2.meta
import yaml
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, HfApi, ModelCard, ModelCardData
from timm.models import save_for_hf
from torch import nn

from .constants import HF_ORG

MODEL_FILES = ("README.md", "config.json", "model.safetensors")
CARD_METADATA_FIELDS = ("model_id", "dataset", "best_top1", "best_top5")
# Card fields also kept, machine-readable, under `kd_zoo:` in a model card's YAML (read by kd_zoo.zoo_table).
CARD_RUN_FIELDS = (
    "teacher",
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
        kd_zoo={key: fields[key] for key in CARD_RUN_FIELDS if fields.get(key) is not None} or None,
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


def public_config(config_yaml: str) -> str:
    """A resolved recipe config fit for a public card: local absolute paths reduced to their names."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return public_path(value) if isinstance(value, str) else value

    return yaml.safe_dump(clean(yaml.safe_load(config_yaml)), sort_keys=False).strip()


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
        "config_yaml": public_config(config_yaml),
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


def require_token(token: str | None = None) -> str:
    """`token`, else `HF_TOKEN`, else the saved login; `PublishError` (nothing uploaded) when there is none."""
    return _token(token)


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


# -- score sets as data set repos -------------------------------------------------------------------------------
_PATH_PREFIXES = ("local-dir:", "imagefolder:", "parquet:", "disk:", "file://")
_WINDOWS_ABSOLUTE = re.compile(r"^[A-Za-z]:[\\/]")
_WEIGHT_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


def _local_name(path: str) -> str:
    """The last component of a path (a glob keeps its folder: `cifar/*.parquet`)."""
    pure = PureWindowsPath(path) if _WINDOWS_ABSOLUTE.match(path) else PurePosixPath(path)
    parts = [p for p in pure.parts if p not in ("/", "\\", pure.anchor)]
    keep = parts[-2:] if parts and glob.has_magic(parts[-1]) else parts[-1:]
    return "/".join(keep)


def public_path(text: str) -> str:
    """`text` unless it is a local absolute path (optionally behind `local-dir:`, `parquet:`, ...): then its name."""
    prefix = next((p for p in _PATH_PREFIXES if text.startswith(p)), "")
    rest = text[len(prefix) :]
    if rest.startswith(("/", "~")) or _WINDOWS_ABSOLUTE.match(rest):
        return prefix + _local_name(rest)
    return text


def public_weights(weights: str | None) -> str | None:
    """Where teacher weights came from, fit for a public card: a zoo tag or `hf-hub:` id as is, a local file or
    folder (absolute or relative, optionally behind `local-dir:`) reduced to its name."""
    if weights is None:
        return None
    text = str(weights)
    if text.startswith("hf-hub:"):
        return text
    rest = text.removeprefix("local-dir:").rstrip("/\\")
    if rest and ("/" in rest or "\\" in rest or rest.startswith("~")):
        return _local_name(rest)
    return text


def public_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of score-set metadata without local paths: absolute paths anywhere (a local data set's name, ...)
    become their names, and the teacher's `weights` a file name, a zoo tag or an `hf-hub:` id. Fingerprints (the
    identity of the data and the teacher) are kept as they are."""

    def walk(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        return public_path(value) if isinstance(value, str) else value

    public = walk(metadata)
    teacher = public.get("teacher")
    if isinstance(teacher, dict) and "weights" in teacher:
        teacher["weights"] = public_weights(metadata["teacher"]["weights"])
    return public


def _repo_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:96]


def scores_repo_name(metadata: Mapping[str, Any]) -> str:
    """The zoo's data set repo name for a score set: `<data>-<teacher>-<scorer>-scores`, e.g.
    `cifar100-resnet32x4-influence-scores` (data tag as in `kd_zoo.zoo.weight_tag`, teacher without `lrds_`)."""
    from .zoo import weight_tag

    data = public_path(str(metadata.get("data_fingerprint", {}).get("name") or "data"))
    teacher = str(metadata.get("teacher", {}).get("name") or "teacher").removeprefix("lrds_")
    return _repo_safe(f"{weight_tag('ce', None, data)}-{teacher}-{metadata['scorer']}{SCORES_REPO_SUFFIX}")


def _is_zoo_reference(weights: str | None) -> bool:
    """Whether recorded weights can be loaded anywhere: an `hf-hub:` id or a zoo tag (`lrds_resnet32x4.cifar100`)."""
    text = str(weights or "")
    if text.startswith("hf-hub:"):
        return True
    return "." in text and "/" not in text and not text.startswith(".") and not text.endswith(_WEIGHT_FILE_SUFFIXES)


def scores_usage_snippet(repo_id: str, metadata: Mapping[str, Any]) -> str:
    """The data set card's usage example: the rows with `datasets`, then the checked join with a training split."""
    data = metadata.get("data_fingerprint", {})
    teacher = metadata.get("teacher", {})
    loadable = _is_zoo_reference(teacher.get("weights"))
    lines = [
        "import datasets",
        "from huggingface_hub import snapshot_download",
        "",
        *(["from kd_zoo.checkpoints import load_model"] if loadable else []),
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
        'print(f"{int(aligned.select(0.8).sum())} of {len(aligned.scores)} samples distilled")',
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
        pretty_name=f"{public['scorer']} scores ({scores_repo_name(public)})",
        size_categories=_size_category(int(public.get("num_rows", num_rows))),
        tags=list(SCORES_CARD_TAGS),
        kd_zoo=public,
    )
    return dataset_card(score_set_card_fields(public, repo_id, num_rows), card_data, template)


# -- what a folder must not hold --------------------------------------------------------------------------------
_TOKEN_PATTERN = re.compile(r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{30,}")
_COMMON_ROOTS = "home|Users|root|tmp|var|mnt|media|scratch|data|work|opt|srv|private|gpfs|lustre|nfs"
_ABSOLUTE_PATH = re.compile(
    rf"(?<![\w.~:/\\-])(?:/(?:{_COMMON_ROOTS})(?=[/\s\"'`,;)\]]|$)[^\s\"'`,;)\]]*|[A-Za-z]:\\[^\s\"'`,;|]*)"
)
_SCAN_LIMIT = 64 << 20


def _scanned_text(path: Path) -> str:
    """The text to search in a file: a safetensors header, or the file (head and tail when very large)."""
    with open(path, "rb") as f:
        if path.suffix == ".safetensors":
            size = int.from_bytes(f.read(8), "little")
            data = f.read(min(size, _SCAN_LIMIT))
        elif path.stat().st_size > _SCAN_LIMIT:
            data = f.read(1 << 20)
            f.seek(-(1 << 20), os.SEEK_END)
            data += f.read()
        else:
            data = f.read()
    return data.decode("utf-8", errors="ignore")


def find_private_content(folder: str | Path, local_paths: Iterable[str | Path] = ()) -> list[str]:
    """What in `folder` should not be published: Hugging Face tokens (the one in use, or anything shaped like
    one) and local absolute paths (the home and working directories, the folder's own location, `local_paths`,
    and paths under common roots such as /home, /tmp, /root). Returns one line per finding, never the token."""
    from huggingface_hub import get_token

    folder = Path(folder)
    secrets = {t for t in (os.environ.get("HF_TOKEN"), get_token()) if t}
    roots = {Path.home(), Path.cwd(), folder.resolve().parent, *(Path(p) for p in local_paths)}
    roots = {str(r) for r in roots if len(Path(r).parts) > 1}
    findings = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        text = _scanned_text(path)
        if any(secret in text for secret in secrets) or _TOKEN_PATTERN.search(text):
            findings.append(f"{name}: a Hugging Face token")
        hits = {m.group(0) for m in _ABSOLUTE_PATH.finditer(text)}
        hits |= {root for root in roots if re.search(rf"(?<![\w.-]){re.escape(root)}(?![\w.-])", text)}
        findings += [f"{name}: the local path {hit[:80]!r}" for hit in sorted(hits)]
    return findings
