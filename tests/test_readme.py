"""The README stays true: its test command is what CI runs, and its Python examples run."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(info: str) -> list[str]:
    return re.findall(rf"^```{re.escape(info)}\n(.*?)^```", README, flags=re.S | re.M)


def test_ci_runs_the_readme_test_command():
    bash = [b for b in _blocks("bash") if "# the tests" in b]
    assert len(bash) == 1, "README needs one bash block starting with '# the tests'"
    command = [line for line in bash[0].splitlines() if line and not line.startswith("#")]
    assert len(command) == 1
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command[0] in ci_lines, f".ci/run must run the README test command: {command[0]}"


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_readme_python_examples_run(index, tmp_path):
    code = _blocks("python")[index]
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
