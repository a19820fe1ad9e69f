"""A run never lies and never loses work: the run folder's rules, resume, what the export records, and the card.

The recipes run in this process (as `python recipes/<name>.py ...` would, on the embedded digits, a few epochs of
tiny models), once for a run that later tests continue, refuse or replace.
"""

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from datasets import ClassLabel, Dataset, Features, Image
from huggingface_hub import ModelCard
from recipe_runner import run_recipe
from safetensors import safe_open
from safetensors.torch import save_file
from timm.models import save_for_hf

import kd_zoo  # noqa: F401
from kd_zoo import load_model
from kd_zoo.constants import CIFAR100_MEAN, CIFAR100_STD
from kd_zoo.engine.run_folder import LOCK_FILE
from kd_zoo.hub import find_private_content
from kd_zoo.selection import ScoreSet

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "teacher.model=lrds_resnet8",
    "teacher.train_epochs=1",
    "student.model=lrds_resnet8",
    "train.epochs=1",
    "train.milestones=[1]",
    "run.log_every=10",
    "run.report_to=[]",
]


def run(name, *argv, monkeypatch, capsys=None):
    return run_recipe(name, *argv, monkeypatch=monkeypatch, capsys=capsys)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished demo-style run: a teacher trained on the fly, then one epoch of KD + LR + DS."""
    folder = tmp_path_factory.mktemp("runs") / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        status, _, _ = run("distill", *TINY, f"run.output_dir={folder}", monkeypatch=monkeypatch)
    assert status == 0
    return folder


def _copy(finished, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(finished, target)
    return target


def test_the_export_records_what_the_model_was_trained_with(finished):
    config = json.loads((finished / "model" / "config.json").read_text())
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, 32, 32] and cfg["num_classes"] == 10 and config["label_names"][3] == "3"
    assert tuple(cfg["mean"]) == pytest.approx(CIFAR100_MEAN) and tuple(cfg["std"]) == pytest.approx(CIFAR100_STD)
    assert cfg["tag"] == "lrds_resnet8_digits" and cfg["hf_hub_id"] == "kd-zoo/lrds_resnet8.lrds_resnet8_digits"
    card = ModelCard.load(finished / "model" / "README.md")  # huggingface_hub's own parsing
    assert card.data.eval_results[0].dataset_revision.startswith("sha256:")
    assert card.data.model_name == "lrds_resnet8.lrds_resnet8_digits"
    assert "https://arxiv.org/abs/2404.03693" in card.text and "Requires `pip install kd-zoo`" in card.text
    result = json.loads((finished / "result.json").read_text())
    assert result["epochs"] == result["epochs_trained"] == 1


def test_the_demo_teacher_is_exported_and_loads_as_teacher_weights(finished):
    teacher = load_model("lrds_resnet8", finished / "teacher" / "model")
    with safe_open(str(finished / "teacher" / "model" / "model.safetensors"), "pt") as f:
        weight = f.get_tensor("fc.weight")
    assert teacher.num_classes == 10 and torch.equal(teacher.get_classifier().weight, weight)


def test_the_students_checkpoint_holds_the_student_alone(finished):
    (checkpoint,) = sorted((finished / "checkpoints").glob("epoch_*"))
    assert checkpoint.name == "epoch_0001"  # numbered as the log counts epochs
    with safe_open(str(checkpoint / "model.safetensors"), "pt") as f:
        prefixes = {key.split(".")[0] for key in f.keys()}
    assert prefixes <= {"student", "method"}, prefixes
    assert sorted(p.name for p in checkpoint.glob("optimizer*")) == ["optimizer.bin"]  # one optimiser: the student's


def test_a_finished_run_is_never_replaced_silently(finished, tmp_path, monkeypatch, capsys):
    folder = _copy(finished, tmp_path)
    before = (folder / "model" / "model.safetensors").read_bytes()
    status, _, err = run("distill", *TINY, f"run.output_dir={folder}", monkeypatch=monkeypatch, capsys=capsys)
    assert status == 1 and "holds a finished run: pass run.resume=true" in err and "Traceback" not in err
    assert (folder / "model" / "model.safetensors").read_bytes() == before and not (folder / LOCK_FILE).exists()


def test_resume_refuses_another_config_and_a_finished_schedule(finished, tmp_path, monkeypatch, capsys):
    folder = _copy(finished, tmp_path)
    common = (*TINY, f"run.output_dir={folder}", "run.resume=true")
    status, _, err = run("distill", *common, "label_revision.enabled=false", monkeypatch=monkeypatch, capsys=capsys)
    assert status == 2 and "label_revision.enabled: the run has True, now False" in err
    status, _, err = run("distill", *common, "train.lr=0.1", monkeypatch=monkeypatch, capsys=capsys)
    assert status == 2 and "train.lr: the run has 0.05, now 0.1" in err
    status, _, err = run("distill", *common, monkeypatch=monkeypatch, capsys=capsys)
    assert status == 2 and "has already trained 1 of train.epochs=1 epochs" in err
    assert json.loads((folder / "result.json").read_text())["epochs"] == 1  # untouched


def test_resume_with_more_epochs_records_the_whole_training(finished, tmp_path, monkeypatch, capsys):
    folder = _copy(finished, tmp_path)
    first = json.loads((folder / "result.json").read_text())
    argv = (*TINY, f"run.output_dir={folder}", "run.resume=true", "train.epochs=2")
    status, out, err = run("distill", *argv, monkeypatch=monkeypatch, capsys=capsys)
    assert status == 0, err[-3000:]
    result = json.loads((folder / "result.json").read_text())
    assert result["epochs"] == 2 and result["epochs_trained"] == 1
    assert result["train_seconds"] > first["train_seconds"]  # both parts, not only the resumed one
    assert [p.name for p in sorted((folder / "checkpoints").glob("epoch_*"))] == ["epoch_0001", "epoch_0002"]
    card = ModelCard.load(folder / "model" / "README.md")
    assert f"{result['train_seconds']:.0f} s" in card.text


def test_overwrite_replaces_the_run(finished, tmp_path, monkeypatch, capsys):
    folder = _copy(finished, tmp_path)
    (folder / "notes.txt").write_text("mine")  # not a run file: kept
    argv = (*TINY, f"run.output_dir={folder}", "run.overwrite=true", "selection.enabled=false")
    status, _, err = run("distill", *argv, monkeypatch=monkeypatch, capsys=capsys)
    assert status == 0, err[-3000:]
    assert not (folder / "scores").exists() and (folder / "notes.txt").read_text() == "mine"
    assert "selection:\n  enabled: false" in (folder / "config.yaml").read_text()


def test_a_folder_in_use_is_refused_and_a_stale_lock_taken_over(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": "2026-12-01T00:00:00+00:00"}
    (folder / LOCK_FILE).write_text(json.dumps(holder))
    argv = (*TINY, f"run.output_dir={folder}", "train.epochs=1")
    status, _, err = run("distill", *argv, monkeypatch=monkeypatch, capsys=capsys)
    assert status == 1 and f"in use by process {os.getpid()} on {socket.gethostname()}" in err
    assert list(folder.iterdir()) == [folder / LOCK_FILE]  # nothing written
    dead = {**holder, "pid": 2**22 + 12345}  # no such process
    (folder / LOCK_FILE).write_text(json.dumps(dead))
    status, _, err = run("train_teacher", *argv, "train.epochs=1", monkeypatch=monkeypatch, capsys=capsys)
    assert status == 0, err[-3000:]
    assert not (folder / LOCK_FILE).exists() and (folder / "model" / "model.safetensors").is_file()


def test_a_run_that_fails_before_training_leaves_nothing(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "run"
    argv = (*TINY, f"run.output_dir={folder}", f"data.name={tmp_path / 'missing'}")
    status, _, err = run("distill", *argv, monkeypatch=monkeypatch, capsys=capsys)
    assert status == 1 and "unknown data set" in err and "Traceback" not in err
    assert not folder.exists() or sorted(p.name for p in folder.iterdir()) == []
    status, _, err = run(
        "distill", *TINY, f"run.output_dir={folder}", "train.epochs=-1", monkeypatch=monkeypatch, capsys=capsys
    )
    assert status == 2 and "train.epochs must be > 0, got -1" in err and not (folder / "config.yaml").exists()


def test_a_push_without_a_token_is_refused_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    folder = tmp_path / "run"
    argv = (*TINY, f"run.output_dir={folder}", "run.push_to_hub=me/model")
    status, _, err = run("distill", *argv, monkeypatch=monkeypatch, capsys=capsys)
    assert status == 1 and "no Hugging Face token" in err and "hf auth login" in err
    assert not folder.exists()


def _local_64px_data(root: Path) -> Path:
    """A local parquet data set of 64x64 images (4 classes), in a folder whose path holds the user's home name."""
    rng = np.random.default_rng(0)
    features = Features({"image": Image(), "label": ClassLabel(names=["a", "b", "c", "d"])})
    folder = root / "my_data_64"
    for split, n in (("train", 96), ("test", 32)):
        images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(n)]
        labels = [i % 4 for i in range(n)]
        ds = Dataset.from_dict({"image": images, "label": labels}, features=features)
        folder.mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(folder / f"{split}-00000.parquet"))
    return folder


def test_local_64px_data_exports_its_size_and_no_local_path(tmp_path, monkeypatch, capsys):
    data = _local_64px_data(tmp_path / "private" / os.environ.get("USER", "someone"))
    folder = tmp_path / "run"
    argv = (
        f"data.name={data}", "teacher.model=lrds_resnet8", "train.batch_size=32",
        "data.eval_batch_size=32", f"run.output_dir={folder}",
    )  # fmt: skip
    teacher = timm.create_model("lrds_resnet8", num_classes=4)
    save_file(teacher.state_dict(), str(tmp_path / "teacher.safetensors"))
    status, _, err = run(
        "distill", *TINY, *argv, f"teacher.weights={tmp_path / 'teacher.safetensors'}", monkeypatch=monkeypatch,
        capsys=capsys,
    )  # fmt: skip
    assert status == 0, err[-3000:]
    cfg = json.loads((folder / "model" / "config.json").read_text())["pretrained_cfg"]
    assert cfg["input_size"] == [3, 64, 64]  # trained at 64x64, recorded at 64x64
    assert find_private_content(folder / "model", [tmp_path]) == []
    card = ModelCard.load(folder / "model" / "README.md")
    assert card.data.eval_results[0].dataset_name == "my_data_64"
    assert str(tmp_path) not in (folder / "model" / "README.md").read_text()
    reloaded = load_model("lrds_resnet8", folder / "model")
    assert reloaded.pretrained_cfg["input_size"] == (3, 64, 64)


def test_a_teacher_trained_with_other_statistics_is_fed_as_it_expects(tmp_path, monkeypatch, capsys):
    """A teacher whose config says mean 0.5 / std 0.25 (a timm teacher, a ViT) with a CIFAR-normalised student:
    its predictions in the run's score set are those of the teacher fed its own normalisation, recomputed here."""
    data = _local_64px_data(tmp_path)
    torch.manual_seed(3)
    teacher = timm.create_model("lrds_resnet8", num_classes=4)
    teacher.pretrained_cfg = {**teacher.pretrained_cfg, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    save_for_hf(teacher, str(tmp_path / "teacher"), safe_serialization=True)
    folder = tmp_path / "run"
    status, out, err = run(
        "distill", *TINY, f"data.name={data}", f"teacher.weights={tmp_path / 'teacher'}", "train.batch_size=32",
        "data.eval_batch_size=32", f"run.output_dir={folder}", monkeypatch=monkeypatch, capsys=capsys,
    )  # fmt: skip
    assert status == 0, err[-3000:]
    assert "re-normalised from the student's mean [0.5071" in out and "to the teacher's mean [0.5, 0.5, 0.5]" in out

    train = Dataset.from_parquet(str(data / "train-00000.parquet"))
    pixels = torch.tensor(np.stack([np.asarray(im, dtype=np.float32) / 255 for im in train["image"]])).permute(
        0, 3, 1, 2
    )
    teacher = load_model("lrds_resnet8", tmp_path / "teacher").eval()
    with torch.no_grad():
        expected = teacher((pixels - 0.5) / 0.25).argmax(1).numpy()
        as_student = (pixels - torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR100_STD).view(
            1, 3, 1, 1
        )
        unconverted = teacher(as_student).argmax(1).numpy()
    scores = ScoreSet.load(folder / "scores")
    found = scores.column("teacher_pred")[np.argsort(scores.sample_idx)]
    assert (found == expected).all()
    assert (unconverted != expected).any()  # what the run would have scored without the conversion
