"""What every kd_zoo model family shares at build time: pretrained cfgs, input checks, weight loading errors.

Loading itself is timm's (`build_model_with_cfg`): the Hub, `local-dir:`, `pretrained_cfg_overlay=dict(file=...)`
and `features_only=True` behave exactly as for timm's own models. This module adds the checks and the error
messages: an unknown tag lists the close matches, a checkpoint whose tensors do not fit names them, and weights
that cannot be fetched say which repo was tried and how to pass a local file instead.

The classifier is never dropped silently. timm re-initialises it whenever the requested `num_classes` differs from
the pretrained cfg's (100 for the zoo), even when the file's own classifier has exactly the requested class count
(an exported 10-class student loaded with `num_classes=10`). Here the file decides: a classifier whose class count
is the model's is loaded; one that differs is replaced by a new one only when `num_classes` was passed explicitly
(timm's fine-tuning idiom, `create_model(name, pretrained=True, num_classes=N)`), with a warning naming what was
dropped, and refused otherwise.
"""

from __future__ import annotations

import logging
from typing import Any

from huggingface_hub.errors import EntryNotFoundError
from timm.models import build_model_with_cfg
from timm.models._builder import _resolve_pretrained_source, resolve_pretrained_cfg
from timm.models._registry import get_arch_pretrained_cfgs
from torch import nn

from ..constants import CIFAR100_MEAN, CIFAR100_STD, HF_ORG
from ..pairs import pretrained_tags
from ..registry import close_matches
from ._base import _check_num_classes

_logger = logging.getLogger(__name__)

FIRST_CONV = "stages.0.blocks.0"
CLASSIFIER = "fc"
CLASSIFIER_KEYS = (f"{CLASSIFIER}.weight", f"{CLASSIFIER}.bias")
PAPER_ID = "arXiv:2404.03693"


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights could not be found, fetched or read."""


class UnknownModelError(ValueError):
    """An architecture or weight tag that is not registered (the message lists close matches)."""


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not fit the model (names the offending tensors)."""


def _cfg(**kwargs: Any) -> dict[str, Any]:
    """Pretrained cfg of a CIFAR-100 model: 32x32 inputs, CIFAR-100 normalisation."""
    return {
        "num_classes": 100,
        "input_size": (3, 32, 32),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": CIFAR100_MEAN,
        "std": CIFAR100_STD,
        "first_conv": FIRST_CONV,
        "classifier": CLASSIFIER,
        "license": "apache-2.0",
        "paper_ids": PAPER_ID,
        "paper_name": "Improve Knowledge Distillation via Label Revision and Data Selection",
        **kwargs,
    }


def zoo_cfgs(arch: str, **kwargs: Any) -> dict[str, dict[str, Any]]:
    """`'arch.tag' -> cfg` for every weight tag of `arch`, the default tag first, each on the org's Hub repo."""
    return {f"{arch}.{tag}": _cfg(hf_hub_id=f"{HF_ORG}/{arch}.{tag}", **kwargs) for tag in pretrained_tags(arch)}


def build_zoo_model(
    model_cls: type[nn.Module],
    variant: str,
    pretrained: bool = False,
    num_stages: int = 4,
    **kwargs: Any,
) -> nn.Module:
    """Build a kd_zoo model through timm's builder, with kd_zoo's input checks and error messages."""
    if "num_classes" in kwargs:
        _check_num_classes(kwargs["num_classes"])
    in_chans = kwargs.get("in_chans", 3)
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans <= 0:
        raise ValueError(f"in_chans must be a positive int (3 for RGB images), got {in_chans!r}")
    _check_tag(variant, kwargs.get("pretrained_cfg"))
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    weights_file = overlay.get("file")
    if pretrained and weights_file and not str(weights_file).endswith(".safetensors"):
        raise PretrainedWeightsError(
            f"kd_zoo loads weights from .safetensors files only, got file={weights_file!r}. Convert it with "
            "`safetensors.torch.save_file(state_dict, 'model.safetensors')` if you trust its origin."
        )
    feature_cfg = {"feature_cls": "getter", "out_indices": tuple(range(num_stages))}
    features_only = bool(kwargs.get("features_only"))
    loaded_classifier: dict[str, Any] = {}

    def filter_fn(state_dict: dict[str, Any], model: nn.Module) -> dict[str, Any]:
        # A new classifier is asked for by an explicit num_classes (or by features_only, which has none).
        state_dict = check_state_dict(state_dict, model, new_classifier=features_only or "num_classes" in kwargs)
        if not features_only:
            loaded_classifier.update(_fitting_classifier(state_dict, model))
        return state_dict

    try:
        model = build_model_with_cfg(
            model_cls,
            variant,
            pretrained,
            feature_cfg=feature_cfg,
            pretrained_filter_fn=filter_fn,
            **kwargs,
        )
    except (OSError, EntryNotFoundError) as err:
        if not pretrained:
            raise
        raise PretrainedWeightsError(_weights_error_message(variant, kwargs, err)) from err
    except Exception as err:
        if pretrained and type(err).__name__ == "SafetensorError":
            raise PretrainedWeightsError(
                f"The weights file for {variant} is not a readable safetensors file ({err}). It may be truncated "
                "or corrupt: delete it (or the Hugging Face cache entry) and download it again."
            ) from err
        raise
    if loaded_classifier:
        # timm drops the classifier whenever num_classes differs from the pretrained cfg's, even one that fits:
        # load it here, and let the cfg describe the weights the model now holds.
        model.get_classifier().load_state_dict({k.split(".", 1)[1]: v for k, v in loaded_classifier.items()})
        model.pretrained_cfg["num_classes"] = model.num_classes
    return model


def _fitting_classifier(state_dict: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """The checkpoint's classifier tensors when they fit the model's classifier exactly, else {}."""
    expected = model.state_dict()
    if not all(k in state_dict and k in expected for k in CLASSIFIER_KEYS):
        return {}
    if any(tuple(state_dict[k].shape) != tuple(expected[k].shape) for k in CLASSIFIER_KEYS):
        return {}
    return {k: state_dict[k] for k in CLASSIFIER_KEYS}


def _check_tag(variant: str, pretrained_cfg: Any) -> None:
    """Refuse an unknown weight tag with the close matches. timm passes the tag alone (`cifar100` for
    `lrds_resnet32x4.cifar100`), while its registry keys the cfgs by `arch.tag`."""
    if not isinstance(pretrained_cfg, str):
        return
    tags = [name.split(".", 1)[1] for name in get_arch_pretrained_cfgs(variant) if "." in name]
    if pretrained_cfg not in tags:
        hint = close_matches(pretrained_cfg, tags)
        raise UnknownModelError(
            f"Unknown pretrained tag {pretrained_cfg!r} for {variant}."
            + (f" Did you mean {', '.join(repr(f'{variant}.{h}') for h in hint)}?" if hint else "")
            + f" Tags of {variant}: {', '.join(tags)} (kd_zoo.list_models('{variant}.*', pretrained=True))."
        )


def _weights_error_message(variant: str, kwargs: dict[str, Any], err: Exception) -> str:
    cfg = resolve_pretrained_cfg(
        variant,
        pretrained_cfg=kwargs.get("pretrained_cfg"),
        pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay"),
    ).to_dict()
    load_from, location = _resolve_pretrained_source(cfg)
    if load_from == "hf-hub":
        repo = location[0] if isinstance(location, tuple) else location
        tried = f"the Hugging Face Hub repo '{repo}'"
    elif load_from in ("file", "local-dir"):
        tried = f"the local path '{location}'"
    else:
        tried = f"{load_from or 'no source'} {location!r}"
    return (
        f"Could not load pretrained weights for {variant} from {tried}: {type(err).__name__}: {err}\n"
        "If the Hub is unreachable or the weights are not published yet, pass a local file instead: "
        f"timm.create_model('{variant}', pretrained=True, "
        "pretrained_cfg_overlay=dict(file='/path/to/model.safetensors')), "
        "or load an exported folder with timm.create_model('local-dir:/path/to/folder')."
    )


def check_state_dict(state_dict: dict[str, Any], model: nn.Module, new_classifier: bool = False) -> dict[str, Any]:
    """Refuse a checkpoint whose tensors do not fit `model`, naming them (timm's `pretrained_filter_fn`).

    The first conv may differ when `in_chans` differs (timm adapts it, as for its own models). The classifier may
    differ in class count only when `new_classifier` is true (the caller asked for `num_classes` explicitly): it is
    then replaced by the model's newly initialised one, with a warning naming the dropped tensors. Otherwise a
    classifier of another class count is refused with the count that would load it. Every other tensor is checked
    first, so a checkpoint of another architecture is named as such, not as a class-count problem.
    """
    expected = model.state_dict()
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    arch = cfg.get("architecture", type(model).__name__)
    state_dict = dict(state_dict)
    found_classes = _classifier_rows(state_dict)
    model_classes = getattr(model, "num_classes", None)
    other_classes = found_classes is not None and found_classes != model_classes
    adaptable = set(CLASSIFIER_KEYS) if other_classes else set()
    conv_key = f"{cfg.get('first_conv', FIRST_CONV)}.weight"
    if conv_key in state_dict and conv_key in expected:
        found, want = tuple(state_dict[conv_key].shape), tuple(expected[conv_key].shape)
        if found != want and found[:1] + found[2:] == want[:1] + want[2:]:
            _logger.warning("adapting %s from %d to %d input channels", conv_key, found[1], want[1])
            adaptable.add(conv_key)
    missing = [k for k in expected if k not in state_dict and k not in adaptable]
    unexpected = [k for k in state_dict if k not in expected and k not in adaptable]
    wrong = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and k not in adaptable and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong:
        problems = []
        for title, items in (
            ("shape mismatch", wrong),
            ("missing from checkpoint", missing),
            ("not in the model", unexpected),
        ):
            if items:
                shown = "; ".join(items[:8]) + (f"; ... ({len(items) - 8} more)" if len(items) > 8 else "")
                problems.append(f"{title}: {shown}")
        raise CheckpointMismatchError(
            f"The checkpoint does not fit {arch} ({' | '.join(problems)}). Check that the weights were saved "
            "from the same architecture (a .safetensors file's tensor names and shapes: "
            "`safetensors.safe_open(path, 'pt').keys()`)."
        )
    if other_classes:
        found_shape = tuple(state_dict[CLASSIFIER_KEYS[0]].shape)
        if not new_classifier:
            raise CheckpointMismatchError(
                f"The checkpoint's classifier has {found_classes} classes ({CLASSIFIER_KEYS[0]} {found_shape}) and "
                f"{arch} was built with {model_classes}: pass num_classes={found_classes} to load it, or "
                f"num_classes={model_classes} explicitly to train a new classifier on these features."
            )
        dropped = ", ".join(f"{k} {tuple(state_dict[k].shape)}" for k in CLASSIFIER_KEYS if k in state_dict)
        (_logger.info if model_classes == 0 else _logger.warning)(
            "%s: the checkpoint's %d-class classifier (%s) is not loaded: the model was asked for num_classes=%s, "
            "so its classifier is newly initialised",
            arch,
            found_classes,
            dropped,
            model_classes,
        )
        for key in CLASSIFIER_KEYS:
            if key in expected:
                state_dict[key] = expected[key]  # the new classifier, whatever timm then does with the cfg
            else:
                state_dict.pop(key, None)
    return state_dict


def _classifier_rows(state_dict: dict[str, Any]) -> int | None:
    weight = state_dict.get(CLASSIFIER_KEYS[0])
    shape = tuple(getattr(weight, "shape", ()))
    return shape[0] if len(shape) == 2 else None
