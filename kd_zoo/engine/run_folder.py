"""A run's folder: one run at a time, never another run's results replaced unless asked, nothing left by a failure.

`RunFolder.open` decides, before anything is written, whether a run may use its folder:
- a folder holding a finished run (`result.json` or `model/`) or a partial one (`checkpoints/`, `config.yaml`,
  `metrics.jsonl`) is refused, unless the run resumes it or is told to overwrite it (which first removes the run
  files listed in `RUN_FILES`, and nothing else);
- a folder another process is using is refused, naming that process: the main process holds `.lock` (created
  atomically) for the run's lifetime; a lock whose process is gone (same host, dead pid) is taken over.

`RunFolder.close` releases the lock. A run that fails before its first checkpoint removes the files it wrote
(`config.yaml`, the logs), so the folder does not look like a started run.

Multi-machine runs need the folder on a file system that every machine sees; only the main process touches it.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from .checkpoint import check_writable

LOCK_FILE = ".lock"
FINISHED_MARKERS = ("result.json", "model")
PARTIAL_MARKERS = ("checkpoints", "config.yaml", "metrics.jsonl")
# Everything a run writes into its folder (what `overwrite` removes, and a failed start cleans up).
RUN_FILES = (
    "result.json",
    "model",
    "checkpoints",
    "config.yaml",
    "metrics.jsonl",
    "tracker_config.json",
    "scores",
    "teacher",
    "distill",
    "train_teacher",
)


class RunFolderInUseError(RuntimeError):
    """Another process holds the run folder."""


class RunFolderExistsError(FileExistsError):
    """The folder holds a finished or partial run, and the run was told neither to resume nor to overwrite it."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def _existing_run(folder: Path) -> str | None:
    """'finished', 'partial' or None for what `folder` holds."""
    if any((folder / name).exists() for name in FINISHED_MARKERS):
        return "finished"
    if any((folder / name).exists() for name in PARTIAL_MARKERS):
        return "partial"
    return None


def _has_checkpoint(folder: Path) -> bool:
    return any(p.name.startswith("epoch_") for p in folder.rglob("checkpoints/epoch_*"))


class RunFolder:
    """The folder of one run (see the module docstring).

    Args:
        path: the run folder.
        accelerator: the run's Accelerator (its main process checks and locks; the others learn the outcome).
        resume: the run continues what the folder holds.
        overwrite: the run replaces what the folder holds.
    """

    def __init__(self, path: str | Path, accelerator: Accelerator, *, resume: bool, overwrite: bool):
        self.path = Path(path)
        self.accelerator = accelerator
        self.resume, self.overwrite = resume, overwrite
        self.locked = False

    def open(self) -> RunFolder:
        """Check the folder, lock it (and clear it with `overwrite`); every process raises the same error."""
        error: list[Exception | None] = [None]
        if self.accelerator.is_main_process:
            try:
                self._check_and_lock()
            except (RunFolderInUseError, RunFolderExistsError, PermissionError) as err:
                error = [err]
        if self.accelerator.num_processes > 1:
            error = broadcast_object_list(error)
        if error[0] is not None:
            raise error[0]
        return self

    def _check_and_lock(self) -> None:
        folder = check_writable(self.path)
        self._lock()
        try:
            existing = _existing_run(folder)
            if existing and not (self.resume or self.overwrite):
                raise RunFolderExistsError(
                    f"{folder} holds a {existing} run: pass run.resume=true to continue it, run.overwrite=true to "
                    "replace it, or another run.output_dir=..."
                )
            if existing and self.overwrite:
                for name in RUN_FILES:
                    target = folder / name
                    if target.is_dir():
                        shutil.rmtree(target)
                    elif target.exists():
                        target.unlink()
        except BaseException:
            self._unlock()
            raise

    def _lock(self) -> None:
        lock = self.path / LOCK_FILE
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    other = json.loads(lock.read_text() or "{}")
                except (OSError, json.JSONDecodeError):
                    other = {}
                stale = other.get("host") == holder["host"] and not _alive(int(other.get("pid", -1)))
                if stale:  # its process is gone: take the folder over
                    lock.unlink(missing_ok=True)
                    continue
                raise RunFolderInUseError(
                    f"{self.path} is in use by process {other.get('pid', '?')} on {other.get('host', '?')} (since "
                    f"{other.get('since', '?')}): wait for that run, or pass another run.output_dir=... (if that "
                    f"process is gone, delete {lock})"
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(holder, f)
            self.locked = True
            return

    def _unlock(self) -> None:
        if self.locked:
            (self.path / LOCK_FILE).unlink(missing_ok=True)
            self.locked = False

    def close(self, failed: bool) -> None:
        """Release the lock; after a failure before the first checkpoint, remove what the run wrote."""
        if not self.accelerator.is_main_process:
            return
        if failed and not self.resume and not _has_checkpoint(self.path):
            for name in RUN_FILES:
                target = self.path / name
                if target.is_dir():
                    shutil.rmtree(target, ignore_errors=True)
                elif target.exists():
                    target.unlink(missing_ok=True)
        self._unlock()
