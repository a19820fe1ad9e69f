"""Experiment tracking through Accelerate's trackers, with a built-in JSON-lines tracker that always writes.

`make_trackers(run_dir, report_to)` returns the JSONL tracker plus the trackers the run asks for (Accelerate's
`log_with`), so a run is never silently untracked: `metrics.jsonl` in the run folder is the record the benchmarks
and plots read.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from accelerate.tracking import LOGGER_TYPE_TO_CLASS, GeneralTracker, get_available_trackers


class JsonlTracker(GeneralTracker):
    """An Accelerate tracker writing one JSON object per `log` call to `<logging_dir>/metrics.jsonl`."""

    name = "jsonl"
    requires_logging_directory = True
    main_process_only = True

    def __init__(self, run_name: str, logging_dir: str | Path, **kwargs: Any):
        super().__init__()
        self.run_name = run_name
        self.path = Path(logging_dir) / "metrics.jsonl"
        self.config_path = Path(logging_dir) / "tracker_config.json"

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def tracker(self) -> Path:
        return self.path

    def store_init_configuration(self, values: dict) -> None:
        self.start()
        self.config_path.write_text(json.dumps(values, indent=2, sort_keys=True, default=str))

    def log(self, values: dict, step: int | None = None, **kwargs: Any) -> None:
        self.start()
        record = {"step": step, "time": round(time.time(), 3)}
        for key, value in values.items():
            if hasattr(value, "item"):
                value = value.item()
            record[key] = None if isinstance(value, float) and not math.isfinite(value) else value
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def make_trackers(run_dir: str | Path, report_to: Sequence[str] = ("tensorboard",), run_name: str = "kd_zoo") -> list:
    """The JSONL tracker (always: the record the benchmarks and plots read) plus Accelerate's trackers in
    `report_to` (its `log_with` names: tensorboard, wandb, mlflow, ...). TensorBoard, the default, is skipped
    quietly when it is not installed; a tracker named on purpose that is not installed is an error."""
    known = list(LOGGER_TYPE_TO_CLASS)
    unknown = [name for name in report_to if name not in known]
    if unknown:
        raise ValueError(f"unknown tracker(s) {unknown} in run.report_to; Accelerate knows: {', '.join(known)}")
    available = set(get_available_trackers())
    trackers: list = [JsonlTracker(run_name, run_dir)]
    for name in report_to:
        if name in available:
            trackers.append(name)
        elif list(report_to) != ["tensorboard"]:
            raise ValueError(
                f"run.report_to names {name!r}, which is not installed: `pip install {name}`, or drop it from "
                "run.report_to"
            )
    return trackers


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a `metrics.jsonl` file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def flat_config(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> flat {"a.b": scalar} that every tracker accepts."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_config(value, name + "."))
        else:
            flat[name] = value if isinstance(value, bool | int | float | str) or value is None else str(value)
    return flat
