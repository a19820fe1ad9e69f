"""Create, list and load zoo models, and fingerprint their weights: the one place models come from.

`create_model` / `list_models` are timm's, with "did you mean" for unknown kd_zoo names. `load_model` builds a model
with its weights from wherever they are: `load_model("lrds_resnet32x4", "teacher.safetensors")` accepts a
`.safetensors` file, an exported model folder (`model.safetensors` + `config.json`, as `kd_zoo.hub` writes and the
Hub serves), a training checkpoint folder, a zoo tag (`lrds_resnet32x4.cifar100`), `hf-hub:ORG/NAME`, or None for
the architecture's default tag. Every path keeps the same checks (only safetensors, tensors that fit, the weights'
own architecture, clear errors).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from .constants import MODEL_PREFIX
from .models import (  # importing .models registers the lrds_* models
    CheckpointMismatchError,
    PretrainedWeightsError,
    UnknownModelError,
    checkpoint_arch,
    load_reference_checkpoint,
)
from .models._builder import CLASSIFIER, check_state_dict
from .registry import close_matches


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """kd_zoo architectures (or, with `pretrained=True`, `arch.tag` names) matching a glob pattern."""
    if not pattern.startswith(MODEL_PREFIX):
        pattern = MODEL_PREFIX + pattern.lstrip("*") if pattern != "*" else MODEL_PREFIX + "*"
    return timm.list_pretrained(pattern) if pretrained else timm.list_models(pattern)


def create_model(model_name: str, **kwargs: Any) -> nn.Module:
    """`timm.create_model`, but an unknown architecture name lists the close matches.

    Example:
        >>> import kd_zoo
        >>> model = kd_zoo.create_model("lrds_resnet8x4", num_classes=100)
        >>> model.num_features
        256
    """
    if ":" not in model_name:
        arch = model_name.split(".", 1)[0]
        if not timm.is_model(arch):
            candidates = timm.list_models(MODEL_PREFIX + "*") if arch.startswith(MODEL_PREFIX) else timm.list_models()
            hint = close_matches(arch, candidates)
            raise UnknownModelError(
                f"Unknown model {arch!r}."
                + (f" Did you mean {', '.join(repr(h) for h in hint)}?" if hint else "")
                + " kd_zoo.list_models() lists the kd_zoo architectures."
            )
    return timm.create_model(model_name, **kwargs)


def load_model(model_name: str | None, weights: str | Path | None = None, **kwargs: Any) -> nn.Module:
    """A timm model with pretrained weights, from wherever they are.

    Args:
        model_name: the architecture (`lrds_resnet32x4`, a timm name), a tagged name (`lrds_resnet32x4.cifar100`) or
            an `hf-hub:` id; None to take it from `weights` (an exported folder or an `hf-hub:` id).
        weights: one of
            - None: the weights that `model_name` names (its default tag, or the tag / hub id it carries);
            - a zoo tag, `lrds_resnet32x4.cifar100` (or the bare tag, `cifar100`), or `hf-hub:ORG/NAME`;
            - an exported model folder (`model.safetensors` + `config.json`, as `kd_zoo.hub.export_model` writes and
              the Hub serves), or a run folder holding one in `model/`;
            - a training checkpoint folder (`runs/<run>/checkpoints/epoch_NNNN`, or `checkpoints/` for its latest):
              Accelerate's `model.safetensors` of the trained module, whose `student.` tensors are the model (the
              `method.` ones, a method's regressors, are left out);
            - a `.safetensors` file.
        **kwargs: passed to `timm.create_model` (e.g. `num_classes`, `cache_dir`).

    The weights' own architecture wins or disagrees loudly: a folder, tag or hub id of another architecture than
    `model_name` raises ValueError naming both. Every path keeps timm's and kd_zoo's checks (only safetensors,
    tensors that fit, a classifier never dropped silently). A `.pth` reference checkpoint (CRD / mdistiller) is
    converted explicitly, by `kd_zoo.models.load_reference_checkpoint` or `recipes/import_checkpoint.py`.
    """
    if weights is None:
        if model_name is None:
            raise ValueError("load_model needs a model name or weights (a folder, a file, a tag or an hf-hub: id)")
        return create_model(model_name, pretrained=True, **kwargs)
    text = str(weights)
    if text.startswith("hf-hub:"):
        return _same_architecture(model_name, timm.create_model(text, pretrained=True, **kwargs), text)
    path = Path(text.removeprefix("local-dir:"))
    if path.is_dir():
        return _load_folder(model_name, path, **kwargs)
    if text.startswith("local-dir:"):
        raise FileNotFoundError(f"weights folder {str(path)!r} not found")
    if path.suffix == ".safetensors" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"weights file {text!r} not found")
        if path.suffix != ".safetensors":
            raise PretrainedWeightsError(
                f"kd_zoo loads weights from .safetensors files only, got {text!r}. A CRD / mdistiller reference "
                "checkpoint (.pth) is converted with `python recipes/import_checkpoint.py PATH --arch ARCH` or "
                "kd_zoo.models.load_reference_checkpoint(arch, path); another file, if you trust its origin, with "
                "safetensors.torch.save_file(state_dict, 'model.safetensors')."
            )
        if model_name is None:
            raise ValueError(f"{text} does not record its architecture: pass it, load_model('lrds_<arch>', {text!r})")
        if any(k.startswith(STUDENT_PREFIX) for k in _safetensors_keys(path)):
            return _load_training_checkpoint(model_name, path, **kwargs)
        overlay = dict(file=str(path))
        classes = checkpoint_num_classes(path)
        if classes is not None:  # the file's own class count, so its classifier loads
            overlay["num_classes"] = classes
            kwargs.setdefault("num_classes", classes)
        return create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    if model_name is not None and ":" not in model_name and "." not in text and "/" not in text:
        arch = model_name.split(".", 1)[0]
        if text in _tags(arch):  # a bare tag: load_model("lrds_resnet32x4", "cifar100")
            return create_model(f"{arch}.{text}", pretrained=True, **kwargs)
    if "." in text and not text.startswith((".", "/")) and "/" not in text:  # a zoo tag, lrds_resnet32x4.cifar100
        _check_same(model_name, text.split(".", 1)[0], text)
        return create_model(text, pretrained=True, **kwargs)
    raise FileNotFoundError(
        f"weights {text!r} are neither a file, an exported folder, a training checkpoint folder, a zoo tag "
        "(arch.tag) nor an hf-hub: id"
    )


STUDENT_PREFIX = "student."  # the trained model inside a kd_zoo training checkpoint (Distiller / Supervised)


def _arch_of(model_name: str | None) -> str | None:
    """The architecture a model name stands for (`lrds_resnet8x4.kd_...` -> `lrds_resnet8x4`); None for a hub id."""
    if model_name is None or ":" in model_name:
        return None
    return model_name.split(".", 1)[0]


def _check_same(model_name: str | None, found: str, source: str) -> None:
    wanted = _arch_of(model_name)
    if wanted is not None and found and wanted != found:
        raise CheckpointMismatchError(
            f"{source} holds a {found} model, not {wanted}: pass model_name={found!r} (or None, to take the "
            f"weights' own architecture), or weights made for {wanted}"
        )


def _same_architecture(model_name: str | None, model: nn.Module, source: str) -> nn.Module:
    _check_same(model_name, (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or "", source)
    return model


def _tags(arch: str) -> list[str]:
    return [name.split(".", 1)[1] for name in timm.list_pretrained(f"{arch}.*")]


def _load_folder(model_name: str | None, folder: Path, **kwargs: Any) -> nn.Module:
    """An exported folder, a run folder (its `model/`), a training checkpoint (`epoch_NNNN`) or a checkpoints root."""
    if (folder / "config.json").is_file():
        config = json.loads((folder / "config.json").read_text())
        _check_same(model_name, str(config.get("architecture") or ""), f"{folder} (config.json)")
        return timm.create_model(f"local-dir:{folder}", pretrained=True, **kwargs)
    if (folder / "model" / "config.json").is_file():  # a finished run: runs/<run>/model
        return _load_folder(model_name, folder / "model", **kwargs)
    latest = folder / "latest"
    if latest.is_file() and (folder / latest.read_text().strip()).is_dir():  # runs/<run>/checkpoints
        return _load_folder(model_name, folder / latest.read_text().strip(), **kwargs)
    weights = folder / "model.safetensors"
    if weights.is_file():
        if model_name is None:
            raise ValueError(
                f"{folder} has no config.json, so its architecture is unknown: pass it, "
                f"load_model('lrds_<arch>', {str(folder)!r})"
            )
        if any(k.startswith(STUDENT_PREFIX) for k in _safetensors_keys(weights)):
            return _load_training_checkpoint(model_name, weights, **kwargs)
        return load_model(model_name, weights, **kwargs)
    raise FileNotFoundError(
        f"{folder} holds no weights kd_zoo knows: an exported model folder (config.json + model.safetensors), a "
        "run folder (model/), a training checkpoint (epoch_NNNN/model.safetensors) or a checkpoints/ folder"
    )


def _load_training_checkpoint(model_name: str, path: Path, **kwargs: Any) -> nn.Module:
    """The `student.` tensors of Accelerate's `model.safetensors` (a `Distiller` or `Supervised` module)."""
    tensors = load_file(str(path))
    state = {k[len(STUDENT_PREFIX) :]: v for k, v in tensors.items() if k.startswith(STUDENT_PREFIX)}
    classifier = state.get(f"{CLASSIFIER}.weight")
    if classifier is not None and classifier.ndim == 2:
        kwargs.setdefault("num_classes", int(classifier.shape[0]))
    model = create_model(model_name, **kwargs)
    try:
        state = check_state_dict(state, model, new_classifier=False)
    except CheckpointMismatchError as err:
        raise CheckpointMismatchError(f"{path} (its {STUDENT_PREFIX!r} tensors): {err}") from err
    model.load_state_dict(state, strict=True)
    model.pretrained_cfg["num_classes"] = model.num_classes
    return model.eval()


def _safetensors_keys(path: Path) -> list[str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception:  # unreadable: the loader itself reports it, with the fix
        return []


# What the CRD / mdistiller code saves with torch.save (converted by kd_zoo.models.reference).
REFERENCE_SUFFIXES = (".pth", ".pt", ".tar", ".ckpt")


def load_model_source(
    source: str,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    prefix: str | None = None,
) -> nn.Module:
    """A model from any one source string, as `recipes/validate.py` takes it: a zoo name (its default weights) or
    `arch.tag`, an `hf-hub:` id, an exported / run / checkpoint folder, a `.safetensors` file, or a CRD / mdistiller
    `.pth` checkpoint (converted). `arch` names the architecture where the source does not record it (a file) or
    picks a tag's architecture; `num_classes` the class count a tag's weights have; `prefix` the tensors of a
    reference checkpoint to take (`module.student.`)."""
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    path = Path(source.removeprefix("local-dir:"))
    if path.is_file() and path.suffix in REFERENCE_SUFFIXES:
        return load_reference_checkpoint(checkpoint_arch(path, arch), path, num_classes=num_classes, prefix=prefix)
    if path.is_file() and arch is None:
        raise UnknownModelError(f"{path.name} does not record its architecture: name it (arch=lrds_<name>)")
    if source.startswith(("hf-hub:", "local-dir:")) or path.exists():
        return load_model(arch, source, **kwargs)
    if "/" in source or path.suffix in (*REFERENCE_SUFFIXES, ".safetensors"):
        raise FileNotFoundError(f"no file or folder {source!r} (a zoo name has no '/'; a Hub repo is hf-hub:ORG/NAME)")
    if arch is not None and arch != source:
        return load_model(arch, source, **kwargs)  # a tag of `arch`
    return load_model(source, **kwargs)  # a zoo name (its default tag) or arch.tag


def checkpoint_num_classes(path: str | Path, classifier: str = "fc") -> int | None:
    """Rows of the classifier weight in a safetensors file (read from its header), or None if it has none."""
    try:
        with safe_open(str(path), framework="pt") as f:
            key = f"{classifier}.weight"
            return f.get_slice(key).get_shape()[0] if key in f.keys() else None
    except Exception:  # unreadable: the loader itself reports it, with the fix
        return None


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 over a model's state dict (names, dtypes, shapes and bytes, in name order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
