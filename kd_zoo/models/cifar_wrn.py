"""Wide ResNets for CIFAR: WRN-16-1, WRN-16-2, WRN-40-1, WRN-40-2.

"Wide Residual Networks" (Zagoruyko & Komodakis, arXiv 1605.07146): pre-activation basic blocks, depth 6n+4,
widths 16 / 16k / 32k / 64k, dropout 0, as in CRD / mdistiller's `wrn.py`. Checked against
`shared/reference/architectures.md`.

WRN is a pre-activation network: a stage output is the raw residual sum that the next stage normalises; the BN +
ReLU tail is `final_norm`. Its pre-activation features follow the reference code (CRD's `wrn.py` with
`preact=True`, mdistiller's `preact_feats`): stage i's sum after the BatchNorm that follows it (the first BN of the
next stage's first block; `final_norm`'s BN for the last stage), before that BN's ReLU; the stem is the raw conv
output. Those BNs run without updating their statistics (the reference updates them twice per forward).
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import generate_default_cfgs, register_model
from torch import nn

from ._base import Stage, StagedNet, batch_norm_without_update, init_weights
from ._builder import build_zoo_model, zoo_cfgs

__all__ = ["WideResNet"]


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with an identity or 1x1-conv shortcut (taken after the first BN-ReLU)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.act2 = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(drop_rate)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False)
        self.shortcut = None if in_chs == out_chs else nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        # Identity blocks add the raw input; projection blocks project the normalised one.
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv2(self.drop(self.act2(self.bn2(self.conv1(pre)))))
        return out + shortcut


class WideResNet(StagedNet):
    """WRN-depth-widen_factor for 32x32 inputs."""

    def __init__(
        self,
        depth: int = 16,
        widen_factor: int = 1,
        num_classes: int = 100,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        block_drop_rate: float = 0.0,
    ):
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        stages = [Stage(nn.Sequential(nn.Conv2d(in_chans, widths[0], 3, padding=1, bias=False)))]
        reductions, reduction = [1], 1
        for in_chs, out_chs, stride in zip(widths[:-1], widths[1:], (1, 2, 2), strict=True):
            blocks = [
                PreActBlock(in_chs if i == 0 else out_chs, out_chs, stride if i == 0 else 1, block_drop_rate)
                for i in range(n)
            ]
            stages.append(Stage(nn.Sequential(*blocks)))
            reduction *= stride
            reductions.append(reduction)
        final_norm = nn.Sequential(nn.BatchNorm2d(widths[-1]), nn.ReLU(inplace=True))
        super().__init__(
            stages,
            list(widths),
            reductions,
            num_features=widths[-1],
            num_classes=num_classes,
            in_chans=in_chans,
            global_pool=global_pool,
            drop_rate=drop_rate,
            final_norm=final_norm,
        )
        init_weights(self)
        if isinstance(self.fc, nn.Linear):
            nn.init.zeros_(self.fc.bias)

    def preact_feature(self, index: int, pre: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The reference's WRN pre-activation feature: the stage's sum through the BN that follows it (module doc)."""
        if index == 0:
            return out
        if index + 1 < len(self.stages):
            bn = self.stages[index + 1].blocks[0].bn1
        elif isinstance(self.final_norm, nn.Sequential):
            bn = self.final_norm[0]
        else:
            raise ValueError(
                f"the pre-activation feature of WRN stage {index} is its output through the BatchNorm that follows "
                "it, which prune_intermediate_layers removed; request preact features from an unpruned model"
            )
        return batch_norm_without_update(bn, out)


def _create_wrn(variant: str, pretrained: bool = False, **kwargs: Any) -> WideResNet:
    return build_zoo_model(WideResNet, variant, pretrained, num_stages=4, **kwargs)


default_cfgs = generate_default_cfgs(
    {
        **zoo_cfgs("lrds_wrn_16_1", pool_size=(8, 8)),
        **zoo_cfgs("lrds_wrn_16_2", pool_size=(8, 8)),
        **zoo_cfgs("lrds_wrn_40_1", pool_size=(8, 8)),
        **zoo_cfgs("lrds_wrn_40_2", pool_size=(8, 8)),
    }
)


@register_model
def lrds_wrn_16_1(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WRN-16-1."""
    return _create_wrn("lrds_wrn_16_1", pretrained, **dict(dict(depth=16, widen_factor=1), **kwargs))


@register_model
def lrds_wrn_16_2(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WRN-16-2."""
    return _create_wrn("lrds_wrn_16_2", pretrained, **dict(dict(depth=16, widen_factor=2), **kwargs))


@register_model
def lrds_wrn_40_1(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WRN-40-1."""
    return _create_wrn("lrds_wrn_40_1", pretrained, **dict(dict(depth=40, widen_factor=1), **kwargs))


@register_model
def lrds_wrn_40_2(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WRN-40-2."""
    return _create_wrn("lrds_wrn_40_2", pretrained, **dict(dict(depth=40, widen_factor=2), **kwargs))
