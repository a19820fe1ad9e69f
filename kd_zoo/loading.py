"""Create, list and load zoo models, and fingerprint their weights: the one place models come from.

`create_model` / `list_models` are timm's, with "did you mean" for unknown kd_zoo names. `load_model` builds a model
with its weights from wherever they are: `load_model("lrds_resnet32x4", "teacher.safetensors")` accepts a
`.safetensors` file, an exported model folder (`model.safetensors` + `config.json`, as `kd_zoo.hub` writes and the
Hub serves), a zoo tag (`lrds_resnet32x4.cifar100`), `hf-hub:ORG/NAME`, or None for the architecture's default tag.
Every path goes through timm, so the same checks apply (only safetensors, tensors that fit, clear errors).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import safe_open
from torch import nn

from . import models  # noqa: F401  (registers the lrds_* architectures in timm)
from .constants import MODEL_PREFIX
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
            raise ValueError(
                f"Unknown model {arch!r}."
                + (f" Did you mean {', '.join(repr(h) for h in hint)}?" if hint else "")
                + " kd_zoo.list_models() lists the kd_zoo architectures."
            )
    return timm.create_model(model_name, **kwargs)


def load_model(model_name: str, weights: str | Path | None = None, **kwargs: Any) -> nn.Module:
    """A timm model with pretrained weights (see the module docstring for the accepted `weights`)."""
    if weights is None:
        return create_model(model_name, pretrained=True, **kwargs)
    text = str(weights)
    path = Path(text)
    if text.startswith(("hf-hub:", "local-dir:")):
        return timm.create_model(text, pretrained=True, **kwargs)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} has no config.json: pass the model.safetensors file inside it, or a folder exported by "
                "kd_zoo.hub.export_model"
            )
        return timm.create_model(f"local-dir:{path}", pretrained=True, **kwargs)
    if path.suffix == ".safetensors" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"weights file {text!r} not found")
        overlay = dict(file=str(path))
        classes = checkpoint_num_classes(path)
        if classes is not None:  # the file's own class count, so timm keeps its classifier
            overlay["num_classes"] = classes
            kwargs.setdefault("num_classes", classes)
        return create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    if "." in text and not text.startswith((".", "/")):  # a zoo tag such as lrds_resnet32x4.cifar100
        return create_model(text, pretrained=True, **kwargs)
    raise FileNotFoundError(
        f"weights {text!r} are neither a file, an exported folder, a zoo tag (arch.tag) nor an hf-hub: id"
    )


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
