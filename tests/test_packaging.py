"""The explicit package list in pyproject.toml ships every kd_zoo package (and model_cards as kd_zoo.model_cards)."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "kd_zoo").rglob("__init__.py")} | {
        "kd_zoo.model_cards"
    }
    assert set(config["packages"]) == on_disk
    assert config["package-dir"] == {"kd_zoo.model_cards": "model_cards"}
    assert (ROOT / "model_cards" / "model_card.md").is_file()


def test_templates_and_metric_are_importable_resources():
    import importlib.resources

    import kd_zoo.metrics

    assert importlib.resources.files("kd_zoo.model_cards").joinpath("model_card.md").is_file()
    assert (Path(kd_zoo.metrics.TOPK_ACCURACY) / "topk_accuracy.py").is_file()
