"""The training loop: epochs of distillation (or CE) steps, evaluation, checkpoints, logging, resume.

Shape of Accelerate's `complete_cv_example`: the caller builds the Accelerator, the data, the trainable module
(`Distiller` or `Supervised`), the optimiser, and calls `fit`. The learning rate is a pure function of the
epoch (set at each epoch start, as the CRD recipes do), so resuming needs no scheduler state. The teacher is
frozen, kept on the device, and never wrapped for data parallelism.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import evaluate
import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..loading import weights_fingerprint
from ..methods import StepContext
from ..metrics import TOPK_ACCURACY
from .checkpoint import CheckpointManager, check_writable
from .step import Supervised, freeze

# The CIFAR-100 schedule of the paper (Sec. IV-A, as CRD): 240 epochs, lr x0.1 at epochs 150, 180 and 210.
CIFAR100_EPOCHS = 240
CIFAR100_MILESTONES = (150, 180, 210)
LR_DECAY = 0.1
# CRD's SGD on CIFAR-100: momentum 0.9, weight decay 5e-4.
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; training stopped before the optimiser step."""


def step_lr(
    base_lr: float, milestones: Sequence[int] = CIFAR100_MILESTONES, gamma: float = LR_DECAY
) -> Callable[[int], float]:
    """lr(epoch) = base_lr * gamma^(number of milestones <= epoch), epochs counted from 0 (CRD's schedule)."""
    milestones = sorted(milestones)
    return lambda epoch: base_lr * gamma ** sum(epoch >= m for m in milestones)


def scaled_milestones(
    epochs: int, milestones: Sequence[int] = CIFAR100_MILESTONES, total: int = CIFAR100_EPOCHS
) -> list[int]:
    """The CIFAR-100 recipe's decay epochs (150/180/210 of 240) scaled to a run of `epochs` epochs."""
    return sorted({max(1, round(epochs * m / total)) for m in milestones if round(epochs * m / total) < epochs})


@dataclass
class FitResult:
    """What a run achieved. Accuracies are percentages."""

    best_top1: float
    best_epoch: int
    last_top1: float
    last_top5: float
    best_top5: float
    train_seconds: float  # the whole run's, resumed parts included
    epochs: int
    epochs_trained: int = 0  # by this call (0: resumed a run that had no epoch left)
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_num_processes(accelerator: Accelerator, expected: int | None) -> None:
    """Refuse to train when the process count is not what the launcher was asked for."""
    world = os.environ.get("WORLD_SIZE")
    if world is not None and int(world) != accelerator.num_processes:
        raise RuntimeError(
            f"WORLD_SIZE={world} but Accelerate runs {accelerator.num_processes} process(es): the launch is "
            "inconsistent; launch with `accelerate launch --num_processes N ...`."
        )
    if expected is not None and expected != accelerator.num_processes:
        raise RuntimeError(
            f"expected {expected} processes but {accelerator.num_processes} are running. On CPU, "
            "`accelerate launch --cpu --num_processes 2` starts ONE process; use `ACCELERATE_USE_CPU=1 accelerate "
            "launch --multi_gpu --num_processes 2 --num_machines 1 ...`; on GPUs pass --multi_gpu / --num_machines."
        )


@torch.no_grad()
def evaluate_accuracy(
    accelerator: Accelerator,
    model: nn.Module,
    loader: Iterable[dict[str, Tensor]],
    topk: Sequence[int] = (1, 5),
    channels_last: bool = False,
) -> dict[str, float]:
    """Top-k accuracy (in %) and mean CE over an evaluation loader, each sample counted exactly once.

    The loader may be a prepared DataLoader (`gather_for_metrics` drops its padding) or per-process unpadded
    shards of unequal length (each batch is padded across processes with `sample_idx = -1`, gathered, and the
    padding dropped). Returns also `count` (samples gathered) and `unique` (distinct `sample_idx`).
    """
    was_training = model.training
    model.eval()
    metric = evaluate.load(TOPK_ACCURACY, keep_in_memory=True)
    loss_sum, count, seen = 0.0, 0, []
    num_classes = None
    for batch in loader:
        images = batch["image"]
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with accelerator.autocast():
            logits = model(images).float()
        num_classes = logits.shape[1]
        ranked = logits.topk(min(max(topk), num_classes), dim=1).indices
        losses = nn.functional.cross_entropy(logits, batch["label"], reduction="none")
        local = (ranked, batch["label"], losses, batch["sample_idx"])
        if accelerator.num_processes > 1:
            local = accelerator.pad_across_processes(local[:3], dim=0) + (
                accelerator.pad_across_processes(local[3], dim=0, pad_index=-1),
            )
        ranked, labels, losses, index = accelerator.gather_for_metrics(local)
        real = index >= 0
        ranked, labels, losses, index = ranked[real], labels[real], losses[real], index[real]
        metric.add_batch(predictions=ranked.tolist(), references=labels.tolist())
        loss_sum += float(losses.sum())
        count += labels.shape[0]
        seen.append(index.cpu())
    if not count:
        raise ValueError("the evaluation loader produced no samples")
    k_max = min(max(topk), num_classes)
    scores = metric.compute(k=tuple(min(t, k_max) for t in topk))
    model.train(was_training)
    result = {f"top{t}": 100.0 * scores[f"top{min(t, k_max)}"] for t in topk}
    result.update(loss=loss_sum / count, count=count, unique=int(torch.cat(seen).unique().numel()))
    return result


@dataclass(frozen=True)
class FitOptions:
    """How a `fit` call trains, checkpoints and logs (the recipes fill it from their `train` and `run` sections).

    Attributes:
        num_epochs: total epochs of the run.
        lr_schedule: epoch -> learning rate (`step_lr`).
        checkpoint_every: save every this many epochs (and after the last).
        keep_last: checkpoints kept.
        resume: True: continue from the latest complete checkpoint in the run folder, if any; a path: from that
            checkpoint folder.
        log_every: optimiser steps between logged loss averages.
        channels_last: feed images (and keep the models) in channels-last memory format.
        progress: show a progress bar on the main process.
        stop_after_epochs: end this call after so many epochs of this run (for interruption tests and
            time-boxed jobs); the run can be resumed.
        log_prefix: prefix of the logged keys (e.g. "teacher/" when a teacher is trained in the same run).
        name: what the progress bar says is training (e.g. "student lrds_resnet8").
    """

    num_epochs: int
    lr_schedule: Callable[[int], float]
    checkpoint_every: int = 1
    keep_last: int = 2
    resume: bool | str | Path = False
    log_every: int = 50
    channels_last: bool = False
    progress: bool = True
    stop_after_epochs: int | None = None
    log_prefix: str = ""
    name: str = "train"


@dataclass
class _Progress:
    """Where a run stands: what a checkpoint's `trainer_state.json` restores, plus the step count."""

    next_epoch: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"top1": -1.0, "top5": 0.0, "epoch": -1})
    history: list[dict[str, Any]] = field(default_factory=list)
    global_step: int = 0
    last_saved: Path | None = None
    earlier_seconds: float = 0.0  # training time of the parts of the run before a resume


def fit(
    accelerator: Accelerator,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader: Any,
    eval_loader: Iterable[dict[str, Tensor]],
    options: FitOptions,
    *,
    run_dir: str | Path,
    teacher: nn.Module | None = None,
    distill_mask: Tensor | None = None,
) -> FitResult:
    """Train `model` (already prepared by `accelerator`, like `optimizer` and `eval_loader`).

    Args:
        accelerator: the run's Accelerator.
        model: a prepared `Distiller` or `Supervised`.
        optimizer: a prepared optimiser over `model.parameters()`.
        train_loader: batches of {"image", "label", "sample_idx"}; `set_epoch(epoch)` is called when present.
        eval_loader: a prepared DataLoader of {"image", "label", "sample_idx"} batches.
        options: epochs, schedule, checkpoints, logging (`FitOptions`).
        run_dir: where checkpoints and logs go.
        teacher: the frozen teacher (distillation), or None (CE training).
        distill_mask: bool tensor indexed by `sample_idx`: True = distilled (Dt), False = CE only (Ds).
    """
    run_dir = check_writable(run_dir) if accelerator.is_main_process else Path(run_dir)
    checkpoints = CheckpointManager(run_dir / "checkpoints", accelerator, options.keep_last)
    if teacher is not None:
        teacher = freeze(teacher).to(accelerator.device)
        if options.channels_last:
            teacher = teacher.to(memory_format=torch.channels_last)
    if distill_mask is not None:
        distill_mask = distill_mask.to(device=accelerator.device, dtype=torch.bool)

    progress = _Progress()
    resume_from = checkpoints.latest() if options.resume is True else options.resume or None
    if resume_from is not None:
        state = checkpoints.load(resume_from)
        done = state.get("epochs_done", state.get("epoch", -1) + 1)
        progress = _Progress(done, state["best"], state["history"], earlier_seconds=state.get("train_seconds", 0.0))
        accelerator.print(f"resumed from {resume_from} ({done} epochs done)")
    steps_per_epoch = len(train_loader) if hasattr(train_loader, "__len__") else 0
    progress.global_step = progress.next_epoch * steps_per_epoch
    progress.last_saved = checkpoints.latest()
    started = time.perf_counter()
    last_epoch = options.num_epochs
    if options.stop_after_epochs is not None:
        last_epoch = min(last_epoch, progress.next_epoch + options.stop_after_epochs)
    for epoch in range(progress.next_epoch, last_epoch):
        _train_epoch(accelerator, model, optimizer, train_loader, options, epoch, progress, teacher, distill_mask)
        _evaluate_epoch(accelerator, model, eval_loader, options, epoch, progress, started)
        if (epoch + 1) % options.checkpoint_every == 0 or epoch + 1 == options.num_epochs:
            seconds = progress.earlier_seconds + time.perf_counter() - started
            state = {"best": progress.best, "history": progress.history, "train_seconds": seconds}
            progress.last_saved = checkpoints.save(epoch + 1, state)

    _check_replicas_agree(accelerator, _student(accelerator, model))
    last = progress.history[-1] if progress.history else {"top1": float("nan"), "top5": float("nan")}
    return FitResult(
        best_top1=progress.best["top1"],
        best_epoch=progress.best["epoch"],
        best_top5=progress.best["top5"],
        last_top1=last["top1"],
        last_top5=last["top5"],
        train_seconds=progress.earlier_seconds + time.perf_counter() - started,
        epochs=len(progress.history),
        epochs_trained=last_epoch - progress.next_epoch if last_epoch > progress.next_epoch else 0,
        history=progress.history,
    )


def _train_epoch(
    accelerator: Accelerator,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader: Any,
    options: FitOptions,
    epoch: int,
    progress: _Progress,
    teacher: nn.Module | None,
    distill_mask: Tensor | None,
) -> None:
    """One epoch of optimiser steps at the epoch's learning rate, logging loss averages every `log_every` steps."""
    lr = options.lr_schedule(epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    if hasattr(train_loader, "set_epoch"):
        train_loader.set_epoch(epoch)
    model.train()
    steps_per_epoch = len(train_loader) if hasattr(train_loader, "__len__") else 0
    sums: dict[str, Tensor] = {}
    logged_steps = 0
    bar = tqdm(
        train_loader,
        total=steps_per_epoch or None,
        desc=f"{options.name} epoch {epoch + 1}/{options.num_epochs}",
        disable=not (options.progress and accelerator.is_local_main_process),
        leave=False,
    )
    for step, batch in enumerate(bar):
        images, labels = batch["image"], batch["label"]
        if options.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        mask = None if distill_mask is None else distill_mask[batch["sample_idx"]]
        ctx = StepContext(epoch=epoch, num_epochs=options.num_epochs, step=step, steps_per_epoch=steps_per_epoch)
        with accelerator.accumulate(model):
            with accelerator.autocast():
                keys = dict(sample_idx=batch["sample_idx"], view=batch.get("view"))  # what a teacher cache looks up
                out = model(images, labels, mask, teacher=teacher, ctx=ctx, **keys)
            _stop_if_not_finite(accelerator, out, epoch, step, progress)
            accelerator.backward(out.loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        for name, value in out.terms.items():
            sums[name] = sums.get(name, 0.0) + value.detach().float()
        sums["loss"] = sums.get("loss", 0.0) + out.loss.detach().float()
        logged_steps += 1
        progress.global_step += 1
        if progress.global_step % options.log_every == 0:
            means = {f"train/{k}": float(v) / logged_steps for k, v in sums.items()}
            means.update({"train/lr": lr, **{f"train/{k}": v for k, v in out.diagnostics.items()}})
            logged = {f"{options.log_prefix}{k}": v for k, v in means.items()} | {"epoch": epoch}
            accelerator.log(logged, step=progress.global_step)
            bar.set_postfix(loss=f"{means['train/loss']:.4f}")
            sums, logged_steps = {}, 0


def _evaluate_epoch(
    accelerator: Accelerator,
    model: nn.Module,
    eval_loader: Iterable[dict[str, Tensor]],
    options: FitOptions,
    epoch: int,
    progress: _Progress,
    started: float,
) -> None:
    """Evaluate the student after an epoch, record it in the history (and as the best), log and print it."""
    _broadcast_buffers(accelerator, model)
    student = _student(accelerator, model)
    scores = evaluate_accuracy(accelerator, student, eval_loader, channels_last=options.channels_last)
    best = progress.best
    if scores["top1"] > best["top1"]:
        progress.best = best = {"top1": scores["top1"], "top5": scores["top5"], "epoch": epoch}
    record = {
        "epoch": epoch,
        "lr": options.lr_schedule(epoch),
        "top1": scores["top1"],
        "top5": scores["top5"],
        "eval_loss": scores["loss"],
        "eval_count": scores["count"],
        "elapsed_s": round(progress.earlier_seconds + time.perf_counter() - started, 3),
    }
    progress.history.append(record)
    evals = {f"{options.log_prefix}eval/{k}": v for k, v in record.items() if k != "epoch"}
    accelerator.log(evals | {"epoch": epoch}, step=progress.global_step)
    accelerator.print(
        f"{options.name} epoch {epoch + 1}/{options.num_epochs}: top1 {scores['top1']:.2f} top5 {scores['top5']:.2f} "
        f"(best {best['top1']:.2f} @ {best['epoch'] + 1})"
    )


def train_supervised(
    accelerator: Accelerator,
    model: nn.Module,
    train_loader: Any,
    eval_loader: Iterable[dict[str, Tensor]],
    options: FitOptions,
    *,
    run_dir: str | Path,
    lr: float,
    momentum: float = MOMENTUM,
    weight_decay: float = WEIGHT_DECAY,
) -> tuple[nn.Module, FitResult]:
    """Train `model` with cross-entropy (`Supervised` + SGD + `fit`): teachers, CE baselines, the demo's teacher.

    Returns the trained model, unwrapped and left in training mode, and the run's result. `options.lr_schedule`
    sets the learning rate of each epoch; `lr` is the optimiser's starting value.
    """
    trainable = Supervised(model)
    optimizer = sgd(trainable, lr, momentum, weight_decay)
    trainable, optimizer = accelerator.prepare(trainable, optimizer)
    result = fit(accelerator, trainable, optimizer, train_loader, eval_loader, options, run_dir=run_dir)
    return accelerator.unwrap_model(trainable).student, result


def sgd(model: nn.Module, lr: float, momentum: float = MOMENTUM, weight_decay: float = WEIGHT_DECAY) -> torch.optim.SGD:
    """SGD over every trainable parameter of the student and the method's extras (CRD's optimiser)."""
    return torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=lr, momentum=momentum, weight_decay=weight_decay
    )


def _student(accelerator: Accelerator, model: nn.Module) -> nn.Module:
    """The student inside a (possibly wrapped) `Distiller` / `Supervised`."""
    return accelerator.unwrap_model(model).student


def _broadcast_buffers(accelerator: Accelerator, model: nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm statistics), as DDP does before each forward pass: after the
    last training step each rank holds statistics of its own shard, and evaluation and checkpoints need one set."""
    if accelerator.num_processes == 1:
        return
    for buffer in accelerator.unwrap_model(model).buffers():
        dist.broadcast(buffer.data, src=0)


def _check_replicas_agree(accelerator: Accelerator, student: nn.Module) -> None:
    """Data-parallel replicas must end with identical weights; a mismatch means a broken launch or loader."""
    if accelerator.num_processes == 1:
        return
    prints = gather_object([weights_fingerprint(student)])
    if len(set(prints)) != 1:
        raise RuntimeError(f"the processes ended with different student weights: {prints}")
    accelerator.print(f"all {len(prints)} processes hold identical student weights (sha256 {prints[0][:16]})")


def _stop_if_not_finite(accelerator: Accelerator, out: Any, epoch: int, step: int, progress: _Progress) -> None:
    finite = torch.isfinite(out.loss.detach()).float()
    if accelerator.num_processes > 1:
        finite = accelerator.reduce(finite.reshape(1), reduction="sum") / accelerator.num_processes
    if float(finite) < 1.0:
        terms = {k: float(v.detach()) for k, v in out.terms.items()}
        last_saved = progress.last_saved
        where = f"the last good checkpoint is {last_saved}" if last_saved else "no checkpoint was written yet"
        raise TrainingDivergedError(
            f"non-finite loss at epoch {epoch + 1}, step {step} (global step {progress.global_step}); terms: {terms}. "
            f"Training stopped before the optimiser step; {where}. Lower the learning rate or check the data."
        )
