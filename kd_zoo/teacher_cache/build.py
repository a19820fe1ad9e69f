"""Building a teacher-output cache: the frozen teacher on every view of every training sample, once.

`build_teacher_cache(teacher, train, folder)` runs the teacher in evaluation mode under `torch.inference_mode`, in
large batches (`batch_size` images of mixed samples and views, channels-last, autocast as `autocast` says), over the
`(2 pad + 1)^2 * 2` views of each sample (`kd_zoo.data.tensor_loader`: `view_images` makes each view exactly as a
training batch does). The split is cut into shards of `shard_rows` samples in row order; with an Accelerator, shard
j is built by process `j % P`, so a shard's bytes do not depend on the number of processes. Each shard is written in
a background thread while the next one is computed (`storage.write_shard`: atomic). Memory: one batch of images and
activations, and the shard being filled plus the one being written (64 MiB of logits each by default).

Resuming: a build first writes its plan (`build.json`); run the same call again after a kill and it keeps every
shard that is whole and of this build (same identity key), and builds the others. A folder holding another build
(other teacher weights, data, views, normalisation, dtype or layout) is refused unless `overwrite=True`. When every
shard is there, the main process writes the manifest (`cache.json`, with each shard's size and sha256): only then
does `TeacherCache.open` accept the folder.

The same pass keeps, for the centre view (the un-augmented image), the pooled pre-logit features and the logits of
the teacher's linear classifier: what `kd_zoo.selection.ScoringPass` needs, so `TeacherCache.score_sets` writes the
influence scores of `recipes/score.py` with no further teacher inference.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import math
import platform
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import timm
import torch
from accelerate import Accelerator
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data import TensorBatchLoader, TensorImageSet
from ..data.tensor_loader import center_view, num_views
from ..selection import Comm, TeacherInfo, classifier_layer
from ..version import __version__
from .errors import TeacherCacheError
from .storage import (
    DTYPES,
    FORMAT,
    MANIFEST,
    PLAN,
    SHARD_DIR,
    CacheFormatError,
    file_sha256,
    identity_key,
    read_json,
    read_shard_header,
    shard_file,
    write_json_atomic,
    write_shard,
)

DEFAULT_BATCH_SIZE = 1024  # images per forward pass and process on an accelerator: large, inference only
# On a CPU large batches are slower (measured, ResNet32x4 on 2 cores: 84 images/s at 64, 65 at 256, channels-last).
DEFAULT_CPU_BATCH_SIZE = 64
DEFAULT_DTYPE = "float16"  # CIFAR-100 x 162 views: 1.6 GB (float32: 3.2 GB)
DEFAULT_PAD = 4  # CIFAR's random crop: 9 x 9 offsets x 2 flips = 162 views
TARGET_SHARD_BYTES = 64 << 20  # logits per shard: the build's memory and the work a kill can lose
MIN_SHARDS = 64  # at most 1/64 of the work lost per kill, and shards to spread over the processes
MIN_SHARD_IMAGES = (
    8192  # a shard's last batch is partial: keep that a small part of it (measured: tiny shards cost 30 %)
)
AUTOCAST_MODES = ("auto", "no", "fp16", "bf16")
VIEW_ENCODING = (
    "view = (top * (2 * pad + 1) + left) * 2 + flip; (top, left) in [0, 2 * pad] is the crop's corner in the image "
    "zero-padded by pad pixels, flip = 1 mirrors the crop left-right; the centre view (top = left = pad, no flip) "
    "is the un-augmented image"
)


@dataclass(frozen=True)
class BuildReport:
    """What a `build_teacher_cache` call did (the same on every process).

    Attributes:
        folder: the cache folder.
        complete: every shard is built and the manifest is written.
        num_shards: shards of the whole cache.
        built: shards this call computed (all processes).
        reused: shards a previous call had already written.
        images: images this call ran through the teacher (all processes).
        seconds: wall time of this call.
    """

    folder: Path
    complete: bool
    num_shards: int
    built: int
    reused: int
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def pixels_sha256(data: TensorImageSet) -> str:
    """sha256 over the decoded uint8 images, labels and sample_idx: exactly what the teacher saw."""
    digest = hashlib.sha256(b"kd_zoo.TeacherCache pixels v1\n")
    for tensor in (data.images, data.labels, data.sample_idx):
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{array.dtype}|{array.shape}|".encode())
        digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return digest.hexdigest()


def default_shard_rows(num_rows: int, views: int, num_classes: int, dtype: str) -> int:
    """Samples per shard: `MIN_SHARDS` shards, but at least `MIN_SHARD_IMAGES` images and at most
    `TARGET_SHARD_BYTES` of logits per shard. Depends only on the data and the cache, never on the number of
    processes or the batch size (a resumed build may change both)."""
    row_bytes = views * num_classes * DTYPES[dtype].itemsize
    rows = max(math.ceil(num_rows / MIN_SHARDS), math.ceil(MIN_SHARD_IMAGES / views))
    return max(1, min(rows, TARGET_SHARD_BYTES // row_bytes))


def software_versions() -> dict[str, str]:
    return {
        "kd_zoo": __version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def resolve_autocast(autocast: str, device: torch.device, dtype: str, accelerator: Accelerator | None) -> str:
    """ "auto": the Accelerator's mixed precision when it has one; else fp16 on CUDA for a float16 cache (the values
    are stored in float16 anyway); else none (fp32, which the exactness tests rely on)."""
    if autocast not in AUTOCAST_MODES:
        raise ValueError(f"autocast must be one of {list(AUTOCAST_MODES)}, got {autocast!r}")
    if autocast != "auto":
        return autocast
    precision = getattr(accelerator, "mixed_precision", "no") if accelerator is not None else "no"
    if precision in ("fp16", "bf16"):
        return precision
    return "fp16" if device.type == "cuda" and dtype == "float16" else "no"


def cache_metadata(
    teacher: TeacherInfo,
    data: TensorImageSet,
    *,
    pad: int,
    mean: Sequence[float],
    std: Sequence[float],
    dtype: str,
    shard_rows: int,
    autocast: str,
    channels_last: bool,
    batch_size: int,
    num_processes: int,
    device: torch.device,
) -> dict[str, Any]:
    """The build plan: everything a cache records about what it holds and how it was built."""
    n = len(data)
    return {
        "format": FORMAT,
        "teacher": teacher.metadata(data.num_classes),
        "data": {**dict(data.fingerprint), "num_rows": n, "num_classes": data.num_classes, "pixels_sha256": None},
        "augmentation": {
            "size": list(data.image_size),
            "pad": pad,
            "flip": True,
            "num_views": num_views(pad),
            "center_view": center_view(pad),
            "view_encoding": VIEW_ENCODING,
        },
        "normalization": {"mean": [float(m) for m in mean], "std": [float(s) for s in std]},
        "dtype": dtype,
        "compute": {
            "autocast": autocast,
            "channels_last": channels_last,
            "batch_size": batch_size,
            "num_processes": num_processes,
            "device": device.type,
        },
        "layout": {"num_rows": n, "shard_rows": shard_rows, "num_shards": math.ceil(n / shard_rows)},
        "software": software_versions(),
        "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _folder_state(folder: Path, key: str) -> str:
    """ "empty", "same" (a partial build of this cache), "complete" (this cache, finished) or "other"."""
    if not folder.exists() or not any(p for p in folder.iterdir() if not p.name.startswith(".")):
        return "empty"
    plan = folder / PLAN
    if not plan.is_file():
        return "other"
    try:
        same = identity_key(read_json(plan)) == key
    except (CacheFormatError, KeyError, TypeError):
        return "other"
    if not same:
        return "other"
    manifest = folder / MANIFEST
    try:
        complete = manifest.is_file() and identity_key(read_json(manifest)) == key
    except (CacheFormatError, KeyError, TypeError):
        complete = False
    return "complete" if complete else "same"


def _prepare_folder(folder: Path, plan: dict[str, Any], state: str) -> None:
    """Main process: start or resume the build in `folder` (after `_folder_state` allowed it)."""
    folder.mkdir(parents=True, exist_ok=True)
    shards = folder / SHARD_DIR
    (folder / MANIFEST).unlink(missing_ok=True)  # written again when every shard is there
    if state == "other" and shards.is_dir():  # overwrite=True: drop the other build's shards, keep other files
        for stale in shards.glob("*.safetensors"):
            stale.unlink()
    for leftover in shards.glob(".*.tmp-*") if shards.is_dir() else ():  # half-written by a killed build
        leftover.unlink(missing_ok=True)
    write_json_atomic(folder / PLAN, plan)


def _whole_shard(folder: Path, key: str, index: int, rows: tuple[int, int], num_shards: int) -> bool:
    """Whether shard `index` in `folder` is whole and of this build (else it is built again)."""
    path = folder / shard_file(index, num_shards)
    if not path.is_file():
        return False
    try:
        header = read_shard_header(path)
    except CacheFormatError:
        return False
    meta = header.metadata
    return meta.get("identity_key") == key and meta.get("shard") == index and meta.get("rows") == list(rows)


def _accuracy_counts(center_logits: Tensor, labels: Tensor) -> tuple[int, int]:
    return int((center_logits.argmax(dim=1).cpu() == labels.cpu()).sum()), int(labels.shape[0])


class _ShardComputer:
    """Runs the teacher over every view of a range of samples (see the module docstring)."""

    def __init__(
        self,
        teacher: nn.Module,
        loader: TensorBatchLoader,
        *,
        dtype: torch.dtype,
        batch_size: int,
        channels_last: bool,
        autocast: Callable[[], contextlib.AbstractContextManager],
        progress: Callable[[int], Any],
    ):
        self.teacher, self.loader = teacher, loader
        self.classifier = teacher.get_classifier()
        self.views, self.center = num_views(loader.pad), center_view(loader.pad)
        self.dtype, self.batch_size, self.channels_last = dtype, batch_size, channels_last
        self.autocast, self.progress = autocast, progress
        self.checked = False

    def __call__(self, start: int, end: int) -> dict[str, Tensor]:
        device, views, center = self.loader.device, self.views, self.center
        m, total = end - start, (end - start) * views
        num_classes, num_features = self.classifier.out_features, self.classifier.in_features
        logits_out = torch.empty((total, num_classes), dtype=self.dtype, device=device)
        features_out = torch.empty((m, num_features), dtype=torch.float32, device=device)
        center_out = torch.empty((m, num_classes), dtype=torch.float32, device=device)
        for r0 in range(0, total, self.batch_size):
            r1 = min(r0 + self.batch_size, total)
            rows = torch.arange(r0, r1, device=device)
            images = self.loader.view_images(start + rows // views, rows % views)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            # The centre rows of this batch, by arithmetic (no host sync): row = i * views + center.
            first, last = max(0, -(-(r0 - center) // views)), (r1 - 1 - center) // views
            local = torch.arange(first, last + 1, device=device) * views + center - r0
            with self.autocast():
                features = self.teacher.forward_features(images)
                logits = self.teacher.forward_head(features)  # exactly what the live step computes
                pooled = self.teacher.forward_head(features, pre_logits=True).index_select(0, local)
                center_logits = self.classifier(pooled)  # what recipes/score.py computes
            if not self.checked:
                self._check_head(logits.index_select(0, local).float(), center_logits.float())
            logits_out[r0:r1] = logits
            features_out[first : last + 1] = pooled.float()
            center_out[first : last + 1] = center_logits.float()
            self.progress(r1 - r0)
        return {
            "logits": logits_out.view(m, views, num_classes),
            "center_features": features_out,
            "center_logits": center_out,
        }

    def _check_head(self, logits: Tensor, from_classifier: Tensor) -> None:
        if not logits.shape[0]:
            return
        tol = 1e-3 * max(1.0, float(logits.abs().max()))
        if not torch.allclose(logits, from_classifier, rtol=1e-3, atol=tol):
            raise TeacherCacheError(
                f"{type(self.teacher).__name__}: get_classifier()(forward_head(x, pre_logits=True)) does not reproduce "
                "forward_head(x), so the stored centre-view head inputs would not be the model's: the cache (and the "
                "influence scores from it) needs a model whose logits are its linear classifier of the pooled features"
            )
        self.checked = True


def build_teacher_cache(
    teacher: nn.Module,
    data: TensorImageSet,
    folder: str | Path,
    *,
    pad: int = DEFAULT_PAD,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    dtype: str = DEFAULT_DTYPE,
    batch_size: int | None = None,
    shard_rows: int | None = None,
    accelerator: Accelerator | None = None,
    device: torch.device | str | None = None,
    channels_last: bool = True,
    autocast: str = "auto",
    teacher_name: str | None = None,
    weights: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    stop_after_shards: int | None = None,
) -> BuildReport:
    """Cache the frozen teacher's logits for every view of every sample of `data` in `folder` (or resume that).

    Args:
        teacher: a timm-style model with a linear classifier (`get_classifier()`), trained on `data`'s classes.
            It is left in its mode and memory format.
        data: the training split, decoded (`load_tensor_split`).
        folder: where the cache goes (created; resumed when it holds a partial build of the same cache).
        pad: the random crop's zero padding of the training runs (4 for CIFAR).
        mean: normalisation mean (0-1 scale) of the training runs; default the teacher's `pretrained_cfg`.
        std: normalisation std; default the teacher's `pretrained_cfg`.
        dtype: "float16" (default; half the size) or "float32" (bit-for-bit what a float32 teacher computes, up
            to the order of float operations).
        batch_size: images per forward pass and process (default `DEFAULT_BATCH_SIZE` on an accelerator,
            `DEFAULT_CPU_BATCH_SIZE` on a CPU).
        shard_rows: samples per shard (default `default_shard_rows`).
        accelerator: shard the build over its processes (None: this process only).
        device: the device without an Accelerator (default CPU).
        channels_last: feed the teacher channels-last images.
        autocast: "auto" (see `resolve_autocast`), "no", "fp16" or "bf16"; recorded, and part of the identity.
        teacher_name: recorded (default: the timm architecture name).
        weights: where the weights came from, recorded (a path is reduced to its name when exported).
        overwrite: replace another build found in `folder`.
        progress: show a progress bar on the local main process.
        stop_after_shards: return after building so many shards in this process (time-boxed jobs; the build
            resumes on the next call).

    Returns:
        A `BuildReport`; `TeacherCache.open(folder)` reads the cache once `report.complete`.

    Raises:
        FileExistsError: `folder` holds something else than a build of this cache, and `overwrite` is False.
        TypeError / ValueError: the teacher has no linear classifier of `data`'s classes; bad arguments.
    """
    started = time.perf_counter()
    comm = Comm(accelerator, device)
    if accelerator is not None:
        teacher = accelerator.unwrap_model(teacher)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if batch_size is None:
        batch_size = DEFAULT_CPU_BATCH_SIZE if comm.device.type == "cpu" else DEFAULT_BATCH_SIZE
    if batch_size < 1 or pad < 0 or (shard_rows is not None and shard_rows < 1):
        raise ValueError(
            f"batch_size and shard_rows must be positive and pad >= 0; got {batch_size}, {shard_rows}, {pad}"
        )
    classifier_layer(teacher, data.num_classes)
    mean, std = _normalization(teacher, mean, std)
    autocast = resolve_autocast(autocast, comm.device, dtype, accelerator)
    views = num_views(pad)
    rows_per_shard = shard_rows or default_shard_rows(len(data), views, data.num_classes, dtype)
    info = TeacherInfo.of(teacher, teacher_name, weights)
    plan = cache_metadata(
        info,
        data,
        pad=pad,
        mean=mean,
        std=std,
        dtype=dtype,
        shard_rows=rows_per_shard,
        autocast=autocast,
        channels_last=channels_last,
        batch_size=batch_size,
        num_processes=comm.num_processes,
        device=comm.device,
    )
    plan["data"]["pixels_sha256"] = pixels_sha256(data)
    key = identity_key(plan)
    folder = Path(folder)
    num_shards = plan["layout"]["num_shards"]
    ranges = [(j * rows_per_shard, min((j + 1) * rows_per_shard, len(data))) for j in range(num_shards)]
    state = _folder_state(folder, key)
    if state == "complete" and all(_whole_shard(folder, key, j, r, num_shards) for j, r in enumerate(ranges)):
        return BuildReport(folder, True, num_shards, 0, num_shards, 0, time.perf_counter() - started)
    if state == "other" and not overwrite:
        raise FileExistsError(
            f"{folder} holds files that are not a partial build of this cache (another teacher, data, views, "
            "normalisation, dtype or layout, or other files): pass overwrite=True (recipes/cache_teacher.py: "
            "run.overwrite=true) to replace the other build, or choose another folder"
        )
    _barrier(accelerator)  # every process has looked at the folder before the main process changes it
    if comm.is_main:
        _prepare_folder(folder, plan, state)
    _barrier(accelerator)
    mine = [j for j in range(num_shards) if j % comm.num_processes == comm.process_index]
    reused = [j for j in mine if _whole_shard(folder, key, j, ranges[j], num_shards)]
    todo = [j for j in mine if j not in reused][:stop_after_shards]
    local_images = sum(ranges[j][1] - ranges[j][0] for j in todo) * views
    written = _build_shards(
        teacher, data, folder, plan, key, ranges, todo, comm, pad, mean, std, local_images, progress
    )
    for j in reused:  # their sizes, hashes and centre-view accuracy, for the manifest
        written[j] = _shard_summary(folder / shard_file(j, num_shards))
    parts = comm.gather_object({"shards": written, "built": len(todo), "reused": len(reused), "images": local_images})
    shards: dict[int, dict[str, Any]] = {j: s for part in parts for j, s in part["shards"].items()}
    complete = len(shards) == num_shards
    images = sum(part["images"] for part in parts)
    if complete and comm.is_main:
        _write_manifest(folder, plan, shards, ranges, time.perf_counter() - started, images)
    _barrier(accelerator)
    return BuildReport(
        folder=folder,
        complete=complete,
        num_shards=num_shards,
        built=sum(part["built"] for part in parts),
        reused=sum(part["reused"] for part in parts),
        images=images,
        seconds=time.perf_counter() - started,
    )


def _shard_summary(path: Path) -> dict[str, Any]:
    """A written shard's size, sha256 and the teacher's centre-view accuracy counts."""
    header = read_shard_header(path)
    center = torch.from_numpy(np.array(header.memmap("center_logits")))
    correct, count = _accuracy_counts(center, torch.from_numpy(np.array(header.memmap("labels"))))
    return {"bytes": header.size, "sha256": file_sha256(path), "correct": correct, "count": count}


def _build_shards(
    teacher: nn.Module,
    data: TensorImageSet,
    folder: Path,
    plan: dict[str, Any],
    key: str,
    ranges: list[tuple[int, int]],
    todo: list[int],
    comm: Comm,
    pad: int,
    mean: Sequence[float],
    std: Sequence[float],
    local_images: int,
    progress: bool,
) -> dict[int, dict[str, Any]]:
    """Compute and write this process's missing shards; returns each one's size, sha256 and accuracy counts."""
    if not todo:
        return {}
    device = comm.device
    autocast = plan["compute"]["autocast"]
    amp = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(autocast)

    def autocast_context() -> contextlib.AbstractContextManager:
        return torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()

    loader = TensorBatchLoader(data, 1, train=False, mean=tuple(mean), std=tuple(std), device=device, pad=pad)
    was_training = teacher.training
    channels_last = plan["compute"]["channels_last"]
    convert = channels_last and not _is_channels_last(teacher)  # and back afterwards
    bar = tqdm(
        total=local_images,
        desc="teacher cache",
        unit="img",
        disable=not (progress and _is_local_main(comm)),
        smoothing=0.05,
    )
    compute = _ShardComputer(
        teacher.to(device).eval(),
        loader,
        dtype=DTYPES[plan["dtype"]],
        batch_size=plan["compute"]["batch_size"],
        channels_last=channels_last,
        autocast=autocast_context,
        progress=bar.update,
    )
    if convert:
        teacher.to(memory_format=torch.channels_last)
    num_shards = len(ranges)
    results: dict[int, dict[str, Any]] = {}
    pending: tuple[int, Future, tuple[int, int]] | None = None
    try:
        with ThreadPoolExecutor(max_workers=1) as writer, torch.inference_mode():
            for j in todo:
                start, end = ranges[j]
                tensors = compute(start, end)
                tensors = {k: v.cpu() for k, v in tensors.items()}  # the device buffers are free for the next shard
                _check_finite(tensors, plan["dtype"], j)
                tensors["sample_idx"] = data.sample_idx[start:end].clone()
                tensors["labels"] = data.labels[start:end].clone()
                counts = _accuracy_counts(tensors["center_logits"], tensors["labels"])
                meta = {"format": plan["format"], "identity_key": key, "shard": j, "rows": [start, end]}
                if pending is not None:
                    _collect(results, pending)
                pending = (j, writer.submit(write_shard, folder / shard_file(j, num_shards), tensors, meta), counts)
            if pending is not None:
                _collect(results, pending)
    finally:
        bar.close()
        teacher.train(was_training)
        if convert:
            teacher.to(memory_format=torch.contiguous_format)
    return results


def _check_finite(tensors: dict[str, Tensor], dtype: str, index: int) -> None:
    """Refuse to store what is not a number: a broken teacher, or logits beyond float16's range (65504)."""
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        fix = " or logits beyond float16's range: build with dtype float32" if dtype == "float16" else ""
        raise TeacherCacheError(
            f"shard {index}: the teacher's {', '.join(bad)} hold NaN or infinite values (a broken teacher{fix}); "
            "nothing was written for this shard"
        )


def _collect(results: dict[int, dict[str, Any]], pending: tuple[int, Future, tuple[int, int]]) -> None:
    j, future, (correct, count) = pending
    size, sha = future.result()
    results[j] = {"bytes": size, "sha256": sha, "correct": correct, "count": count}


def _write_manifest(
    folder: Path,
    plan: dict[str, Any],
    shards: dict[int, dict[str, Any]],
    ranges: list[tuple[int, int]],
    seconds: float,
    images: int,
) -> None:
    num_shards = len(ranges)
    entries = [
        {"file": shard_file(j, num_shards), "rows": list(ranges[j]), **{k: shards[j][k] for k in ("bytes", "sha256")}}
        for j in range(num_shards)
    ]
    correct = sum(s["correct"] for s in shards.values())
    count = sum(s["count"] for s in shards.values())
    manifest = {
        **plan,
        "complete": True,
        "shards": entries,
        "total_bytes": sum(e["bytes"] for e in entries),
        "teacher_accuracy": correct / count,  # on the centre views of the split
        "build": {
            "finished_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "last_call_seconds": round(seconds, 3),
            "last_call_images": images,
        },
    }
    write_json_atomic(folder / MANIFEST, manifest)


def _normalization(
    teacher: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg = getattr(teacher, "pretrained_cfg", None) or {}
    if mean is None or std is None:
        if "mean" not in cfg or "std" not in cfg:
            raise ValueError(
                f"{type(teacher).__name__} has no pretrained_cfg mean / std: pass the normalisation of the training "
                "runs"
            )
    mean = tuple(float(m) for m in (cfg["mean"] if mean is None else mean))
    std = tuple(float(s) for s in (cfg["std"] if std is None else std))
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"mean and std need 3 values (std > 0), got mean={mean}, std={std}")
    return mean, std


def _is_channels_last(model: nn.Module) -> bool:
    convs = [p for p in model.parameters() if p.dim() == 4]
    return bool(convs) and convs[0].is_contiguous(memory_format=torch.channels_last) and not convs[0].is_contiguous()


def _barrier(accelerator: Accelerator | None) -> None:
    if accelerator is not None and accelerator.num_processes > 1:
        accelerator.wait_for_everyone()


def _is_local_main(comm: Comm) -> bool:
    accelerator = comm.accelerator
    return accelerator is None or accelerator.is_local_main_process
