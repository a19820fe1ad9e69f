"""Publishing a folder of finished runs (recipes/push_zoo.py, kd_zoo.hub) and score sets as data set repos.

Tiny runs are made on the fly (lrds_resnet8 with 10 classes, exported with their cards; small score sets), the Hub
is replaced by an object that records the calls, and the README / results table are copies in tmp_path.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import timm
from huggingface_hub import DatasetCard, ModelCard

import kd_zoo
from kd_zoo.data import load_tensor_split
from kd_zoo.hub import (
    CardTemplateError,
    RunFolderError,
    collect_runs,
    export_model,
    export_scores,
    find_private_content,
    run_card_fields,
    score_set_card,
)
from kd_zoo.hub.publish import plan_uploads
from kd_zoo.hub.runs import read_model
from kd_zoo.hub.tables import (
    README_END,
    README_START,
    replace_section,
    table_texts,
)
from kd_zoo.selection import FORMAT, ScoreSet, mistakes_report, select

REPO = Path(__file__).resolve().parents[1]
KD_ID = "lrds_resnet8.kd_resnet20_digits"
CE_ID = "lrds_resnet8.digits"
SCORES_NAME = "digits-resnet20-influence-scores"
TOKEN = "hf_RecordedTestTokenNotARealOne0123456789"
FINGERPRINT = "a" * 64


def _load_push_zoo():
    spec = importlib.util.spec_from_file_location("push_zoo", REPO / "recipes" / "push_zoo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["push_zoo"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


push_zoo = _load_push_zoo()


class RecordingApi:
    """Stands in for huggingface_hub.HfApi: records the calls; `remote` maps repo ids to the architecture held."""

    def __init__(self, tmp, remote=None):
        self.tmp, self.remote, self.calls = Path(tmp), dict(remote or {}), []

    def file_exists(self, repo_id, filename, token):
        self.calls.append(("file_exists", repo_id, filename))
        return repo_id in self.remote

    def hf_hub_download(self, repo_id, filename, token):
        self.calls.append(("download", repo_id, filename))
        path = self.tmp / f"remote_{repo_id.replace('/', '--')}.json"
        path.write_text(json.dumps({"architecture": self.remote[repo_id]}))
        return str(path)

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))

    def uploads(self):
        return [c for c in self.calls if c[0] in ("create_repo", "upload_folder")]


def _export_run(run_dir, model_id, seed, top1, top5, **card):
    model = timm.create_model("lrds_resnet8", num_classes=10)
    result = SimpleNamespace(
        best_epoch=2, best_top1=top1, best_top5=top5, last_top1=top1 - 0.5, last_top5=top5 - 0.5, train_seconds=3.0
    )
    fields = run_card_fields(
        result,
        model_id=model_id,
        summary=f"{model_id} for the tests.",
        dataset="demo",
        config_yaml=f"train:\n  epochs: 3\n  seed: {seed}",
        hardware="1 x CPU",
        seed=seed,
        **card,
    )
    export_model(model, run_dir / "model", fields, label_names=[str(i) for i in range(10)])
    (run_dir / "config.yaml").write_text(fields["config_yaml"])
    (run_dir / "metrics.jsonl").write_text(json.dumps({"epoch": 2, "top1": top1}) + "\n")


def _score_set(fingerprint=FINGERPRINT, weights="teacher.safetensors", data=None):
    """A score set of 60 made-up samples, or of the split `data` (a TensorImageSet), with a teacher wrong 7 times."""
    if data is None:
        idx = np.arange(60)
        labels = idx % 10
        fp = {"name": "demo", "revision": None, "split": "train", "num_rows": 60, "num_classes": 10}
        fp["content_sha256"] = "c" * 64
    else:
        idx, labels, fp = data.sample_idx.numpy(), data.labels.numpy(), data.fingerprint
    n = len(idx)
    pred = labels.copy()
    pred[:7] = (pred[:7] + 1) % 10
    correct = pred == labels
    scores = np.random.default_rng(0).random(n)
    metadata = {
        "format": FORMAT,
        "scorer": "influence",
        "settings": {"damping": 0.01},
        "teacher": {
            "name": "lrds_resnet20",
            "weights": weights,
            "weights_fingerprint": fingerprint,
            "accuracy": float(correct.mean()),
        },
        "data_fingerprint": dict(fp),
        "kd_zoo_version": kd_zoo.__version__,
        "num_rows": n,
        "teacher_mistakes": mistakes_report(scores, idx, correct, 0.8),
    }
    return ScoreSet.from_arrays(idx, scores, pred, correct, labels, metadata)


KD_CARD = {
    "teacher": "lrds_resnet20 (top-1 91.00, weights 0123456789abcdef)",
    "method": "kd",
    "label_revision": "LabelRevision(eta=0.8, lambda1=4.0, lambda2=1.0)",
    "data_selection": "influence, highest 80% (48/60 distilled); the teacher is wrong on 7 training samples",
}


@pytest.fixture(scope="module")
def built_runs(tmp_path_factory):
    """runs/: three seeds of one distilled model (two with the same score set), a CE model one level deeper, and an
    unfinished run. The teacher weights are recorded by absolute path, which must not reach the folders."""
    root = tmp_path_factory.mktemp("zoo")
    runs = root / "runs"
    teacher_file = str(root / "private" / "teacher.safetensors")
    for seed, top1, top5 in ((0, 80.0, 98.0), (1, 82.5, 99.0), (2, 81.0, 98.5)):
        run = runs / f"kd_seed{seed}"
        _export_run(run, KD_ID, seed, top1, top5, **KD_CARD)
        if seed < 2:
            export_scores(_score_set(weights=teacher_file), run / "scores")
    _export_run(runs / "ce" / "lrds_resnet8", CE_ID, 0, 90.0, 99.5)
    (runs / "unfinished").mkdir()
    (runs / "unfinished" / "config.yaml").write_text("train:\n  epochs: 3\n")
    return runs


@pytest.fixture
def runs(built_runs, tmp_path):
    """A private copy of the runs, with copies of the README and of model_cards/zoo_results.md."""
    copy = tmp_path / "runs"
    shutil.copytree(built_runs, copy)
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    return copy


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return TOKEN


def _args(runs, *extra):
    tmp = runs.parent
    return [f"runs_dir={runs}", "--readme", str(tmp / "README.md"), "--table", str(tmp / "zoo_results.md"), *extra]


def _section(text):
    return text.split(README_START, 1)[1].split(README_END, 1)[0]


# -- reading the runs -------------------------------------------------------------------------------------------
def test_collect_reads_every_finished_run(runs):
    zoo = collect_runs(runs)
    by_folder = {m.run_dir.relative_to(runs).as_posix(): m for m in zoo.models}
    assert sorted(by_folder) == ["ce/lrds_resnet8", "kd_seed0", "kd_seed1", "kd_seed2"]  # not "unfinished"
    kd = by_folder["kd_seed1"]
    assert (kd.model_id, kd.seed, kd.top1, kd.top5, kd.dataset) == (KD_ID, 1, 82.5, 99.0, "demo")
    assert kd.teacher.startswith("lrds_resnet20 (") and kd.method == "kd" and kd.architecture == "lrds_resnet8"
    ce = by_folder["ce/lrds_resnet8"]
    assert (ce.model_id, ce.method, ce.label_revision, ce.data_selection) == (CE_ID, "cross-entropy", "off", "off")
    assert [s.folder.relative_to(runs).as_posix() for s in zoo.score_sets] == ["kd_seed0/scores", "kd_seed1/scores"]
    assert {s.name for s in zoo.score_sets} == {SCORES_NAME}


def test_cards_without_kd_zoo_metadata_are_read_from_their_table(runs):
    """Cards exported before the `kd_zoo:` metadata existed: the same values come from the card's table rows."""
    folder = runs / "kd_seed1" / "model"
    card = ModelCard.load(folder / "README.md")
    assert card.data.to_dict()["kd_zoo"]["seed"] == 1
    del card.data.kd_zoo
    card.save(str(folder / "README.md"))
    assert "kd_zoo:" not in (folder / "README.md").read_text()
    old = read_model(folder)
    assert (old.seed, old.method, old.teacher, old.label_revision) == (
        1,
        "kd",
        KD_CARD["teacher"],
        KD_CARD["label_revision"],
    )


# -- publishing -------------------------------------------------------------------------------------------------
def test_push_publishes_each_repo_once_and_writes_the_tables(runs, token, capsys):
    readme_before = (runs.parent / "README.md").read_text()
    api = RecordingApi(runs.parent)
    assert push_zoo.main(_args(runs), api=api) == 0
    expected = [
        (f"kd-zoo/{CE_ID}", "model", runs / "ce" / "lrds_resnet8" / "model"),
        (f"kd-zoo/{KD_ID}", "model", runs / "kd_seed2" / "model"),  # the seed closest to the mean top-1
        (f"kd-zoo/{SCORES_NAME}", "dataset", runs / "kd_seed0" / "scores"),  # the same scores twice: once
    ]
    calls = api.uploads()
    assert len(calls) == 2 * len(expected)
    for (repo_id, repo_type, folder), create, upload in zip(expected, calls[::2], calls[1::2], strict=True):
        assert create == (
            "create_repo",
            repo_id,
            {"token": TOKEN, "repo_type": repo_type, "private": False, "exist_ok": True},
        )
        assert upload[0] == "upload_folder"
        assert {k: upload[1][k] for k in ("repo_id", "repo_type", "folder_path", "token")} == {
            "repo_id": repo_id, "repo_type": repo_type, "folder_path": str(folder), "token": TOKEN,
        }  # fmt: skip
    assert TOKEN not in capsys.readouterr().out

    readme = (runs.parent / "README.md").read_text()
    before, after = readme_before.split(README_START), readme.split(README_START)
    assert after[0] == before[0] and after[1].split(README_END)[1] == before[1].split(README_END)[1]
    section = _section(readme)
    kd_row = next(line for line in section.splitlines() if KD_ID in line)
    cells = [c.strip() for c in kd_row.strip("|").split("|")]
    assert cells == [
        f"`{KD_ID}`", "`lrds_resnet20`", "kd", "on", "influence, highest 80%", "demo", "81.17 ± 1.26", "98.50 ± 0.50",
        "3", "0, 1, 2", f"[kd-zoo/{KD_ID}](https://huggingface.co/kd-zoo/{KD_ID})",
    ]  # fmt: skip
    ce_row = next(line for line in section.splitlines() if f"`{CE_ID}`" in line)
    assert "| - | cross-entropy | off | off | demo | 90.00 | 99.50 | 1 | 0 |" in ce_row
    assert section.index(CE_ID) < section.index(KD_ID)

    table = (runs.parent / "zoo_results.md").read_text()
    assert "81.17 ± 1.26" in table
    assert f"| `{KD_ID}` | 2 | 81.00 | 98.50 | yes |" in table and f"| `{KD_ID}` | 0 | 80.00 | 98.00 | no |" in table
    assert f"[kd-zoo/{SCORES_NAME}](https://huggingface.co/datasets/kd-zoo/{SCORES_NAME})" in table
    for text in (section, table):
        assert str(runs.parent) not in text and TOKEN not in text


def test_org_and_no_scores(runs, token):
    api = RecordingApi(runs.parent)
    assert push_zoo.main(_args(runs, "--org", "my-lab", "include_scores=false"), api=api) == 0
    assert [c[1] for c in api.uploads() if c[0] == "create_repo"] == [f"my-lab/{CE_ID}", f"my-lab/{KD_ID}"]
    assert f"https://huggingface.co/my-lab/{KD_ID}" in (runs.parent / "README.md").read_text()


def test_dry_run_uploads_and_writes_nothing(runs, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)  # a dry run needs no token
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    readme_before = (runs.parent / "README.md").read_text()
    api = RecordingApi(runs.parent)
    assert push_zoo.main(_args(runs, "--dry-run"), api=api) == 0
    out = capsys.readouterr().out
    assert api.calls == []
    assert (runs.parent / "README.md").read_text() == readme_before and not (runs.parent / "zoo_results.md").exists()
    assert f"would upload to model repo kd-zoo/{KD_ID}" in out and f"dataset repo kd-zoo/{SCORES_NAME}" in out
    assert "data/train-00000-of-00001.parquet" in out and "model.safetensors" in out and "81.17 ± 1.26" in out


def test_write_table_only_uploads_nothing(runs, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    api = RecordingApi(runs.parent)
    assert push_zoo.main(_args(runs, "--write-table-only"), api=api) == 0
    assert api.calls == []
    assert "81.17 ± 1.26" in _section((runs.parent / "README.md").read_text())
    assert (runs.parent / "zoo_results.md").read_text().startswith("# kd_zoo results")


def test_without_a_token_nothing_is_uploaded_or_written(runs, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    readme_before = (runs.parent / "README.md").read_text()
    api = RecordingApi(runs.parent)
    assert push_zoo.main(_args(runs), api=api) == 1
    assert "no Hugging Face token" in capsys.readouterr().err
    assert api.calls == [] and (runs.parent / "README.md").read_text() == readme_before
    assert not (runs.parent / "zoo_results.md").exists()


def test_bad_runs_are_named_before_any_upload(runs, token, capsys):
    (runs / "kd_seed1" / "model" / "README.md").unlink()  # no card
    card_path = runs / "ce" / "lrds_resnet8" / "model" / "README.md"
    card = ModelCard.load(card_path)
    card.data.eval_results = card.data.eval_results[:1]  # top-1 only
    card.save(str(card_path))
    api = RecordingApi(runs.parent)
    assert push_zoo.main(_args(runs), api=api) == 1
    err = capsys.readouterr().err
    assert "2 problem(s)" in err and "nothing was published" in err
    assert f"{runs / 'kd_seed1' / 'model'} lacks ['README.md']" in err
    assert f"{card_path} lacks the metric(s) ['top-5'] in its model-index metadata" in err
    assert api.calls == [] and not (runs.parent / "zoo_results.md").exists()
    with pytest.raises(RunFolderError, match="kd_seed1"):
        collect_runs(runs)


def test_two_runs_with_one_seed_are_refused(runs):
    shutil.copytree(runs / "kd_seed1", runs / "kd_seed1_again")
    with pytest.raises(RunFolderError, match=rf"kd_seed1 and .*kd_seed1_again are both {KD_ID} with seed 1"):
        collect_runs(runs)


def test_token_or_local_path_in_a_folder_is_refused(runs, token):
    card = runs / "kd_seed0" / "model" / "README.md"
    card.write_text(card.read_text().replace("epochs: 3", f"epochs: 3\n  weights: {runs}/teacher.safetensors"))
    leaked = runs / "kd_seed1" / "scores" / "notes.txt"
    leaked.write_text(f"token {TOKEN}\n")
    with pytest.raises(RunFolderError) as err:
        collect_runs(runs)
    message = str(err.value)
    assert "README.md:" in message and "the local path" in message and "notes.txt:1: a Hugging Face token" in message
    assert TOKEN not in message


def test_other_architecture_on_the_hub_is_refused_before_any_upload(runs, token, capsys):
    api = RecordingApi(runs.parent, remote={f"kd-zoo/{KD_ID}": "lrds_vgg8", f"kd-zoo/{CE_ID}": "lrds_resnet8"})
    assert push_zoo.main(_args(runs), api=api) == 1
    assert api.uploads() == []  # not even the repo that matched, published before the clashing one otherwise
    assert f"kd-zoo/{KD_ID} holds a lrds_vgg8 model" in capsys.readouterr().err
    assert push_zoo.main(_args(runs, "--overwrite"), api=api) == 0
    assert len([c for c in api.uploads() if c[0] == "upload_folder"]) == 3


def test_different_score_sets_for_one_repo_are_refused(runs, token):
    export_scores(_score_set(fingerprint="b" * 64), runs / "kd_seed1" / "scores", overwrite=True)
    zoo = collect_runs(runs)
    with pytest.raises(RunFolderError, match=rf"(?s)kd-zoo/{SCORES_NAME} but differ.*kd_seed0.*kd_seed1"):
        plan_uploads(zoo)
    assert [u.repo_type for u in plan_uploads(zoo, include_scores=False)] == ["model", "model"]


def test_readme_markers(runs, token):
    assert (
        replace_section(f"a\n{README_START}\nold\n{README_END}\nb", "new") == f"a\n{README_START}\nnew\n{README_END}\nb"
    )
    for broken in ("no markers", f"{README_END}\n{README_START}", f"{README_START}{README_START}{README_END}"):
        with pytest.raises(ValueError, match="markers"):
            replace_section(broken, "new")
    (runs.parent / "README.md").write_text("# a README without the markers\n")
    api = RecordingApi(runs.parent)
    assert push_zoo.main(_args(runs), api=api) == 1 and api.calls == []
    # the repository's own README has its markers (the tables are computed, nothing is written)
    texts = table_texts(collect_runs(runs), readme=REPO / "README.md", table=None)
    assert KD_ID in _section(texts[REPO / "README.md"])


# -- score sets as data set repos -------------------------------------------------------------------------------
def test_score_set_folder_loads_and_holds_nothing_private(built_runs, token, tmp_path):
    folder = built_runs / "kd_seed0" / "scores"
    original = _score_set()
    rows = datasets.load_dataset(str(folder), split="train")
    assert rows.column_names == ["sample_idx", "score", "teacher_pred", "teacher_correct", "label"]
    np.testing.assert_array_equal(np.asarray(rows["score"]), original.scores)
    card = DatasetCard.load(folder / "README.md")
    meta = card.data.to_dict()
    assert "configs" not in meta  # see kd_zoo.hub.score_set_card: the train split is found by file name
    assert meta["kd_zoo"]["teacher"]["weights"] == "teacher.safetensors"  # not the absolute path
    assert meta["kd_zoo"]["teacher"]["weights_fingerprint"] == FINGERPRINT
    assert ScoreSet.load(folder).metadata == meta["kd_zoo"]
    assert f'datasets.load_dataset("kd-zoo/{SCORES_NAME}", split="train")' in card.text
    assert find_private_content(folder) == []
    for path in folder.rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode("utf-8", errors="ignore")
            assert str(built_runs.parent) not in text and "private" not in text and TOKEN not in text


def test_local_data_and_weights_paths_are_reduced_to_names(tmp_path):
    score_set = _score_set(weights=f"local-dir:{tmp_path}/teacher_run/model")
    score_set.metadata["data_fingerprint"]["name"] = str(tmp_path / "my_cifar_copy")
    folder = export_scores(score_set, tmp_path / "scores", repo_id="me/scores")
    saved = ScoreSet.load(folder).metadata
    assert saved["teacher"]["weights"] == "model" and saved["data_fingerprint"]["name"] == "my_cifar_copy"
    assert saved["data_fingerprint"]["content_sha256"] == "c" * 64
    assert score_set.metadata["teacher"]["weights"].startswith("local-dir:/")  # the object itself is unchanged
    assert find_private_content(folder) == [] and '"me/scores"' in (folder / "README.md").read_text()


def test_score_set_folder_has_a_license_and_class_label_columns(tmp_path):
    folder = export_scores(_score_set(), tmp_path / "scores", class_names=[f"digit {i}" for i in range(10)])
    card = DatasetCard.load(folder / "README.md")  # huggingface_hub's own parsing
    assert card.data.license == "apache-2.0" and "arxiv.org/abs/2404.03693" in card.text
    rows = datasets.load_dataset(str(folder), split="train")
    for column in ("label", "teacher_pred"):
        assert isinstance(rows.features[column], datasets.ClassLabel), column
        assert rows.features[column].names[3] == "digit 3"
    assert rows["label"][:12] == [i % 10 for i in range(12)]  # still the integers
    assert ScoreSet.load(folder).column("label").tolist() == _score_set().column("label").tolist()


def test_score_set_card_with_a_missing_field_writes_nothing(tmp_path):
    with pytest.raises(CardTemplateError, match="not_a_field"):
        export_scores(_score_set(), tmp_path / "scores", template="---\n{{ card_data }}\n---\n{{ not_a_field }}\n")
    assert not (tmp_path / "scores").exists()


def _populate_dataset_cache(cache, repo_id, folder):
    revision = "1" * 40
    repo = cache / f"datasets--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    for path in folder.rglob("*"):
        if path.is_file():
            target = repo / "snapshots" / revision / path.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())


# Offline, `datasets` cannot resolve a repo id; the Hub would serve the same files that snapshot_download returns.
_OFFLINE_DATASETS = """import datasets, huggingface_hub
_load = datasets.load_dataset
def _from_cache(path, *args, **kwargs):
    return _load(huggingface_hub.snapshot_download(path, repo_type="dataset"), *args, **kwargs)
datasets.load_dataset = _from_cache
"""


def test_score_set_card_usage_snippet_runs_offline(tmp_path):
    train = load_tensor_split(None, "train")
    repo_id = "kd-zoo/digits-resnet20-influence-scores"
    folder = export_scores(_score_set(data=train, weights="random-init"), tmp_path / "scores", repo_id=repo_id)
    cache = tmp_path / "hub_cache"
    _populate_dataset_cache(cache, repo_id, folder)
    card = DatasetCard.load(folder / "README.md")
    snippet = card.text.split("```python\n", 1)[1].split("```", 1)[0]
    assert f'datasets.load_dataset("{repo_id}", split="train")' in snippet and "scores.join(train)" in snippet
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_DATASETS_CACHE=str(tmp_path / "ds"))
    result = subprocess.run(
        [sys.executable, "-c", _OFFLINE_DATASETS + snippet], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    aligned = ScoreSet.load(folder).join(train)
    distilled = int(select(aligned.scores, aligned.sample_idx, 0.8).sum())
    assert f"{distilled} of {len(train)} samples distilled" in result.stdout
    # weights that can be loaded anywhere (a zoo tag) make the snippet check the teacher too
    tagged = str(score_set_card(_score_set(weights="lrds_resnet20.cifar100").metadata, num_rows=60, repo_id="kd-zoo/x"))
    assert 'teacher = load_model("lrds_resnet20", "lrds_resnet20.cifar100")' in tagged
    assert "scores.join(train, teacher)" in tagged


def _score_recipe(tmp_path, *extra, env=None):
    command = [
        sys.executable, str(REPO / "recipes" / "score.py"), "teacher.model=lrds_resnet8", "scoring.random_init=true",
        "selection.scorer=loss", f"run.output_dir={tmp_path / 'scores'}", *extra,
    ]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_score_recipe_push_dry_run_lists_the_files(tmp_path):
    repo_id = "kd-zoo/digits-resnet8-loss-scores"
    result = _score_recipe(tmp_path, f"run.push_to_hub={repo_id}", "--run.dry_run")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"dry run: would upload to dataset repo {repo_id}:" in result.stdout
    assert "  README.md (" in result.stdout and "  data/train-00000-of-00001.parquet (" in result.stdout
    assert f'"{repo_id}"' in (tmp_path / "scores" / "README.md").read_text()
    assert find_private_content(tmp_path / "scores") == []


def test_score_recipe_push_without_a_token_stops_before_scoring(tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf_home"), "HF_TOKEN": ""}
    result = _score_recipe(tmp_path, "run.push_to_hub=kd-zoo/x", env=env)
    assert result.returncode != 0 and "no Hugging Face token" in result.stderr
    assert not (tmp_path / "scores").exists()
    bad = _score_recipe(tmp_path, "run.dry_run=true")
    assert bad.returncode == 2 and "run.dry_run=true needs run.push_to_hub=ORG/NAME" in bad.stderr
