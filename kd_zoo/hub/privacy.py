"""What must never be published: local absolute paths and Hugging Face tokens.

`public_path` / `public_weights` / `public_metadata` / `public_config` reduce local paths to their names before
anything is written into a card or a score set; `find_private_content` scans a folder for what is left: tokens
(the one in use, or anything shaped like one) and local absolute paths.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import huggingface_hub
import yaml

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
_PATH_PREFIXES = ("local-dir:", "imagefolder:", "parquet:", "disk:", "file://")
_WINDOWS_ABSOLUTE = re.compile(r"^[A-Za-z]:[\\/]")
WEIGHT_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


def _local_name(path: str) -> str:
    """The last component of a path (a glob keeps its folder: `cifar/*.parquet`)."""
    pure = PureWindowsPath(path) if _WINDOWS_ABSOLUTE.match(path) else PurePosixPath(path)
    parts = [p for p in pure.parts if p not in ("/", "\\", pure.anchor)]
    keep = parts[-2:] if parts and glob.has_magic(parts[-1]) else parts[-1:]
    return "/".join(keep)


def public_path(text: str) -> str:
    """`text` unless it is a local absolute path (optionally behind `local-dir:`, `parquet:`, ...): then its name."""
    prefix = next((p for p in _PATH_PREFIXES if text.startswith(p)), "")
    rest = text[len(prefix) :]
    if rest.startswith(("/", "~")) or _WINDOWS_ABSOLUTE.match(rest):
        return prefix + _local_name(rest)
    return text


def is_hub_id(name: str) -> bool:
    """Whether a data set name is a Hub id (`owner/name`) rather than a local path."""
    return bool(_HUB_ID.match(name)) and not Path(name).expanduser().exists()


def public_dataset_name(name: str) -> str:
    """A data set's name fit for a public card: a Hub id or a known name as is, a local path as its folder name."""
    if is_hub_id(name) or "/" not in name and "\\" not in name and not Path(name).expanduser().exists():
        return name
    prefix = next((p for p in _PATH_PREFIXES if name.startswith(p)), "")
    return _local_name(name[len(prefix) :].rstrip("/\\"))


def public_weights(weights: str | None) -> str | None:
    """Where teacher weights came from, fit for a public card: a zoo tag or `hf-hub:` id as is, a local file or
    folder (absolute or relative, optionally behind `local-dir:`) reduced to its name."""
    if weights is None:
        return None
    text = str(weights)
    if text.startswith("hf-hub:"):
        return text
    rest = text.removeprefix("local-dir:").rstrip("/\\")
    if rest and ("/" in rest or "\\" in rest or rest.startswith("~")):
        return _local_name(rest)
    return text


def public_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of score-set metadata without local paths: absolute paths anywhere (a local data set's name, ...)
    become their names, and the teacher's `weights` a file name, a zoo tag or an `hf-hub:` id. Fingerprints (the
    identity of the data and the teacher) are kept as they are."""

    def walk(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        return public_path(value) if isinstance(value, str) else value

    public = walk(metadata)
    teacher = public.get("teacher")
    if isinstance(teacher, dict) and "weights" in teacher:
        teacher["weights"] = public_weights(metadata["teacher"]["weights"])
    return public


def public_config(config_yaml: str) -> str:
    """A resolved recipe config fit for a public card: local absolute paths reduced to their names."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return public_path(value) if isinstance(value, str) else value

    return yaml.safe_dump(clean(yaml.safe_load(config_yaml)), sort_keys=False).strip()


_TOKEN_PATTERN = re.compile(r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{30,}")
_COMMON_ROOTS = "home|Users|root|tmp|var|mnt|media|scratch|data|work|opt|srv|private|gpfs|lustre|nfs"
_ABSOLUTE_PATH = re.compile(
    rf"(?<![\w.~:/\\-])(?:/(?:{_COMMON_ROOTS})(?=[/\s\"'`,;)\]]|$)[^\s\"'`,;)\]]*|[A-Za-z]:\\[^\s\"'`,;|]*)"
)
_SCAN_LIMIT = 64 << 20


def _scanned_text(path: Path) -> str:
    """The text to search in a file: a safetensors header, or the file (head and tail when very large)."""
    with open(path, "rb") as f:
        if path.suffix == ".safetensors":
            size = int.from_bytes(f.read(8), "little")
            data = f.read(min(size, _SCAN_LIMIT))
        elif path.stat().st_size > _SCAN_LIMIT:
            data = f.read(1 << 20)
            f.seek(-(1 << 20), os.SEEK_END)
            data += f.read()
        else:
            data = f.read()
    return data.decode("utf-8", errors="ignore")


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, max(offset, 0)) + 1


def find_private_content(folder: str | Path, local_paths: Iterable[str | Path] = ()) -> list[str]:
    """What in `folder` should not be published: Hugging Face tokens (the one in use, or anything shaped like
    one), the user's name in a path, and local absolute paths (the home and working directories, the folder's own
    location, `local_paths`, and paths under common roots such as /home, /tmp, /root). Returns one line per finding,
    `file:line: what`, never the token itself."""
    folder = Path(folder)
    secrets = {t for t in (os.environ.get("HF_TOKEN"), huggingface_hub.get_token()) if t}
    roots = {Path.home(), Path.cwd(), folder.resolve().parent, *(Path(p) for p in local_paths)}
    roots = {str(r) for r in roots if len(Path(r).parts) > 1}
    findings = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        text = _scanned_text(path)
        tokens = [text.find(s) for s in secrets if s in text] + [m.start() for m in _TOKEN_PATTERN.finditer(text)]
        findings += [f"{name}:{_line(text, offset)}: a Hugging Face token" for offset in sorted(set(tokens))]
        hits = {m.group(0): m.start() for m in _ABSOLUTE_PATH.finditer(text)}
        for root in roots:
            match = re.search(rf"(?<![\w.-]){re.escape(root)}(?![\w.-])", text)
            if match:
                hits.setdefault(root, match.start())
        findings += [f"{name}:{_line(text, at)}: the local path {hit[:80]!r}" for hit, at in sorted(hits.items())]
    return findings
