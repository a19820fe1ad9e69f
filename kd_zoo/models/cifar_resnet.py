"""CIFAR ResNets: ResNet-8..110, ResNet-8x4 / 32x4 and the CIFAR-stem ResNet-50.

"Deep Residual Learning for Image Recognition" (He et al., arXiv 1512.03385), in the CIFAR form of Sec. 4.2
(3x3 stem, no max-pool, three stages of basic blocks at strides 1/2/2, depth 6n+2); the x4 variants widen the
stages to 32/64/128/256 as in CRD ("Contrastive Representation Distillation", Tian et al., arXiv 1910.10699).
ResNet-50 keeps ImageNet's four bottleneck stages behind a 3x3 stride-1 stem, as in CRD's `resnetv2`.
Parameter counts and stage shapes are checked against `shared/reference/architectures.md` (CRD / mdistiller).
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import generate_default_cfgs, register_model
from torch import nn

from ._base import Stage, StagedNet, init_weights
from ._builder import build_zoo_model, zoo_cfgs

__all__ = ["CifarResNet"]


def _shortcut(in_chs: int, out_chs: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_chs == out_chs:
        return None
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False), nn.BatchNorm2d(out_chs))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_chs: int, planes: int, stride: int = 1, act_out: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _shortcut(in_chs, planes, stride)
        # The last block of a stage leaves its activation to the stage, so the pre-activation sum is visible.
        self.act_out = nn.ReLU(inplace=True) if act_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act_out(x + shortcut)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int = 1, act_out: bool = True):
        super().__init__()
        out_chs = planes * self.expansion
        self.conv1 = nn.Conv2d(in_chs, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(planes, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.downsample = _shortcut(in_chs, out_chs, stride)
        self.act_out = nn.ReLU(inplace=True) if act_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return self.act_out(x + shortcut)


class CifarResNet(StagedNet):
    """ResNet for 32x32 inputs: a 3x3 stem (stage 0) then residual stages.

    Args:
        block: 'basic' or 'bottleneck'.
        layers: blocks per stage.
        stem_width: channels of the stem.
        widths: planes of each stage (output channels = planes x block expansion).
        strides: stride of each stage's first block.
    """

    def __init__(
        self,
        block: str = "basic",
        layers: tuple[int, ...] = (1, 1, 1),
        stem_width: int = 16,
        widths: tuple[int, ...] = (16, 32, 64),
        strides: tuple[int, ...] = (1, 2, 2),
        num_classes: int = 100,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ):
        block_cls = {"basic": BasicBlock, "bottleneck": Bottleneck}[block]
        stem = Stage(
            nn.Sequential(nn.Conv2d(in_chans, stem_width, 3, padding=1, bias=False), nn.BatchNorm2d(stem_width)),
            nn.ReLU(),
        )
        stages, channels, reductions = [stem], [stem_width], [1]
        in_chs, reduction = stem_width, 1
        for depth, planes, stride in zip(layers, widths, strides, strict=True):
            blocks = []
            for i in range(depth):
                blocks.append(block_cls(in_chs, planes, stride if i == 0 else 1, act_out=i < depth - 1))
                in_chs = planes * block_cls.expansion
            reduction *= stride
            stages.append(Stage(nn.Sequential(*blocks), nn.ReLU()))
            channels.append(in_chs)
            reductions.append(reduction)
        super().__init__(
            stages,
            channels,
            reductions,
            num_features=in_chs,
            num_classes=num_classes,
            in_chans=in_chans,
            global_pool=global_pool,
            drop_rate=drop_rate,
        )
        init_weights(self)


def _create_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    num_stages = len(kwargs.get("layers", ())) + 1
    return build_zoo_model(CifarResNet, variant, pretrained, num_stages=num_stages, **kwargs)


def _cifar_resnet_args(depth: int, width: int = 1) -> dict[str, Any]:
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    if width == 1:
        return dict(layers=(n, n, n), stem_width=16, widths=(16, 32, 64))
    return dict(layers=(n, n, n), stem_width=32, widths=(64, 128, 256))


default_cfgs = generate_default_cfgs(
    {
        **zoo_cfgs("lrds_resnet8", pool_size=(8, 8)),
        **zoo_cfgs("lrds_resnet14", pool_size=(8, 8)),
        **zoo_cfgs("lrds_resnet20", pool_size=(8, 8)),
        **zoo_cfgs("lrds_resnet32", pool_size=(8, 8)),
        **zoo_cfgs("lrds_resnet44", pool_size=(8, 8)),
        **zoo_cfgs("lrds_resnet56", pool_size=(8, 8)),
        **zoo_cfgs("lrds_resnet110", pool_size=(8, 8)),
        **zoo_cfgs("lrds_resnet8x4", pool_size=(8, 8)),
        **zoo_cfgs("lrds_resnet32x4", pool_size=(8, 8)),
        **zoo_cfgs("lrds_resnet50", pool_size=(4, 4)),
    }
)


@register_model
def lrds_resnet8(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-8 for CIFAR (16/16/32/64 channels, 1 block per stage)."""
    return _create_resnet("lrds_resnet8", pretrained, **dict(_cifar_resnet_args(8), **kwargs))


@register_model
def lrds_resnet14(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-14 for CIFAR."""
    return _create_resnet("lrds_resnet14", pretrained, **dict(_cifar_resnet_args(14), **kwargs))


@register_model
def lrds_resnet20(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-20 for CIFAR."""
    return _create_resnet("lrds_resnet20", pretrained, **dict(_cifar_resnet_args(20), **kwargs))


@register_model
def lrds_resnet32(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-32 for CIFAR."""
    return _create_resnet("lrds_resnet32", pretrained, **dict(_cifar_resnet_args(32), **kwargs))


@register_model
def lrds_resnet44(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-44 for CIFAR."""
    return _create_resnet("lrds_resnet44", pretrained, **dict(_cifar_resnet_args(44), **kwargs))


@register_model
def lrds_resnet56(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-56 for CIFAR."""
    return _create_resnet("lrds_resnet56", pretrained, **dict(_cifar_resnet_args(56), **kwargs))


@register_model
def lrds_resnet110(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-110 for CIFAR."""
    return _create_resnet("lrds_resnet110", pretrained, **dict(_cifar_resnet_args(110), **kwargs))


@register_model
def lrds_resnet8x4(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-8x4 (CRD): ResNet-8 with 32/64/128/256 channels."""
    return _create_resnet("lrds_resnet8x4", pretrained, **dict(_cifar_resnet_args(8, width=4), **kwargs))


@register_model
def lrds_resnet32x4(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-32x4 (CRD): ResNet-32 with 32/64/128/256 channels."""
    return _create_resnet("lrds_resnet32x4", pretrained, **dict(_cifar_resnet_args(32, width=4), **kwargs))


@register_model
def lrds_resnet50(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-50 with a CIFAR stem (3x3 stride-1 conv, no max-pool), as CRD's `resnetv2.ResNet50`."""
    args = dict(
        block="bottleneck", layers=(3, 4, 6, 3), stem_width=64, widths=(64, 128, 256, 512), strides=(1, 2, 2, 2)
    )
    return _create_resnet("lrds_resnet50", pretrained, **dict(args, **kwargs))
