"""The CIFAR model zoo, registered in timm as `lrds_<arch>` when this package is imported."""

from ._base import Stage, StagedNet
from ._builder import CheckpointMismatchError, PretrainedWeightsError
from .mobilenetv2 import CifarMobileNetV2
from .resnet import CifarResNet
from .shufflenet import CifarShuffleNetV1, CifarShuffleNetV2
from .vgg import CifarVGG
from .wrn import WideResNet

__all__ = [
    "CheckpointMismatchError",
    "CifarMobileNetV2",
    "CifarResNet",
    "CifarShuffleNetV1",
    "CifarShuffleNetV2",
    "CifarVGG",
    "PretrainedWeightsError",
    "Stage",
    "StagedNet",
    "WideResNet",
]
