"""The zoo's teacher-student pairs: the one source for pretrained tags, configs and pair-dependent defaults.

Pairs are those of "Improve Knowledge Distillation via Label Revision and Data Selection" (Lan et al.,
arXiv 2404.03693), Tables IV-VI, on CIFAR-100, in the order of Table IV; the ResNet50 pairs are the
cross-architecture pairs of the CRD / mdistiller benchmarks that the feature-method comparison also covers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Pair:
    """A CIFAR-100 teacher-student pair, by short architecture name (timm name without `lrds_`)."""

    teacher: str
    student: str
    in_paper: bool = True  # a column of the paper's Tables IV-VI

    @property
    def name(self) -> str:
        return f"{self.teacher}-{self.student}"

    @property
    def lr(self) -> float:
        """CIFAR-100 learning rate: 0.01 for MobileNet / ShuffleNet students, 0.05 otherwise (paper Sec. IV-A)."""
        return 0.01 if self.student.startswith(("mobilenet", "shufflenet")) else 0.05


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


def dkd_beta(teacher: str, student: str) -> float:
    """DKD's beta for a CIFAR-100 pair: 2, 6 or 8 (mdistiller configs)."""
    return _DKD_BETA.get((_short(teacher), _short(student)), 8.0)


_DATASET_TAGS = {
    "uoft-cs/cifar100": "cifar100",
    "cifar100": "cifar100",
    "ILSVRC/imagenet-1k": "in1k",
    "imagenet-1k": "in1k",
    "demo": "digits",
}


def weight_tag(method: str, teacher: str | None, dataset: str, lr: bool = False, ds: bool = False) -> str:
    """The zoo's weight tag for a run: `lrds_resnet32x4_cifar100` (KD + LR + DS), `kd_resnet32x4_cifar100`,
    `dkd_ds_resnet32x4_cifar100`, or `cifar100` for a model trained alone."""
    data = _DATASET_TAGS.get(dataset) or "".join(c if c.isalnum() else "_" for c in dataset.split("/")[-1]).lower()
    if teacher is None:
        return data
    if method == "kd" and lr and ds:
        prefix = "lrds"
    else:
        prefix = method + ("_lr" if lr else "") + ("_ds" if ds else "")
    return f"{prefix}_{_short(teacher)}_{data}"


def get_pair(teacher: str, student: str) -> Pair:
    for pair in CIFAR100_PAIRS:
        if (pair.teacher, pair.student) == (_short(teacher), _short(student)):
            return pair
    known = ", ".join(p.name for p in CIFAR100_PAIRS)
    raise LookupError(f"{teacher} -> {student} is not a zoo pair. Known pairs: {known}.")


def pretrained_tags(arch: str) -> list[str]:
    """Weight tags of an architecture, the default first: a student's LR+DS weights from its first paper
    teacher, then the other distilled weights, then its own CE-trained CIFAR-100 weights (`cifar100`)."""
    short = _short(arch)
    tags = [
        f"{method}_{pair.teacher}_cifar100"
        for method in STUDENT_WEIGHT_METHODS
        for pair in CIFAR100_PAIRS
        if pair.in_paper and pair.student == short
    ]
    return tags + ["cifar100"]


def _short(arch: str) -> str:
    return arch.removeprefix("lrds_")
