"""Bad inputs, each answered with one clear message before anything is trained, and the README's table of them.

Every case runs `recipes/distill.py` (or the recipe named) in this process with the bad input and checks the exit
status and the message. The README's "Bad inputs" table is generated from `CASES` and checked here, so it cannot
drift: `python tests/test_bad_inputs.py` rewrites it.
"""
# ruff: noqa: E501  (CASES is a table: one case a line reads best)

import json
import os
import re
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml
from datasets import ClassLabel, Dataset, Features, Image, Value

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- bad-inputs:start -->", "<!-- bad-inputs:end -->"
QUICK = ["teacher.model=lrds_resnet8", "student.model=lrds_resnet8", "train.epochs=1", "run.report_to=[]"]


@dataclass(frozen=True)
class Case:
    """A bad input: what the user does, the exit status and the message they get (a regex)."""

    input: str
    argv: Callable[[Path], list[str]]
    status: int
    message: str
    recipe: str = "distill"
    needs: tuple[str, ...] = field(default_factory=tuple)


def _out(tmp: Path) -> str:
    return f"run.output_dir={tmp / 'run'}"


def _finished_run(tmp: Path) -> list[str]:
    (tmp / "run").mkdir()
    (tmp / "run" / "result.json").write_text("{}")
    return [*QUICK, _out(tmp)]


def _started_with(tmp: Path, **changes) -> Path:
    """A run folder whose config.yaml says it was started with QUICK plus `changes` (section.key -> value)."""
    from kd_zoo.config import load_config

    demo = ROOT / "recipes" / "configs" / "demo.yaml"  # the recipe's default config
    cfg = load_config(demo, [*QUICK, _out(tmp), *(f"{k}={v}" for k, v in changes.items())])
    (tmp / "run").mkdir(exist_ok=True)
    cfg.save(tmp / "run" / "config.yaml")
    return tmp / "run"


def _resumed_other_config(tmp: Path) -> list[str]:
    _started_with(tmp, **{"train.lr": 0.01})
    return [*QUICK, _out(tmp), "run.resume=true"]


def _resumed_finished_schedule(tmp: Path) -> list[str]:
    run = _started_with(tmp)
    checkpoint = run / "checkpoints" / "epoch_0001"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"epochs_done": 1, "best": {}, "history": []}))
    return [*QUICK, _out(tmp), "run.resume=true"]


def _in_use(tmp: Path) -> list[str]:
    (tmp / "run").mkdir()
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": "2026-12-01T00:00:00+00:00"}
    (tmp / "run" / ".lock").write_text(json.dumps(holder))
    return [*QUICK, _out(tmp)]


def _unwritable(tmp: Path) -> list[str]:
    (tmp / "a_file").write_text("x")
    return [*QUICK, f"run.output_dir={tmp / 'a_file' / 'run'}"]


def _yaml_error(tmp: Path) -> list[str]:
    (tmp / "bad.yaml").write_text("train:\n  epochs: 3\n  lr: [0.1\n")
    return ["--config", str(tmp / "bad.yaml")]


def _parquet(tmp: Path, *, labels_named: bool = True, empty_test: bool = False) -> Path:
    rng = np.random.default_rng(0)
    label = ClassLabel(names=["a", "b"]) if labels_named else Value("int64")
    features = Features({"image": Image(), "label": label})
    folder = tmp / "data"
    folder.mkdir()
    for split, n in (("train", 8), ("test", 0 if empty_test else 4)):
        images = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(n)]
        ds = Dataset.from_dict({"image": images, "label": [i % 2 for i in range(n)]}, features=features)
        ds.to_parquet(str(folder / f"{split}-00000.parquet"))
    return folder


def _empty_split(tmp: Path) -> list[str]:
    return [*QUICK, _out(tmp), f"data.name={_parquet(tmp, empty_test=True)}", "train.batch_size=4"]


def _unnamed_labels(tmp: Path) -> list[str]:
    return [*QUICK, _out(tmp), f"data.name={_parquet(tmp, labels_named=False)}", "train.batch_size=4"]


def _scores_of_another_teacher(tmp: Path) -> list[str]:
    import torch
    from safetensors.torch import save_file

    import kd_zoo
    from kd_zoo.data import load_tensor_split
    from kd_zoo.hub import export_scores
    from kd_zoo.selection import score_dataset

    torch.manual_seed(0)
    train = load_tensor_split(None, "train")
    scored = kd_zoo.create_model("lrds_resnet8", num_classes=10)
    export_scores(score_dataset(scored, train, "loss"), tmp / "scores")
    other = kd_zoo.create_model("lrds_resnet8", num_classes=10)
    save_file(other.state_dict(), str(tmp / "teacher.safetensors"))
    return [*QUICK, _out(tmp), f"teacher.weights={tmp / 'teacher.safetensors'}", f"selection.scores={tmp / 'scores'}"]


def _teacher_file(tmp: Path) -> Path:
    """A 10-class lrds_resnet8 teacher for the demo digits, as a .safetensors file."""
    from safetensors.torch import save_file

    import kd_zoo

    save_file(kd_zoo.create_model("lrds_resnet8", num_classes=10).state_dict(), str(tmp / "teacher.safetensors"))
    return tmp / "teacher.safetensors"


def _cache_of(tmp: Path, *, cache_seed: int, **build) -> list[str]:
    """A local data set, a teacher (seed 0) and a teacher cache built from the teacher of `cache_seed`."""
    import torch
    from safetensors.torch import save_file

    import kd_zoo
    from kd_zoo.data import load_tensor_split
    from kd_zoo.teacher_cache import build_teacher_cache

    data = _parquet(tmp)
    teachers = {}
    for seed in {0, cache_seed}:
        torch.manual_seed(seed)
        teachers[seed] = kd_zoo.create_model("lrds_resnet8", num_classes=2).eval()
    save_file(teachers[0].state_dict(), str(tmp / "teacher.safetensors"))
    build_teacher_cache(
        teachers[cache_seed], load_tensor_split(str(data), "train"), tmp / "cache", progress=False, **build
    )
    return [
        *QUICK, _out(tmp), f"data.name={data}", f"teacher.weights={tmp / 'teacher.safetensors'}",
        f"teacher.cache={tmp / 'cache'}", "train.batch_size=4", "selection.enabled=false",
    ]  # fmt: skip


def _no_token(tmp: Path) -> list[str]:
    return [*QUICK, _out(tmp), "run.push_to_hub=me/student"]


CASES = [
    Case("`train.epochs=-1`", lambda t: [*QUICK, "train.epochs=-1"], 2, r"train.epochs must be > 0, got -1"),
    Case("`run.checkpoint_every=0`", lambda t: ["run.checkpoint_every=0"], 2, r"run.checkpoint_every must be > 0"),
    Case("`run.log_every=0`", lambda t: ["run.log_every=0"], 2, r"run.log_every must be > 0"),
    Case(
        "`train.gradient_accumulation_steps=0`",
        lambda t: ["train.gradient_accumulation_steps=0"],
        2,
        r"train.gradient_accumulation_steps must be > 0",
    ),
    Case("`selection.fraction=1.5`", lambda t: ["selection.fraction=1.5"], 2, r"selection.fraction must be in \(0, 1\]"),
    Case("`train.milestones=5`", lambda t: ["train.milestones=5"], 2, r"train.milestones must be a list"),
    Case("`train.epochs=ten`", lambda t: ["train.epochs=ten"], 2, r"train.epochs must be an integer, got 'ten'"),
    Case("`train.epoch=3` (a typo)", lambda t: ["train.epoch=3"], 2, r"unknown config key 'train.epoch' \(did you mean 'epochs'\?\)"),
    Case("`method.name=kdd`", lambda t: ["method.name=kdd"], 2, r"method.name must be one of .*\(did you mean 'kd'\?\)"),
    Case("`method.args={betaa: 6}`", lambda t: ["method.args={betaa: 6}"], 2, r"unknown hyperparameter\(s\) \['betaa'\]"),
    Case("`teacher.model=lrds_resnet9`", lambda t: ["teacher.model=lrds_resnet9"], 2, r"unknown model 'lrds_resnet9' \(did you mean 'lrds_resnet8'\?\)"),
    Case("`label_revision.eta=pt_mean`", lambda t: ["label_revision.eta=pt_mean"], 2, r"label_revision: eta must"),
    Case("`label_revision.eta=1`", lambda t: ["label_revision.eta=1"], 2, r"label_revision: eta must lie in \(0, 1\)"),
    Case("`run.report_to=[wandbb]`", lambda t: ["run.report_to=[wandbb]"], 2, r"run.report_to must be one of .*\(did you mean 'wandb'\?\)"),
    Case("`run.dry_run=true` without `run.push_to_hub`", lambda t: ["run.dry_run=true"], 2, r"run.dry_run=true needs run.push_to_hub=ORG/NAME"),
    Case("`run.resume=true run.overwrite=true`", lambda t: ["run.resume=true", "run.overwrite=true"], 2, r"contradict"),
    Case("a YAML file with a syntax error", _yaml_error, 2, r"bad.yaml:4:1: not valid YAML"),
    Case("a run folder holding a finished run", _finished_run, 1, r"holds a finished run: pass run.resume=true to continue it, run.overwrite=true"),
    Case("a run folder another run is using", _in_use, 1, r"is in use by process \d+ on .*: wait for that run, or pass another run.output_dir"),
    Case("a resume with another config", _resumed_other_config, 2, r"train.lr: the run has 0.01, now 0.05"),
    Case("a resume with no epoch left", _resumed_finished_schedule, 2, r"has already trained 1 of train.epochs=1 epochs"),
    Case("an output folder that cannot be written", _unwritable, 1, r"cannot write to the run folder .*: pass a writable run.output_dir"),
    Case("`run.push_to_hub` without a Hub token", _no_token, 1, r"no Hugging Face token: set HF_TOKEN or run `hf auth login`", needs=("no_token",)),
    Case("`data.name` that is neither a path nor a Hub id", lambda t: [*QUICK, _out(t), f"data.name={t / 'nowhere'}"], 1, r"unknown data set .* no local path .*nowhere exists"),
    Case("`data.eval_split=validation` on a data set without it", lambda t: [*QUICK, _out(t), "data.eval_split=validation"], 1, r"has no split 'validation'"),
    Case("a split with no rows", _empty_split, 1, r"a split has no rows .* check the source, or name another split"),
    Case("integer labels without class names", _unnamed_labels, 1, r"not a ClassLabel, so its class names are unknown. Pass class_names=\[\.\.\.\] \(the recipes: data.class_names="),
    Case("`selection.scores` computed with another teacher", _scores_of_another_teacher, 1, r"was computed with other teacher weights"),
    Case("`teacher.cache` with the demo's teacher trained on the fly", lambda t: ["teacher.cache=caches/demo"], 2, r"teacher.cache needs the teacher it was built from: pass teacher.weights=\.\.\. \(the demo's: runs/demo/teacher/model, which the first demo run exports\)"),
    Case("`teacher.cache` with a feature method", lambda t: ["method.name=fitnet", "teacher.weights=t.safetensors", "teacher.cache=caches/x"], 2, r"teacher.cache serves the methods that need only the teacher's logits \(ctkd, dkd, dtd_la, kd\); method 'fitnet' needs its features: drop teacher.cache"),
    Case("`teacher.cache` of another teacher", lambda t: _cache_of(t, cache_seed=1), 1, r"does not match this run:\n  - teacher: the cache holds the outputs of lrds_resnet8 .* the run's teacher has fingerprint"),
    Case("`teacher.cache` of an unfinished build", lambda t: _cache_of(t, cache_seed=0, shard_rows=4, stop_after_shards=1), 1, r"unfinished build \(1 of 2 shards.* run the same build again to resume it"),
    Case("`teacher.cache` that is neither a folder nor a Hub id", lambda t: [*QUICK, _out(t), f"teacher.weights={_teacher_file(t)}", f"teacher.cache={t / 'nowhere'}"], 1, r"is neither a folder nor a Hub data set id \(ORG/NAME\): build one with recipes/cache_teacher.py"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: re.sub(r"\W+", "_", c.input).strip("_")[:60])
def test_bad_input_gets_a_clear_message(case, tmp_path, monkeypatch, capsys):
    from recipe_runner import run_recipe

    if "no_token" in case.needs:
        monkeypatch.setenv("HF_TOKEN", "")
        monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    argv = case.argv(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    status, _, err = run_recipe(case.recipe, *argv, monkeypatch=monkeypatch, capsys=capsys)
    assert status == case.status, err[-2000:]
    assert re.search(case.message, err), err[-2000:]
    assert "Traceback" not in err
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    new = [p for p in after if p not in before and p.name not in ("run",)]
    assert not new, f"the refused run wrote {new}"


def table() -> str:
    """The README's table of bad inputs, from CASES."""
    lines = ["| bad input | exit status | the message says |", "|---|---|---|"]
    for case in CASES:
        message = re.sub(r"\\(.)", r"\1", case.message).replace(".*", " ... ").replace("|", "\\|")
        lines.append(f"| {case.input} | {case.status} | {message} |")
    return "\n".join(lines)


def _section(text: str) -> str:
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def test_the_readme_table_is_generated_from_the_cases():
    assert _section(README.read_text()) == table(), "run `python tests/test_bad_inputs.py` to rewrite the table"


def test_a_valid_config_passes_every_check():
    from kd_zoo.config import load_config

    cfg = load_config(ROOT / "recipes" / "configs" / "demo.yaml", QUICK)
    assert yaml.safe_load(yaml.safe_dump(cfg.to_dict()))["train"]["epochs"] == 1


if __name__ == "__main__":
    text = README.read_text()
    head, rest = text.split(START, 1)
    README.write_text(f"{head}{START}\n{table()}\n{END}{rest.split(END, 1)[1]}")
    print(f"rewrote the bad-inputs table in {README} ({len(CASES)} cases)", file=sys.stderr)
