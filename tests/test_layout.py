"""The package layout holds: imports run one way between the layers, no kd_zoo import hides inside a function, and
the README's Layout section names every top-level module."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kd_zoo"

# Lower layers never import higher ones (a module may import its own layer: a package's own modules).
LAYERS = [
    {"version", "constants", "registry"},
    {"pairs"},
    {"models"},
    {"loading", "metrics"},
    {"methods", "revision"},
    {"data"},
    {"selection"},
    {"teacher_cache"},
    {"engine"},
    {"hub"},
    {"config"},
    {"workflow"},
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


def _top(path: Path) -> str:
    """The top-level part of kd_zoo a file belongs to: `selection` for kd_zoo/selection/scorers.py."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imported_tops(path: Path) -> list[tuple[str, int, bool]]:
    """(top-level part of kd_zoo imported, line, inside a function) for every kd_zoo import of a file."""
    tree = ast.parse(path.read_text())
    package_parts = path.relative_to(ROOT).parent.parts  # ("kd_zoo", "selection")
    found = []
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    nested = {id(n) for f in functions for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                module = ".".join([*base, *(node.module.split(".") if node.module else [])])
                names = [module] if node.module else [f"{module}.{a.name}" for a in node.names]
                targets = names
            elif node.module:
                targets = [node.module]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        for target in targets:
            parts = target.split(".")
            if parts[0] == "kd_zoo" and len(parts) > 1:
                found.append((parts[1], node.lineno, id(node) in nested))
    return found


def test_every_top_level_part_has_a_layer():
    tops = {_top(p) for p in MODULES} - {"__init__"}
    assert tops == set(LAYER_OF), f"add new modules to LAYERS (and the README's Layout): {tops ^ set(LAYER_OF)}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_one_way(path):
    top = _top(path)
    if top == "__init__":  # the package's public API re-exports from every layer
        return
    for imported, line, in_function in _imported_tops(path):
        assert not in_function, f"{path.name}:{line} imports kd_zoo.{imported} inside a function"
        assert LAYER_OF[imported] <= LAYER_OF[top], (
            f"{path.relative_to(ROOT)}:{line} imports kd_zoo.{imported} (layer {LAYER_OF[imported]}) from layer "
            f"{LAYER_OF[top]}: imports run from the foundation up, never down"
        )


def test_the_readme_layout_names_every_top_level_module():
    readme = (ROOT / "README.md").read_text()
    layout = re.search(r"## Layout\n(.*?)\n## ", readme, flags=re.S).group(1)
    for path in sorted(PACKAGE.iterdir()):
        if path.name.startswith(("_", ".")) and path.name != "__init__.py":
            continue
        if path.is_dir() and not (path / "__init__.py").is_file():
            continue
        name = path.name + ("/" if path.is_dir() else "")
        assert re.search(rf"^\s+{re.escape(name)}\s", layout, flags=re.M), f"README Layout misses kd_zoo/{name}"
