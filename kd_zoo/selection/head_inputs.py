"""The per-sample head inputs of one teacher pass, kept in memory or streamed to disk in chunks.

Every scorer works from what the classifier layer sees: the pooled pre-logit features h (d float32 values), the
teacher's log-softmax (C float32 values), the label and the `sample_idx` (int64 each), i.e. 4 (d + C) + 16 bytes
a sample. CIFAR-100 with a 256-d head: 1.4 kB a sample, 71 MB for 50,000 samples; ImageNet with ResNet-50
(d = 2048, C = 1000): 12 kB a sample, 15.6 GB for 1.28 M samples.

`HeadStore` keeps them in memory while they fit under `memory_limit_bytes` (default 256 MiB); past that it writes
every chunk (about `chunk_bytes`, default 8 MiB) to a safetensors file in a temporary folder (under `spill_dir`,
default the system temporary folder) and keeps at most one chunk in memory, so the memory the scorers need does
not grow with the data set; the disk needs the sizes above. The folder is removed by `close()` (or on leaving a
`with` block). No pickle anywhere: safetensors files of plain tensors.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from .influence_math import append_bias, residual

DEFAULT_MEMORY_LIMIT_BYTES = 256 * 2**20
DEFAULT_CHUNK_BYTES = 8 * 2**20
_FIELDS = ("features", "log_probs", "labels", "sample_idx")


@dataclass
class HeadChunk:
    """The classifier-layer inputs of some samples, and what the scorers derive from them (in float64).

    Attributes:
        features: float32 `[n, d]` pooled pre-logit features h.
        log_probs: float32 `[n, C]` the teacher's log-softmax.
        labels: int64 `[n]`.
        sample_idx: int64 `[n]`.
    """

    features: Tensor
    log_probs: Tensor
    labels: Tensor
    sample_idx: Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device | str) -> HeadChunk:
        return HeadChunk(*(getattr(self, name).to(device) for name in _FIELDS))

    @cached_property
    def phi(self) -> Tensor:
        """float64 `[n, d + 1]` features with the bias input 1."""
        return append_bias(self.features)

    @cached_property
    def probs(self) -> Tensor:
        """float64 `[n, C]` softmax."""
        return self.log_probs.to(torch.float64).exp()

    @cached_property
    def residual(self) -> Tensor:
        """float64 `[n, C]` p - onehot(y): the cross-entropy's gradient with respect to the logits."""
        return residual(self.probs, self.labels)

    @cached_property
    def loss(self) -> Tensor:
        """float64 `[n]` cross-entropy -log p_y (from the log-softmax, so exact for tiny p_y)."""
        return -self.log_probs.to(torch.float64).gather(1, self.labels[:, None]).squeeze(1)

    @cached_property
    def prediction(self) -> Tensor:
        """int64 `[n]` the teacher's top-1 class."""
        return self.log_probs.argmax(1)


def _cat(chunks: list[HeadChunk]) -> HeadChunk:
    if len(chunks) == 1:
        return chunks[0]
    return HeadChunk(*(torch.cat([getattr(c, name) for c in chunks]) for name in _FIELDS))


class HeadStore:
    """Append-only store of `HeadChunk`s on the CPU, in memory or spilled to disk (see the module docstring).

    Args:
        memory_limit_bytes: keep everything in memory up to this size; 0 writes every chunk to disk.
        chunk_bytes: target size of one chunk (what is in memory at once once spilled).
        spill_dir: parent of the temporary folder of the spilled chunks (default: the system temporary folder).
    """

    def __init__(
        self,
        memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        spill_dir: str | Path | None = None,
    ):
        if memory_limit_bytes < 0 or chunk_bytes <= 0:
            raise ValueError(
                f"memory_limit_bytes must be >= 0 and chunk_bytes > 0, got {memory_limit_bytes} and {chunk_bytes}"
            )
        self.memory_limit_bytes = int(memory_limit_bytes)
        self.chunk_bytes = int(chunk_bytes)
        self.spill_dir = spill_dir
        self.folder: Path | None = None  # set once spilled
        self._memory: list[HeadChunk] = []  # consolidated chunks kept in memory (before spilling)
        self._files: list[Path] = []
        self._pending: list[HeadChunk] = []
        self._pending_bytes = 0
        self.num_rows = 0
        self.bytes_total = 0  # bytes of every stored sample
        self.peak_memory_bytes = 0  # most bytes held in memory by the store at once

    @staticmethod
    def _nbytes(chunk: HeadChunk) -> int:
        return sum(getattr(chunk, name).element_size() * getattr(chunk, name).numel() for name in _FIELDS)

    @property
    def spilled(self) -> bool:
        return self.folder is not None

    @property
    def memory_bytes(self) -> int:
        return sum(self._nbytes(c) for c in self._memory) + self._pending_bytes

    def append(self, chunk: HeadChunk) -> None:
        """Add samples (copied to the CPU as float32 / int64)."""
        cpu = HeadChunk(
            chunk.features.detach().to("cpu", torch.float32),
            chunk.log_probs.detach().to("cpu", torch.float32),
            chunk.labels.detach().to("cpu", torch.int64),
            chunk.sample_idx.detach().to("cpu", torch.int64),
        )
        size = self._nbytes(cpu)
        self._pending.append(cpu)
        self._pending_bytes += size
        self.num_rows += len(cpu)
        self.bytes_total += size
        self.peak_memory_bytes = max(self.peak_memory_bytes, self.memory_bytes)
        if self._pending_bytes >= self.chunk_bytes:
            self._flush()

    def _flush(self) -> None:
        """Consolidate the pending pieces into one chunk: kept in memory, or written to disk once over the limit."""
        if not self._pending:
            return
        chunk = _cat(self._pending)
        self._pending, self._pending_bytes = [], 0
        if not self.spilled and self.memory_bytes + self._nbytes(chunk) <= self.memory_limit_bytes:
            self._memory.append(chunk)
            return
        if not self.spilled:
            self.folder = Path(tempfile.mkdtemp(prefix="kd_zoo_head_inputs_", dir=self.spill_dir))
            for kept in self._memory:
                self._write(kept)
            self._memory = []
        self._write(chunk)

    def _write(self, chunk: HeadChunk) -> None:
        assert self.folder is not None
        path = self.folder / f"chunk-{len(self._files):06d}.safetensors"
        save_file({name: getattr(chunk, name).contiguous() for name in _FIELDS}, str(path))
        self._files.append(path)

    def finish(self) -> None:
        """Consolidate what is pending (call once after the last `append`)."""
        self._flush()

    def chunks(self, device: torch.device | str = "cpu") -> Iterator[HeadChunk]:
        """Every stored sample once, in append order, chunk by chunk, on `device`."""
        if self._pending:
            self._flush()
        if self.spilled:
            for path in self._files:
                tensors = load_file(str(path))
                yield HeadChunk(*(tensors[name] for name in _FIELDS)).to(device)
        else:
            for chunk in self._memory:
                yield chunk.to(device)

    def close(self) -> None:
        """Free the memory and delete the spill folder."""
        self._memory, self._pending, self._files = [], [], []
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> HeadStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "folder", None) is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
