"""recipes/reproduce.py and recipes/paper_results.yaml: every row of Tables II-IX maps to a config with the
settings the paper gives it; a row runs on tiny settings; a whole table is reported from finished runs."""

import importlib.util
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kd_zoo.config import load_config
from kd_zoo.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
TABLES = yaml.safe_load((ROOT / "recipes" / "paper_results.yaml").read_text())
_spec = importlib.util.spec_from_file_location("reproduce", ROOT / "recipes" / "reproduce.py")
reproduce = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reproduce)
ROWS = [(t, row) for t, table in TABLES.items() for row in table["rows"]]


def _configured(cfg, key: str):
    """A dotted key of a loaded config; a method argument the file leaves out has the method's default."""
    section, _, rest = key.partition(".")
    if section == "method" and rest.startswith("args."):
        name = rest.removeprefix("args.")
        if name in cfg.method.args:
            return cfg.method.args[name]
        return inspect.signature(METHODS.get(cfg.method.name).__init__).parameters[name].default
    return getattr(getattr(cfg, section), rest)


def test_every_table_of_the_paper_is_there():
    assert list(TABLES) == ["II", "III", "IV", "V", "VI", "VII", "VIII", "IX"]
    for table in TABLES.values():
        assert table["trials"] == (1 if table["dataset"] == "imagenet" else 3)
        names = [row["name"] for row in table["rows"]]
        assert len(set(names)) == len(names)
        for row in table["rows"]:
            assert len(row["paper"]) == len(table["columns"]), row["name"]
            assert row["cell"].startswith("Table "), row["name"]


@pytest.mark.parametrize("table, row", ROWS, ids=[f"{t}:{r['name']}" for t, r in ROWS])
def test_every_row_runs_a_config_with_the_settings_the_paper_gives_it(table, row):
    entry = TABLES[table]
    settings = {**entry.get("settings", {}), **row.get("settings", {})}
    for column in entry["columns"]:
        run = reproduce.resolve(entry["dataset"], column, row)
        assert run.config.is_file(), run.config
        if run.recipe == "train_teacher":
            continue  # a cross-entropy baseline: no distillation settings
        cfg = load_config(run.config)
        for key, want in settings.items():
            assert _configured(cfg, key) == want, f"{run.config.relative_to(ROOT)}: {key}"


def test_table3_lr_rows_are_not_judged_against_the_lambda1_4_run():
    """Issue 16: Table III's 75.76 is the lambda1 = lambda2 = 1 setting; Table IV's 76.60 (same pair) is lambda1 = 4."""
    column = "resnet32x4-resnet8x4"
    configs = {}
    for table, name in (("III", "KD + LR + DS"), ("VIII", "lambda1 = 1"), ("VIII", "lambda2 = 1"), ("IX", "eta = 0.8")):
        row = next(r for r in TABLES[table]["rows"] if r["name"] == name)
        assert row["paper"] == [75.76]
        configs[table, name] = reproduce.resolve("cifar100", column, row).config
    assert len(set(configs.values())) == 1  # one setting, one config, one set of runs
    lr = load_config(configs["III", "KD + LR + DS"]).label_revision
    assert (lr.lambda1, lr.lambda2, lr.eta) == (1, 1, 0.8)
    ours = next(r for r in TABLES["IV"]["rows"] if r["name"].startswith("Our"))
    assert ours["paper"][0] == 76.60
    assert load_config(reproduce.resolve("cifar100", column, ours).config).label_revision.lambda1 == 4
    row = next(r for r in TABLES["VIII"]["rows"] if r["name"] == "lambda1 = 4")
    assert reproduce.resolve("cifar100", column, row).config == reproduce.resolve("cifar100", column, ours).config


def test_imagenet_kd_uses_the_papers_temperature_and_keeps_the_t1_variant():
    for pair in TABLES["VII"]["columns"]:
        folder = ROOT / "recipes" / "configs" / "imagenet" / pair
        assert load_config(folder / "kd.yaml").method.args["temperature"] == 4
        assert load_config(folder / "kd_t1.yaml").method.args["temperature"] == 1
        assert "temperature of vanilla KD loss to 4" in _comment(folder / "kd.yaml")
    assert "Table VII prints 76.26 %" in _comment(
        ROOT / "recipes" / "configs" / "imagenet" / "resnet50-resnet18" / "kd.yaml"
    )


def _comment(path: Path) -> str:
    """A config's comment lines as one line of text."""
    return " ".join(line[2:] for line in path.read_text().splitlines() if line.startswith("# "))


def test_reproduce_a_row_on_tiny_settings(tmp_path):
    tiny = [
        "data.name=null",
        "teacher.weights=null",
        "teacher.model=lrds_resnet8",
        "teacher.train_epochs=1",
        "student.model=lrds_resnet8",
        "train.epochs=1",
        "train.lr=0.05",
        "run.log_every=5",
    ]
    command = [
        sys.executable,
        "recipes/reproduce.py",
        "--table",
        "III",
        "--row",
        "KD + LR + DS",
        "--seeds",
        "0",
        "--runs-dir",
        str(tmp_path),
        "--launcher",
        "python",
        *[a for o in tiny for a in ("--set", o)],
    ]  # one seed: the mean and std over seeds are checked on finished runs below
    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    run = tmp_path / "cifar100" / "resnet32x4-resnet8x4" / "ablations" / "lrds_lambda1_1" / "seed0"
    assert (run / "model" / "README.md").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["label_revision"]["lambda1"] == 1
    ours = json.loads((run / "result.json").read_text())
    last, best = f"{ours['last_top1']:.2f} ± 0.00", f"{ours['best_top1']:.2f} ± 0.00"
    line = f"| KD + LR + DS | resnet32x4-resnet8x4 | 75.76 | {last} | {best} | 1 |"
    assert line in (tmp_path / "III_kd_lr_ds.md").read_text()
    again = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "$ " not in again.stdout  # finished runs are reused, nothing re-runs


def test_unknown_row_lists_the_rows():
    result = subprocess.run(
        [sys.executable, "recipes/reproduce.py", "--table", "V", "--row", "PKT"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "PKT (OA)" in result.stderr


def _fake_runs(runs_dir: Path, table: str, seeds: tuple[int, ...]) -> dict[tuple[str, str], list[float]]:
    """A finished `result.json` in every run folder of `table`: last top-1 = 60 + row index + column index + seed,
    best + 1, the teacher 90 + seed. Returns the values each (row, column) should report."""
    entry, expected = TABLES[table], {}
    for i, row in enumerate(entry["rows"]):
        for j, column in enumerate(entry["columns"]):
            run = reproduce.resolve(entry["dataset"], column, row)
            for seed in seeds:
                folder = run.run_dir(runs_dir, seed)
                folder.mkdir(parents=True, exist_ok=True)
                if not (folder / "result.json").is_file():  # rows that share a config share its runs
                    last = 60.0 + i + j + seed
                    result = {"last_top1": last, "best_top1": last + 1, "teacher_top1": 90.0 + seed}
                    (folder / "result.json").write_text(json.dumps(result))
                value = json.loads((folder / "result.json").read_text())
                expected.setdefault((row["name"], column), []).append(
                    value["last_top1" if run.metric == "top1" else run.metric]
                )
    return expected


@pytest.mark.parametrize("table", ["IX", "VII"])
def test_a_whole_table_is_reported_from_finished_runs(tmp_path, table):
    expected = _fake_runs(tmp_path, table, (0, 1))
    command = [
        sys.executable,
        "recipes/reproduce.py",
        "--table",
        table,
        "--runs-dir",
        str(tmp_path),
        "--seeds",
        "0",
        "1",
    ]
    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "$ " not in result.stdout  # every run was found, none started
    report = (tmp_path / f"{table}.md").read_text()
    entry = TABLES[table]
    for row in entry["rows"]:
        for column, paper in zip(entry["columns"], row["paper"], strict=True):
            mean = sum(expected[row["name"], column]) / 2
            line = f"| {row['name']} | {column} | {paper:.2f} | {mean:.2f} ± "
            assert line in report, (line, report)
            assert f"| 2 | {mean - paper:+.2f} |" in report
    if table == "VII":  # the teacher row reads the KD runs' teacher accuracy
        assert (
            f"| Teacher | resnet50-resnet18 | 76.26 | 90.50 ± 0.71 | 90.50 ± 0.71 | 2 | {90.5 - 76.26:+.2f} |" in report
        )


def test_a_whole_table_dry_run_prints_each_run_once():
    result = subprocess.run(
        [sys.executable, "recipes/reproduce.py", "--table", "VIII", "--dry-run", "--runs-dir", "/nonexistent"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    commands = [line for line in result.stdout.splitlines() if line.startswith("$ ")]
    # 19 rows, 18 settings (lambda1 = 1 and lambda2 = 1 are one run), the paper's 3 trials each
    assert len(TABLES["VIII"]["rows"]) == 19 and len(commands) == 18 * 3 == len(set(commands))
    assert all("recipes/distill.py" in c and "train.seed=" in c for c in commands)
    teachers = subprocess.run(
        [sys.executable, "recipes/reproduce.py", "--table", "IV", "--row", "Teacher", "--dry-run", "--seeds", "0"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in teachers.stdout.splitlines() if line.startswith("$ ")]
    assert len(lines) == 4  # ResNet32x4, WRN-40-2, ResNet56, VGG13: each teacher trained once for its 10 columns
    assert all("recipes/train_teacher.py" in line and "configs/cifar100/teachers/" in line for line in lines)


def test_list_names_every_table_and_an_unknown_table_lists_them():
    listed = subprocess.run(
        [sys.executable, "recipes/reproduce.py", "--list"], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert listed.returncode == 0 and all(f"Table {t} (" in listed.stdout for t in TABLES)
    assert "'KD (MSE)' -> ablations/kd_mse.yaml" in listed.stdout
    unknown = subprocess.run(
        [sys.executable, "recipes/reproduce.py", "--table", "X"], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert unknown.returncode != 0 and "tables: II, III, IV, V, VI, VII, VIII, IX" in unknown.stderr
