"""Run a recipe in this test process, as `python recipes/<name>.py ARGS` would (faster than a subprocess)."""

import importlib.util
import sys
from pathlib import Path

from accelerate.state import AcceleratorState

ROOT = Path(__file__).resolve().parents[1]


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_recipe(name: str, *argv: str, monkeypatch, capsys=None) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of recipes/<name>.py with `argv`, through its `run_main` when it has one."""
    module = load_recipe(name)
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *argv])
    AcceleratorState._reset_state(reset_partial_state=True)
    status = 0
    try:
        result = module.run_main(module.main) if hasattr(module, "run_main") else module.main()
        status = result if isinstance(result, int) else 0
    except SystemExit as exit_info:
        status = exit_info.code
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    if capsys is None:
        return status, "", ""
    out = capsys.readouterr()
    return status, out.out, out.err
