"""recipes/reproduce.py on tiny settings: paper rows map to configs, the runs happen, the table is written."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def test_every_paper_row_has_its_configs():
    tables = yaml.safe_load((ROOT / "recipes" / "paper_results.yaml").read_text())
    assert set(tables) == {"III", "IV", "V", "VI", "VII"}
    for table in tables.values():
        for row in table["rows"]:
            assert len(row["paper"]) == len(table["columns"]), row["name"]
            for column in table["columns"]:
                assert (ROOT / "recipes" / "configs" / table["dataset"] / column / f"{row['variant']}.yaml").is_file()


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
        "1",
        "--runs-dir",
        str(tmp_path),
        "--launcher",
        "python",
        *[a for o in tiny for a in ("--set", o)],
    ]
    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    table = (tmp_path / "III_lrds.md").read_text()
    assert "| resnet32x4-resnet8x4 | 75.76 |" in table and "| 2 |" in table
    for seed in (0, 1):
        assert (tmp_path / "III" / "resnet32x4-resnet8x4" / "lrds" / f"seed{seed}" / "model" / "README.md").is_file()
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
