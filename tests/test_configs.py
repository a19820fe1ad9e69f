"""The paper's recipe configs: generated (never hand-edited), loadable, and naming real models, methods and args."""

import inspect
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
