"""The recipes' one command-line convention: every config key is an option with its type and default, values are
YAML 1.2 and checked (types, ranges, choices, across fields), and a bad value is a usage error, not a traceback."""

import importlib.util
import re
import sys
from pathlib import Path

import pytest

import kd_zoo  # noqa: F401
from kd_zoo.config import ConfigError, RecipeConfig, load_config, parse_recipe_args

ROOT = Path(__file__).resolve().parents[1]


def _help(recipe, monkeypatch, capsys):
    """A recipe's --help, run in this process as `python recipes/<recipe>.py --help` would."""
    spec = importlib.util.spec_from_file_location(recipe, ROOT / "recipes" / f"{recipe}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, recipe, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [f"{recipe}.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        module.main()
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_help_lists_every_key_with_its_type_and_default(monkeypatch, capsys):
    text = _help("distill", monkeypatch, capsys)
    cfg = RecipeConfig()
    for section, values in cfg.to_dict().items():
        for key in values:
            assert f"--{section}.{key}" in text, f"--help misses {section}.{key}"
    assert "--train.epochs VALUE" in text and "[int; > 0; default: 240]" in text
    assert "one of share, sum" in text and "[list[int]; > 0; default: [150, 180, 210]]" in text


@pytest.mark.parametrize("recipe", ["train_teacher", "score", "cache_teacher", "push_zoo"])
def test_every_recipe_has_the_same_help(recipe, monkeypatch, capsys):
    text = _help(recipe, monkeypatch, capsys)
    assert "section.key=value" in text and "--config" in text
    assert ("--runs_dir VALUE" if recipe == "push_zoo" else "--run.output_dir VALUE") in text


def test_options_and_overrides_are_the_same_and_numbers_are_numbers():
    argv = ["--train.epochs", "10", "train.lr=1e-3", "--label_revision.eta", "1e-1", "--run.resume"]
    cfg = parse_recipe_args("t", None, argv)
    assert (cfg.train.epochs, cfg.train.lr, cfg.label_revision.eta, cfg.run.resume) == (10, 0.001, 0.1, True)
    cfg = parse_recipe_args("t", None, ["--train.milestones", "[5, 8]", "run.resume=runs/x/checkpoints/epoch_0003"])
    assert cfg.train.milestones == [5, 8] and cfg.run.resume == "runs/x/checkpoints/epoch_0003"
    cfg = parse_recipe_args("t", None, ["--train.gradient-accumulation-steps", "2", "data.class_names=[a, b]"])
    assert cfg.train.gradient_accumulation_steps == 2 and cfg.data.class_names == ["a", "b"]
    assert parse_recipe_args("t", None, ["label_revision.eta=pt_max"]).label_revision.eta == "pt_max"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train.epochs=-1"], "train.epochs must be > 0, got -1"),
        (["train.epochs=0"], "train.epochs must be > 0"),
        (["train.batch_size=0"], "train.batch_size must be > 0"),
        (["run.checkpoint_every=0"], "run.checkpoint_every must be > 0"),
        (["run.log_every=0"], "run.log_every must be > 0"),
        (["train.gradient_accumulation_steps=0"], "train.gradient_accumulation_steps must be > 0"),
        (["train.lr=0"], "train.lr must be > 0"),
        (["selection.fraction=0"], r"selection.fraction must be in \(0, 1\]"),
        (["selection.fraction=1.5"], r"selection.fraction must be in \(0, 1\]"),
        (["train.milestones=5"], r"train.milestones must be a list, e.g. train.milestones=\[5\]"),
        (["train.milestones=[5, -1]"], "train.milestones must be > 0, got -1"),
        (["train.epochs=three"], "train.epochs must be an integer, got 'three'"),
        (["train.epoch=3"], r"unknown config key 'train.epoch' \(did you mean 'epochs'\?\)"),
        (["train.mixed_precision=fp32"], "train.mixed_precision must be one of no, fp16, bf16"),
        (["method.name=kdd"], r"method.name must be one of .* \(did you mean 'kd'\?\)"),
        (["method.args={betaa: 3}"], r"unknown hyperparameter\(s\) \['betaa'\] for method 'kd'"),
        (["selection.strategy=middle"], "selection.strategy must be one of highest, lowest, random"),
        (["run.dry_run=true"], "run.dry_run=true needs run.push_to_hub=ORG/NAME"),
        (["run.push_to_hub=noslash"], "run.push_to_hub must be ORG/NAME"),
        (["run.resume=true", "run.overwrite=true"], "contradict"),
        (["label_revision.lambda1=-1"], "label_revision.lambda1 must be >= 0"),
        (["label_revision.eta=pt_mean"], "eta"),
        (["train.epochs"], "section.key=value"),
        (["method.name=fitnet", "teacher.weights=t", "teacher.cache=c"], r"serves .* method 'fitnet' needs"),
        (["teacher.cache=caches/demo"], r"teacher.cache needs the teacher it was built from: pass teacher.weights="),
        (["caching.std=[0.5,0.5,0.5]"], "caching.mean and caching.std go together"),
        (["caching.mean=[0.5]", "caching.std=[0.5,0.5,0.5]"], "one value per channel"),
        (["teacher.cache_placement=gpu"], "teacher.cache_placement must be one of auto, device, mmap"),
    ],
)
def test_bad_values_are_usage_errors_naming_the_key(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_recipe_args("t", None, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err


def test_the_good_values_next_to_each_refusal_pass():
    good = [
        "train.epochs=1",
        "train.batch_size=8",
        "run.checkpoint_every=1",
        "run.log_every=1",
        "train.gradient_accumulation_steps=1",
        "train.lr=0.1",
        "selection.fraction=1",
        "train.milestones=[1]",
        "train.mixed_precision=bf16",
        "method.name=dkd",
        "method.args={beta: 6}",
        "selection.strategy=random",
        "run.push_to_hub=me/model",
        "run.dry_run=true",
        "label_revision.lambda1=0",
        "label_revision.eta=pt_target",
        "teacher.weights=runs/demo/teacher/model",
        "teacher.cache=caches/x",
        "teacher.cache_placement=mmap",
        "caching.mean=[0.5,0.5,0.5]",
        "caching.std=[0.25,0.25,0.25]",
    ]
    cfg = parse_recipe_args("t", None, good)
    assert cfg.method.args == {"beta": 6} and cfg.run.dry_run and cfg.selection.fraction == 1.0
    assert cfg.teacher.cache == "caches/x" and cfg.caching.std == [0.25, 0.25, 0.25]


def test_yaml_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 10\n  lr: [0.1\n")
    with pytest.raises(ConfigError, match=rf"{path}:4:1: not valid YAML"):
        load_config(path)
    path.write_text("train:\n  lr: 1e-3\n  epochs: 2\n")  # YAML 1.1 would read 1e-3 as a string
    assert load_config(path).train.lr == 0.001


def test_every_shipped_config_loads(tmp_path):
    for path in (ROOT / "recipes" / "configs").rglob("*.yaml"):
        if path.name != "base.yaml":
            load_config(path)
