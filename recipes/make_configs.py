"""Write the paper's configs: one small YAML per teacher-student pair and method variant, and one per teacher.

    python recipes/make_configs.py           # (re)writes recipes/configs/{cifar100,imagenet}/...
    python recipes/make_configs.py --check   # fails if the committed files differ from what this script writes

Variants per CIFAR-100 pair (paper Tables III-VI): vanilla KD with LR and/or DS (`kd`, `kd_lr`, `kd_ds`,
`lrds` = KD + LR + DS, the zoo's default students); the logit methods with DS only (`<m>`, `<m>_ds`, as in the
paper); the feature methods with LR + DS (`<m>`, `<m>_lrds`; PKT also `pkt_lr`, `pkt_ds` for Table III).
ImageNet (Table VII): ResNet34 / ResNet50 -> ResNet18 with KD, LR, CTKD, VID, SRRL, SemCKD and SRRL+LR, CTKD+LR.
The values come from kd_zoo.pairs (pairs, learning rates, DKD's per-pair beta) and shared/reference/methods.md.
"""

import argparse
import sys
from pathlib import Path

import yaml

from kd_zoo.pairs import CIFAR100_PAIRS, cifar100_lr, dkd_beta

ROOT = Path(__file__).parent / "configs"
HEADER = "# Written by recipes/make_configs.py: edit the script, not this file.\n"

CIFAR_BASE = {
    "data": {"name": "uoft-cs/cifar100", "label": "fine", "eval_batch_size": 256},
    "train": {
        "epochs": 240,
        "batch_size": 64,
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "milestones": [150, 180, 210],
        "lr_decay": 0.1,
    },
    "run": {"checkpoint_every": 10},
}
IMAGENET_BASE = {
    "data": {"name": "ILSVRC/imagenet-1k", "eval_split": "validation", "eval_batch_size": 256, "num_workers": 8},
    "student": {"model": "resnet18"},
    "train": {
        "epochs": 120,
        "batch_size": 256,
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "milestones": [30, 60, 90],
        "lr_decay": 0.1,
    },
    "selection": {"enabled": False},
    "run": {"checkpoint_every": 1},
}
LOGIT_METHODS = ("dkd", "dtd_la", "ctkd")
FEATURE_METHODS = ("fitnet", "pkt", "vid", "srrl", "semckd")


def _variant(method: str, lr: bool, ds: bool, args: dict | None = None) -> dict:
    return {
        "method": {"name": method, **({"args": args} if args else {})},
        "label_revision": {"enabled": lr},
        "selection": {"enabled": ds},
    }


def cifar_variants(teacher: str, student: str, batch_size: int) -> dict[str, dict]:
    variants = {
        "kd": _variant("kd", False, False),
        "kd_lr": _variant("kd", True, False),
        "kd_ds": _variant("kd", False, True),
        "lrds": _variant("kd", True, True),
    }
    for method in LOGIT_METHODS:
        args = {"beta": dkd_beta(teacher, student)} if method == "dkd" else None
        variants[method] = _variant(method, False, False, args)
        variants[f"{method}_ds"] = _variant(method, False, True, args)
    for method in FEATURE_METHODS:
        args = {"batch_size": batch_size} if method == "semckd" else None
        variants[method] = _variant(method, False, False, args)
        variants[f"{method}_lrds"] = _variant(method, True, True, args)
    variants["pkt_lr"] = _variant("pkt", True, False)
    variants["pkt_ds"] = _variant("pkt", False, True)
    return variants


def all_files() -> dict[Path, dict]:
    files: dict[Path, dict] = {ROOT / "cifar100" / "base.yaml": CIFAR_BASE}
    archs = sorted({a for p in CIFAR100_PAIRS for a in (p.teacher, p.student)})
    for arch in archs:
        files[ROOT / "cifar100" / "teachers" / f"{arch}.yaml"] = {
            "base": "../base.yaml",
            "teacher": {"model": f"lrds_{arch}"},
            "train": {"lr": cifar100_lr(arch)},
            "run": {"output_dir": f"runs/cifar100/teachers/{arch}"},
        }
    for pair in CIFAR100_PAIRS:
        for name, variant in cifar_variants(pair.teacher, pair.student, CIFAR_BASE["train"]["batch_size"]).items():
            files[ROOT / "cifar100" / pair.name / f"{name}.yaml"] = {
                "base": "../base.yaml",
                "teacher": {"model": f"lrds_{pair.teacher}", "weights": f"lrds_{pair.teacher}.cifar100"},
                "student": {"model": f"lrds_{pair.student}"},
                **variant,
                "train": {"lr": pair.lr},
                "run": {"output_dir": f"runs/cifar100/{pair.name}/{name}"},
            }
    files[ROOT / "imagenet" / "base.yaml"] = IMAGENET_BASE
    kd_args = {"temperature": 1.0, "ce_weight": 0.5, "kd_weight": 0.5}  # mdistiller's ImageNet KD
    imagenet_variants = {
        "kd": _variant("kd", False, False, kd_args),
        "lr": _variant("kd", True, False, kd_args),
        "ctkd": _variant("ctkd", False, False, {"reversal_epochs": 5}),
        "ctkd_lr": _variant("ctkd", True, False, {"reversal_epochs": 5}),
        "vid": _variant("vid", False, False),
        "srrl": _variant("srrl", False, False),
        "srrl_lr": _variant("srrl", True, False),
        "semckd": _variant("semckd", False, False, {"batch_size": 256}),
        "dkd": _variant("dkd", False, False, {"beta": 0.5, "temperature": 1.0, "warmup": 1}),
    }
    for teacher in ("resnet34", "resnet50"):
        for name, variant in imagenet_variants.items():
            files[ROOT / "imagenet" / f"{teacher}-resnet18" / f"{name}.yaml"] = {
                "base": "../base.yaml",
                "teacher": {"model": teacher, "weights": f"{teacher}.tv_in1k"},
                **variant,
                "run": {"output_dir": f"runs/imagenet/{teacher}-resnet18/{name}"},
            }
    return files


def render(values: dict) -> str:
    return HEADER + yaml.safe_dump(values, sort_keys=False)


def main() -> None:
    parser = argparse.ArgumentParser(description="Write (or --check) the paper's recipe configs.")
    parser.add_argument("--check", action="store_true", help="exit 1 if any file differs from the generated one")
    args = parser.parse_args()
    files = all_files()
    stale = [p for p, v in files.items() if not p.is_file() or p.read_text() != render(v)]
    extra = sorted(set(ROOT.rglob("*.yaml")) - set(files) - {ROOT / "demo.yaml", ROOT / "demo_teacher.yaml"})
    if args.check:
        for path in stale + extra:
            print(f"out of date: {path}")
        sys.exit(1 if stale or extra else 0)
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(files[path]))
    print(f"{len(files)} configs ({len(stale)} written); unexpected files: {[str(p) for p in extra]}")


if __name__ == "__main__":
    main()
