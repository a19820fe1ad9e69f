"""The paper's teacher-student pairs, the settings that depend on a pair, and the weight tags named after them.

Pairs are those of "Improve Knowledge Distillation via Label Revision and Data Selection" (Lan et al.,
arXiv 2404.03693), Tables IV-VI, on CIFAR-100, in the order of Table IV; the ResNet50 pairs are the
cross-architecture pairs of the CRD / mdistiller benchmarks that the feature-method comparison also covers.
Everything here is keyed by short architecture names (the timm name without `lrds_`); functions accept both.
"""

from __future__ import annotations

from dataclasses import dataclass

from .constants import CIFAR100_HUB_ID, DEMO_DATASET, IMAGENET_HUB_ID, MODEL_PREFIX

# CIFAR-100 learning rates (paper Sec. IV-A, as CRD): 0.01 for MobileNet / ShuffleNet, 0.05 for the others.
CIFAR100_LR = 0.05
SMALL_MODEL_LR = 0.01
SMALL_MODEL_PREFIXES = ("mobilenet", "shufflenet")


def short_name(arch: str) -> str:
    """`lrds_resnet8x4` -> `resnet8x4` (other names unchanged)."""
    return arch.removeprefix(MODEL_PREFIX)


def cifar100_lr(arch: str) -> float:
    """The CIFAR-100 learning rate for training `arch` (as a student, or as a teacher with cross-entropy)."""
    return SMALL_MODEL_LR if short_name(arch).startswith(SMALL_MODEL_PREFIXES) else CIFAR100_LR


@dataclass(frozen=True)
class Pair:
    """A CIFAR-100 teacher-student pair, by short architecture name."""

    teacher: str
    student: str
    in_paper: bool = True  # a column of the paper's Tables IV-VI

    @property
    def name(self) -> str:
        return f"{self.teacher}-{self.student}"

    @property
    def lr(self) -> float:
        """The student's CIFAR-100 learning rate (`cifar100_lr`)."""
        return cifar100_lr(self.student)


CIFAR100_PAIRS: tuple[Pair, ...] = (
    Pair("resnet32x4", "resnet8x4"),
    Pair("wrn_40_2", "wrn_40_1"),
    Pair("wrn_40_2", "wrn_16_2"),
    Pair("resnet56", "resnet20"),
    Pair("vgg13", "vgg8"),
    Pair("resnet32x4", "vgg8"),
    Pair("resnet32x4", "shufflenetv1"),
    Pair("resnet32x4", "shufflenetv2"),
    Pair("wrn_40_2", "mobilenetv2"),
    Pair("wrn_40_2", "shufflenetv1"),
    Pair("resnet50", "mobilenetv2", in_paper=False),
    Pair("resnet50", "vgg8", in_paper=False),
)

# Distilled students published for each paper pair: LR+DS (the zoo's default) and vanilla KD for comparison.
STUDENT_WEIGHT_METHODS = ("lrds", "kd")

# DKD's NCKD weight per pair (mdistiller's CIFAR-100 configs); 8 for every other pair.
_DKD_BETA = {
    ("resnet56", "resnet20"): 2.0,
    ("resnet110", "resnet32"): 2.0,
    ("vgg13", "vgg8"): 6.0,
    ("vgg13", "mobilenetv2"): 6.0,
    ("wrn_40_2", "wrn_16_2"): 6.0,
    ("wrn_40_2", "wrn_40_1"): 6.0,
}
DKD_DEFAULT_BETA = 8.0


def dkd_beta(teacher: str, student: str) -> float:
    """DKD's beta for a CIFAR-100 pair: 2, 6 or 8 (mdistiller configs)."""
    return _DKD_BETA.get((short_name(teacher), short_name(student)), DKD_DEFAULT_BETA)


# The data set part of a weight tag.
DATASET_TAGS = {
    CIFAR100_HUB_ID: "cifar100",
    "cifar100": "cifar100",
    IMAGENET_HUB_ID: "in1k",
    "imagenet-1k": "in1k",
    DEMO_DATASET: "digits",
}


def dataset_tag(dataset: str) -> str:
    """`uoft-cs/cifar100` -> `cifar100`, `demo` -> `digits`, any other name -> its last part, lowercased."""
    return DATASET_TAGS.get(dataset) or "".join(c if c.isalnum() else "_" for c in dataset.split("/")[-1]).lower()


def weight_tag(method: str, teacher: str | None, dataset: str, lr: bool = False, ds: bool = False) -> str:
    """The zoo's weight tag for a run: `lrds_resnet32x4_cifar100` (KD + LR + DS), `kd_resnet32x4_cifar100`,
    `dkd_ds_resnet32x4_cifar100`, or `cifar100` for a model trained alone (`teacher=None`)."""
    data = dataset_tag(dataset)
    if teacher is None:
        return data
    prefix = (
        "lrds" if (method, lr, ds) == ("kd", True, True) else method + ("_lr" if lr else "") + ("_ds" if ds else "")
    )
    return f"{prefix}_{short_name(teacher)}_{data}"


def pretrained_tags(arch: str) -> list[str]:
    """Weight tags of an architecture, the default first: a student's LR+DS weights from its first paper
    teacher, then the other distilled weights, then its own CE-trained CIFAR-100 weights (`cifar100`)."""
    short = short_name(arch)
    tags = [
        f"{method}_{pair.teacher}_cifar100"
        for method in STUDENT_WEIGHT_METHODS
        for pair in CIFAR100_PAIRS
        if pair.in_paper and pair.student == short
    ]
    return tags + ["cifar100"]
