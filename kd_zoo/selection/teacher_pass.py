"""Scoring a training split: one pass of the frozen teacher, then every requested scorer, sharded with Accelerate.

The pass (eval mode, no augmentation, no gradients) collects for each sample what the classifier layer sees: the
pooled pre-logit features `forward_head(forward_features(x), pre_logits=True)` and the log-softmax of
`get_classifier()` applied to them, plus the label and `sample_idx`. A `ScoringPass` takes them batch by batch:
scorers accumulate their statistics (`observe`), and the batch goes to a `HeadStore` (memory, or disk chunks past
`memory_limit_bytes`; see `head_inputs.py` for the cost: 4 (d + C) + 16 bytes a sample). After the pass the
statistics are summed across processes in float64, the eigendecompositions (or the Cholesky factor) are computed
on the main process and broadcast, and each process scores its stored samples; the (sample_idx, score, prediction,
correctness, label) rows are gathered and placed by `sample_idx`, each index exactly once.

`score_dataset` runs the teacher over a decoded split; `score_batches` over any loader of this process's shard;
anything else that runs the frozen teacher over the un-augmented split can feed a `ScoringPass` itself.

Whole-model scorers (`Scorer.needs_model`: `influence_full`, which differentiates through every layer) need more
than the classifier-layer inputs: after the pass, `ScoringPass.fit_model_scorers(teacher, batches)` hands them the
frozen teacher and this process's loader (`score_batches` calls it; `finish` refuses to run without it). They then
score the same shard, so their scores go through the same gathering, placement and metadata.

Sharding: each process scores the contiguous, unpadded shard `[p N / P, (p + 1) N / P)` of
`TensorBatchLoader(train=False)`. Do not use a DataLoader prepared by Accelerate here: it pads the last batches
by repeating samples, which would count them twice in the statistics (`ScoringPass.finish` refuses results whose
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
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import Tensor, nn

from ..data import TensorBatchLoader, TensorImageSet
from ..loading import weights_fingerprint
from ..version import __version__
from .comm import Comm
from .head_inputs import DEFAULT_MEMORY_LIMIT_BYTES, HeadChunk, HeadStore
from .score_set import FORMAT, ScoreSet
from .scorers import DEFAULT_SCORER, Scorer, ScoringContext, make_scorer
from .strategies import DEFAULT_FRACTION, mistakes_report

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


@dataclass(frozen=True)
class SplitInfo:
    """The split being scored: every sample's index in the split's row order (the order of the results), its
    number of classes and its `dataset_fingerprint`."""

    sample_idx: Tensor
    num_classes: int
    fingerprint: dict[str, Any]

    @classmethod
    def of(cls, data: TensorImageSet) -> SplitInfo:
        return cls(data.sample_idx, data.num_classes, data.fingerprint)


@dataclass(frozen=True)
class TeacherInfo:
    """The teacher, as the score set's metadata records it."""

    name: str
    weights: str | None
    weights_fingerprint: str
    num_features: int

    @classmethod
    def of(cls, teacher: nn.Module, name: str | None = None, weights: str | None = None) -> TeacherInfo:
        architecture = (getattr(teacher, "pretrained_cfg", None) or {}).get("architecture")
        return cls(
            name=name or architecture or type(teacher).__name__,
            weights=None if weights is None else str(weights),
            weights_fingerprint=weights_fingerprint(teacher),
            num_features=classifier_layer(teacher).in_features,
        )

    def metadata(self, num_classes: int) -> dict[str, Any]:
        """The `teacher` entry of a score set's (and a teacher cache's) metadata."""
        return {
            "name": self.name,
            "weights": self.weights,
            "weights_fingerprint": self.weights_fingerprint,
            "num_classes": num_classes,
            "num_features": self.num_features,
        }


def resolve_scorers(scorers: str | Scorer | Sequence[str | Scorer]) -> list[Scorer]:
    """Scorer objects from names or objects, each name at most once."""
    items = [scorers] if isinstance(scorers, str | Scorer) else list(scorers)
    if not items:
        raise ValueError("no scorer given; pass e.g. scorer='influence'")
    resolved = [make_scorer(s) if isinstance(s, str) else s for s in items]
    names = [s.name for s in resolved]
    if len(set(names)) != len(names):
        raise ValueError(f"each scorer may appear once per pass, got {names}")
    return resolved


class ScoringPass:
    """Scores every sample of a split from what the teacher's classifier layer sees, fed batch by batch.

    Every process calls `observe` with the batches of its unpadded shard, then `finish` (a collective call), which
    returns the same score sets on every process.

    Args:
        scorers: names in `SCORERS`, or `Scorer` objects, each at most once.
        split: the split being scored (`SplitInfo.of(data)`).
        teacher: the teacher's identity (`TeacherInfo.of(teacher, ...)`).
        comm: the run's collectives (default: this process alone, on the CPU).
        fraction: the distilled share for the mistakes report in the metadata.
        memory_limit_bytes: keep the head inputs in memory up to this size, then spill to disk chunks.
        spill_dir: where the disk chunks go (default: the system temporary folder).
        batch_size: the global batch size, recorded in the metadata.
    """

    def __init__(
        self,
        scorers: str | Scorer | Sequence[str | Scorer],
        split: SplitInfo,
        teacher: TeacherInfo,
        *,
        comm: Comm | None = None,
        fraction: float = DEFAULT_FRACTION,
        memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES,
        spill_dir: str | None = None,
        batch_size: int | None = None,
    ):
        self.scorers = resolve_scorers(scorers)
        self.split, self.teacher, self.comm = split, teacher, comm or Comm()
        self.fraction, self.batch_size = fraction, batch_size
        self.sample_idx = torch.as_tensor(split.sample_idx, dtype=torch.int64).cpu()
        if len(torch.unique(self.sample_idx)) != len(self.sample_idx):
            raise ValueError("sample_idx has duplicates: every sample needs its own index")
        self.store = HeadStore(memory_limit_bytes=memory_limit_bytes, spill_dir=spill_dir)
        context = ScoringContext(
            num_classes=split.num_classes,
            num_features=teacher.num_features,
            sample_idx=self.sample_idx,
            comm=self.comm,
            chunks=lambda: self.store.chunks(self.comm.device),
        )
        for scorer in self.scorers:
            scorer.begin(context)
        self.model_scorers = [s for s in self.scorers if s.needs_model]
        self._models_fitted = not self.model_scorers
        self._pass_seconds: float | None = None
        self.started = time.perf_counter()

    def observe(self, features: Tensor, logits: Tensor, labels: Tensor, sample_idx: Tensor) -> None:
        """Add a batch: pooled pre-logit features `[n, d]`, logits `[n, C]`, labels and `sample_idx` `[n]`."""
        chunk = HeadChunk(features.float(), F.log_softmax(logits.float(), dim=1), labels, sample_idx)
        for scorer in self.scorers:
            scorer.observe(chunk)
        self.store.append(chunk)

    def fit_model_scorers(self, teacher: nn.Module, batches: Iterable[dict[str, Tensor]]) -> None:
        """Hand the whole-model scorers (`Scorer.needs_model`, e.g. `influence_full`) the frozen teacher and this
        process's batches again, after the pass and before `finish`: the one place a scorer gets the model. Every
        process calls it (the scorers' statistics are collective); a no-op when no scorer needs the model."""
        if self._pass_seconds is None:
            self._pass_seconds = time.perf_counter() - self.started
        for scorer in self.model_scorers:
            scorer.fit_model(teacher, batches)
        self._models_fitted = True

    def finish(self) -> dict[str, ScoreSet]:
        """Fit the scorers, score every stored sample, gather across processes: scorer name -> `ScoreSet`."""
        try:
            if not self._models_fitted:
                raise RuntimeError(
                    f"scorer(s) {[s.name for s in self.model_scorers]} need the teacher and the loader: score with "
                    "score_batches / score_dataset, or call fit_model_scorers(teacher, batches) before finish()"
                )
            self.store.finish()
            pass_seconds = self._pass_seconds if self._pass_seconds is not None else time.perf_counter() - self.started
            for scorer in self.scorers:
                scorer.fit()
            local = self._local_rows()
        finally:
            self.store.close()
        gathered = self.comm.gather_object(local)
        merged = {k: np.concatenate([g[k] for g in gathered]) for k in local}
        store_info = {
            "spilled_to_disk": bool(merged.pop("store_spilled").any()),
            "bytes": int(merged.pop("store_bytes").sum()),
            "peak_memory_bytes": int(merged.pop("store_peak").max()),  # of one process
        }
        all_idx = self.sample_idx.numpy()
        pos = placement(merged["sample_idx"].astype(np.int64), all_idx)
        seconds = {"teacher_pass": round(pass_seconds, 3)}
        seconds["scoring"] = round(time.perf_counter() - self.started - pass_seconds, 3)
        labels = merged["label"][pos].astype(np.int64)
        pred = merged["pred"][pos].astype(np.int64)
        correct = pred == labels
        base = self._metadata(float(correct.mean()), store_info, seconds)
        results = {}
        for scorer in self.scorers:
            scores = merged[scorer.name][pos].astype(np.float64)
            metadata = base | {
                "scorer": scorer.name,
                "settings": scorer.settings(),
                "teacher_mistakes": mistakes_report(scores, all_idx, correct, self.fraction),
            }
            results[scorer.name] = ScoreSet.from_arrays(all_idx, scores, pred, correct, labels, metadata)
        return results

    def close(self) -> None:
        """Free the stored head inputs (after an error; `finish` does it itself)."""
        self.store.close()

    def _local_rows(self) -> dict[str, np.ndarray]:
        """This process's rows (index, prediction, label, one score per scorer) and the store's footprint."""
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("sample_idx", "pred", "label")}
        parts.update({s.name: [] for s in self.scorers})
        for chunk in self.store.chunks(self.comm.device):
            parts["sample_idx"].append(chunk.sample_idx.cpu().numpy())
            parts["pred"].append(chunk.prediction.cpu().numpy())
            parts["label"].append(chunk.labels.cpu().numpy())
            for scorer in self.scorers:
                parts[scorer.name].append(scorer.score(chunk).cpu().numpy())
        local = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
        local["store_bytes"] = np.array([self.store.bytes_total], dtype=np.int64)
        local["store_spilled"] = np.array([self.store.spilled], dtype=bool)
        local["store_peak"] = np.array([self.store.peak_memory_bytes], dtype=np.int64)
        return local

    def _metadata(self, accuracy: float, store_info: dict[str, Any], seconds: dict[str, float]) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "teacher": {**self.teacher.metadata(self.split.num_classes), "accuracy": accuracy},
            "data_fingerprint": dict(self.split.fingerprint),
            "kd_zoo_version": __version__,
            "num_rows": int(len(self.sample_idx)),
            "num_processes": self.comm.num_processes,
            "batch_size": self.batch_size,
            "head_inputs": store_info,
            "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "seconds": seconds,
        }


def placement(gathered_idx: np.ndarray, split_idx: np.ndarray) -> np.ndarray:
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


def score_batches(
    teacher: nn.Module,
    batches: Iterable[dict[str, Tensor]],
    split: SplitInfo,
    scorers: str | Scorer | Sequence[str | Scorer] = DEFAULT_SCORER,
    *,
    comm: Comm | None = None,
    teacher_name: str | None = None,
    weights: str | None = None,
    **pass_options: Any,
) -> dict[str, ScoreSet]:
    """Run the frozen teacher over this process's batches and score the split (see the module docstring).

    Args:
        teacher: a timm-style model whose `get_classifier()` is an `nn.Linear` (moved to the device; its train /
            eval mode is restored afterwards).
        batches: this process's `{"image", "label", "sample_idx"}` batches, normalised, on the device (e.g.
            `make_image_dataloader` with a contiguous shard for ImageNet-size images); together the processes
            must visit each sample of `split` once. Whole-model scorers (`influence_full`) iterate it again, so it
            must then be a loader, not a one-shot iterator.
        split: the split being scored.
        scorers: see `ScoringPass`.
        comm: the collectives (default: this process alone).
        teacher_name: recorded in the metadata (default: the timm architecture name).
        weights: where the weights came from, recorded in the metadata.
        pass_options: `ScoringPass`'s keyword arguments (fraction, memory_limit_bytes, spill_dir, batch_size).

    Raises:
        RuntimeError: the processes did not visit every sample exactly once (a padded or dropping loader).
    """
    comm = comm or Comm()
    if comm.accelerator is not None:
        teacher = comm.accelerator.unwrap_model(teacher)
    classifier = classifier_layer(teacher, split.num_classes)
    scoring = ScoringPass(scorers, split, TeacherInfo.of(teacher, teacher_name, weights), comm=comm, **pass_options)
    if scoring.model_scorers and iter(batches) is batches:
        scoring.close()
        raise TypeError(
            f"scorer(s) {[s.name for s in scoring.model_scorers]} run more passes over the data: pass a loader that "
            "can be iterated again (a TensorBatchLoader or a DataLoader), not a generator or an iterator"
        )
    autocast = comm.accelerator.autocast if comm.accelerator is not None else contextlib.nullcontext
    was_training = teacher.training
    teacher.to(comm.device).eval()
    checked = False
    try:
        with torch.no_grad():
            for batch in batches:
                images = batch["image"]
                if images.shape[0] == 0:
                    continue
                with autocast():
                    features = teacher.forward_head(teacher.forward_features(images), pre_logits=True)
                    logits = classifier(features)
                    if not checked:
                        _check_head(teacher, images[:4], logits[:4].float())
                        checked = True
                scoring.observe(features, logits, batch["label"], batch["sample_idx"])
        scoring.fit_model_scorers(teacher, batches)
    except BaseException:
        scoring.close()
        raise
    finally:
        teacher.train(was_training)
    return scoring.finish()


def score_dataset_multi(
    teacher: nn.Module,
    data: TensorImageSet,
    scorers: Sequence[str | Scorer],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    accelerator: Accelerator | None = None,
    device: torch.device | str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **options: Any,
) -> dict[str, ScoreSet]:
    """Score every sample of a decoded split with several scorers from one pass of the frozen teacher.

    Args:
        teacher: see `score_batches`.
        data: the un-augmented training split.
        scorers: names in `SCORERS` or `Scorer` objects (for options: `make_scorer(name, ...)`).
        batch_size: images per process and batch.
        accelerator: an `accelerate.Accelerator` to shard over its processes (None: this process only).
        device: the device without an Accelerator (default CPU).
        mean: normalisation mean of the teacher's inputs (0-1 scale; default: the teacher's `pretrained_cfg`).
        std: normalisation std (default: the teacher's `pretrained_cfg`).
        options: `score_batches`' keyword arguments (teacher_name, weights, fraction, memory_limit_bytes,
            spill_dir).

    Returns:
        scorer name -> `ScoreSet` in the split's row order, on every process.
    """
    comm = Comm(accelerator, device)
    cfg = getattr(teacher, "pretrained_cfg", None) or {}
    if mean is None or std is None:
        if "mean" not in cfg or "std" not in cfg:
            raise ValueError(
                f"{type(teacher).__name__} has no pretrained_cfg mean / std: pass the normalisation its inputs need"
            )
        mean, std = mean or cfg["mean"], std or cfg["std"]
    global_batch = batch_size * comm.num_processes
    loader = TensorBatchLoader(
        data,
        global_batch,
        train=False,
        mean=tuple(mean),
        std=tuple(std),
        device=comm.device,
        process_index=comm.process_index,
        num_processes=comm.num_processes,
    )
    return score_batches(teacher, loader, SplitInfo.of(data), scorers, comm=comm, batch_size=global_batch, **options)


def score_dataset(
    teacher: nn.Module, data: TensorImageSet, scorer: str | Scorer = DEFAULT_SCORER, **options: Any
) -> ScoreSet:
    """Score every sample of a decoded split with one scorer (default 'influence'); `score_dataset_multi`'s
    keyword arguments apply."""
    (result,) = score_dataset_multi(teacher, data, [scorer], **options).values()
    return result
