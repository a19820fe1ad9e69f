"""Recipe configuration: the one place config files exist (the recipe boundary; the library takes arguments).

A config is a tree of dataclasses with the paper's CIFAR-100 recipe as defaults. A YAML file overrides any
field, command-line `section.field=value` pairs override the file, and every key is checked: an unknown one
is named with the valid ones. The resolved config is saved next to the run.

    cfg = load_config("recipes/configs/cifar100/resnet32x4-resnet8x4/lrds.yaml", ["train.epochs=10"])

A file may start from another with `base: ../base.yaml` (relative to itself); its own keys then override.
Defaults are the library's own (imported, never written twice): the paper's CIFAR-100 recipe.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from .engine.loop import CIFAR100_EPOCHS, CIFAR100_MILESTONES, LR_DECAY, MOMENTUM, WEIGHT_DECAY
from .pairs import CIFAR100_LR
from .registry import close_matches
from .revision import ETA, LAMBDA1, LAMBDA2
from .selection import DEFAULT_FRACTION, DEFAULT_SCORER, DEFAULT_STRATEGY


@dataclass
class DataConfig:
    """name: a Hub id, a local folder / parquet path, or null for the embedded digits demo."""

    name: str | None = None
    revision: str | None = None
    label: str = "fine"  # CIFAR-100: fine (100 classes) or coarse (20)
    train_split: str = "train"
    eval_split: str = "test"
    eval_batch_size: int = 256
    num_workers: int = 4  # worker-based pipeline only (large images)


@dataclass
class TeacherConfig:
    """model: a timm name; weights: a `.safetensors` file, an exported folder, a Hub tag/repo, or null
    (the model's default pretrained tag; in the demo, a teacher trained on the fly)."""

    model: str = "lrds_resnet32x4"
    weights: str | None = None
    train_epochs: int = 30  # only when a teacher is trained on the fly (x0.1 at 150/180/210 of 240, scaled)
    train_lr: float = CIFAR100_LR


@dataclass
class StudentConfig:
    model: str = "lrds_resnet8x4"
    drop_rate: float = 0.0


@dataclass
class MethodConfig:
    name: str = "kd"
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class LabelRevisionConfig:
    enabled: bool = True
    eta: float | str = ETA  # Table IX; or "pt_max" / "pt_target"
    lambda1: float = LAMBDA1  # Table VIII
    lambda2: float = LAMBDA2  # Table VIII


@dataclass
class SelectionConfig:
    """scores: a saved score set (folder / Hub id), or null to compute it with `scorer` before training."""

    enabled: bool = True
    fraction: float = DEFAULT_FRACTION  # Table II: 80 % distilled
    strategy: str = DEFAULT_STRATEGY  # Table II: highest, lowest or random
    scorer: str = DEFAULT_SCORER
    scores: str | None = None
    seed: int = 0


@dataclass
class TrainConfig:
    epochs: int = CIFAR100_EPOCHS
    batch_size: int = 64
    lr: float = CIFAR100_LR  # 0.01 for MobileNet / ShuffleNet students (kd_zoo.pairs.cifar100_lr)
    momentum: float = MOMENTUM
    weight_decay: float = WEIGHT_DECAY
    milestones: list[int] = field(default_factory=lambda: list(CIFAR100_MILESTONES))
    lr_decay: float = LR_DECAY
    seed: int = 0
    ds_weighting: str = "share"
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # no, fp16, bf16
    channels_last: bool = False


@dataclass
class RunConfig:
    output_dir: str = "runs/demo"
    checkpoint_every: int = 10
    keep_last: int = 2
    resume: bool = False
    log_every: int = 50
    num_processes: int | None = None  # expected process count; checked against the launch
    push_to_hub: str | None = None  # ORG/NAME
    dry_run: bool = False  # with push_to_hub: print what would be uploaded


@dataclass
class RecipeConfig:
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    label_revision: LabelRevisionConfig = field(default_factory=LabelRevisionConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


def _merge(target: Any, values: dict[str, Any], where: str) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'the config'} must be a mapping, got {type(values).__name__}")
    hints = get_type_hints(type(target))
    names = [f.name for f in dataclasses.fields(target)]
    for key, value in values.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            hint = close_matches(key, names)
            raise ConfigError(
                f"unknown config key {path!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; valid keys{' of ' + where if where else ''}: {', '.join(names)}"
            )
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, path)
        elif key == "args" and isinstance(current, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{path} must be a mapping of hyperparameters, got {value!r}")
            current.update(value)
        else:
            setattr(target, key, _coerce(value, hints[key], path))


def _coerce(value: Any, hint: Any, path: str) -> Any:
    text = str(hint)
    if value is None:
        if "None" in text:
            return None
        raise ConfigError(f"{path} cannot be null")
    if text in ("<class 'bool'>", "bool") and not isinstance(value, bool):
        raise ConfigError(f"{path} must be true or false, got {value!r}")
    if text in ("<class 'int'>", "int") and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{path} must be an integer, got {value!r}")
    if text in ("<class 'float'>", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path} must be a number, got {value!r}")
        return float(value)
    return value


def parse_override(item: str) -> tuple[str, Any]:
    """`section.key=value` with a YAML value (numbers, booleans, lists, null)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.epochs=10")
    key, raw = item.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """The file's mappings, its `base:` chain first (paths relative to the file that names them)."""
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    if path in seen:
        raise ConfigError(f"config files include each other: {' -> '.join(str(p) for p in (*seen, path))}")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(values).__name__}")
    base = values.pop("base", None)
    chain = _read_yaml(path.parent / base, (*seen, path)) if base else []
    return [*chain, values]


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RecipeConfig:
    """Defaults <- YAML file (after the files its `base:` key names) <- overrides, each key checked."""
    cfg = RecipeConfig()
    if path is not None:
        for values in _read_yaml(Path(path)):
            _merge(cfg, values, "")
    for item in overrides or []:
        key, value = parse_override(item)
        nested: dict[str, Any] = value
        for part in reversed(key.split(".")):
            nested = {part: nested}
        _merge(cfg, nested, "")
    return cfg


def parse_recipe_args(description: str, default_config: str | Path, argv: list[str] | None = None) -> RecipeConfig:
    """The recipes' command line: `--config FILE` (default: `default_config`) and `section.key=value` overrides."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=str(default_config), help="a recipe YAML file (default: the demo)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.epochs=10")
    args = parser.parse_args(argv)
    return load_config(args.config, args.overrides)
