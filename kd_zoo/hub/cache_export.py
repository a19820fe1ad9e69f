"""A teacher-output cache as a Hub data set repo: the cache folder itself, made public, plus its data set card.

`export_teacher_cache(folder)` checks that the build in `folder` is complete and whole (`TeacherCache.open`),
reduces local paths in its manifest and plan to names (`public_metadata`: the fingerprints stay), and writes
`README.md` from `model_cards/teacher_cache_card.md`: the teacher, the data and their fingerprints, the views and
the normalisation, the files, and how to distil from it. `kd_zoo.hub.publish_folder(folder, repo_id,
repo_type="dataset")` uploads the result; `TeacherCache.open("ORG/NAME")` downloads and opens it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData

from ..constants import HF_ORG, MODEL_PREFIX
from ..pairs import dataset_tag
from ..teacher_cache import MANIFEST, TeacherCache
from ..teacher_cache.storage import PLAN, identity_key, read_json, write_json_atomic
from .cards import PAPER_CITATION, dataset_card, template_text
from .privacy import public_metadata, public_path

CACHE_CARD_TAGS = ("kd-zoo", "knowledge-distillation", "teacher-outputs", "logits")
CACHE_REPO_SUFFIX = "-logits"
CACHE_CARD_TEMPLATE = "teacher_cache_card.md"


def cache_repo_name(metadata: Mapping[str, Any]) -> str:
    """The zoo's data set repo name for a teacher cache: `<data>-<teacher>-logits`, e.g. `cifar100-resnet32x4-logits`
    (`-pad<p>` added for a padding other than CIFAR's 4, `-fp32` for a float32 cache)."""
    data = public_path(str(metadata.get("data", {}).get("name") or "data"))
    teacher = str(metadata.get("teacher", {}).get("name") or "teacher").removeprefix(MODEL_PREFIX)
    pad = metadata.get("augmentation", {}).get("pad", 4)
    extra = ("" if pad == 4 else f"-pad{pad}") + ("-fp32" if metadata.get("dtype") == "float32" else "")
    name = f"{dataset_tag(data)}-{teacher}{extra}{CACHE_REPO_SUFFIX}"
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in name).strip("-.")[:96]


def cache_usage_snippet(repo_id: str, metadata: Mapping[str, Any]) -> str:
    """The card's usage example: open the cache, check it against the run, distil with it."""
    data, teacher = metadata.get("data", {}), metadata.get("teacher", {})
    weights = teacher.get("weights")
    loadable = bool(weights) and (str(weights).startswith("hf-hub:") or ("." in str(weights) and "/" not in weights))
    loadable = loadable and not str(weights).endswith(".safetensors")
    load_line = (
        f'teacher = load_model("{teacher.get("name")}", "{weights}")'
        if loadable
        else f'teacher = load_model("{teacher.get("name")}", "TEACHER_WEIGHTS")  # the weights the cache was built from'
    )
    return "\n".join(
        [
            "from kd_zoo import create_model, load_model",
            "from kd_zoo.data import TensorBatchLoader, load_tensor_split",
            "from kd_zoo.engine import Distiller",
            "from kd_zoo.methods import create_method",
            "from kd_zoo.revision import LabelRevision",
            "from kd_zoo.teacher_cache import TeacherCache",
            "",
            f'train = load_tensor_split("{data.get("name")}", "{data.get("split", "train")}")',
            load_line,
            f'cache = TeacherCache.open("{repo_id}", device="cpu")  # downloads the repo; device="cuda" moves it there',
            f"loader = TensorBatchLoader(train, 64, train=True, pad={metadata.get('augmentation', {}).get('pad', 4)})",
            "cache.check_run(teacher, loader)  # refuses another teacher, other data, views or normalisation",
            'student = create_model("lrds_resnet8x4", num_classes=train.num_classes)',
            'method = create_method("kd", student, teacher)',
            "distiller = Distiller(student, method, LabelRevision(), teacher_cache=cache)",
            "# then kd_zoo.engine.fit(accelerator, distiller, optimizer, loader, eval_loader, options, run_dir=..., "
            "teacher=None)",
        ]
    )


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def _human_bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} bytes"


def teacher_cache_card_fields(metadata: Mapping[str, Any], repo_id: str) -> dict[str, Any]:
    """The fields of `model_cards/teacher_cache_card.md` for a cache's (public) manifest."""
    teacher, data = metadata.get("teacher", {}), metadata.get("data", {})
    augmentation, normalization = metadata.get("augmentation", {}), metadata.get("normalization", {})
    compute = metadata.get("compute", {})
    accuracy = metadata.get("teacher_accuracy")
    size = augmentation.get("size", ["?", "?"])
    return {
        "repo_id": repo_id,
        "title": f"{teacher.get('name')} logits on every view of {data.get('name')} / {data.get('split')}",
        "summary": (
            f"The frozen teacher's logits for each of the {augmentation.get('num_views')} augmented views of every "
            f"training image: distil any student of this teacher without running it (a teacher-output cache)."
        ),
        "dataset": data.get("name"),
        "dataset_revision": data.get("revision") or "main",
        "split": data.get("split"),
        "num_rows": data.get("num_rows"),
        "content_sha256": data.get("content_sha256"),
        "teacher": teacher.get("name"),
        "teacher_weights": teacher.get("weights"),
        "teacher_fingerprint": teacher.get("weights_fingerprint"),
        "teacher_accuracy": "not recorded" if accuracy is None else f"{100 * float(accuracy):.2f} %",
        "num_views": augmentation.get("num_views"),
        "size": f"{size[0]}x{size[1]}",
        "pad": augmentation.get("pad"),
        "view_encoding": augmentation.get("view_encoding"),
        "center_view": augmentation.get("center_view"),
        "mean": normalization.get("mean"),
        "std": normalization.get("std"),
        "dtype": metadata.get("dtype"),
        "num_shards": metadata.get("layout", {}).get("num_shards"),
        "size_on_disk": _human_bytes(int(metadata.get("total_bytes", 0))),
        "compute": f"computed with autocast {compute.get('autocast')}, channels-last {compute.get('channels_last')}",
        "kd_zoo_version": metadata.get("software", {}).get("kd_zoo", "not recorded"),
        "software": ", ".join(f"{k} {v}" for k, v in sorted(metadata.get("software", {}).items())),
        "usage": cache_usage_snippet(repo_id, metadata),
        "citation": PAPER_CITATION,
    }


def teacher_cache_card(
    metadata: Mapping[str, Any], *, repo_id: str | None = None, template: str | None = None
) -> DatasetCard:
    """A cache's data set card: the public manifest (without the shard list) under `kd_zoo:` in the YAML, then the
    template (`CardTemplateError` for a missing field)."""
    public = public_metadata(metadata)
    repo_id = repo_id or f"{HF_ORG}/{cache_repo_name(public)}"
    card_data = DatasetCardData(
        license="apache-2.0",
        pretty_name=f"{cache_repo_name(public)} (teacher-output cache)",
        size_categories=_size_category(int(public.get("data", {}).get("num_rows") or 0)),
        tags=list(CACHE_CARD_TAGS),
        kd_zoo={k: v for k, v in public.items() if k != "shards"},
    )
    fields = teacher_cache_card_fields(public, repo_id)
    return dataset_card(fields, card_data, template or template_text(CACHE_CARD_TEMPLATE))


def _public(metadata: dict[str, Any]) -> dict[str, Any]:
    public = public_metadata(metadata)  # the teacher's weights as a name, a zoo tag or an hf-hub: id
    if identity_key(public) != identity_key(metadata):  # never: paths are not part of the identity
        raise RuntimeError("making the cache's metadata public changed its identity")
    return public


def export_teacher_cache(folder: str | Path, *, repo_id: str | None = None, template: str | None = None) -> Path:
    """Make a complete cache folder Hub-ready in place (see the module docstring); returns it.

    Raises:
        IncompleteCacheError / CacheFormatError: the build is not complete or a shard is not whole.
        CardTemplateError: the card template needs a field that is missing (nothing is written).
    """
    folder = Path(folder)
    TeacherCache.open(folder, placement="mmap")  # complete and whole, or a clear error
    manifest = read_json(folder / MANIFEST)
    public = _public(manifest)
    card = teacher_cache_card(public, repo_id=repo_id, template=template)  # checked before anything is written
    if public != manifest:
        write_json_atomic(folder / MANIFEST, public)
    if (folder / PLAN).is_file():
        write_json_atomic(folder / PLAN, _public(read_json(folder / PLAN)))
    card.save(str(folder / "README.md"))
    return folder


def cache_summary(folder: str | Path) -> str:
    """One line about a cache folder: teacher, data, views, dtype, size (for recipes)."""
    meta = json.loads((Path(folder) / MANIFEST).read_text())
    data, aug = meta["data"], meta["augmentation"]
    return (
        f"{meta['teacher']['name']} on {data.get('name')}/{data.get('split')}: {data['num_rows']} samples x "
        f"{aug['num_views']} views, {meta['dtype']}, {_human_bytes(meta['total_bytes'])} in "
        f"{meta['layout']['num_shards']} shards; teacher top-1 (centre view) {100 * meta['teacher_accuracy']:.2f} %"
    )
