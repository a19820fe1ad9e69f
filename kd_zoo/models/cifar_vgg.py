"""VGG with batch norm for CIFAR: VGG-8, 11, 13, 16, 19.

"Very Deep Convolutional Networks for Large-Scale Image Recognition" (Simonyan & Zisserman, arXiv 1409.1556),
in the CIFAR form of CRD / mdistiller's `vgg.py`: five conv groups (stage 0 is the first), 2x2 max-pools before
groups 1-3, none before group 4 on 32x32 inputs (so stages 3 and 4 are both 4x4), global average pooling and a
single 512 -> classes linear layer. Checked against `shared/reference/architectures.md`.
"""

from __future__ import annotations

from typing import Any

from timm.models import generate_default_cfgs, register_model
from torch import nn

from ._base import Stage, StagedNet, init_weights
from ._builder import build_zoo_model, zoo_cfgs

__all__ = ["CifarVGG"]

# Conv widths of each of the five groups.
VGG_CFGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


def _conv_group(in_chs: int, widths: tuple[int, ...], pool: bool) -> nn.Sequential:
    """[max-pool] conv-BN-ReLU ... conv-BN; the last ReLU belongs to the stage."""
    layers: list[nn.Module] = [nn.MaxPool2d(2, 2)] if pool else []
    for i, width in enumerate(widths):
        layers += [nn.Conv2d(in_chs, width, 3, padding=1), nn.BatchNorm2d(width)]
        if i < len(widths) - 1:
            layers.append(nn.ReLU(inplace=True))
        in_chs = width
    return nn.Sequential(*layers)


class CifarVGG(StagedNet):
    """VGG-BN for 32x32 inputs."""

    def __init__(
        self,
        cfg: str = "vgg8",
        num_classes: int = 100,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ):
        groups = VGG_CFGS[cfg]
        stages, reductions, in_chs, reduction = [], [], in_chans, 1
        for i, widths in enumerate(groups):
            pool = i in (1, 2, 3)
            reduction *= 2 if pool else 1
            stages.append(Stage(_conv_group(in_chs, widths, pool), nn.ReLU()))
            reductions.append(reduction)
            in_chs = widths[-1]
        super().__init__(
            stages,
            [g[-1] for g in groups],
            reductions,
            num_features=in_chs,
            num_classes=num_classes,
            in_chans=in_chans,
            global_pool=global_pool,
            drop_rate=drop_rate,
        )
        init_weights(self, linear_std=0.01)


def _create_vgg(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    return build_zoo_model(CifarVGG, variant, pretrained, num_stages=5, **kwargs)


default_cfgs = generate_default_cfgs(
    {key: cfg for name in VGG_CFGS for key, cfg in zoo_cfgs(f"lrds_{name}", pool_size=(4, 4)).items()}
)


@register_model
def lrds_vgg8(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG-8-BN (one conv per group)."""
    return _create_vgg("lrds_vgg8", pretrained, **dict(dict(cfg="vgg8"), **kwargs))


@register_model
def lrds_vgg11(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG-11-BN."""
    return _create_vgg("lrds_vgg11", pretrained, **dict(dict(cfg="vgg11"), **kwargs))


@register_model
def lrds_vgg13(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG-13-BN."""
    return _create_vgg("lrds_vgg13", pretrained, **dict(dict(cfg="vgg13"), **kwargs))


@register_model
def lrds_vgg16(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG-16-BN."""
    return _create_vgg("lrds_vgg16", pretrained, **dict(dict(cfg="vgg16"), **kwargs))


@register_model
def lrds_vgg19(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG-19-BN."""
    return _create_vgg("lrds_vgg19", pretrained, **dict(dict(cfg="vgg19"), **kwargs))
