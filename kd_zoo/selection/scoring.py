"""Scoring a training split: one pass of the frozen teacher, then every requested scorer, sharded with Accelerate.

The pass (eval mode, no augmentation, no gradients) collects for each sample what the classifier layer sees: the
pooled pre-logit features `forward_head(forward_features(x), pre_logits=True)` and the log-softmax of
`get_classifier()` applied to them, plus the label and `sample_idx`. Scorers accumulate their statistics on each
batch (`observe`), and the batch goes to a `HeadStore` (memory, or disk chunks past `memory_limit_bytes`; see
`store.py` for the cost: 4 (d + C) + 16 bytes a sample). After the pass the statistics are summed across
processes in float64, the eigendecompositions (or the Cholesky factor) are computed on the main process and
broadcast, and each process scores its stored samples; the (sample_idx, score, prediction, correctness, label)
rows are gathered and placed by `sample_idx`, each index exactly once.

Sharding: each process scores the contiguous, unpadded shard `[p N / P, (p + 1) N / P)` of
`TensorBatchLoader(train=False)`. Do not use a DataLoader prepared by Accelerate here: it pads the last batches
by repeating samples, which would count them twice in the statistics (`score_batches` refuses a loader whose
gathered indices are not exactly the split's). One process and two give the same scores to float tolerance and
the same selection (tests/test_selection.py runs both).

Cost: the teacher's forward pass, plus O(N C (d + 1)) for the EK-FAC statistics and scores (and O(N (C (d+1))^2)
for `influence_exact`); the measured ratios are in benchmarks/results/selection_speed.md.
"""

from __future__ import annotations

import contextlib
import datetime
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..constants import CIFAR100_MEAN, CIFAR100_STD
from ..data.tensor import TensorBatchLoader, TensorImageSet
from .comm import Comm
from .scorers import DEFAULT_SCORER, Scorer, ScoringContext, make_scorer
from .scoreset import FORMAT, ScoreSet
from .selector import DEFAULT_FRACTION, mistakes_report
from .store import DEFAULT_MEMORY_LIMIT_BYTES, HeadChunk, HeadStore

DEFAULT_BATCH_SIZE = 256


def classifier_layer(teacher: nn.Module, num_classes: int | None = None) -> nn.Linear:
    """The teacher's last linear layer (`get_classifier()`), checked to be an `nn.Linear` with `num_classes` outputs.

    Raises:
        TypeError: not a timm-style model, or its classifier is not an `nn.Linear`.
        ValueError: the classifier has another number of outputs than the data has classes.
    """
    if not all(hasattr(teacher, a) for a in ("forward_features", "forward_head", "get_classifier")):
        raise TypeError(
            f"{type(teacher).__name__} is not a timm-style model: scoring needs forward_features, "
            "forward_head(x, pre_logits=True) and get_classifier() (every kd_zoo and timm model has them)"
        )
    classifier = teacher.get_classifier()
    if not isinstance(classifier, nn.Linear):
        raise TypeError(
            f"the teacher's classifier (get_classifier()) is a {type(classifier).__name__}, not an nn.Linear: the "
            "closed-form influence needs a linear last layer (a timm model created with num_classes=0 has none; "
            "create the teacher with its classifier)"
        )
    if num_classes is not None and classifier.out_features != num_classes:
        raise ValueError(
            f"the teacher's classifier has {classifier.out_features} outputs but the data has {num_classes} classes: "
            "load the teacher trained on this data (e.g. num_classes matching the split)"
        )
    return classifier


def _resolve_scorers(scorer: str | Scorer | Sequence[str | Scorer]) -> list[Scorer]:
    items = [scorer] if isinstance(scorer, str | Scorer) else list(scorer)
    if not items:
        raise ValueError("no scorer given; pass e.g. scorer='influence'")
    scorers = [make_scorer(s) if isinstance(s, str) else s for s in items]
    names = [s.name for s in scorers]
    if len(set(names)) != len(names):
        raise ValueError(f"each scorer may appear once per pass, got {names}")
    return scorers


def _check_head(teacher: nn.Module, images: Tensor, logits: Tensor) -> None:
    """The classifier applied to forward_head(pre_logits=True) must give the model's own logits."""
    full = teacher(images).float()
    tol = 1e-3 * max(1.0, float(full.abs().max()))
    if full.shape != logits.shape or not torch.allclose(full, logits, rtol=1e-3, atol=tol):
        raise ValueError(
            f"{type(teacher).__name__}: get_classifier()(forward_head(forward_features(x), pre_logits=True)) does "
            "not reproduce teacher(x), so the classifier layer is not the model's last operation; the closed-form "
            "influence applies only to models whose logits are that linear layer of the pre-logit features"
        )


def score_dataset(
    teacher: nn.Module,
    data: TensorImageSet,
    scorer: str | Scorer | Sequence[str | Scorer] = DEFAULT_SCORER,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    accelerator: Any | None = None,
    device: torch.device | str | None = None,
    mean: Sequence[float] = CIFAR100_MEAN,
    std: Sequence[float] = CIFAR100_STD,
    teacher_name: str | None = None,
    weights: str | None = None,
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES,
    spill_dir: str | None = None,
    fraction: float = DEFAULT_FRACTION,
) -> ScoreSet | dict[str, ScoreSet]:
    """Score every sample of a decoded split with one pass of the frozen teacher (see the module docstring).

    Args:
        teacher: a timm-style model whose `get_classifier()` is an `nn.Linear` (moved to the device; its train /
            eval mode is restored afterwards).
        data: the un-augmented training split.
        scorer: a name in `SCORERS` (default 'influence'), a `Scorer` (for options: `make_scorer(name, ...)`), or a
            list of them, all computed from the same pass.
        batch_size: images per process and batch.
        accelerator: an `accelerate.Accelerator` to shard over its processes (None: this process only).
        device: the device without an Accelerator (default CPU).
        mean: normalisation mean of the teacher's inputs (0-1 scale; CIFAR-100's by default).
        std: normalisation std.
        teacher_name: recorded in the metadata (default: the timm architecture name).
        weights: where the weights came from, recorded in the metadata.
        memory_limit_bytes: keep the head inputs in memory up to this size, then spill to disk chunks.
        spill_dir: where the disk chunks go (default: the system temporary folder).
        fraction: the distilled fraction for the mistakes report in the metadata.

    Returns:
        A `ScoreSet` in the split's row order (a dict name -> `ScoreSet` for a list of scorers), on every process.
    """
    comm = Comm(accelerator, device)
    loader = TensorBatchLoader(
        data,
        batch_size * comm.num_processes,
        train=False,
        mean=tuple(mean),
        std=tuple(std),
        device=comm.device,
        process_index=comm.process_index,
        num_processes=comm.num_processes,
    )
    return score_batches(
        teacher,
        loader,
        sample_idx=data.sample_idx,
        num_classes=data.num_classes,
        data_fingerprint=data.fingerprint,
        scorer=scorer,
        comm=comm,
        teacher_name=teacher_name,
        weights=weights,
        memory_limit_bytes=memory_limit_bytes,
        spill_dir=spill_dir,
        fraction=fraction,
        batch_size=batch_size * comm.num_processes,
    )


def score_batches(
    teacher: nn.Module,
    batches: Iterable[dict[str, Tensor]],
    *,
    sample_idx: Tensor,
    num_classes: int,
    data_fingerprint: dict[str, Any],
    scorer: str | Scorer | Sequence[str | Scorer] = DEFAULT_SCORER,
    comm: Comm | None = None,
    accelerator: Any | None = None,
    device: torch.device | str | None = None,
    teacher_name: str | None = None,
    weights: str | None = None,
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES,
    spill_dir: str | None = None,
    fraction: float = DEFAULT_FRACTION,
    batch_size: int | None = None,
) -> ScoreSet | dict[str, ScoreSet]:
    """`score_dataset` for any loader: `batches` yields this process's unpadded shard as
    `{"image", "label", "sample_idx"}` batches, normalised, on the device (e.g. `make_image_dataloader` with a
    contiguous shard for ImageNet-size images).

    Args:
        teacher: see `score_dataset`.
        batches: this process's batches; together the processes must visit each sample of `sample_idx` once.
        sample_idx: int64 `[N]` every sample's index, in the split's row order (the order of the result).
        num_classes: the number of classes of the data.
        data_fingerprint: the split's `dataset_fingerprint`, stored with the scores.
        scorer: see `score_dataset`.
        comm: the collectives (default: from `accelerator` / `device`).
        accelerator: see `score_dataset`.
        device: see `score_dataset`.
        teacher_name: see `score_dataset`.
        weights: see `score_dataset`.
        memory_limit_bytes: see `score_dataset`.
        spill_dir: see `score_dataset`.
        fraction: see `score_dataset`.
        batch_size: the global batch size, for the metadata.

    Raises:
        RuntimeError: the processes did not visit every sample exactly once (a padded or dropping loader).
    """
    from .. import __version__
    from ..checkpoints import weights_fingerprint

    comm = comm or Comm(accelerator, device)
    scorers = _resolve_scorers(scorer)
    if accelerator is not None or comm.accelerator is not None:
        teacher = (accelerator or comm.accelerator).unwrap_model(teacher)
    classifier = classifier_layer(teacher, num_classes)
    all_idx = torch.as_tensor(sample_idx, dtype=torch.int64).cpu()
    if len(torch.unique(all_idx)) != len(all_idx):
        raise ValueError("sample_idx has duplicates: every sample needs its own index")

    teacher_fp = weights_fingerprint(teacher)
    was_training = teacher.training
    teacher.to(comm.device).eval()

    def autocast() -> contextlib.AbstractContextManager:
        return comm.accelerator.autocast() if comm.accelerator is not None else contextlib.nullcontext()

    store = HeadStore(memory_limit_bytes=memory_limit_bytes, spill_dir=spill_dir)
    ctx = ScoringContext(
        num_classes=num_classes,
        num_features=classifier.in_features,
        sample_idx=all_idx,
        comm=comm,
        chunks=lambda: store.chunks(comm.device),
    )
    started = time.perf_counter()
    try:
        for s in scorers:
            s.begin(ctx)
        checked = False
        with torch.no_grad():
            for batch in batches:
                images = batch["image"]
                if images.shape[0] == 0:
                    continue
                with autocast():
                    features = teacher.forward_head(teacher.forward_features(images), pre_logits=True)
                    logits = classifier(features)
                features, logits = features.float(), logits.float()
                if not checked:
                    with autocast():
                        _check_head(teacher, images[:4], logits[:4])
                    checked = True
                chunk = HeadChunk(features, F.log_softmax(logits, dim=1), batch["label"], batch["sample_idx"])
                for s in scorers:
                    s.observe(chunk)
                store.append(chunk)
            store.finish()
            pass_seconds = time.perf_counter() - started
            for s in scorers:
                s.fit()
            parts: dict[str, list[np.ndarray]] = {k: [] for k in ("sample_idx", "pred", "label")}
            parts.update({s.name: [] for s in scorers})
            for chunk in store.chunks(comm.device):
                parts["sample_idx"].append(chunk.sample_idx.cpu().numpy())
                parts["pred"].append(chunk.prediction.cpu().numpy())
                parts["label"].append(chunk.labels.cpu().numpy())
                for s in scorers:
                    parts[s.name].append(s.score(chunk).cpu().numpy())
        # the store's footprint, summed over processes with the rows below
        parts["store_bytes"] = [np.array([store.bytes_total], dtype=np.int64)]
        parts["store_spilled"] = [np.array([store.spilled], dtype=bool)]
        parts["store_peak"] = [np.array([store.peak_memory_bytes], dtype=np.int64)]
    finally:
        store.close()
        teacher.train(was_training)
    local = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    del parts
    gathered = comm.gather_object(local)
    merged = {k: np.concatenate([g[k] for g in gathered]) for k in local}
    del local, gathered
    store_info = {
        "spilled_to_disk": bool(merged.pop("store_spilled").any()),
        "bytes": int(merged.pop("store_bytes").sum()),
        "peak_memory_bytes": int(merged.pop("store_peak").max()),  # of one process
    }
    pos = _placement(merged["sample_idx"].astype(np.int64), all_idx.numpy())
    scoring_seconds = time.perf_counter() - started - pass_seconds

    labels = merged["label"][pos].astype(np.int64)
    pred = merged["pred"][pos].astype(np.int64)
    correct = pred == labels
    base = {
        "format": FORMAT,
        "teacher": {
            "name": teacher_name
            or (getattr(teacher, "pretrained_cfg", None) or {}).get("architecture")
            or type(teacher).__name__,
            "weights": None if weights is None else str(weights),
            "weights_fingerprint": teacher_fp,
            "num_classes": num_classes,
            "num_features": classifier.in_features,
            "accuracy": float(correct.mean()),
        },
        "data_fingerprint": dict(data_fingerprint),
        "kd_zoo_version": __version__,
        "num_rows": int(len(all_idx)),
        "num_processes": comm.num_processes,
        "batch_size": batch_size,
        "head_inputs": store_info,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": {"teacher_pass": round(pass_seconds, 3), "scoring": round(scoring_seconds, 3)},
    }
    results = {}
    for s in scorers:
        scores = merged[s.name][pos].astype(np.float64)
        metadata = base | {
            "scorer": s.name,
            "settings": s.settings(),
            "teacher_mistakes": mistakes_report(scores, all_idx.numpy(), correct, fraction),
        }
        results[s.name] = ScoreSet.from_arrays(all_idx, scores, pred, correct, labels, metadata)
    return results[scorers[0].name] if isinstance(scorer, str | Scorer) else results


def _placement(gathered_idx: np.ndarray, split_idx: np.ndarray) -> np.ndarray:
    """Positions in `gathered_idx` of each of `split_idx`, after checking each index was scored exactly once."""
    unique, counts = np.unique(gathered_idx, return_counts=True)
    twice = unique[counts > 1]
    missing = np.setdiff1d(split_idx, gathered_idx)
    foreign = np.setdiff1d(gathered_idx, split_idx)
    if len(twice) or len(missing) or len(foreign):
        raise RuntimeError(
            f"the processes scored {len(gathered_idx)} rows for {len(split_idx)} samples: {len(twice)} indices twice "
            f"(e.g. {twice[:5].tolist()}), {len(missing)} never (e.g. {missing[:5].tolist()}), {len(foreign)} not in "
            "the split. The loader must give each process an unpadded shard (TensorBatchLoader(train=False, "
            "process_index=p, num_processes=P)); a DataLoader prepared by Accelerate pads by repeating samples"
        )
    order = np.argsort(gathered_idx, kind="stable")
    return order[np.searchsorted(gathered_idx[order], split_idx)]


def score_head_inputs(
    features: Tensor,
    log_probs: Tensor,
    labels: Tensor,
    sample_idx: Tensor | None = None,
    scorer: str | Scorer = DEFAULT_SCORER,
) -> Tensor:
    """Scores from precomputed classifier-layer inputs, in one process (no teacher, no metadata).

    Args:
        features: `[N, d]` pooled pre-logit features.
        log_probs: `[N, C]` the teacher's log-softmax.
        labels: int64 `[N]`.
        sample_idx: int64 `[N]` (default 0..N-1).
        scorer: a name in `SCORERS` or a `Scorer`.

    Returns:
        float64 `[N]` scores in the input order.
    """
    (s,) = _resolve_scorers(scorer)
    n = features.shape[0]
    idx = torch.arange(n) if sample_idx is None else torch.as_tensor(sample_idx, dtype=torch.int64)
    chunk = HeadChunk(features.float().cpu(), log_probs.float().cpu(), labels.long().cpu(), idx.cpu())
    comm = Comm()
    ctx = ScoringContext(log_probs.shape[1], features.shape[1], idx.cpu(), comm, chunks=lambda: iter([chunk]))
    s.begin(ctx)
    s.observe(chunk)
    s.fit()
    return s.score(chunk)
