"""The on-disk format of a teacher-output cache: a manifest, a build plan and safetensors shards.

    folder/
      build.json                                  the plan, written when a build starts: what is being cached
      cache.json                                  the manifest, written last: the plan + every shard's size and sha256
      shards/logits-00000-of-00064.safetensors    rows [start, end) of the split, in its row order
      README.md                                   the data set card (`kd_zoo.hub.export_teacher_cache`)

A shard holds, for its m samples: `logits` `[m, V, C]` (float16 or float32; V views of each sample, in view-id order,
see `kd_zoo.data.tensor_loader`), `sample_idx` and `labels` `[m]` (int64), and what the influence scorer reads for
the un-augmented (centre) view, in float32: `center_features` `[m, d]` (the pooled pre-logits) and `center_logits`
`[m, C]`. Its safetensors header carries the build's identity key, its index and its rows.

Why safetensors (not Arrow): the cache is one dense tensor per shard, read at random rows (sample, view) every
training step. A safetensors file is an 8-byte length, a JSON header, then the raw tensors, so `numpy.memmap` maps
the logits at a known offset with zero copies and no per-row decoding, `safetensors.torch.load_file` reads a shard
whole onto a device, the header carries string metadata, nothing is unpickled, and it is the format kd_zoo already
uses for weights and decoded images (the Hub serves it as is). Arrow would store each row's V x C values as a nested
list column, read through an IPC reader, for no gain here: a cache is not a table anyone filters or joins.

Crash safety: a shard is serialised in memory, written to a temporary name, flushed to disk and renamed (atomic on
POSIX), so a file with a shard's final name is whole; `read_shard_header` still checks its size against its header,
so a truncated copy is refused. The manifest, written last and atomically, is what marks a build complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save

from .errors import CacheFormatError

FORMAT = "kd_zoo.TeacherCache/1"
MANIFEST = "cache.json"
SHARD_METADATA_KEY = "kd_zoo"
PLAN = "build.json"
SHARD_DIR = "shards"
DTYPES = {"float16": torch.float16, "float32": torch.float32}
_NUMPY = {"F16": np.float16, "F32": np.float32, "I64": np.int64}
_MAX_HEADER_BYTES = 100 << 20
# What must agree for two builds to describe the same cache (the rest of the metadata describes how it was built).
IDENTITY_FIELDS = ("format", "teacher", "data", "augmentation", "normalization", "dtype", "compute", "layout")
TEACHER_IDENTITY = ("weights_fingerprint", "num_classes", "num_features")
DATA_IDENTITY = ("num_rows", "num_classes", "content_sha256", "pixels_sha256")


def shard_file(index: int, count: int) -> str:
    """A shard's path inside the cache folder."""
    return f"{SHARD_DIR}/logits-{index:05d}-of-{count:05d}.safetensors"


def identity(metadata: dict[str, Any]) -> dict[str, Any]:
    """The part of a cache's metadata that defines its contents (teacher weights, data, views, normalisation,
    dtype, compute precision, shard layout), without names, paths, timings or versions."""
    picked = {key: metadata[key] for key in IDENTITY_FIELDS}
    picked["teacher"] = {key: metadata["teacher"][key] for key in TEACHER_IDENTITY}
    picked["data"] = {key: metadata["data"].get(key) for key in DATA_IDENTITY}
    picked["compute"] = {"autocast": metadata["compute"]["autocast"]}
    return picked


def identity_key(metadata: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of `identity(metadata)`: the key every shard of one build carries."""
    text = json.dumps(identity(metadata), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def write_json_atomic(path: Path, value: Any) -> None:
    """Write JSON to a temporary file, flush it to disk, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CacheFormatError(f"{path} is not readable JSON ({err}); rebuild the cache or fetch it again") from err


def write_shard(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> tuple[int, str]:
    """Write one shard atomically (see the module docstring); returns its size in bytes and its sha256.

    The metadata goes into the header as one sorted JSON string (`SHARD_METADATA_KEY`): safetensors writes several
    metadata keys in a random order, and a shard's bytes should depend on its contents only."""
    header = {SHARD_METADATA_KEY: json.dumps(metadata, sort_keys=True)}
    payload = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=header)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return len(payload), hashlib.sha256(payload).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ShardHeader:
    """A shard file's safetensors header: its metadata, and where each tensor's bytes are."""

    path: Path
    metadata: dict[str, Any]  # what `write_shard` was given
    tensors: dict[str, dict[str, Any]]  # name -> {"dtype", "shape", "data_offsets"}
    data_start: int
    size: int

    def memmap(self, name: str) -> np.ndarray:
        """A read-only memory map of one tensor (no bytes are read until indexed)."""
        info = self.tensors[name]
        begin, _ = info["data_offsets"]
        shape = tuple(info["shape"])
        return np.memmap(self.path, dtype=_NUMPY[info["dtype"]], mode="r", offset=self.data_start + begin, shape=shape)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.tensors[name]["shape"])


def read_shard_header(path: Path) -> ShardHeader:
    """Parse a shard's header and check that the file holds every byte it declares.

    Raises:
        CacheFormatError: not a safetensors file, or truncated (fewer bytes than its tensors need).
    """
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if not 0 < length <= min(_MAX_HEADER_BYTES, size - 8):
                raise ValueError(f"header length {length} for a file of {size} bytes")
            header = json.loads(f.read(length))
    except (struct.error, ValueError, UnicodeDecodeError) as err:
        raise CacheFormatError(
            f"{path} is not a safetensors shard ({err}): it is truncated or corrupt; delete it and run the build "
            "again (it resumes and rewrites only the missing shards)"
        ) from err
    try:
        metadata = json.loads((header.pop("__metadata__", None) or {}).get(SHARD_METADATA_KEY, "{}"))
    except json.JSONDecodeError as err:
        raise CacheFormatError(
            f"{path} has unreadable kd_zoo metadata ({err}): it is not a teacher-cache shard"
        ) from err
    unknown = {info.get("dtype") for info in header.values()} - set(_NUMPY)
    if unknown:
        raise CacheFormatError(f"{path} holds tensors of dtype {sorted(unknown)}, which a teacher cache never writes")
    data_start = 8 + length
    needed = data_start + max((info["data_offsets"][1] for info in header.values()), default=0)
    if size < needed:
        raise CacheFormatError(
            f"{path} is truncated: {size:,} bytes of the {needed:,} its header declares. Delete it and run the "
            "build again (it resumes and rewrites only the missing shards), or download the cache again"
        )
    return ShardHeader(path, metadata, header, data_start, size)
