"""Which distillation methods a teacher cache serves: those that read nothing of the teacher but its logits.

A method declares what it needs from the teacher as a `FeatureRequest` (`DistillMethod.teacher_request`); a cache
holds logits only, so it serves a method whose request is empty (kd, dkd, dtd_la, ctkd, and Label Revision on any
of them, which reads the teacher's logits too). Feature methods (fitnet, pkt, vid, srrl, semckd) keep the live
teacher.
"""

from __future__ import annotations

from ..methods import METHODS, DistillMethod, FeatureRequest
from .errors import CacheMethodError


def logit_only_methods() -> list[str]:
    """Registered methods that never ask the teacher for more than its logits (their class keeps the base
    `teacher_request`)."""
    return [name for name in METHODS.names() if METHODS.get(name).teacher_request is DistillMethod.teacher_request]


def check_method(method: DistillMethod) -> None:
    """Refuse a method that needs the teacher's features with a cache, naming the methods a cache serves."""
    request = method.teacher_request
    if request != FeatureRequest():
        name = getattr(method, "name", "") or type(method).__name__
        raise CacheMethodError(
            f"method {name!r} needs the teacher's features ({request}), and a teacher cache holds only its logits: "
            f"a cache serves {', '.join(logit_only_methods())} (with or without Label Revision). Train {name} with the "
            "live teacher (no teacher cache)"
        )
