"""MobileNetV2 "half" for CIFAR (expansion 6, width 0.5), the student of the CIFAR-100 KD benchmarks.

"MobileNetV2: Inverted Residuals and Linear Bottlenecks" (Sandler et al., arXiv 1801.04381), in the CIFAR form
of CRD / mdistiller's `mobile_half`: a stride-2 3x3 stem, the seven inverted-residual groups of the paper with
widths scaled by 0.5 (every block, the first included, has its 1x1 expansion conv), and a 1x1 conv to 1280
channels that is not width-scaled. Stage outputs follow CRD: stem, after groups 2, 3, 5 and 7.
Checked against `shared/reference/architectures.md`.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import generate_default_cfgs, register_model
from torch import nn

from ._base import Stage, StagedNet, init_weights
from ._builder import build_zoo_model, zoo_cfgs

__all__ = ["CifarMobileNetV2"]

# (expansion is the model's, or 1 for the first group), output channels, blocks, first stride.
_GROUPS = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)
# Which groups end each stage (stage 0 is the stem).
_STAGE_GROUPS = ((0, 1), (2,), (3, 4), (5, 6))


def _conv_bn(in_chs: int, out_chs: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_chs, out_chs, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(out_chs)]


class InvertedResidual(nn.Module):
    """1x1 expand - 3x3 depthwise - 1x1 linear projection, with a residual when shapes allow."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, expansion: int):
        super().__init__()
        mid = in_chs * expansion
        self.use_residual = stride == 1 and in_chs == out_chs
        self.conv = nn.Sequential(
            *_conv_bn(in_chs, mid, 1),
            nn.ReLU(inplace=True),
            *_conv_bn(mid, mid, 3, stride, groups=mid),
            nn.ReLU(inplace=True),
            *_conv_bn(mid, out_chs, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class CifarMobileNetV2(StagedNet):
    """MobileNetV2 for 32x32 inputs."""

    def __init__(
        self,
        expansion: int = 6,
        width_mult: float = 0.5,
        num_classes: int = 100,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        last_channels: int = 1280,
    ):
        in_chs = int(32 * width_mult)
        stages = [Stage(nn.Sequential(*_conv_bn(in_chans, in_chs, 3, stride=2)), nn.ReLU())]
        channels, reductions, reduction = [in_chs], [2], 2
        for group_ids in _STAGE_GROUPS:
            blocks = []
            for g in group_ids:
                t, c, n, s = _GROUPS[g]
                out_chs = int(c * width_mult)
                for i in range(n):
                    blocks.append(InvertedResidual(in_chs, out_chs, s if i == 0 else 1, t or expansion))
                    in_chs = out_chs
                    reduction *= s if i == 0 else 1
            stages.append(Stage(nn.Sequential(*blocks)))
            channels.append(in_chs)
            reductions.append(reduction)
        # Not width-scaled below 1.0 (as in the reference).
        last = int(last_channels * width_mult) if width_mult > 1.0 else last_channels
        head_conv = nn.Sequential(*_conv_bn(in_chs, last, 1), nn.ReLU(inplace=True))
        super().__init__(
            stages,
            channels,
            reductions,
            num_features=last,
            num_classes=num_classes,
            in_chans=in_chans,
            global_pool=global_pool,
            drop_rate=drop_rate,
            head_conv=head_conv,
        )
        init_weights(self, linear_std=0.01)


def _create_mobilenetv2(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarMobileNetV2:
    return build_zoo_model(CifarMobileNetV2, variant, pretrained, num_stages=5, **kwargs)


default_cfgs = generate_default_cfgs({**zoo_cfgs("lrds_mobilenetv2", pool_size=(2, 2))})


@register_model
def lrds_mobilenetv2(pretrained: bool = False, **kwargs: Any) -> CifarMobileNetV2:
    """MobileNetV2 "half" (expansion 6, width 0.5), CRD's `mobile_half`."""
    return _create_mobilenetv2("lrds_mobilenetv2", pretrained, **dict(dict(expansion=6, width_mult=0.5), **kwargs))
