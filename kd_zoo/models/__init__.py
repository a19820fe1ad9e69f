"""The CIFAR model zoo, registered in timm as `lrds_<arch>` when this package is imported."""

from ._base import Stage, StagedNet
from ._builder import CheckpointMismatchError, PretrainedWeightsError, UnknownModelError
from .cifar_mobilenetv2 import CifarMobileNetV2
from .cifar_resnet import CifarResNet
from .cifar_shufflenet import CifarShuffleNetV1, CifarShuffleNetV2
from .cifar_vgg import CifarVGG
from .cifar_wrn import WideResNet
from .reference import (
    ReferenceCheckpoint,
    ReferenceCheckpointError,
    ReferenceKeyError,
    checkpoint_arch,
    kd_zoo_to_reference,
    load_reference_checkpoint,
    read_reference_checkpoint,
    reference_to_kd_zoo,
)

__all__ = [
    "CheckpointMismatchError",
    "CifarMobileNetV2",
    "CifarResNet",
    "CifarShuffleNetV1",
    "CifarShuffleNetV2",
    "CifarVGG",
    "PretrainedWeightsError",
    "ReferenceCheckpoint",
    "ReferenceCheckpointError",
    "ReferenceKeyError",
    "Stage",
    "StagedNet",
    "UnknownModelError",
    "WideResNet",
    "checkpoint_arch",
    "kd_zoo_to_reference",
    "load_reference_checkpoint",
    "read_reference_checkpoint",
    "reference_to_kd_zoo",
]
