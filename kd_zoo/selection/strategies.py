"""Scores -> the boolean distill mask of Data Selection (the paper's Table II strategies).

"Improve Knowledge Distillation via Label Revision and Data Selection" (Lan et al., arXiv 2404.03693), Sec. IV-B,
Table II: a fraction of the training samples (80 % by default) is supervised by the teacher (Dt, mask True), the
rest by the labels only (Ds, mask False). Strategies: `highest` (the paper's choice: the samples with the higher
influence scores, read as the harder ones that need the teacher), `lowest`, and `random`.

Determinism: exactly k = floor(fraction x N + 0.5) samples are selected (halves round *up*, not Python's
half-to-even `round`: 0.5 x 5 -> 3), ties in the score are broken by the smaller `sample_idx` first, and `random`
draws a seeded permutation of the samples in `sample_idx` order, so the mask does not depend on the order of the
rows or on how the data were sharded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..registry import Registry

DEFAULT_FRACTION = 0.8  # Table II: the 80 % with the highest scores are distilled
DEFAULT_STRATEGY = "highest"

# name -> f(scores float64 [N], sample_idx int64 [N], seed) -> positions in selection-priority order
STRATEGIES: Registry[Callable[[np.ndarray, np.ndarray, int], np.ndarray]] = Registry("selection strategy")


@STRATEGIES.register("highest")
def _highest(scores: np.ndarray, sample_idx: np.ndarray, seed: int) -> np.ndarray:
    return np.lexsort((sample_idx, -scores))  # the last key is the primary one


@STRATEGIES.register("lowest")
def _lowest(scores: np.ndarray, sample_idx: np.ndarray, seed: int) -> np.ndarray:
    return np.lexsort((sample_idx, scores))


@STRATEGIES.register("random")
def _random(scores: np.ndarray, sample_idx: np.ndarray, seed: int) -> np.ndarray:
    by_index = np.argsort(sample_idx, kind="stable")
    perm = torch.randperm(len(sample_idx), generator=torch.Generator().manual_seed(int(seed))).numpy()
    return by_index[perm]


def num_selected(fraction: float, n: int) -> int:
    """k = floor(fraction x n + 0.5): the nearest integer, halves up."""
    if isinstance(fraction, bool) or not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction!r}")
    return min(n, math.floor(float(fraction) * n + 0.5))


def _as_numpy(x: Tensor | np.ndarray | Any, dtype: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(dtype, copy=False)


def select(
    scores: Tensor | np.ndarray,
    sample_idx: Tensor | np.ndarray,
    fraction: float = DEFAULT_FRACTION,
    strategy: str = DEFAULT_STRATEGY,
    seed: int = 0,
) -> Tensor:
    """The distill mask: True for the floor(fraction x N + 0.5) samples the strategy picks (see the module docstring).

    Args:
        scores: `[N]` one score per sample.
        sample_idx: `[N]` the samples' unique indices (the tie-breaker, and the order `random` draws in).
        fraction: the share of samples supervised by the teacher (Dt).
        strategy: a name in `STRATEGIES`: 'highest' (default, the paper's), 'lowest' or 'random'.
        seed: seed of 'random'.

    Returns:
        bool `[N]`, aligned with `scores` (position i is sample `sample_idx[i]`).
    """
    order_fn = STRATEGIES.get(strategy)
    s = _as_numpy(scores, np.float64).reshape(-1)
    idx = _as_numpy(sample_idx, np.int64).reshape(-1)
    if s.shape != idx.shape:
        raise ValueError(f"scores and sample_idx must have the same length, got {s.shape[0]} and {idx.shape[0]}")
    if np.isnan(s).any():
        bad = idx[np.isnan(s)][:5].tolist()
        raise ValueError(f"{int(np.isnan(s).sum())} scores are NaN (e.g. sample_idx {bad}); recompute the scores")
    if len(np.unique(idx)) != len(idx):
        raise ValueError("sample_idx has duplicates: each sample must appear once")
    k = num_selected(fraction, len(s))
    mask = np.zeros(len(s), dtype=bool)
    mask[order_fn(s, idx, seed)[:k]] = True
    return torch.from_numpy(mask)


def mask_by_index(mask: Tensor, sample_idx: Tensor, size: int | None = None) -> Tensor:
    """Re-index a mask aligned with `sample_idx` by the index values: `out[sample_idx[i]] = mask[i]`.

    This is the form `kd_zoo.engine.fit(distill_mask=...)` reads (`distill_mask[batch["sample_idx"]]`). Indices not
    in `sample_idx` are False.
    """
    sample_idx = torch.as_tensor(sample_idx, dtype=torch.int64)
    if sample_idx.numel() and int(sample_idx.min()) < 0:
        raise ValueError("sample_idx must be non-negative to index a mask")
    if size is None:
        size = int(sample_idx.max()) + 1 if sample_idx.numel() else 0
    out = torch.zeros(size, dtype=torch.bool)
    out[sample_idx] = torch.as_tensor(mask, dtype=torch.bool)
    return out


def mistakes_report(
    scores: Tensor | np.ndarray,
    sample_idx: Tensor | np.ndarray,
    teacher_correct: Tensor | np.ndarray,
    fraction: float = DEFAULT_FRACTION,
    seed: int = 0,
) -> dict[str, Any]:
    """Where the teacher's mistakes fall: how many land in the distilled part (Dt) under each strategy, and their
    count in each score decile (decile 1 = the lowest 10 % of scores, ties by `sample_idx`)."""
    correct = _as_numpy(teacher_correct, bool).reshape(-1)
    s = _as_numpy(scores, np.float64).reshape(-1)
    idx = _as_numpy(sample_idx, np.int64).reshape(-1)
    wrong = ~correct
    rank = np.empty(len(s), dtype=np.int64)
    rank[_lowest(s, idx, seed)] = np.arange(len(s))
    deciles = np.minimum(rank * 10 // max(len(s), 1), 9)
    report: dict[str, Any] = {
        "count": int(wrong.sum()),
        "rate": float(wrong.mean()) if len(s) else 0.0,
        "fraction": float(fraction),
        "in_distilled": {},
        "by_score_decile": [int((wrong & (deciles == d)).sum()) for d in range(10)],
    }
    for strategy in STRATEGIES:
        mask = select(s, idx, fraction, strategy, seed).numpy()
        report["in_distilled"][strategy] = int((wrong & mask).sum())
    return report
