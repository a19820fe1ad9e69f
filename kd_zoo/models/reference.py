"""Reference CIFAR checkpoints (CRD / RepDistiller, mdistiller) read into the zoo's `lrds_*` models.

The CIFAR-100 teachers that the KD literature shares (`<model>_vanilla/ckpt_epoch_240.pth`, written by CRD's
`train_teacher.py`, "Contrastive Representation Distillation", Tian et al., arXiv 1910.10699, and redistributed
unchanged in mdistiller's `cifar_teachers.tar`, "Decoupled Knowledge Distillation", Zhao et al., arXiv 2203.08679)
hold the reference model's `state_dict()` under `"model"`, beside `epoch`, `accuracy` and the optimizer state. Both
code bases build the same modules under the same attribute names, so one name map serves both. The zoo computes
the same networks: with the renamed weights, logits agree with the reference code to 2e-15 in float64 for all 22
architectures, and so do the stage features and pre-activation features.

The map is explicit, per family: exact-match name rules with index arithmetic, bounded by each architecture's
depth. It never matches tensors by position or by shape, and every key must land on a distinct name of ours.

Files are read only with `torch.load(weights_only=True, map_location="cpu")`: tensors and plain containers, never
code (DESIGN rule: nothing unpickles code). A file whose pickle needs a class (CRD's `<model>_last.pth` stores an
`argparse.Namespace`) is refused with the file that works instead.

    model = load_reference_checkpoint("resnet32x4", "save/models/resnet32x4_vanilla/ckpt_epoch_240.pth")
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from ..constants import MODEL_PREFIX
from ..registry import close_matches
from ._builder import CheckpointMismatchError, UnknownModelError, check_state_dict

__all__ = [
    "REFERENCE_ARCHS",
    "REFERENCE_NAMES",
    "ReferenceCheckpoint",
    "ReferenceCheckpointError",
    "ReferenceKeyError",
    "checkpoint_arch",
    "fitting_architectures",
    "kd_zoo_to_reference",
    "load_reference_checkpoint",
    "read_reference_checkpoint",
    "reference_arch",
    "reference_to_kd_zoo",
]

_logger = logging.getLogger(__name__)

# The state-dict entries a BatchNorm2d has, and the weight of a conv built with bias=False.
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_NO_BIAS = r"(weight)"

# Convs per VGG group (block0..block4), as the reference `cfg` lists them.
_VGG_CONVS = {
    "vgg8": (1, 1, 1, 1, 1),
    "vgg11": (1, 1, 2, 2, 2),
    "vgg13": (2, 2, 2, 2, 2),
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}


@dataclass(frozen=True)
class _Arch:
    """How an architecture's reference state dict is named: its family's rules and the depth that bounds them."""

    family: str
    constructor: str  # the reference constructor, `<file>.<function>` in CRD's models/ and mdistiller's cifar/
    blocks: tuple[int, ...] = ()  # blocks per stage (residual families)
    convs: tuple[int, ...] = ()  # convs per group (VGG)


REFERENCE_ARCHS: dict[str, _Arch] = {
    **{
        f"lrds_resnet{d}": _Arch("resnet", f"resnet.resnet{d}", ((d - 2) // 6,) * 3)
        for d in (8, 14, 20, 32, 44, 56, 110)
    },
    "lrds_resnet8x4": _Arch("resnet", "resnet.resnet8x4", (1, 1, 1)),
    "lrds_resnet32x4": _Arch("resnet", "resnet.resnet32x4", (5, 5, 5)),
    "lrds_resnet50": _Arch("resnetv2", "resnetv2.ResNet50", (3, 4, 6, 3)),
    **{
        f"lrds_wrn_{d}_{w}": _Arch("wrn", f"wrn.wrn_{d}_{w}", ((d - 4) // 6,) * 3)
        for d, w in ((16, 1), (16, 2), (40, 1), (40, 2))
    },
    **{f"lrds_{name}": _Arch("vgg", f"vgg.{name}_bn", convs=convs) for name, convs in _VGG_CONVS.items()},
    "lrds_mobilenetv2": _Arch("mobilenetv2", "mobilenetv2.mobile_half"),
    "lrds_shufflenetv1": _Arch("shufflenetv1", "ShuffleNetv1.ShuffleV1", (4, 8, 4)),
    "lrds_shufflenetv2": _Arch("shufflenetv2", "ShuffleNetv2.ShuffleV2", (3, 7, 3)),
}

# The reference code's own names (CRD `model_dict`, mdistiller `cifar_model_dict`: the same strings, also the
# `<name>_vanilla` folder names of the published teachers), accepted wherever an architecture is named.
REFERENCE_NAMES: dict[str, str] = {
    **{f"resnet{d}": f"lrds_resnet{d}" for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": "lrds_resnet8x4",
    "resnet32x4": "lrds_resnet32x4",
    "ResNet50": "lrds_resnet50",
    **{f"wrn_{d}_{w}": f"lrds_wrn_{d}_{w}" for d, w in ((16, 1), (16, 2), (40, 1), (40, 2))},
    **{name: f"lrds_{name}" for name in _VGG_CONVS},
    "MobileNetV2": "lrds_mobilenetv2",
    "ShuffleV1": "lrds_shufflenetv1",
    "ShuffleV2": "lrds_shufflenetv2",
}


class ReferenceKeyError(KeyError):
    """A reference state dict has keys that the family's name rules do not map (or map twice)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ReferenceCheckpointError(ValueError):
    """A file cannot be read as a reference checkpoint (the message names the file, the reason and the fix)."""


# A rule is (full-match pattern, function(match, arch) -> our name, or None when the index or entry is not one
# the architecture has). The first matching rule decides: a family's patterns are disjoint.
_Rule = tuple[re.Pattern[str], Callable[[re.Match[str], _Arch], str | None]]


def _rule(pattern: str, rename: Callable[[re.Match[str], _Arch], str | None]) -> _Rule:
    return re.compile(pattern), rename


def _block(stage_group: int, leaf_group: int) -> Callable[[re.Match[str], _Arch], str | None]:
    """`<prefix>{stage}.{block}.{layer}.{leaf}` -> `stages.{stage}.blocks.{block}.{layer}.{leaf}` when the block
    index exists in that stage (so a deeper network's blocks are reported, not mapped)."""

    def rename(m: re.Match[str], arch: _Arch) -> str | None:
        stage, block = int(m[stage_group]), int(m[stage_group + 1])
        if block >= arch.blocks[stage - 1]:
            return None
        return f"stages.{stage}.blocks.{block}.{m[leaf_group]}.{m[leaf_group + 1]}"

    return rename


def _stem(conv: str, bn: str) -> list[_Rule]:
    """The stem conv and BN, our stage 0 (`stages.0.blocks.0` conv, `.1` BN)."""
    return [
        _rule(rf"{conv}\.{_NO_BIAS}", lambda m, a: f"stages.0.blocks.0.{m[1]}"),
        _rule(rf"{bn}\.{_BN}", lambda m, a: f"stages.0.blocks.1.{m[1]}"),
    ]


def _fc(name: str) -> _Rule:
    return _rule(rf"{name}\.(weight|bias)", lambda m, a: f"fc.{m[1]}")


# resnet.py (ResNet-8..110, 8x4, 32x4): conv1/bn1, layer1-3 of BasicBlocks (conv1, bn1, conv2, bn2 and, on a
# layer's first block, downsample = Sequential(conv 1x1, BN)), fc. The reference's `is_last` holds no tensor.
_RESNET: list[_Rule] = [
    *_stem("conv1", "bn1"),
    _rule(rf"layer([1-3])\.(\d+)\.(conv[12])\.{_NO_BIAS}", _block(1, 3)),
    _rule(rf"layer([1-3])\.(\d+)\.(bn[12])\.{_BN}", _block(1, 3)),
    _rule(rf"layer([1-3])\.0\.downsample\.0\.{_NO_BIAS}", lambda m, a: f"stages.{m[1]}.blocks.0.downsample.0.{m[2]}"),
    _rule(rf"layer([1-3])\.0\.downsample\.1\.{_BN}", lambda m, a: f"stages.{m[1]}.blocks.0.downsample.1.{m[2]}"),
    _fc("fc"),
]

# resnetv2.py (ResNet50, CIFAR stem): the same with four layers of Bottlenecks (conv1-3, bn1-3); the projection is
# called `shortcut` there and `downsample` here; the classifier is `linear`.
_RESNETV2: list[_Rule] = [
    *_stem("conv1", "bn1"),
    _rule(rf"layer([1-4])\.(\d+)\.(conv[1-3])\.{_NO_BIAS}", _block(1, 3)),
    _rule(rf"layer([1-4])\.(\d+)\.(bn[1-3])\.{_BN}", _block(1, 3)),
    _rule(rf"layer([1-4])\.0\.shortcut\.0\.{_NO_BIAS}", lambda m, a: f"stages.{m[1]}.blocks.0.downsample.0.{m[2]}"),
    _rule(rf"layer([1-4])\.0\.shortcut\.1\.{_BN}", lambda m, a: f"stages.{m[1]}.blocks.0.downsample.1.{m[2]}"),
    _fc("linear"),
]

# wrn.py: conv1 (no BN: WRN is pre-activation), block1-3 with `.layer.{j}` of BasicBlocks (bn1, conv1, bn2, conv2;
# `convShortcut`, a bare 1x1 conv, where channels change), then the network's bn1, the BN + ReLU tail before the
# pool (our `final_norm`), and fc.
_WRN: list[_Rule] = [
    _rule(rf"conv1\.{_NO_BIAS}", lambda m, a: f"stages.0.blocks.0.{m[1]}"),
    _rule(rf"block([1-3])\.layer\.(\d+)\.(conv[12])\.{_NO_BIAS}", _block(1, 3)),
    _rule(rf"block([1-3])\.layer\.(\d+)\.(bn[12])\.{_BN}", _block(1, 3)),
    _rule(rf"block([1-3])\.layer\.0\.convShortcut\.{_NO_BIAS}", lambda m, a: f"stages.{m[1]}.blocks.0.shortcut.{m[2]}"),
    _rule(rf"bn1\.{_BN}", lambda m, a: f"final_norm.0.{m[1]}"),
    _fc("fc"),
]


def _vgg_layer(m: re.Match[str], arch: _Arch) -> str | None:
    """block{g}.{k}: conv at k = 3c, BN at 3c + 1, ReLU at 3c + 2 (no tensors). Our stages 1-3 start with their
    max-pool (the reference's pool0-2 sit between the groups), which shifts their indices by one."""
    group, k, leaf = int(m[1]), int(m[2]), m[3]
    if k // 3 >= arch.convs[group]:
        return None
    is_conv = k % 3 == 0 and leaf in ("weight", "bias")  # the reference VGG convs have a bias
    if not (is_conv or k % 3 == 1):
        return None
    return f"stages.{group}.blocks.{k + (1 if group in (1, 2, 3) else 0)}.{leaf}"


# vgg.py (VGG-BN): block0-4 Sequentials, classifier (a Linear). pool0-3 (max) and pool4 (average) hold no tensors;
# the reference applies pool3 only to 64x64 inputs, so on 32x32 its network is ours, whose stage 4 has no pool.
_VGG: list[_Rule] = [_rule(rf"block([0-4])\.(\d+)\.{_BN}", _vgg_layer), _fc("classifier")]

# mobilenetv2.py (mobile_half): reference groups g = 0..6 of (1, 2, 3, 4, 3, 3, 1) InvertedResiduals; our stages
# gather them as CRD's feature taps do (after blocks[1], [2], [4], [6]). g -> (stage, first block in the stage).
_MBV2_GROUPS = {0: (1, 0, 1), 1: (1, 1, 2), 2: (2, 0, 3), 3: (3, 0, 4), 4: (3, 4, 3), 5: (4, 0, 3), 6: (4, 3, 1)}


def _mbv2_block(m: re.Match[str], arch: _Arch) -> str | None:
    """blocks.{g}.{i}.conv.{k}: convs (bias=False) at k = 0, 3, 6; BNs at 1, 4, 7; ReLUs (no tensors) at 2, 5."""
    group, i, k, leaf = int(m[1]), int(m[2]), int(m[3]), m[4]
    if group not in _MBV2_GROUPS or not (k in (1, 4, 7) or (k in (0, 3, 6) and leaf == "weight")):
        return None
    stage, first, count = _MBV2_GROUPS[group]
    return f"stages.{stage}.blocks.{first + i}.conv.{k}.{leaf}" if i < count else None


_MOBILENETV2: list[_Rule] = [
    *_stem(r"conv1\.0", r"conv1\.1"),
    _rule(rf"blocks\.(\d+)\.(\d+)\.conv\.(\d+)\.{_BN}", _mbv2_block),
    _rule(rf"conv2\.0\.{_NO_BIAS}", lambda m, a: f"head_conv.0.{m[1]}"),  # the 1x1 conv to 1280 before the pool
    _rule(rf"conv2\.1\.{_BN}", lambda m, a: f"head_conv.1.{m[1]}"),
    _fc(r"classifier\.0"),
]

# ShuffleNetv1.py: conv1/bn1, layer1-3 of Bottlenecks (conv1-3, bn1-3; the stride-2 shortcut is an AvgPool, no
# tensors), linear.
_SHUFFLENETV1: list[_Rule] = [
    *_stem("conv1", "bn1"),
    _rule(rf"layer([1-3])\.(\d+)\.(conv[1-3])\.{_NO_BIAS}", _block(1, 3)),
    _rule(rf"layer([1-3])\.(\d+)\.(bn[1-3])\.{_BN}", _block(1, 3)),
    _fc("linear"),
]


def _shufflev2_block(m: re.Match[str], arch: _Arch) -> str | None:
    """layer{i}.0 is the DownBlock (conv1-5, bn1-5), layer{i}.{1..n} the BasicBlocks (conv1-3, bn1-3)."""
    stage, block, unit = int(m[1]), int(m[2]), int(m[4])
    if block > arch.blocks[stage - 1] or (block > 0 and unit > 3):
        return None
    return f"stages.{stage}.blocks.{block}.{m[3]}{unit}.{m[5]}"


_SHUFFLENETV2: list[_Rule] = [
    *_stem("conv1", "bn1"),
    _rule(rf"layer([1-3])\.(\d+)\.(conv)([1-5])\.{_NO_BIAS}", _shufflev2_block),
    _rule(rf"layer([1-3])\.(\d+)\.(bn)([1-5])\.{_BN}", _shufflev2_block),
    _rule(rf"conv2\.{_NO_BIAS}", lambda m, a: f"head_conv.0.{m[1]}"),  # the 1x1 conv to 1024 before the pool
    _rule(rf"bn2\.{_BN}", lambda m, a: f"head_conv.1.{m[1]}"),
    _fc("linear"),
]

_FAMILY_RULES: dict[str, list[_Rule]] = {
    "resnet": _RESNET,
    "resnetv2": _RESNETV2,
    "wrn": _WRN,
    "vgg": _VGG,
    "mobilenetv2": _MOBILENETV2,
    "shufflenetv1": _SHUFFLENETV1,
    "shufflenetv2": _SHUFFLENETV2,
}


def reference_arch(arch: str) -> str:
    """Our name for an architecture given as ours (`lrds_resnet56`), bare (`resnet56`) or the reference's
    (`ResNet50`, `MobileNetV2`, `ShuffleV1`); ValueError with the close matches otherwise."""
    if arch in REFERENCE_ARCHS:
        return arch
    if arch in REFERENCE_NAMES:
        return REFERENCE_NAMES[arch]
    if MODEL_PREFIX + arch in REFERENCE_ARCHS:
        return MODEL_PREFIX + arch
    hint = close_matches(arch, [*REFERENCE_ARCHS, *REFERENCE_NAMES])
    raise UnknownModelError(
        f"Unknown architecture {arch!r} for a reference checkpoint."
        + (f" Did you mean {', '.join(repr(h) for h in hint)}?" if hint else "")
        + f" Known: {', '.join(REFERENCE_NAMES)} (or the zoo names, {MODEL_PREFIX}<name>)."
    )


def checkpoint_arch(path: str | Path, arch: str | None = None) -> str:
    """Our architecture for a reference checkpoint: `arch` if given, else its `<name>_vanilla` folder's name (how
    CRD and mdistiller publish their teachers: `resnet32x4_vanilla/ckpt_epoch_240.pth` -> `lrds_resnet32x4`)."""
    if arch:
        return reference_arch(arch)
    folder = Path(path).resolve().parent.name
    name = folder.removesuffix("_vanilla")
    if name in REFERENCE_NAMES:
        return REFERENCE_NAMES[name]
    raise UnknownModelError(
        f"cannot tell the architecture of {Path(path).name} from its folder {folder!r}: name it (arch=..., one of "
        f"{', '.join(REFERENCE_NAMES)})"
    )


def reference_to_kd_zoo(arch: str, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Rename a CRD / mdistiller CIFAR state dict (a teacher checkpoint's `"model"` entry) to our names.

    Args:
        arch: our name (`lrds_resnet56`), the bare name (`resnet56`) or the reference name (`ResNet50`).
        state_dict: the reference model's `state_dict()`, BN buffers included.

    Returns:
        A plain dict, our name -> the same tensor, in the input order, for `load_state_dict(strict=True)`. It has
        no `_metadata`, so a file from torch 0.4 (BatchNorm without `num_batches_tracked`) still loads.

    Raises:
        ReferenceKeyError: keys that no rule of the family maps (or that fall outside the architecture's depth),
            or two keys that map to the same name.
    """
    name = reference_arch(arch)
    spec = REFERENCE_ARCHS[name]
    rules = _FAMILY_RULES[spec.family]
    out: dict[str, Any] = {}
    source: dict[str, str] = {}
    unmapped: list[str] = []
    clashes: list[str] = []
    for key, value in state_dict.items():
        new = None
        for pattern, rename in rules:
            m = pattern.fullmatch(key)
            if m is not None:
                new = rename(m, spec)
                break
        if new is None:
            unmapped.append(key)
        elif new in out:
            clashes.append(f"{source[new]} and {key} -> {new}")
        else:
            out[new] = value
            source[new] = key
    if unmapped or clashes:
        parts = []
        if unmapped:
            shown = ", ".join(unmapped[:10]) + (f", ... ({len(unmapped) - 10} more)" if len(unmapped) > 10 else "")
            parts.append(f"{len(unmapped)} key(s) that {name} does not have: {shown}")
        if clashes:
            parts.append("keys mapped to the same name: " + "; ".join(clashes))
        raise ReferenceKeyError(
            f"The reference state dict does not fit {name} (reference constructor {spec.constructor}): "
            + " | ".join(parts)
            + "."
            + _prefix_hint(unmapped)
        )
    return out


# Our names back to the reference's, per family: (pattern on our name, replacement). The stem, the heads and the
# classifier differ by family; the residual families share `stages.{i}.blocks.{j}.` -> `layer{i}.{j}.`.
_STEM = [(r"stages\.0\.blocks\.0\.", "conv1."), (r"stages\.0\.blocks\.1\.", "bn1.")]
_LAYERS = [(r"stages\.(\d+)\.blocks\.(\d+)\.", r"layer\1.\2.")]
_INVERSE: dict[str, list[tuple[str, str]]] = {
    "resnet": [*_STEM, *_LAYERS],
    "resnetv2": [*_STEM, (r"(stages\.\d+\.blocks\.0\.)downsample\.", r"\1shortcut."), *_LAYERS, (r"fc\.", "linear.")],
    "wrn": [
        (r"stages\.0\.blocks\.0\.", "conv1."),
        (r"(stages\.\d+\.blocks\.0\.)shortcut\.", r"\1convShortcut."),
        (r"stages\.(\d+)\.blocks\.(\d+)\.", r"block\1.layer.\2."),
        (r"final_norm\.0\.", "bn1."),
    ],
    "vgg": [(r"fc\.", "classifier.")],  # the block indices: _vgg_reference_name
    "mobilenetv2": [
        (r"stages\.0\.blocks\.0\.", "conv1.0."),
        (r"stages\.0\.blocks\.1\.", "conv1.1."),
        (r"head_conv\.", "conv2."),
        (r"fc\.", "classifier.0."),
    ],  # the inverted residuals: _mbv2_reference_name
    "shufflenetv1": [*_STEM, *_LAYERS, (r"fc\.", "linear.")],
    "shufflenetv2": [
        *_STEM,
        *_LAYERS,
        (r"head_conv\.0\.", "conv2."),
        (r"head_conv\.1\.", "bn2."),
        (r"fc\.", "linear."),
    ],
}


def _vgg_reference_name(key: str) -> str:
    m = re.fullmatch(r"stages\.(\d)\.blocks\.(\d+)\.(.+)", key)
    if m is None:
        return key
    group = int(m[1])
    return f"block{group}.{int(m[2]) - (1 if group in (1, 2, 3) else 0)}.{m[3]}"


def _mbv2_reference_name(key: str) -> str:
    m = re.fullmatch(r"stages\.(\d)\.blocks\.(\d+)\.conv\.(.+)", key)
    if m is None:
        return key
    stage, block = int(m[1]), int(m[2])
    for group, (group_stage, first, count) in _MBV2_GROUPS.items():
        if group_stage == stage and first <= block < first + count:
            return f"blocks.{group}.{block - first}.conv.{m[3]}"
    return key


def kd_zoo_to_reference(arch: str, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Our state dict under the reference code's names: the inverse of `reference_to_kd_zoo`, so that zoo weights
    run in CRD / mdistiller (`ref_model.load_state_dict(kd_zoo_to_reference("resnet8x4", model.state_dict()))`).

    Every name is checked by mapping it back; a name the reference model does not have raises ReferenceKeyError.
    """
    name = reference_arch(arch)
    family = REFERENCE_ARCHS[name].family
    renamed: list[tuple[str, str]] = []
    for key in state_dict:
        ref = key
        for pattern, replacement in _INVERSE[family]:  # in order: a family's rules compose (downsample, then layer)
            ref = re.sub(rf"^{pattern}", replacement, ref)
        if family == "vgg":
            ref = _vgg_reference_name(ref)
        elif family == "mobilenetv2":
            ref = _mbv2_reference_name(ref)
        renamed.append((key, ref))
    try:
        back = reference_to_kd_zoo(name, {ref: ref for _, ref in renamed})  # ours -> ref
    except ReferenceKeyError as err:
        raise ReferenceKeyError(f"these tensors have no name in the reference code: {err}") from err
    wrong = [f"{ours} -> {ref}" for ours, ref in renamed if back.get(ours) != ref]
    if wrong or len(back) != len(renamed):
        raise ReferenceKeyError(f"cannot name these {name} tensors in the reference code: {'; '.join(wrong[:5])}")
    return {ref: state_dict[ours] for ours, ref in renamed}


def _prefix_hint(keys: list[str]) -> str:
    if any(k.startswith("module.") for k in keys):
        return (
            " The keys start with 'module.': a DataParallel or mdistiller distiller state dict; pass the prefix of "
            "the model to take (prefix='module.student.', or --prefix on the recipes)."
        )
    return ""


@dataclass
class ReferenceCheckpoint:
    """A reference checkpoint as read from disk: the state dict and what the file says about it."""

    path: Path
    sha256: str
    state_dict: dict[str, torch.Tensor]
    entries: list[str]  # the file's top-level entries (`epoch`, `model`, `accuracy`, `optimizer`), [] when bare
    info: dict[str, Any] = field(default_factory=dict)  # `epoch` and the recorded accuracy, when present

    @property
    def num_classes(self) -> int | None:
        """The class count of the checkpoint's classifier (None when it has none)."""
        return _reference_classes(self.state_dict)


def _reference_classes(state_dict: Mapping[str, Any]) -> int | None:
    """Rows of the classifier, which the reference names `fc`, `linear`, `classifier` or `classifier.0`."""
    for key in ("fc.weight", "linear.weight", "classifier.weight", "classifier.0.weight"):
        value = state_dict.get(key)
        if isinstance(value, torch.Tensor) and value.ndim == 2:
            return int(value.shape[0])
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_safetensors(path: Path) -> bool:
    """A safetensors file starts with its header's length (8 bytes, little endian) and then `{`."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def read_reference_checkpoint(path: str | Path, *, prefix: str | None = None) -> ReferenceCheckpoint:
    """Read a CRD / mdistiller `.pth` checkpoint with `torch.load(weights_only=True, map_location="cpu")`.

    Accepts a dict whose `"model"` (or `"state_dict"`) entry is the state dict, with any other entries beside it
    (`epoch`, `accuracy`, `optimizer`, ...), or a bare state dict. GPU-saved files load on a CPU-only machine.

    Args:
        path: the `.pth` file.
        prefix: take only the tensors under this prefix, stripped (`module.student.` for an mdistiller
            distiller checkpoint). A state dict whose every key starts with `module.` (DataParallel) is
            stripped without asking.

    Raises:
        FileNotFoundError: no such file.
        ReferenceCheckpointError: not a checkpoint, a pickle that needs code, or no state dict inside.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference checkpoint {str(path)!r} not found")
    if path.stat().st_size == 0:
        raise ReferenceCheckpointError(f"{path} is empty: download or copy the checkpoint again")
    if _is_safetensors(path):
        raise ReferenceCheckpointError(
            f"{path} is a safetensors file, not a reference .pth checkpoint: load it with "
            "kd_zoo.load_model(arch, path) (recipes/validate.py takes it as it is)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        needs = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if needs:
            raise ReferenceCheckpointError(
                f"{path} cannot be read without running code from it: its pickle needs {needs[1]}, and kd_zoo "
                "reads checkpoints only with torch.load(weights_only=True). Use the file that holds tensors only "
                "(CRD's ckpt_epoch_<N>.pth or <model>_best.pth, not <model>_last.pth); or, if you trust its origin, "
                "re-save just its state dict: torch.save({'model': torch.load(path, weights_only=False)['model']}, "
                "'clean.pth')"
            ) from err
        raise _not_a_checkpoint(path, err) from err
    except Exception as err:  # a truncated zip, a text file, another format: torch raises many types
        raise _not_a_checkpoint(path, err) from err
    entries: list[str] = []
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        entries = [str(k) for k in obj]
        inner = next((obj[k] for k in ("model", "state_dict") if k in obj), None)
        if inner is None or not _is_state_dict(inner):
            raise ReferenceCheckpointError(
                f"{path} holds no state dict: its entries are {', '.join(entries) or 'none'}, and a reference "
                "checkpoint keeps the model's tensors under 'model' (pass ckpt_epoch_<N>.pth or <model>_best.pth)"
            )
        state_dict = dict(inner)
    elif isinstance(obj, Mapping):
        state_dict = dict(obj)
    else:
        raise ReferenceCheckpointError(
            f"{path} holds a {type(obj).__name__}, not a state dict or a dict with a 'model' entry: pass the "
            "checkpoint file that torch.save({'model': model.state_dict(), ...}) wrote"
        )
    state_dict = _strip_prefix(path, state_dict, prefix)
    info = {}
    if isinstance(obj, Mapping) and entries:
        for key in ("epoch", "accuracy", "best_acc", "test_acc"):
            value = obj.get(key)
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if isinstance(value, int | float) and not isinstance(value, bool):
                info[key] = value
    return ReferenceCheckpoint(path, _sha256(path), state_dict, entries, info)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _not_a_checkpoint(path: Path, err: Exception) -> ReferenceCheckpointError:
    reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
    return ReferenceCheckpointError(
        f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {reason}). Pass the .pth file that "
        "the reference code saved (ckpt_epoch_240.pth); if it is truncated, download it again"
    )


def _strip_prefix(path: Path, state_dict: dict[str, Any], prefix: str | None) -> dict[str, Any]:
    if prefix is None and all(k.startswith("module.") for k in state_dict):
        tops = {k.split(".")[1] for k in state_dict}
        if not tops & {"student", "teacher"}:  # plain DataParallel
            prefix = "module."
    if prefix is None:
        return state_dict
    taken = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not taken:
        found = sorted({".".join(k.split(".")[:2]) + "." for k in state_dict})[:8]
        raise ReferenceCheckpointError(
            f"{path} has no tensors under the prefix {prefix!r}; its keys start with {', '.join(found)}"
        )
    return taken


def fitting_architectures(state_dict: Mapping[str, Any]) -> list[str]:
    """The architectures whose name map and tensor shapes a reference state dict fits (empty when none does).

    Models are built on the meta device, so this costs about a second and no memory; used to tell a user which
    `--arch` a checkpoint belongs to.
    """
    classes = _reference_classes(state_dict) or 100
    found = []
    for name in REFERENCE_ARCHS:
        try:
            renamed = reference_to_kd_zoo(name, state_dict)
        except ReferenceKeyError:
            continue
        with torch.device("meta"):
            expected = timm.create_model(name, num_classes=classes).state_dict()
        if set(renamed) == set(expected) and all(
            tuple(v.shape) == tuple(expected[k].shape) for k, v in renamed.items()
        ):
            found.append(name)
    return found


def _with_batch_counts(state_dict: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """Files saved by torch 0.4 (the CRD README's version) have no BatchNorm `num_batches_tracked`: start it at 0,
    as BatchNorm's own loader does. It only matters for `momentum=None`, which no zoo model uses."""
    counts = {k: torch.zeros_like(v) for k, v in model.state_dict().items() if k.endswith(".num_batches_tracked")}
    return {**state_dict, **{k: v for k, v in counts.items() if k not in state_dict}}


def load_reference_checkpoint(
    arch: str,
    path: str | Path | ReferenceCheckpoint,
    *,
    num_classes: int | None = None,
    prefix: str | None = None,
) -> nn.Module:
    """Our model with the weights of a CRD / mdistiller checkpoint, in eval mode.

    Args:
        arch: our name, the bare name or the reference name (`resnet32x4`, `ResNet50`, `wrn_40_2`).
        path: the `.pth` file (see `read_reference_checkpoint`), or one already read.
        num_classes: the class count to expect; by default the checkpoint's own (100 for the CIFAR-100 teachers).
            A checkpoint of another class count is refused, never re-initialised.
        prefix: see `read_reference_checkpoint`.

    Returns:
        The model, built as `<arch>.cifar100` (its pretrained cfg: CIFAR-100 input size and normalisation), with
        `num_classes` classes.

    Raises:
        ReferenceCheckpointError, ReferenceKeyError, CheckpointMismatchError: the file, the names or the shapes
            do not fit; the message names the first offending tensors and, when another architecture fits, it.
    """
    name = reference_arch(arch)
    ckpt = path if isinstance(path, ReferenceCheckpoint) else read_reference_checkpoint(path, prefix=prefix)
    found_classes = ckpt.num_classes
    if num_classes is not None and found_classes is not None and found_classes != num_classes:
        raise CheckpointMismatchError(
            f"{ckpt.path.name}: its classifier has {found_classes} classes, not the {num_classes} asked for: pass "
            f"num_classes={found_classes} (--num-classes {found_classes}), or leave it out to take the file's count"
        )
    classes = num_classes if num_classes is not None else (found_classes or 100)
    model = timm.create_model(f"{name}.cifar100", num_classes=classes)
    try:
        renamed = _with_batch_counts(reference_to_kd_zoo(name, ckpt.state_dict), model)
        renamed = check_state_dict(renamed, model, new_classifier=False)
    except (ReferenceKeyError, CheckpointMismatchError) as err:
        fits = [a for a in fitting_architectures(ckpt.state_dict) if a != name]
        hint = f"it fits {', '.join(fits)}, not {name}: pass that architecture. " if fits else ""
        raise type(err)(f"{ckpt.path.name}: {hint}{err}") from err
    model.load_state_dict(renamed, strict=True)
    model.pretrained_cfg["num_classes"] = classes
    _logger.info("loaded %s into %s (%d tensors, sha256 %s)", ckpt.path, name, len(renamed), ckpt.sha256[:12])
    return model.eval()
