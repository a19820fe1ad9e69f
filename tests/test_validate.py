"""recipes/import_checkpoint.py and recipes/validate.py, end to end and offline.

A 10-class student is saved as a reference (CRD) checkpoint would be (reference tensor names, `{"epoch", "model",
"accuracy", "optimizer"}`), imported, and validated on the demo digits from every kind of source; the numbers must
equal an independent evaluation of the same weights. Every refusal sits next to the input that passes.
"""

import argparse
import copy
import gzip
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import timm
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard
from safetensors.torch import save_file

from kd_zoo.constants import CIFAR100_MEAN, CIFAR100_STD, HF_ORG
from kd_zoo.data import load_tensor_split
from kd_zoo.models import CheckpointMismatchError, ReferenceCheckpointError, reference_to_kd_zoo

ROOT = Path(__file__).resolve().parents[1]
FACTS = json.loads(gzip.open(Path(__file__).parent / "data" / "reference_state_dict_keys.json.gz", "rt").read())
ORIGIN = "https://example.org/cifar_teachers/resnet8_vanilla/ckpt_epoch_240.pth"


def _recipe(name):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


validate = _recipe("validate")
import_checkpoint = _recipe("import_checkpoint")


def _normalised(images):
    mean = torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR100_STD).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def _independent_evaluation(model):
    """Top-1, top-5 (%) and mean cross-entropy on the demo test split: a plain loop, nothing of the recipes."""
    test = load_tensor_split(None, "test")
    with torch.no_grad():
        logits = model.eval()(_normalised(test.images))
    top5 = logits.topk(5, dim=1).indices
    return {
        "top1": 100.0 * (top5[:, 0] == test.labels).float().mean().item(),
        "top5": 100.0 * (top5 == test.labels[:, None]).any(1).float().mean().item(),
        "loss": F.cross_entropy(logits, test.labels).item(),
        "count": len(test),
    }


def _to_reference_names(model):
    renamed = reference_to_kd_zoo("lrds_resnet8", {key: key for key in FACTS["lrds_resnet8"]["keys"]})
    return {renamed[k]: v for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def student():
    """lrds_resnet8 with 10 classes and weights unlike a fresh model's: BN statistics and a classifier of their own
    (so a dropped or re-initialised tensor changes every number below)."""
    torch.manual_seed(0)
    model = timm.create_model("lrds_resnet8", num_classes=10).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
        torch.nn.init.normal_(model.fc.weight, std=0.5)
    return model


@pytest.fixture(scope="module")
def reference_file(student, tmp_path_factory):
    """The student as CRD's train_teacher.py saves a teacher: `resnet8_vanilla/ckpt_epoch_240.pth`."""
    path = tmp_path_factory.mktemp("save") / "resnet8_vanilla" / "ckpt_epoch_240.pth"
    path.parent.mkdir()
    optimizer = torch.optim.SGD(copy.deepcopy(student).parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    state = _to_reference_names(student)
    checkpoint = {"epoch": 240, "model": state, "accuracy": torch.tensor(88.5), "optimizer": optimizer.state_dict()}
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def imported(reference_file, tmp_path_factory):
    folder = tmp_path_factory.mktemp("imported") / "teacher"
    argv = [str(reference_file), "--data", "demo", "--origin", ORIGIN, "--output-dir", str(folder)]
    assert import_checkpoint.main(argv) == folder
    return folder


@pytest.fixture(scope="module")
def reference_numbers(student):
    return _independent_evaluation(student)


def _check_numbers(result, want):
    assert result["count"] == result["unique"] == want["count"] == 360
    assert result["top1"] == pytest.approx(want["top1"], abs=1e-3)
    assert result["top5"] == pytest.approx(want["top5"], abs=1e-3)
    assert result["loss"] == pytest.approx(want["loss"], rel=1e-4)


def test_import_then_validate_equals_an_independent_evaluation(
    imported, reference_file, reference_numbers, tmp_path, capsys
):
    assert sorted(p.name for p in imported.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    out = tmp_path / "result.json"
    result = validate.main([str(imported), "--output", str(out)])
    _check_numbers(result, reference_numbers)
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("lrds_resnet8 (") and f"top-1 {reference_numbers['top1']:.2f}" in summary
    assert json.loads(out.read_text()) == result
    assert result["model"] == "lrds_resnet8" and result["param_count"] == 78_042 and result["num_classes"] == 10
    assert result["images_per_second"] > 0 and result["mean"] == list(CIFAR100_MEAN)
    # The card: the source file's sha256 and origin, what the file records, the numbers measured at import.
    card = (imported / "README.md").read_text()
    assert hashlib.sha256(reference_file.read_bytes()).hexdigest() in card and ORIGIN in card
    assert "epoch 240, accuracy 88.5" in card and f"{reference_numbers['top1']:.2f}" in card
    assert str(reference_file.parent) not in card  # no local path
    config = json.loads((imported / "config.json").read_text())
    assert config["architecture"] == "lrds_resnet8" and config["num_classes"] == 10


def _populate_hub_cache(repo_id, folder, files=("config.json", "model.safetensors")):
    """A Hugging Face Hub cache entry as `hf_hub_download` leaves it, in the tests' (temporary) cache."""
    revision = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = Path(huggingface_hub.constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    for name in files:
        (snapshot / name).write_bytes((folder / name).read_bytes())


SOURCES = ["folder", "local_dir", "arch_and_weights", "safetensors", "reference_pth", "checkpoint_folder", "hub", "tag"]


@pytest.mark.parametrize("kind", SOURCES)
def test_every_kind_of_source_gives_the_same_numbers(kind, imported, reference_file, reference_numbers, tmp_path):
    weights = imported / "model.safetensors"
    if kind == "folder":
        argv = [str(imported)]
    elif kind == "local_dir":
        argv = [f"local-dir:{imported}"]
    elif kind == "arch_and_weights":
        argv = ["lrds_resnet8", "--weights", str(imported)]
    elif kind == "safetensors":
        argv = [str(weights), "--arch", "lrds_resnet8"]
    elif kind == "reference_pth":
        argv = [str(reference_file), "--arch", "resnet8"]
    elif kind == "checkpoint_folder":  # a kd_zoo training checkpoint: the trained module's `student.` tensors
        (tmp_path / "epoch_0002").mkdir()
        tensors = timm.create_model(f"local-dir:{imported}", pretrained=True).state_dict()
        save_file({f"student.{k}": v for k, v in tensors.items()}, str(tmp_path / "epoch_0002" / "model.safetensors"))
        argv = [str(tmp_path / "epoch_0002"), "--arch", "lrds_resnet8"]
    elif kind == "hub":
        _populate_hub_cache(f"{HF_ORG}/test-validate-student", imported)
        argv = [f"hf-hub:{HF_ORG}/test-validate-student"]
    elif kind == "tag":  # the zoo tag's repo, holding these 10-class weights
        _populate_hub_cache(f"{HF_ORG}/lrds_resnet8.cifar100", imported, files=("model.safetensors",))
        argv = ["lrds_resnet8.cifar100", "--num-classes", "10"]
    result = validate.main([*argv, "--output", str(tmp_path / "result.json")])
    _check_numbers(result, reference_numbers)
    assert str(tmp_path) not in json.dumps(result) and str(imported.parent) not in json.dumps(result)


def test_refusals_of_validate_each_next_to_what_passes(imported, reference_file, tmp_path):
    out = ["--output", str(tmp_path / "r.json")]
    weights = imported / "model.safetensors"
    plain = tmp_path / "plain.pth"  # a reference checkpoint outside its <name>_vanilla folder
    plain.write_bytes(reference_file.read_bytes())
    refused = [
        (
            ["lrds_resnet8.cifar10"],
            ValueError,
            r"Unknown pretrained tag 'cifar10'.*Did you mean 'lrds_resnet8.cifar100'",
        ),
        (["lrds_resnet9", "--weights", str(imported)], ValueError, r"lrds_resnet8\b.*not lrds_resnet9"),
        (["lrds_resnet9"], ValueError, r"Unknown model 'lrds_resnet9'.*Did you mean 'lrds_resnet8'"),
        ([str(weights)], ValueError, r"does not record its architecture: name it \(arch="),
        ([str(plain)], ValueError, r"cannot tell the architecture of plain.pth from its folder .* name it \(arch="),
        (
            [str(reference_file), "--arch", "resnet14"],
            CheckpointMismatchError,
            "it fits lrds_resnet8, not lrds_resnet14",
        ),
        ([str(imported), "--arch", "lrds_resnet14"], ValueError, r"holds a lrds_resnet8 model, not lrds_resnet14"),
        ([str(tmp_path / "no" / "model")], FileNotFoundError, "no file or folder"),
        ([str(imported), "--data", "cifar100x"], Exception, r"unknown data set 'cifar100x'.*Did you mean 'cifar100'"),
    ]
    assert validate.main([str(reference_file), *out])["model"] == "lrds_resnet8"  # <name>_vanilla names it
    for argv, error, message in refused:
        with pytest.raises(error, match=message):
            validate.main([*argv, *out])
    # A model of another class count than the data: 100 classes on the 10 digits.
    hundred = tmp_path / "hundred.safetensors"
    save_file(timm.create_model("lrds_resnet8", num_classes=100).state_dict(), str(hundred))
    with pytest.raises(ValueError, match="predicts 100 classes and demo / test has 10"):
        validate.main([str(hundred), "--arch", "lrds_resnet8", *out])
    # What passes, for the same sources (the tag and the architecture: see the sources test).
    for argv in ([str(weights), "--arch", "lrds_resnet8"], [str(reference_file), "--arch", "resnet8"]):
        assert validate.main([*argv, *out])["num_classes"] == 10


def test_refusals_of_import_write_nothing(reference_file, tmp_path):
    def run(*extra):
        return import_checkpoint.main([str(reference_file), "--output-dir", str(tmp_path / "out"), *extra])

    with pytest.raises(CheckpointMismatchError, match=r"it fits lrds_resnet8, not lrds_resnet14.*stages\.1\.blocks\.1"):
        run("--arch", "resnet14")
    with pytest.raises(CheckpointMismatchError, match="10 classes, not the 100 asked for"):
        run("--num-classes", "100")
    with pytest.raises(ValueError, match="Unknown architecture 'resnet9'.*Did you mean 'resnet8'"):
        run("--arch", "resnet9")
    assert not (tmp_path / "out").exists()
    needs_code = tmp_path / "resnet8_vanilla" / "resnet8_last.pth"
    needs_code.parent.mkdir()
    torch.save({"opt": argparse.Namespace(lr=0.05), "model": {}}, needs_code)
    with pytest.raises(ReferenceCheckpointError, match="argparse.Namespace.*weights_only=True"):
        import_checkpoint.main([str(needs_code), "--output-dir", str(tmp_path / "out")])
    html = tmp_path / "resnet8_vanilla" / "ckpt_epoch_240.pth"
    html.write_text("<html>moved</html>")
    with pytest.raises(ReferenceCheckpointError, match="not a readable PyTorch checkpoint"):
        import_checkpoint.main([str(html), "--output-dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
    # What passes: the architecture from the folder name, no evaluation (the card says so), then an existing folder.
    folder = run()
    card = (folder / "README.md").read_text()
    assert "Not evaluated by kd_zoo" in card and "model-index" not in card  # no metrics claimed
    assert ModelCard.load(folder / "README.md").data.eval_results is None
    with pytest.raises(FileExistsError, match="overwrite=true"):
        run()
    assert run("--overwrite") == folder


def test_push_needs_a_measurement_and_a_dry_run_uploads_nothing(reference_file, tmp_path, capsys):
    folder = tmp_path / "out"
    with pytest.raises(SystemExit):
        import_checkpoint.main([str(reference_file), "--output-dir", str(folder), "--push-to-hub", "me/x"])
    assert "push_to_hub needs data=" in capsys.readouterr().err
    argv = [str(reference_file), "--output-dir", str(folder), "--data", "demo", "--push-to-hub", "me/x", "--dry-run"]
    import_checkpoint.main(argv)
    printed = capsys.readouterr().out
    assert "dry run: would upload to model repo me/x" in printed and "model.safetensors" in printed
    assert "hf-hub:me/x" in (folder / "README.md").read_text()  # the usage snippet names the target repo


def _subprocess_env():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_a_command_line_error_is_one_line(reference_file, tmp_path):
    bad = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "import_checkpoint.py"), str(reference_file), "--arch", "vgg8"],
        capture_output=True, text=True, cwd=tmp_path, env=_subprocess_env(), timeout=300,
    )  # fmt: skip
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    error = [line for line in bad.stderr.splitlines() if "error:" in line]
    assert len(error) == 1, bad.stderr[-2000:]
    assert error[0].startswith("import_checkpoint.py: error: ckpt_epoch_240.pth: it fits lrds_resnet8, not lrds_vgg8")
    assert not (tmp_path / "imported").exists()


@pytest.mark.slow
def test_two_processes_count_every_sample_once(imported, reference_numbers, tmp_path):
    env = {**_subprocess_env(), "ACCELERATE_USE_CPU": "1"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
        "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "recipes" / "validate.py"),
        str(imported), "--batch-size", "64", "--output", str(tmp_path / "r.json"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    numbers = json.loads((tmp_path / "r.json").read_text())
    assert numbers["num_processes"] == 2
    _check_numbers(numbers, reference_numbers)
