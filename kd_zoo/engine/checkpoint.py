"""Atomic checkpoints with Accelerate's `save_state`, and resume from the latest complete one.

A checkpoint is written to a hidden temporary folder, completed with `trainer_state.json` (epoch, best accuracy,
history: JSON, never pickled), then renamed into place, and only then does the `latest` pointer move. A save
killed half-way leaves the previous checkpoint and pointer untouched. Model weights are safetensors; Accelerate
writes optimizer and RNG state with torch and reads them back with `weights_only=True`.
Multi-machine runs need `run_dir` on a file system that every machine sees.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator

STATE_FILE = "trainer_state.json"
LATEST_FILE = "latest"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def check_writable(folder: str | Path) -> Path:
    """Create `folder` and prove it is writable, before any training, with a clear error otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write_probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise PermissionError(
            f"cannot write to the run folder {str(folder)!r} ({err.strerror or err}): pass a writable "
            "run.output_dir=... (or fix the folder's permissions)"
        ) from err
    return folder


class CheckpointManager:
    """Saves `epoch_NNNN` checkpoints under `root` (NNNN: the epochs done, as the log counts them), keeps the last
    `keep_last`, and finds the latest. Without an Accelerator it only reads (`latest`, `latest_state`)."""

    def __init__(self, root: str | Path, accelerator: Accelerator | None, keep_last: int = 2):
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.root = Path(root)
        self.accelerator = accelerator
        self.keep_last = keep_last

    def save(self, epochs_done: int, state: dict[str, Any]) -> Path:
        """Checkpoint after `epochs_done` epochs (the first epoch's is `epoch_0001`). Every process calls this."""
        acc = self.accelerator
        if acc is None:
            raise RuntimeError("this CheckpointManager was built without an Accelerator: it can only read")
        final = self.root / f"epoch_{epochs_done:04d}"
        tmp = self.root / f".tmp-epoch_{epochs_done:04d}"
        if acc.is_main_process:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            _atomic_write_text(tmp / STATE_FILE, json.dumps({**state, "epochs_done": epochs_done}, indent=2))
            if final.exists():  # re-running an epoch after a resume: replace the stale copy
                stale = self.root / f".stale-epoch_{epochs_done:04d}"
                shutil.rmtree(stale, ignore_errors=True)
                os.replace(final, stale)
                shutil.rmtree(stale, ignore_errors=True)
            os.replace(tmp, final)
            _atomic_write_text(self.root / LATEST_FILE, final.name)
            for old in self.complete()[: -self.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob("epoch_*") if (p / STATE_FILE).is_file())

    def latest(self) -> Path | None:
        pointer = self.root / LATEST_FILE
        if pointer.is_file():
            candidate = self.root / pointer.read_text().strip()
            if (candidate / STATE_FILE).is_file():
                return candidate
        done = self.complete()
        return done[-1] if done else None

    def latest_state(self) -> dict[str, Any] | None:
        """The trainer state of the latest complete checkpoint (read, nothing restored), or None."""
        latest = self.latest()
        return None if latest is None else json.loads((latest / STATE_FILE).read_text())

    def load(self, path: str | Path) -> dict[str, Any]:
        """Restore model, optimizer and RNG state from `path`; returns its trainer state."""
        path = Path(path)
        if not (path / STATE_FILE).is_file():
            raise FileNotFoundError(
                f"{path} is not a complete kd_zoo checkpoint (no {STATE_FILE}): pass run.resume=true for the latest "
                "complete one, or the path of an epoch_NNNN folder under the run's checkpoints/"
            )
        if self.accelerator is None:
            raise RuntimeError("this CheckpointManager was built without an Accelerator: it can only read")
        self.accelerator.load_state(str(path))
        return json.loads((path / STATE_FILE).read_text())
