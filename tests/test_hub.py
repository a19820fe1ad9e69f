"""The Hub: exported folders, their cards, offline loading through timm, and publishing (with a recording API)."""

import json
import subprocess
import sys

import pytest
import timm
import torch
from accelerate.tracking import get_available_trackers
from huggingface_hub import ModelCard

import kd_zoo
from kd_zoo.constants import HF_ORG
from kd_zoo.engine.tracking import make_trackers
from kd_zoo.hub import (
    MODEL_FILES,
    CardTemplateError,
    PublishError,
    export_model,
    file_sha256,
    find_private_content,
    public_metadata,
    public_path,
    public_weights,
    publish_folder,
    render_template,
)

REPO = f"{HF_ORG}/lrds_resnet8x4.lrds_resnet32x4_cifar100"


def _fields(**extra):
    return {
        "model_id": "lrds_resnet8x4.lrds_resnet32x4_cifar100",
        "repo_id": REPO,
        "summary": "A test student.",
        "dataset": "uoft-cs/cifar100",
        "dataset_on_hub": True,
        "dataset_revision": "main",
        "teacher": "lrds_resnet32x4",
        "method": "kd",
        "label_revision": "LabelRevision(eta=0.8)",
        "data_selection": "influence, highest 80%",
        "best_epoch": 3,
        "best_top1": "76.60",
        "best_top5": "93.10",
        "last_top1": "76.40",
        "last_top5": "93.00",
        "seed": 0,
        "train_time": "10 s",
        "hardware": "1 x CPU",
        "kd_zoo_version": kd_zoo.__version__,
        "config_yaml": "train:\n  epochs: 240",
        **extra,
    }


@pytest.fixture
def exported(tmp_path):
    model = timm.create_model("lrds_resnet8x4", num_classes=100).eval()
    folder = export_model(model, tmp_path / "export", _fields(), label_names=[f"c{i}" for i in range(100)])
    return model, folder


def test_exported_folder_is_exactly_the_repo(exported):
    model, folder = exported
    assert sorted(p.name for p in folder.iterdir()) == sorted(MODEL_FILES)
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "lrds_resnet8x4" and config["num_classes"] == 100
    assert config["label_names"][:2] == ["c0", "c1"]
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    card = ModelCard.load(folder / "README.md")
    assert file_sha256(folder / "model.safetensors") in card.text


def test_card_parses_back_with_the_metrics(exported):
    card = ModelCard.load(exported[1] / "README.md")
    results = card.data.eval_results
    assert {r.metric_name: r.metric_value for r in results} == {"top-1": 76.6, "top-5": 93.1}
    assert card.data.library_name == "timm" and "knowledge-distillation" in card.data.tags
    assert "arXiv:2404.03693" in card.text and "epochs: 240" in card.text


def test_nothing_secret_or_local_in_the_folder(exported, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    for path in exported[1].iterdir():
        text = path.read_bytes().decode("utf-8", errors="ignore")
        assert "hf_secret_value_123" not in text and str(tmp_path) not in text and "/root" not in text


def _populate_cache(cache_dir, repo_id, folder):
    revision = "0" * 40
    repo = cache_dir / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for path in folder.iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())


def test_loads_back_from_hub_cache_and_local_dir(exported, tmp_path):
    model, folder = exported
    cache = tmp_path / "hub"
    _populate_cache(cache, REPO, folder)
    x = torch.randn(2, 3, 32, 32)
    by_tag = timm.create_model("lrds_resnet8x4", pretrained=True, cache_dir=str(cache)).eval()
    by_repo = timm.create_model(f"hf-hub:{REPO}", pretrained=True, cache_dir=str(cache)).eval()
    local = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    with torch.no_grad():
        want = model(x)
        for loaded in (by_tag, by_repo, local):
            assert torch.equal(loaded(x), want)
    assert by_repo.pretrained_cfg.get("label_names", [None])[0] in (None, "c0")


def test_card_usage_snippet_runs_offline(exported, tmp_path):
    _, folder = exported
    cache = tmp_path / "hub_cache"
    _populate_cache(cache, REPO, folder)
    card = ModelCard.load(folder / "README.md")
    snippet = card.text.split("```python\n", 1)[1].split("```", 1)[0]
    assert snippet.startswith("import kd_zoo")
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "values=" in result.stdout


def test_missing_template_field_writes_nothing(tmp_path):
    model = timm.create_model("lrds_resnet8", num_classes=10)
    fields = _fields()
    del fields["best_top5"]
    with pytest.raises(CardTemplateError, match="best_top5"):
        export_model(model, tmp_path / "out", fields)
    assert not (tmp_path / "out").exists()
    with pytest.raises(CardTemplateError, match="not_given"):
        render_template("{{ not_given }}", {})


class RecordingApi:
    def __init__(self, remote_architecture=None):
        self.calls = []
        self.remote = remote_architecture

    def file_exists(self, repo_id, filename, token):
        self.calls.append(("file_exists", repo_id, filename))
        return self.remote is not None

    def hf_hub_download(self, repo_id, filename, token):
        self.calls.append(("download", repo_id, filename))
        path = self.tmp / "remote_config.json"
        path.write_text(json.dumps({"architecture": self.remote}))
        return str(path)

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


def test_publish_calls_create_repo_and_upload_folder_once(exported):
    api = RecordingApi()
    files = publish_folder(exported[1], REPO, token="hf_test", api=api)
    assert files == sorted(MODEL_FILES)
    names = [c[0] for c in api.calls]
    assert names == ["file_exists", "create_repo", "upload_folder"]
    assert api.calls[1][2]["repo_type"] == "model" and api.calls[1][2]["exist_ok"] is True
    upload = api.calls[2][1]
    assert upload["repo_id"] == REPO and upload["folder_path"] == str(exported[1]) and upload["token"] == "hf_test"


def test_publish_refusals(exported, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    api = RecordingApi()
    with pytest.raises(PublishError, match="no Hugging Face token"):
        publish_folder(exported[1], REPO, api=api)
    assert api.calls == []
    other = RecordingApi(remote_architecture="lrds_vgg8")
    other.tmp = tmp_path
    with pytest.raises(PublishError, match="already holds a lrds_vgg8 model"):
        publish_folder(exported[1], REPO, token="hf_test", api=other)
    assert [c[0] for c in other.calls] == ["file_exists", "download"]
    publish_folder(exported[1], REPO, token="hf_test", api=other, overwrite=True)
    assert other.calls[-1][0] == "upload_folder"
    assert publish_folder(exported[1], REPO, dry_run=True) == sorted(MODEL_FILES)
    assert "would upload" in capsys.readouterr().out


def test_publishing_scans_the_folder_before_any_network_call(exported):
    (exported[1] / "notes.md").write_text("trained on\n/home/alice/private/cifar\n")
    api = RecordingApi()
    with pytest.raises(PublishError, match=r"(?s)nothing was uploaded.*notes.md:2: the local path '/home/alice"):
        publish_folder(exported[1], REPO, token="hf_test", api=api)
    assert api.calls == []
    with pytest.raises(PublishError, match="notes.md:2"):  # a dry run shows the same refusal
        publish_folder(exported[1], REPO, dry_run=True)
    (exported[1] / "notes.md").unlink()
    publish_folder(exported[1], REPO, token="hf_test", api=api)  # the clean folder goes up
    assert api.calls[-1][0] == "upload_folder"


def test_trackers_are_chosen_and_the_jsonl_log_always_kept(tmp_path):
    trackers = make_trackers(tmp_path, [])
    assert [type(t).__name__ for t in trackers] == ["JsonlTracker"]
    with pytest.raises(ValueError, match=r"unknown tracker\(s\) \['wandbb'\]"):
        make_trackers(tmp_path, ["wandbb"])
    missing = next((n for n in ("aim", "clearml", "dvclive", "swanlab") if n not in get_available_trackers()), None)
    if missing is not None:  # a tracker asked for on purpose but not installed
        with pytest.raises(ValueError, match=f"pip install {missing}"):
            make_trackers(tmp_path, [missing])
    default = make_trackers(tmp_path)  # tensorboard when installed, quietly skipped otherwise
    assert type(default[0]).__name__ == "JsonlTracker" and default[1:] in ([], ["tensorboard"])


def test_card_keeps_the_run_fields_as_metadata(exported):
    meta = ModelCard.load(exported[1] / "README.md").data.to_dict()["kd_zoo"]
    assert meta["teacher"] == "lrds_resnet32x4" and meta["seed"] == 0 and meta["method"] == "kd"
    assert meta["label_revision"] == "LabelRevision(eta=0.8)" and meta["best_epoch"] == 3


@pytest.mark.parametrize(
    ("weights", "public"),
    [
        ("/home/me/runs/teacher.safetensors", "teacher.safetensors"),
        ("runs/demo_teacher/model", "model"),
        ("local-dir:/scratch/me/model/", "model"),
        ("~/teacher.safetensors", "teacher.safetensors"),
        ("C:\\Users\\me\\teacher.safetensors", "teacher.safetensors"),
        ("teacher.safetensors", "teacher.safetensors"),
        ("hf-hub:kd-zoo/lrds_resnet32x4.cifar100", "hf-hub:kd-zoo/lrds_resnet32x4.cifar100"),
        ("lrds_resnet32x4.cifar100", "lrds_resnet32x4.cifar100"),
        ("random-init", "random-init"),
        (None, None),
    ],
)
def test_public_weights(weights, public):
    assert public_weights(weights) == public


def test_public_metadata_and_paths():
    assert public_path("/data/sets/cifar_copy") == "cifar_copy"
    assert public_path("parquet:/data/sets/cifar/*.parquet") == "parquet:cifar/*.parquet"
    assert public_path("uoft-cs/cifar100") == "uoft-cs/cifar100" and public_path("demo") == "demo"
    meta = {
        "teacher": {"weights": "runs/t/model", "weights_fingerprint": "f" * 64},
        "data_fingerprint": {"name": "/home/me/cifar", "content_sha256": "0" * 64},
        "settings": {"paths": ["/tmp/spill"]},
    }
    public = public_metadata(meta)
    assert public == {
        "teacher": {"weights": "model", "weights_fingerprint": "f" * 64},
        "data_fingerprint": {"name": "cifar", "content_sha256": "0" * 64},
        "settings": {"paths": ["spill"]},
    }
    assert meta["teacher"]["weights"] == "runs/t/model"  # a copy


def test_find_private_content(exported, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    folder = exported[1]
    assert find_private_content(folder) == []
    (folder / "notes.md").write_text("token hf_secret_value_123, from /home/alice/runs and https://example.org/tmp/x\n")
    (folder / "other.md").write_text(f"hf_{'A1' * 20} in {tmp_path / 'export'} and D:\\runs\\x\n")
    (folder / "lines.md").write_text("clean\nclean\nsee /home/bob/data here\n")
    findings = find_private_content(folder)
    assert "notes.md:1: a Hugging Face token" in findings and "other.md:1: a Hugging Face token" in findings
    assert "notes.md:1: the local path '/home/alice/runs'" in findings
    assert "lines.md:3: the local path '/home/bob/data'" in findings  # file and line, to find and fix it
    assert (
        f"other.md:1: the local path '{tmp_path}'" in findings
        and "other.md:1: the local path 'D:\\\\runs\\\\x'" in findings
    )
    assert not any("example.org" in f or "secret_value" in f for f in findings)
