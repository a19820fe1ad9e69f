"""`create_model` / `list_models`: timm's, with 'did you mean' for unknown kd_zoo names."""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

from .registry import close_matches

PREFIX = "lrds_"


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """kd_zoo architectures (or, with `pretrained=True`, `arch.tag` names) matching a glob pattern."""
    if not pattern.startswith(PREFIX):
        pattern = PREFIX + pattern.lstrip("*") if pattern != "*" else PREFIX + "*"
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
            candidates = timm.list_models(PREFIX + "*") if arch.startswith(PREFIX) else timm.list_models()
            hint = close_matches(arch, candidates)
            raise ValueError(
                f"Unknown model {arch!r}."
                + (f" Did you mean {', '.join(repr(h) for h in hint)}?" if hint else "")
                + " kd_zoo.list_models() lists the kd_zoo architectures."
            )
    return timm.create_model(model_name, **kwargs)
