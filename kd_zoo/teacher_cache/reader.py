"""Reading a teacher-output cache at training time, and the checks that run before training starts.

`TeacherCache.open(folder_or_hub_id, device=...)` reads the manifest, refuses an incomplete build or a truncated or
foreign shard, and places the logits: `placement="device"` copies them whole onto the training device (one gather
per step; CIFAR-100 in float16 is 1.6 GB), `"mmap"` maps the shard files and reads only the rows a step needs
(`numpy.memmap`, the page cache does the rest), `"auto"` (default) takes the device when the cache fits in half its
free memory (a quarter of the RAM on a CPU) and its dtype can live there, else the memory map.

`cache.check_run(teacher, loader)` refuses, in one error that names every difference and the fix, a cache built
from other teacher weights, other data, another crop padding, image size or flip, another normalisation, or one
whose `sample_idx` do not cover the split. `cache.lookup(sample_idx, view)` returns the teacher's logits of those
rows as float32 on the caller's device: what `kd_zoo.engine.Distiller(teacher_cache=cache)` reads instead of
running the teacher. `cache.score_sets(...)` writes Data Selection's score sets from the stored centre-view head
inputs, through the same `ScoringPass` as `recipes/score.py`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
from torch import Tensor, nn

from ..data import TensorBatchLoader
from ..loading import weights_fingerprint
from ..selection import DEFAULT_SCORER, Comm, Scorer, ScoreSet, ScoringPass, SplitInfo, TeacherInfo
from .build import pixels_sha256
from .errors import CacheDeviceError, CacheFormatError, CacheMismatchError, IncompleteCacheError
from .storage import (
    DTYPES,
    FORMAT,
    MANIFEST,
    PLAN,
    ShardHeader,
    file_sha256,
    identity_key,
    read_json,
    read_shard_header,
)

logger = logging.getLogger(__name__)

PLACEMENTS = ("auto", "device", "mmap")
VERIFY = ("size", "sha256")
NORMALIZATION_TOLERANCE = 1e-6
BUILD_HINT = "build a cache for it (python recipes/cache_teacher.py ... run.output_dir=NEW_FOLDER)"
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def resolve_cache_folder(
    source: str | os.PathLike, *, revision: str | None = None, token: str | bool | None = None
) -> Path:
    """A local cache folder, or a Hub data set repo id (`ORG/NAME`) downloaded with `snapshot_download`."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    text = str(source)
    if not _HUB_ID.match(text):
        raise FileNotFoundError(
            f"teacher cache {text!r} is neither a folder nor a Hub data set id (ORG/NAME): build one with "
            "recipes/cache_teacher.py run.output_dir=FOLDER"
        )
    try:
        return Path(snapshot_download(text, repo_type="dataset", revision=revision, token=token))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as err:
        raise FileNotFoundError(
            f"cannot fetch the teacher cache {text!r} from the Hub ({type(err).__name__}: {err}); check the id and "
            "your network or login (`hf auth login`), or pass a local folder"
        ) from err


def memory_budget(device: torch.device) -> int | None:
    """Bytes the cache may take on `device` under placement "auto": half the free memory of a CUDA device, a quarter
    of the RAM on a CPU, None (unknown: use the memory map) elsewhere."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
        except (ValueError, OSError, AttributeError):
            return None
    return None


def device_holds(dtype: torch.dtype, device: torch.device) -> str | None:
    """None when `device` can hold `dtype` tensors and convert them to float32; else the reason it cannot."""
    try:
        probe = torch.ones(2, 2, dtype=dtype, device=device)
        probe[torch.tensor([1, 0], device=device)].float().sum().item()
    except (RuntimeError, TypeError, NotImplementedError) as err:
        return f"{type(err).__name__}: {err}"
    return None


class TeacherCache:
    """A complete teacher-output cache, opened for reading (see the module docstring; `TeacherCache.open`)."""

    def __init__(self, folder: Path, manifest: dict[str, Any], headers: list[ShardHeader], table: Tensor | None):
        self.folder, self.metadata, self._headers, self._table = folder, manifest, headers, table
        self.dtype: torch.dtype = DTYPES[manifest["dtype"]]
        augmentation = manifest["augmentation"]
        self.pad, self.num_views, self.center_view = (
            augmentation["pad"],
            augmentation["num_views"],
            augmentation["center_view"],
        )
        self.num_classes = int(manifest["teacher"]["num_classes"])
        self.shard_rows = int(manifest["layout"]["shard_rows"])
        self.sample_idx = torch.cat([torch.from_numpy(np.array(h.memmap("sample_idx"))) for h in headers])
        self.labels = torch.cat([torch.from_numpy(np.array(h.memmap("labels"))) for h in headers])
        self._maps = None if table is not None else [h.memmap("logits") for h in headers]
        index_device = table.device if table is not None else torch.device("cpu")
        self._identity = torch.equal(self.sample_idx, torch.arange(len(self.sample_idx)))
        order = torch.argsort(self.sample_idx)
        self._sorted_keys = self.sample_idx[order].to(index_device)
        self._sorted_positions = order.to(index_device)

    @classmethod
    def open(
        cls,
        source: str | os.PathLike,
        *,
        device: torch.device | str = "cpu",
        placement: str = "auto",
        verify: str = "size",
        max_device_bytes: int | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
    ) -> TeacherCache:
        """Open a complete cache (a folder or a Hub data set id) for training on `device`.

        Args:
            source: the cache folder, or `ORG/NAME` of a data set repo on the Hub.
            device: the training device (`accelerator.device`).
            placement: "auto", "device" (all logits on `device`) or "mmap" (read from the shard files).
            verify: "size" (headers, identity keys and file sizes; fast) or "sha256" (also every shard's hash).
            max_device_bytes: the most the cache may take on `device` (default `memory_budget(device)`).
            revision: Hub revision of `source`.
            token: Hub token of `source`.

        Raises:
            IncompleteCacheError: the build has not finished (no manifest, or shards missing).
            CacheFormatError: not a teacher cache, or a truncated, foreign or corrupt shard.
            CacheDeviceError: placement "device" and the device cannot hold the cache's dtype or size.
        """
        if placement not in PLACEMENTS or verify not in VERIFY:
            raise ValueError(f"placement must be one of {PLACEMENTS} and verify one of {VERIFY}")
        device = torch.device(device)
        folder = resolve_cache_folder(source, revision=revision, token=token)
        manifest = _read_manifest(folder)
        headers = _check_shards(folder, manifest, verify)
        nbytes = _logits_bytes(headers)
        dtype = DTYPES[manifest["dtype"]]
        where = _choose_placement(placement, device, dtype, nbytes, max_device_bytes)
        table = _load_table(headers, device, dtype) if where == "device" else None
        return cls(folder, manifest, headers, table)

    # -- what the cache holds ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.sample_idx)

    def __repr__(self) -> str:
        return (
            f"TeacherCache({self.folder.name!r}: {self.metadata['teacher']['name']} on {len(self)} samples x "
            f"{self.num_views} views x {self.num_classes} classes, {self.metadata['dtype']}, {self.placement})"
        )

    @property
    def placement(self) -> str:
        return f"on {self._table.device}" if self._table is not None else "memory-mapped"

    @property
    def nbytes(self) -> int:
        """Bytes of the logits."""
        return _logits_bytes(self._headers)

    @property
    def teacher_info(self) -> TeacherInfo:
        teacher = self.metadata["teacher"]
        return TeacherInfo(teacher["name"], teacher["weights"], teacher["weights_fingerprint"], teacher["num_features"])

    # -- the checks before training ------------------------------------------------------------------------------
    def check_run(
        self, teacher: nn.Module | None, loader: TensorBatchLoader, normalization: dict[str, Any] | None = None
    ) -> None:
        """Refuse a cache that does not hold this run's teacher outputs (see the module docstring).

        Args:
            teacher: the run's teacher (its weights fingerprint is compared), or None to skip that check when the
                run has no teacher weights to compare (say so to the user: nothing then ties the cache to a teacher).
            loader: the run's training loader (`TensorBatchLoader`): its split, crop padding, image size,
                normalisation.
            normalization: the mean and std the run feeds the teacher when they differ from the loader's (a teacher
                re-normalised as its `pretrained_cfg` says, `kd_zoo.engine.TeacherInput`); None: the loader's.

        Raises:
            CacheMismatchError: naming every difference and what to do.
        """
        if not isinstance(loader, TensorBatchLoader):
            raise CacheMismatchError(
                f"a teacher cache needs the 32x32 tensor path (kd_zoo.data.TensorBatchLoader), whose batches carry "
                f"each row's view; got a {type(loader).__name__} (large images take the worker pipeline, whose random "
                "resized crops are not a finite set of views): train with the live teacher"
            )
        problems = []
        meta, built = self.metadata, BUILD_HINT
        if teacher is not None:
            found = weights_fingerprint(teacher)
            expected = meta["teacher"]["weights_fingerprint"]
            if found != expected:
                problems.append(
                    f"teacher: the cache holds the outputs of {meta['teacher']['name']} with weights "
                    f"{meta['teacher']['weights']!r} (fingerprint {expected[:16]}), the run's teacher has fingerprint "
                    f"{found[:16]}: load the teacher the cache was built from, or {built} with this teacher"
                )
        problems += self._data_problems(loader, built)
        augmentation, expected_aug = loader.augmentation, meta["augmentation"]
        for key in ("size", "pad", "flip"):
            if augmentation[key] != expected_aug[key]:
                problems.append(
                    f"augmentation: the cache holds the views of {key} {expected_aug[key]}, the run's loader uses "
                    f"{augmentation[key]}: train with the cache's augmentation (TensorBatchLoader(pad="
                    f"{expected_aug['pad']})), or {built} with pad {loader.pad}"
                )
        normalization, expected_norm = normalization or loader.normalization, meta["normalization"]
        if not _close(normalization["mean"], expected_norm["mean"]) or not _close(
            normalization["std"], expected_norm["std"]
        ):
            problems.append(
                f"normalisation: the cache's teacher saw images normalised with mean {expected_norm['mean']} and std "
                f"{expected_norm['std']}, the run feeds it mean {normalization['mean']} and std "
                f"{normalization['std']}: feed the teacher as the cache does, or {built} with caching.mean / "
                "caching.std of this run"
            )
        if problems:
            raise CacheMismatchError(
                f"the teacher cache {self.folder.name!r} does not match this run:\n  - " + "\n  - ".join(problems)
            )

    def _data_problems(self, loader: TensorBatchLoader, built: str) -> list[str]:
        data, expected = loader.data, self.metadata["data"]
        problems = []
        fingerprint = data.fingerprint or {}
        if expected.get("content_sha256") and fingerprint.get("content_sha256"):
            if fingerprint["content_sha256"] != expected["content_sha256"]:
                problems.append(
                    f"data: the cache was built on {expected.get('name')} / {expected.get('split')} (content sha256 "
                    f"{expected['content_sha256'][:16]}, {expected['num_rows']} rows), the run trains on "
                    f"{fingerprint.get('name')} / {fingerprint.get('split')} (content sha256 "
                    f"{fingerprint['content_sha256'][:16]}, {len(data)} rows): {built} on this split"
                )
        missing = ~torch.isin(data.sample_idx, self.sample_idx)
        if missing.any():
            examples = data.sample_idx[missing][:5].tolist()
            problems.append(
                f"samples: the cache lacks {int(missing.sum())} of the split's {len(data)} sample_idx (e.g. "
                f"{examples}): every training sample needs its rows; {built} on this split"
            )
        if not problems and pixels_sha256(data) != expected.get("pixels_sha256"):
            problems.append(
                "data: the split's decoded images, labels or sample_idx differ from those the cache was built on "
                f"(pixels sha256), although its name and indices agree: {built} on this split"
            )
        return problems

    # -- reading -------------------------------------------------------------------------------------------------
    def positions(self, sample_idx: Tensor) -> Tensor:
        """Row positions in the cache of `sample_idx` (on the cache's index device), refusing unknown ones."""
        keys = sample_idx.to(self._sorted_keys.device, torch.int64)
        if self._identity:
            if keys.numel() and (int(keys.min()) < 0 or int(keys.max()) >= len(self)):
                self._refuse_unknown(keys)
            return keys
        found = torch.searchsorted(self._sorted_keys, keys).clamp_(max=len(self) - 1)
        if not torch.equal(self._sorted_keys[found], keys):
            self._refuse_unknown(keys)
        return self._sorted_positions[found]

    def _refuse_unknown(self, keys: Tensor) -> None:
        unknown = keys[~torch.isin(keys, self._sorted_keys)][:5].tolist()
        raise CacheMismatchError(
            f"sample_idx {unknown} are not in the teacher cache {self.folder.name!r}: the batches come from another "
            "split than the cache's; check the run with cache.check_run(teacher, loader) before training"
        )

    def lookup(self, sample_idx: Tensor, view: Tensor) -> Tensor:
        """The cached teacher logits of rows (sample_idx, view), as float32 `[n, C]` on `sample_idx`'s device."""
        if sample_idx.shape != view.shape or sample_idx.ndim != 1:
            raise ValueError(
                f"sample_idx and view must be 1-d of one length, got {tuple(sample_idx.shape)} and {tuple(view.shape)}"
            )
        positions = self.positions(sample_idx)
        views = view.to(positions.device, torch.int64)
        if views.numel() and (int(views.min()) < 0 or int(views.max()) >= self.num_views):
            raise CacheMismatchError(
                f"view ids must lie in [0, {self.num_views}) for this cache (pad {self.pad}), got "
                f"[{int(views.min())}, {int(views.max())}]: the loader's padding differs from the cache's"
            )
        if self._table is not None:
            logits = self._table[positions, views]
        else:
            logits = torch.from_numpy(self._read_mapped(positions.numpy(), views.numpy()))
        return logits.to(device=sample_idx.device, dtype=torch.float32, non_blocking=True)

    def _read_mapped(self, positions: np.ndarray, views: np.ndarray) -> np.ndarray:
        shards, local = np.divmod(positions, self.shard_rows)
        out = np.empty((len(positions), self.num_classes), dtype=self._maps[0].dtype)
        for shard in np.unique(shards):
            rows = shards == shard
            out[rows] = self._maps[shard][local[rows], views[rows]]
        return out

    def center_head_inputs(self, shards: Sequence[int] | None = None) -> Iterator[dict[str, Tensor]]:
        """For each shard (all, or `shards`): the centre view's pooled features and logits (float32), labels and
        sample_idx, as stored by the build."""
        for j in range(len(self._headers)) if shards is None else shards:
            header = self._headers[j]
            yield {
                name: torch.from_numpy(np.array(header.memmap(name)))
                for name in ("center_features", "center_logits", "labels", "sample_idx")
            }

    def score_sets(
        self,
        scorers: str | Scorer | Sequence[str | Scorer] = DEFAULT_SCORER,
        *,
        accelerator: Accelerator | None = None,
        device: torch.device | str | None = None,
        **pass_options: Any,
    ) -> dict[str, ScoreSet]:
        """Data Selection's score sets from the stored centre-view head inputs: what `recipes/score.py` writes,
        with no teacher inference. Sharded over the Accelerator's processes (shard j on process j % P).

        Args:
            scorers: see `kd_zoo.selection.ScoringPass`.
            accelerator: the run's Accelerator (None: this process only).
            device: the device without an Accelerator (default CPU).
            pass_options: `ScoringPass`'s keyword arguments (fraction, memory_limit_bytes, spill_dir, batch_size).
        """
        comm = Comm(accelerator, device)
        split = SplitInfo(self.sample_idx, self.num_classes, _data_fingerprint(self.metadata["data"]))
        pass_options.setdefault("batch_size", self.metadata["compute"]["batch_size"])
        scoring = ScoringPass(scorers, split, self.teacher_info, comm=comm, **pass_options)
        mine = [j for j in range(len(self._headers)) if j % comm.num_processes == comm.process_index]
        try:
            for part in self.center_head_inputs(mine):
                part = {k: v.to(comm.device) for k, v in part.items()}
                scoring.observe(part["center_features"], part["center_logits"], part["labels"], part["sample_idx"])
        except BaseException:
            scoring.close()
            raise
        return scoring.finish()

    def score_set(self, scorer: str | Scorer = DEFAULT_SCORER, **options: Any) -> ScoreSet:
        """One scorer's score set (`score_sets`' keyword arguments apply)."""
        (result,) = self.score_sets([scorer], **options).values()
        return result


def _data_fingerprint(data: dict[str, Any]) -> dict[str, Any]:
    """The split's `dataset_fingerprint` as the build recorded it (without the cache's own pixel hash)."""
    return {k: v for k, v in data.items() if k != "pixels_sha256"}


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(
        abs(float(x) - float(y)) <= NORMALIZATION_TOLERANCE for x, y in zip(a, b, strict=True)
    )


def _read_manifest(folder: Path) -> dict[str, Any]:
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        if (folder / PLAN).is_file():
            plan = read_json(folder / PLAN)
            count = plan.get("layout", {}).get("num_shards", "?")
            present = len(list(folder.glob("shards/*.safetensors")))
            raise IncompleteCacheError(
                f"the teacher cache in {folder} is an unfinished build ({present} of {count} shards, no {MANIFEST}): "
                "run the same build again to resume it (python recipes/cache_teacher.py with the same arguments, or "
                "kd_zoo.teacher_cache.build_teacher_cache); it keeps the finished shards"
            )
        raise CacheFormatError(
            f"{folder} is not a teacher cache (no {MANIFEST}): build one with python recipes/cache_teacher.py "
            "run.output_dir=FOLDER, or pass the folder (or Hub id) of one"
        )
    manifest = read_json(manifest_path)
    if manifest.get("format") != FORMAT:
        raise CacheFormatError(
            f"{manifest_path} is not a {FORMAT} manifest (format {manifest.get('format')!r}); rebuild the cache with "
            "this kd_zoo version"
        )
    if not manifest.get("complete"):
        raise IncompleteCacheError(f"{manifest_path} does not mark a complete build: run the build again to finish it")
    return manifest


def _check_shards(folder: Path, manifest: dict[str, Any], verify: str) -> list[ShardHeader]:
    """Every shard the manifest lists: present, whole, of this build, with the expected shapes (and hashes)."""
    key = identity_key(manifest)
    views, classes = manifest["augmentation"]["num_views"], manifest["teacher"]["num_classes"]
    dtype = {"float16": "F16", "float32": "F32"}[manifest["dtype"]]
    headers, missing = [], []
    for j, entry in enumerate(manifest["shards"]):
        path = folder / entry["file"]
        if not path.is_file():
            missing.append(entry["file"])
            continue
        header = read_shard_header(path)
        start, end = entry["rows"]
        problem = None
        if header.metadata.get("identity_key") != key or header.metadata.get("shard") != j:
            problem = "belongs to another build"
        elif header.size != entry["bytes"]:
            problem = f"has {header.size:,} bytes, the manifest {entry['bytes']:,}"
        elif header.shape("logits") != (end - start, views, classes) or header.tensors["logits"]["dtype"] != dtype:
            problem = f"holds logits {header.shape('logits')} {header.tensors['logits']['dtype']}"
        elif verify == "sha256" and file_sha256(path) != entry["sha256"]:
            problem = "does not have the sha256 the manifest records (corrupt)"
        if problem:
            raise CacheFormatError(
                f"shard {entry['file']} of the teacher cache in {folder} {problem}: delete it and run the build again "
                "(it rewrites only that shard), or download the cache again"
            )
        headers.append(header)
    if missing:
        raise IncompleteCacheError(
            f"the teacher cache in {folder} lacks {len(missing)} of its {len(manifest['shards'])} shards (e.g. "
            f"{missing[:3]}): run the build again to rebuild them, or download the cache again"
        )
    return headers


def _logits_bytes(headers: list[ShardHeader]) -> int:
    return sum(h.tensors["logits"]["data_offsets"][1] - h.tensors["logits"]["data_offsets"][0] for h in headers)


def _choose_placement(
    placement: str, device: torch.device, dtype: torch.dtype, nbytes: int, max_device_bytes: int | None
) -> str:
    if placement == "mmap":
        return "mmap"
    budget = max_device_bytes if max_device_bytes is not None else memory_budget(device)
    reason = device_holds(dtype, device)
    if placement == "auto":
        if reason is None and budget is not None and nbytes <= budget:
            return "device"
        logger.info("teacher cache: reading %s of logits by memory map (placement auto)", f"{nbytes / 2**30:.2f} GiB")
        return "mmap"
    if reason is not None:
        rebuild = ", or rebuild it with caching.dtype=float32" if dtype != torch.float32 else ""
        raise CacheDeviceError(
            f"the cache holds {str(dtype).removeprefix('torch.')} logits, which {device} cannot hold ({reason}): "
            f"open it with placement='mmap' (rows are converted to float32 on the CPU){rebuild}"
        )
    if budget is not None and nbytes > budget:
        raise CacheDeviceError(
            f"the cache's logits take {nbytes / 2**30:.2f} GiB, more than the {budget / 2**30:.2f} GiB allowed on "
            f"{device}: open it with placement='mmap' (read from disk), or build it in float16 (half the size)"
        )
    return "device"


def _load_table(headers: list[ShardHeader], device: torch.device, dtype: torch.dtype) -> Tensor:
    """All logits `[N, V, C]` on `device`, filled shard by shard (host memory O(shard))."""
    rows = sum(h.shape("logits")[0] for h in headers)
    _, views, classes = headers[0].shape("logits")
    table = torch.empty((rows, views, classes), dtype=dtype, device=device)
    start = 0
    for header in headers:
        part = torch.from_numpy(np.array(header.memmap("logits")))
        table[start : start + part.shape[0]] = part.to(device)
        start += part.shape[0]
    return table
