"""Recipe configuration and command line: the recipe boundary (the library itself takes keyword arguments).

A config is a tree of dataclasses whose defaults are the library's own (the paper's CIFAR-100 recipe), each field
with its help text and its valid values. Values come, in this order, from the defaults, a YAML file (`--config`,
which may start from another with `base: ../base.yaml`, relative to itself) and the command line, where a key is
given as an option or as an override, the same thing spelled two ways:

    accelerate launch recipes/distill.py --config recipes/configs/cifar100/resnet32x4-resnet8x4/lrds.yaml \\
        --train.epochs 10 run.output_dir=runs/short

Every key and value is checked before anything runs: an unknown key is named with its close match, values are
parsed as YAML 1.2 (`1e-3` is a number) and checked against their type (numbers, booleans, lists, optionals,
choices) and range; on the command line a bad value is a usage error, never a traceback. `--help` lists every key
with its type, default and meaning. The resolved config is saved next to the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import timm
import yaml
from accelerate.tracking import LOGGER_TYPE_TO_CLASS

from .constants import MODEL_PREFIX
from .engine.loop import CIFAR100_EPOCHS, CIFAR100_MILESTONES, LR_DECAY, MOMENTUM, WEIGHT_DECAY
from .methods import METHODS, check_method_args
from .pairs import CIFAR100_LR
from .registry import close_matches
from .revision import ETA, LAMBDA1, LAMBDA2, LabelRevision
from .selection import DEFAULT_FRACTION, DEFAULT_SCORER, DEFAULT_STRATEGY, SCORERS, STRATEGIES
from .teacher_cache import DEFAULT_DTYPE, DEFAULT_PAD, logit_only_methods


class ConfigError(ValueError):
    """A config file or command-line value that does not fit the schema; the message names the key and the fix."""


# -- valid values ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """A condition on a number (each element, for a list), described for `--help` and error messages."""

    text: str
    holds: Callable[[float], bool]


POSITIVE = Check("> 0", lambda v: v > 0)
NON_NEGATIVE = Check(">= 0", lambda v: v >= 0)
SHARE = Check("in (0, 1]", lambda v: 0 < v <= 1)
BELOW_ONE = Check("in [0, 1)", lambda v: 0 <= v < 1)


def option(default: Any = dataclasses.MISSING, help: str = "", *, check: Check | None = None, choices=None, **kw):
    """A config field: its default (or `default_factory=`), help text, valid range and choices."""
    metadata = {"help": help, "check": check, "choices": choices}
    if "default_factory" in kw:
        return field(default_factory=kw["default_factory"], metadata=metadata)
    return field(default=default, metadata=metadata)


# -- the schema --------------------------------------------------------------------------------------------------
class ConfigTree:
    """What every config schema can do (the recipes' `RecipeConfig`, and a tool's own, e.g. push_zoo's)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def validate(self) -> ConfigTree:
        """Checks across fields, after every value has been checked on its own; returns `self`."""
        return self


@dataclass
class DataConfig:
    name: str | None = option(None, "a Hub id, a save_to_disk folder, parquet files, an image folder; null: the demo")
    revision: str | None = option(None, "Hub revision (branch, tag or commit) of a Hub data set")
    label: str = option("fine", "CIFAR-100's fine (100 classes) or coarse (20) labels, or a label column name")
    class_names: list[str] | None = option(None, "class names for an integer label column without names")
    train_split: str = option("train", "the split to train on")
    eval_split: str = option("test", "the split to evaluate on")
    eval_batch_size: int = option(256, "evaluation (and scoring) batch size, global", check=POSITIVE)
    num_workers: int = option(4, "data-loading workers (large images only)", check=NON_NEGATIVE)


@dataclass
class TeacherConfig:
    model: str = option("lrds_resnet32x4", "the teacher architecture (a timm name)")
    weights: str | None = option(
        None,
        "a .safetensors file, an exported folder, a zoo tag, hf-hub:ORG/NAME; null: the default tag (demo: "
        "a teacher trained on the fly)",
    )
    cache: str | None = option(
        None, "a teacher-output cache (a folder or Hub data set, from recipes/cache_teacher.py); null: the teacher"
    )
    cache_placement: str = option(
        "auto",
        "where cached logits live: all on the device, read from disk (mmap), or auto",
        choices=("auto", "device", "mmap"),
    )
    train_epochs: int = option(30, "epochs of a teacher trained on the fly (demo only)", check=POSITIVE)
    train_lr: float = option(CIFAR100_LR, "learning rate of a teacher trained on the fly", check=POSITIVE)


@dataclass
class StudentConfig:
    model: str = option("lrds_resnet8x4", "the student architecture (a timm name)")
    drop_rate: float = option(0.0, "dropout before the student's classifier", check=BELOW_ONE)


@dataclass
class MethodConfig:
    name: str = option("kd", "the distillation method (kd_zoo.methods.METHODS)", choices=METHODS.names)
    args: dict[str, Any] = option(help="the method's hyperparameters, e.g. {beta: 6}", default_factory=dict)


@dataclass
class LabelRevisionConfig:
    enabled: bool = option(True, "Label Revision on or off")
    eta: float | str = option(ETA, "Eq. 9's eta in (0, 1), or pt_max / pt_target (Table IX)")
    lambda1: float = option(LAMBDA1, "weight of the right part's logit MSE (Table VIII)", check=NON_NEGATIVE)
    lambda2: float = option(LAMBDA2, "weight of the wrong part's probability MSE (Table VIII)", check=NON_NEGATIVE)


@dataclass
class SelectionConfig:
    enabled: bool = option(True, "Data Selection on or off")
    fraction: float = option(DEFAULT_FRACTION, "the share of samples distilled (Table II)", check=SHARE)
    strategy: str = option(DEFAULT_STRATEGY, "which samples are distilled (Table II)", choices=STRATEGIES.names)
    scorer: str = option(DEFAULT_SCORER, "how samples are scored", choices=SCORERS.names)
    scores: str | None = option(None, "a saved score set (folder, parquet); null: computed before training")
    seed: int = option(0, "seed of the random strategy / scorer", check=NON_NEGATIVE)


@dataclass
class ScoringConfig:
    """recipes/score.py only: the scorers and their settings."""

    scorers: list[str] | None = option(None, "scorers from one pass (default: selection.scorer)")
    damping: float | None = option(None, "absolute damping of the influence scorers", check=POSITIVE)
    damping_ratio: float | None = option(None, "damping = ratio x the mean eigenvalue of H", check=POSITIVE)
    val_fraction: float | None = option(None, "influence_val: the held-out share", check=SHARE)
    max_params: int | None = option(None, "influence_exact: the largest head allowed", check=POSITIVE)
    memory_limit_mb: float = option(256.0, "head inputs kept in memory up to this, then spilled", check=NON_NEGATIVE)
    spill_dir: str | None = option(None, "where head inputs go past the memory limit (default: a temp folder)")
    random_init: bool = option(
        False, "random teacher weights, teacher.weights ignored (smoke tests of score.py, cache_teacher.py)"
    )


@dataclass
class CachingConfig:
    """recipes/cache_teacher.py only: how the teacher-output cache is built."""

    pad: int = option(
        DEFAULT_PAD, "the training runs' random-crop padding: (2 pad + 1)^2 x 2 views", check=NON_NEGATIVE
    )
    dtype: str = option(DEFAULT_DTYPE, "float16 (half the size) or float32 (exact)", choices=("float16", "float32"))
    batch_size: int | None = option(
        None, "images per pass and process (default: 1024 on a GPU, 64 on a CPU)", check=POSITIVE
    )
    shard_rows: int | None = option(None, "samples per shard (default: about 64 MiB of logits each)", check=POSITIVE)
    mean: list[float] | None = option(None, "the mean the teacher is fed (0-1 scale); null: its pretrained_cfg's")
    std: list[float] | None = option(None, "the std the teacher is fed; null: its pretrained_cfg's", check=POSITIVE)
    autocast: str = option("auto", "auto: fp16 on a GPU for a float16 cache", choices=("auto", "no", "fp16", "bf16"))
    channels_last: bool = option(True, "feed the teacher channels-last images")
    stop_after_shards: int | None = option(
        None, "stop after so many shards per process (time-boxed jobs); the same command resumes", check=POSITIVE
    )
    scores: str | None = option(None, "also write Data Selection's score set (selection.scorer) to this folder")


@dataclass
class TrainConfig:
    epochs: int = option(CIFAR100_EPOCHS, "training epochs", check=POSITIVE)
    batch_size: int = option(64, "global batch size (all processes together)", check=POSITIVE)
    lr: float = option(CIFAR100_LR, "learning rate (0.01 for MobileNet / ShuffleNet students)", check=POSITIVE)
    momentum: float = option(MOMENTUM, "SGD momentum", check=BELOW_ONE)
    weight_decay: float = option(WEIGHT_DECAY, "SGD weight decay", check=NON_NEGATIVE)
    milestones: list[int] = option(
        help="epochs at which the lr decays", check=POSITIVE, default_factory=lambda: list(CIFAR100_MILESTONES)
    )
    lr_decay: float = option(LR_DECAY, "lr factor at each milestone", check=SHARE)
    seed: int = option(0, "seed of everything random", check=NON_NEGATIVE)
    ds_weighting: str = option("share", "how the distilled and CE-only parts weigh", choices=("share", "sum"))
    gradient_accumulation_steps: int = option(1, "batches per optimiser step", check=POSITIVE)
    mixed_precision: str = option("no", "autocast precision", choices=("no", "fp16", "bf16"))
    channels_last: bool = option(False, "channels-last memory format")


@dataclass
class RunConfig:
    output_dir: str = option("runs/demo", "the run folder (checkpoints, logs, the exported model)")
    resume: bool | str = option(False, "true: continue the latest checkpoint; or a checkpoint folder's path")
    overwrite: bool = option(False, "replace a finished or partial run in output_dir")
    checkpoint_every: int = option(1, "epochs between checkpoints (atomic; the last two kept)", check=POSITIVE)
    keep_last: int = option(2, "checkpoints kept", check=POSITIVE)
    log_every: int = option(50, "optimiser steps between logged loss averages", check=POSITIVE)
    report_to: list[str] = option(
        help="trackers besides the JSONL log (Accelerate's log_with)",
        choices=lambda: list(LOGGER_TYPE_TO_CLASS),
        default_factory=lambda: ["tensorboard"],
    )
    num_processes: int | None = option(None, "the process count the launch must have", check=POSITIVE)
    cpu: bool = option(False, "run on the CPU even when a GPU is there")
    push_to_hub: str | None = option(None, "publish the exported folder to this Hub repo, ORG/NAME")
    dry_run: bool = option(False, "with push_to_hub: print what would be uploaded, upload nothing")


@dataclass
class RecipeConfig(ConfigTree):
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    label_revision: LabelRevisionConfig = field(default_factory=LabelRevisionConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    caching: CachingConfig = field(default_factory=CachingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> RecipeConfig:
        """Checks across fields and against the library (models, method arguments, LR settings); returns `self`."""
        for key, name in (("teacher.model", self.teacher.model), ("student.model", self.student.model)):
            if not timm.is_model(name):
                candidates = (
                    timm.list_models(MODEL_PREFIX + "*") if name.startswith(MODEL_PREFIX) else timm.list_models()
                )
                hint = close_matches(name, candidates)
                raise ConfigError(
                    f"{key}: unknown model {name!r}"
                    + (f" (did you mean {hint[0]!r}?)" if hint else "")
                    + "; python recipes/list_zoo.py lists the kd_zoo architectures, timm.list_models() all of timm's"
                )
        try:
            check_method_args(self.method.name, self.method.args)
        except (LookupError, TypeError) as err:
            raise ConfigError(f"method: {err}") from None
        if self.teacher.cache and self.teacher.weights is None and self.data.name is None:
            raise ConfigError(
                "teacher.cache needs the teacher it was built from: pass teacher.weights=... (the demo's: "
                "runs/demo/teacher/model, which the first demo run exports); a teacher trained on the fly is not it"
            )
        if self.teacher.cache and self.method.name not in logit_only_methods():
            raise ConfigError(
                f"teacher.cache serves the methods that need only the teacher's logits "
                f"({', '.join(logit_only_methods())}); method {self.method.name!r} needs its features: drop "
                "teacher.cache"
            )
        caching = self.caching
        if (caching.mean is None) != (caching.std is None) or len(caching.mean or ()) != len(caching.std or ()):
            raise ConfigError(
                f"caching.mean and caching.std go together, one value per channel: got mean {caching.mean} and std "
                f"{caching.std} (e.g. caching.mean=[0.5,0.5,0.5] caching.std=[0.5,0.5,0.5])"
            )
        lr = self.label_revision
        try:
            LabelRevision(lr.eta, lr.lambda1, lr.lambda2)
        except ValueError as err:
            raise ConfigError(f"label_revision: {err}") from None
        push = self.run.push_to_hub
        if push is not None and not re.fullmatch(r"[\w.-]+/[\w.-]+", push):
            raise ConfigError(f"run.push_to_hub must be ORG/NAME, got {push!r}")
        if self.run.dry_run and push is None:
            raise ConfigError("run.dry_run=true needs run.push_to_hub=ORG/NAME (it previews that upload)")
        if self.run.resume is not False and self.run.overwrite:
            raise ConfigError("run.resume and run.overwrite contradict each other: pass one of them")
        return self


# -- YAML 1.2 numbers --------------------------------------------------------------------------------------------
class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where `1e-3` (no dot) is a string; a config value that looks like a number is one."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)$|^[-+]?[0-9][0-9_]*\.[0-9_]*$"),
    list("-+0123456789."),
)


def parse_value(text: str) -> Any:
    """A command-line or file value as YAML 1.2: numbers, booleans, null, lists `[1, 2]`, mappings `{a: 1}`."""
    try:
        return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.YAMLError:
        return text


# -- merging and checking ----------------------------------------------------------------------------------------
def _is_optional(hint: Any) -> bool:
    return get_origin(hint) in (Union, type(int | None)) and type(None) in get_args(hint)


def _members(hint: Any) -> tuple[Any, ...]:
    """The types a hint allows, None excluded: `float | str` -> (float, str)."""
    if get_origin(hint) in (Union, type(int | None)):
        return tuple(a for a in get_args(hint) if a is not type(None))
    return (hint,)


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """`value` as the type `hint` asks for, or a ConfigError naming the key, the value and what it must be."""
    if value is None:
        if _is_optional(hint):
            return None
        raise ConfigError(f"{path} cannot be null")
    errors = []
    for member in _members(hint):
        try:
            return _coerce_one(value, member, path)
        except ConfigError as err:
            errors.append(str(err))
    raise ConfigError(" or ".join(errors) if len(errors) > 1 else errors[0])


def _coerce_one(value: Any, hint: Any, path: str) -> Any:
    origin = get_origin(hint)
    if origin is list:
        (item,) = get_args(hint)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path} must be a list, e.g. {path}=[{value!r}], got {value!r}")
        return [_coerce_one(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, e.g. {path}={{key: 1}}, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, str):
            value = parse_value(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            value = parse_value(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, dict | list):
            raise ConfigError(f"{path} must be a string, got {value!r}")
        return str(value)
    if hint is Any:
        return value
    raise TypeError(f"unsupported config type {hint} at {path}")


def _check_field(value: Any, meta: dict[str, Any], path: str) -> None:
    check: Check | None = meta.get("check")
    if check is not None and value is not None:
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, int | float) and not isinstance(v, bool) and not check.holds(v):
                raise ConfigError(f"{path} must be {check.text}, got {v!r}")
    choices = meta.get("choices")
    if choices is not None and value is not None:
        allowed = list(choices() if callable(choices) else choices)
        for v in value if isinstance(value, list) else [value]:
            if v not in allowed:
                hint = close_matches(str(v), allowed)
                raise ConfigError(
                    f"{path} must be one of {', '.join(allowed)}, got {v!r}"
                    + (f" (did you mean {hint[0]!r}?)" if hint else "")
                )


def _merge(target: Any, values: Any, where: str) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'the config'} must be a mapping of keys, got {values!r}")
    hints = get_type_hints(type(target))
    fields = {f.name: f for f in dataclasses.fields(target)}
    for key, value in values.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            hint = close_matches(str(key), list(fields))
            raise ConfigError(
                f"unknown config key {path!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; valid keys{' of ' + where if where else ''}: {', '.join(fields)}"
            )
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, path)
            continue
        if key == "args" and isinstance(current, dict):  # method hyperparameters merge key by key
            current.update(_coerce(value, hints[key], path))
            continue
        value = _coerce(value, hints[key], path)
        _check_field(value, fields[key].metadata, path)
        setattr(target, key, value)


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """The file's mappings, its `base:` chain first (paths relative to the file that names them)."""
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    if path in seen:
        raise ConfigError(f"config files include each other: {' -> '.join(str(p) for p in (*seen, path))}")
    try:
        values = yaml.load(path.read_text(), Loader=_Yaml12Loader) or {}  # noqa: S506  (a SafeLoader subclass)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{where}: not valid YAML ({problem}); fix the file at that line") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(values).__name__}")
    base = values.pop("base", None)
    chain = _read_yaml(path.parent / base, (*seen, path)) if base else []
    return [*chain, values]


def _nested(key: str, value: Any) -> dict[str, Any]:
    nested: Any = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested


def parse_override(item: str) -> tuple[str, Any]:
    """`section.key=value` with a YAML 1.2 value (numbers, booleans, lists, null)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.epochs=10")
    key, raw = item.split("=", 1)
    return key.strip(), parse_value(raw)


def load_config(
    path: str | Path | None = None, overrides: Sequence[str] = (), schema: type[ConfigTree] = RecipeConfig
) -> Any:
    """Defaults <- YAML file (after the files its `base:` key names) <- `section.key=value` overrides, each key and
    value checked, then the checks across fields (`validate`)."""
    cfg = schema()
    if path is not None:
        for values in _read_yaml(Path(path)):
            _merge(cfg, values, "")
    for item in overrides:
        key, value = parse_override(item)
        _merge(cfg, _nested(key, value), "")
    return cfg.validate()


# -- the command line --------------------------------------------------------------------------------------------
def _leaves(cfg: Any, prefix: str = "") -> list[tuple[str, dataclasses.Field, Any, Any]]:
    """(dotted key, field, type, default) of every leaf of a config tree."""
    hints = get_type_hints(type(cfg))
    leaves = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            leaves += _leaves(value, key + ".")
        else:
            leaves.append((key, f, hints[f.name], value))
    return leaves


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def build_parser(description: str, default_config: str | Path | None, schema: type = RecipeConfig):
    """An argparse parser with `--config`, one `--section.key` option per config key (type, default and help from
    the schema) and `section.key=value` overrides."""
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Values are YAML: numbers, true / false, null, lists [1, 2], mappings {beta: 6}. "
        "`--train.epochs 10` and `train.epochs=10` are the same.",
    )
    parser.add_argument(
        "--config",
        default=None if default_config is None else str(default_config),
        help=f"a YAML config file (default: {default_config}); command-line values override it",
    )
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="overrides, e.g. train.epochs=10")
    groups: dict[str, Any] = {}
    for key, f, hint, default in _leaves(schema()):
        section = key.split(".")[0] if "." in key else "options"
        group = groups.setdefault(section, parser.add_argument_group(section))
        choices = f.metadata.get("choices")
        allowed = list(choices() if callable(choices) else choices) if choices is not None else None
        check: Check | None = f.metadata.get("check")
        details = [_type_name(hint)]
        if allowed:
            details.append("one of " + ", ".join(allowed))
        if check is not None:
            details.append(check.text)
        text = f"{f.metadata.get('help', '')} [{'; '.join(details)}; default: {default!r}]"
        names = [f"--{key}"] + ([f"--{key.replace('_', '-')}"] if "_" in key else [])
        bool_like = bool in _members(hint)
        group.add_argument(
            *names,
            dest=key,
            default=argparse.SUPPRESS,
            metavar="VALUE",
            nargs="?" if bool_like else None,
            const="true" if bool_like else None,
            help=text.replace("%", "%%"),
        )
    return parser


def parse_recipe_args(
    description: str,
    default_config: str | Path | None = None,
    argv: Sequence[str] | None = None,
    schema: type = RecipeConfig,
    primary: str | None = None,
) -> Any:
    """The recipes' command line (see the module docstring): a config tree, every value checked; a bad value ends
    the program with a usage error. `primary` names the key a bare first argument sets (`validate.py MODEL`)."""
    parser = build_parser(description, default_config, schema)
    argv = sys.argv[1:] if argv is None else list(argv)
    # `key=value` tokens are overrides wherever they stand (argparse would take one as an option's value)
    keys = {key for key, *_ in _leaves(schema())}

    def names_a_key(token: str) -> bool:
        name = token.split("=", 1)[0]
        return re.match(r"^[A-Za-z_][\w.]*=", token) is not None and any(
            name == key or name.startswith(key + ".") for key in keys
        )

    is_override = [names_a_key(a) for a in argv]
    args = parser.parse_args([a for a, o in zip(argv, is_override, strict=True) if not o])
    options = {k: v for k, v in vars(args).items() if k not in ("config", "overrides")}
    positional = list(args.overrides)
    if primary is not None and positional and "=" not in positional[0] and primary not in vars(args):
        positional[0] = f"{primary}={positional[0]}"
    overrides = [a for a, o in zip(argv, is_override, strict=True) if o] + positional
    items = [f"{k}={v}" for k, v in options.items()] + overrides
    try:
        return load_config(args.config, items, schema)
    except ConfigError as err:
        parser.error(str(err))
