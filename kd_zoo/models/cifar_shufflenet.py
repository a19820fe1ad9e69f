"""ShuffleNetV1 (groups 3) and ShuffleNetV2 (net size 1) for CIFAR.

"ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile Devices" (Zhang et al.,
arXiv 1707.01083) and "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design" (Ma et al.,
arXiv 1807.11164), in the CIFAR form of CRD / mdistiller: a 1x1 stem to 24 channels at full resolution, no
max-pool, three stages that each start with a stride-2 unit; V2 adds a 1x1 conv to 1024 before the pool.
Checked against `shared/reference/architectures.md`.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import generate_default_cfgs, register_model
from torch import nn

from ._base import Stage, StagedNet
from ._builder import build_zoo_model, zoo_cfgs

__all__ = ["CifarShuffleNetV1", "CifarShuffleNetV2"]


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _stem(in_chans: int) -> Stage:
    return Stage(nn.Sequential(nn.Conv2d(in_chans, 24, 1, bias=False), nn.BatchNorm2d(24)), nn.ReLU())


# -- ShuffleNetV1 -----------------------------------------------------------------------------------------------
class ShuffleUnitV1(nn.Module):
    """Grouped 1x1 - shuffle - depthwise 3x3 - grouped 1x1; stride 2 concatenates an avg-pooled shortcut."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, groups: int, act_out: bool = True):
        super().__init__()
        mid = out_chs // 4
        first_groups = 1 if in_chs == 24 else groups  # the 24-channel stem output is not grouped
        self.stride = stride
        self.conv1 = nn.Conv2d(in_chs, mid, 1, groups=first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act1 = nn.ReLU(inplace=True)
        self.shuffle = ChannelShuffle(first_groups)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(mid, out_chs, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()
        self.act_out = nn.ReLU(inplace=True) if act_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shuffle(self.act1(self.bn1(self.conv1(x))))
        out = self.bn3(self.conv3(self.act2(self.bn2(self.conv2(out)))))
        shortcut = self.shortcut(x)
        out = torch.cat([out, shortcut], 1) if self.stride == 2 else out + shortcut
        return self.act_out(out)


class CifarShuffleNetV1(StagedNet):
    """ShuffleNetV1 for 32x32 inputs."""

    def __init__(
        self,
        out_channels: tuple[int, ...] = (240, 480, 960),
        num_blocks: tuple[int, ...] = (4, 8, 4),
        groups: int = 3,
        num_classes: int = 100,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ):
        stages, in_chs, reductions = [_stem(in_chans)], 24, [1]
        for out_chs, n in zip(out_channels, num_blocks, strict=True):
            blocks = []
            for i in range(n):
                # The stride-2 unit concatenates its input, so its branch makes out - in channels.
                branch = out_chs - in_chs if i == 0 else out_chs
                blocks.append(ShuffleUnitV1(in_chs, branch, 2 if i == 0 else 1, groups, act_out=i < n - 1))
                in_chs = out_chs
            stages.append(Stage(nn.Sequential(*blocks), nn.ReLU()))
            reductions.append(reductions[-1] * 2)
        super().__init__(
            stages,
            [24, *out_channels],
            reductions,
            num_features=in_chs,
            num_classes=num_classes,
            in_chans=in_chans,
            global_pool=global_pool,
            drop_rate=drop_rate,
        )


# -- ShuffleNetV2 -----------------------------------------------------------------------------------------------
class ShuffleUnitV2(nn.Module):
    """Channel split; 1x1 - depthwise 3x3 - 1x1 on one half; concat; shuffle.

    With `act_out=False` (the last unit of a stage) it stops at the concatenation before the final ReLU and
    shuffle, which the stage applies. The untouched half is already non-negative, so ReLU after the
    concatenation equals the reference's ReLU before it.
    """

    def __init__(self, chs: int, act_out: bool = True):
        super().__init__()
        half = chs // 2
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)
        self.act_out = nn.Sequential(nn.ReLU(inplace=True), ChannelShuffle(2)) if act_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep, x = x.chunk(2, dim=1)
        x = self.bn3(self.conv3(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))))
        return self.act_out(torch.cat([keep, x], 1))


class DownUnitV2(nn.Module):
    """Stride-2 unit: two branches (depthwise-first and pointwise-first), each to half the output channels."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        mid = out_chs // 2
        self.conv1 = nn.Conv2d(in_chs, in_chs, 3, stride=2, padding=1, groups=in_chs, bias=False)
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv2 = nn.Conv2d(in_chs, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(in_chs, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)
        self.act = nn.ReLU(inplace=True)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = self.act(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.bn4(self.conv4(self.act(self.bn3(self.conv3(x)))))
        right = self.act(self.bn5(self.conv5(right)))
        return self.shuffle(torch.cat([left, right], 1))


class CifarShuffleNetV2(StagedNet):
    """ShuffleNetV2 for 32x32 inputs."""

    def __init__(
        self,
        out_channels: tuple[int, ...] = (116, 232, 464),
        num_blocks: tuple[int, ...] = (3, 7, 3),
        last_channels: int = 1024,
        num_classes: int = 100,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ):
        stages, in_chs, reductions = [_stem(in_chans)], 24, [1]
        for out_chs, n in zip(out_channels, num_blocks, strict=True):
            blocks = [DownUnitV2(in_chs, out_chs)]
            blocks += [ShuffleUnitV2(out_chs, act_out=i < n - 1) for i in range(n)]
            stages.append(Stage(nn.Sequential(*blocks), nn.Sequential(nn.ReLU(), ChannelShuffle(2))))
            reductions.append(reductions[-1] * 2)
            in_chs = out_chs
        head_conv = nn.Sequential(
            nn.Conv2d(in_chs, last_channels, 1, bias=False), nn.BatchNorm2d(last_channels), nn.ReLU(inplace=True)
        )
        super().__init__(
            stages,
            [24, *out_channels],
            reductions,
            num_features=last_channels,
            num_classes=num_classes,
            in_chans=in_chans,
            global_pool=global_pool,
            drop_rate=drop_rate,
            head_conv=head_conv,
        )


def _create_shufflenet(cls: type, variant: str, pretrained: bool = False, **kwargs: Any) -> StagedNet:
    return build_zoo_model(cls, variant, pretrained, num_stages=4, **kwargs)


default_cfgs = generate_default_cfgs(
    {
        **zoo_cfgs("lrds_shufflenetv1", pool_size=(4, 4)),
        **zoo_cfgs("lrds_shufflenetv2", pool_size=(4, 4)),
    }
)


@register_model
def lrds_shufflenetv1(pretrained: bool = False, **kwargs: Any) -> CifarShuffleNetV1:
    """ShuffleNetV1, groups 3, stage widths 240/480/960."""
    return _create_shufflenet(CifarShuffleNetV1, "lrds_shufflenetv1", pretrained, **kwargs)


@register_model
def lrds_shufflenetv2(pretrained: bool = False, **kwargs: Any) -> CifarShuffleNetV2:
    """ShuffleNetV2, net size 1 (stage widths 116/232/464, 1024 before the pool)."""
    return _create_shufflenet(CifarShuffleNetV2, "lrds_shufflenetv2", pretrained, **kwargs)
