"""The paper's recipe configs: generated (never hand-edited), loadable, and naming real models, methods and args."""

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm

import kd_zoo  # noqa: F401
from kd_zoo.config import load_config
from kd_zoo.methods import METHODS
from kd_zoo.pairs import CIFAR100_PAIRS

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "recipes" / "configs").rglob("*.yaml"))
RUNNABLE = [p for p in CONFIGS if p.name != "base.yaml"]


def test_configs_match_the_generator():
    result = subprocess.run(
        [sys.executable, "recipes/make_configs.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_pair_has_every_variant():
    for pair in CIFAR100_PAIRS:
        names = {p.stem for p in (ROOT / "recipes" / "configs" / "cifar100" / pair.name).glob("*.yaml")}
        assert {"kd", "kd_lr", "kd_ds", "lrds", "dkd_ds", "dtd_la_ds", "ctkd_ds"} <= names
        assert {f"{m}_lrds" for m in ("fitnet", "pkt", "vid", "srrl", "semckd")} <= names


@pytest.mark.parametrize("path", RUNNABLE, ids=lambda p: str(p.relative_to(ROOT / "recipes" / "configs")))
def test_config_loads_and_names_real_things(path):
    cfg = load_config(path)
    assert timm.is_model(cfg.teacher.model) and timm.is_model(cfg.student.model)
    method = METHODS.get(cfg.method.name)
    valid = set(inspect.signature(method.__init__).parameters) - {"self", "student", "teacher"}
    assert set(cfg.method.args) <= valid, f"unknown args {set(cfg.method.args) - valid}"
    if "cifar100" in path.parts and "teachers" not in path.parts:
        student = cfg.student.model.removeprefix("lrds_")
        assert cfg.train.lr == (0.01 if student.startswith(("mobilenet", "shufflenet")) else 0.05)
        assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.milestones) == (240, 64, [150, 180, 210])


ABLATIONS = ROOT / "recipes" / "configs" / "cifar100" / "resnet32x4-resnet8x4" / "ablations"


@pytest.mark.parametrize("path", sorted(ABLATIONS.glob("*.yaml")), ids=lambda p: p.stem)
def test_an_ablation_config_is_what_its_name_says(path):
    """Names list the settings that differ from the defaults (LR: eta 0.8, lambda1 4, lambda2 1; DS: 80 %, highest)."""
    cfg, name = load_config(path), path.stem
    assert (cfg.teacher.model, cfg.student.model, cfg.method.name) == ("lrds_resnet32x4", "lrds_resnet8x4", "kd")
    if name.startswith("kd_ds_"):
        strategy, pct = name.removeprefix("kd_ds_").split("_")
        assert not cfg.label_revision.enabled and cfg.selection.enabled
        assert (cfg.selection.strategy, cfg.selection.fraction) == (strategy, int(pct) / 100)
        return
    if name == "kd_mse":
        assert cfg.method.args == {"loss": "mse"}
        assert not cfg.label_revision.enabled and not cfg.selection.enabled
        return
    prefix = re.match(r"(kd_lr|lrds)_", name).group(1)
    assert cfg.label_revision.enabled and cfg.selection.enabled == (prefix == "lrds")
    want = {"eta": 0.8, "lambda1": 4.0, "lambda2": 1.0}
    for key, value in re.findall(r"(lambda1|lambda2|eta)_(pt_max|pt_target|[0-9.]+)", name):
        want[key] = value if value.startswith("pt_") else float(value)
    lr = cfg.label_revision
    assert {"eta": lr.eta, "lambda1": lr.lambda1, "lambda2": lr.lambda2} == want
    assert (cfg.selection.fraction, cfg.selection.strategy) == (0.8, "highest")


def test_the_ablation_grids_are_complete():
    """Table II's 9 cells, Table VIII's 2 x 9 and Table IX's 8: each a file, or the default it equals."""
    names = {p.stem for p in ABLATIONS.glob("*.yaml")}
    table2 = {f"kd_ds_{s}_{p}" for s in ("random", "lowest", "highest") for p in (20, 50, 80)} - {"kd_ds_highest_80"}
    lambdas = ("0", "0.1", "0.5", "0.8", "1", "2", "4", "8", "10")
    table8 = {f"lrds_lambda1_{v}" for v in lambdas if v != "4"} | {f"lrds_lambda1_1_lambda2_{v}" for v in lambdas}
    table8 -= {"lrds_lambda1_1_lambda2_1"}  # = lrds_lambda1_1
    table9 = {f"lrds_lambda1_1_eta_{v}" for v in ("0.5", "0.7", "0.85", "0.9", "0.95", "pt_max", "pt_target")}
    assert names == table2 | table8 | table9 | {"kd_mse", "kd_lr_lambda1_1"}


def test_imagenet_configs_hold_the_student_baseline_and_both_kd_temperatures():
    student = load_config(ROOT / "recipes" / "configs" / "imagenet" / "teachers" / "resnet18.yaml")
    assert (student.teacher.model, student.teacher.weights, student.train.epochs) == ("resnet18", None, 120)
    for pair in ("resnet34-resnet18", "resnet50-resnet18"):
        folder = ROOT / "recipes" / "configs" / "imagenet" / pair
        assert load_config(folder / "kd.yaml").method.args == {"temperature": 4.0, "ce_weight": 1.0, "kd_weight": 1.0}
        t1 = {"temperature": 1.0, "ce_weight": 0.5, "kd_weight": 0.5}
        assert load_config(folder / "kd_t1.yaml").method.args == t1
        assert load_config(folder / "ctkd.yaml").method.args == {
            "reversal_epochs": 5,
            "ce_weight": 1.0,
            "kd_weight": 1.0,
        }
