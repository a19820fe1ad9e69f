"""Per-sample scorers for Data Selection, all fed by one pass of the frozen teacher (see `teacher_pass.py`).

"Improve Knowledge Distillation via Label Revision and Data Selection" (Lan et al., arXiv 2404.03693), Sec. III-A
(Eq. 3-6) ranks training samples by an influence score; the paper does not say how the influence vector becomes a
scalar. kd_zoo's default is the self-influence s_i = g_i^T (H + lambda I)^-1 g_i of each sample's cross-entropy,
restricted to the teacher's classifier layer, where H has a closed form (shared/reference/influence.md, and
`influence_math.py` for the formulas):

* `influence` (default): EK-FAC of the classifier layer (weights and bias). No per-sample gradients, no iterative
  solver: the statistics A, G and tr(H) are summed during the teacher pass, the eigenvalues Lambda* on one sweep
  over the stored head inputs, the scores on a second.
* `influence_exact`: the same quantity with the explicit damped Hessian (C (d+1))^2 and its Cholesky factor; the
  test oracle, and a choice for small heads (refused above `max_params` parameters).
* `influence_val`: g_val^T (H + lambda I)^-1 g_i, the decrease of the mean loss of a held-out slice of the
  *training* split when sample i is up-weighted (Koh & Liang's influence with the sign flipped: higher = more
  helpful). Sensitive to the damping (rank correlation 0.56-0.90 across a 1000x damping range in our probe,
  against >= 0.99 for self-influence); an option, not a default.
* baselines from the same pass: `loss` (-log p_y), `el2n` (|p - y|, Paul et al., arXiv 2107.07075), `grad_norm`
  (|g_i| of the classifier layer = |p - y| |phi|), and `random` (uniform, seeded, keyed by `sample_idx`).
* `influence_full` (`influence_full.py`, the optional extra `kd-zoo[influence]`): the self-influence over every
  Linear and Conv2d weight of the teacher (EK-FAC per module, by kronfluence), Eq. 5 over (nearly) all parameters;
  a whole-model scorer (`needs_model`), about 50 inference passes.

Higher scores mean harder samples for every scorer but `random` (and `influence_val`, see above).

Damping: lambda = `damping` if given, else `damping_ratio` (0.1) x the mean eigenvalue of H, i.e.
0.1 x tr(H) / (C (d + 1)); the two influence scorers use the same value for the same data, and record it.

Checked (tests/test_selection.py): the exact Hessian against autograd's Hessian of the mean cross-entropy, and
its scores against a dense solve; EK-FAC equal to the exact scores to 1e-6 when all samples share one softmax output
(the Kronecker structure is then exact); on a ResNet-8 trained for 3 epochs on the demo digits (92 % train
accuracy), EK-FAC vs exact: Spearman 0.995, 99.2 % of the 80/20 split alike (the test requires >= 0.99 and 97 %).

A scorer is a small object: `begin(ctx)` once, `observe(chunk)` on each batch of the teacher pass, `fit(ctx)`
after it (the collective statistics; every process calls it), then `score(chunk)` on each stored chunk. A
whole-model scorer (`needs_model = True`) also gets `fit_model(teacher, batches)` between the pass and `fit`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..registry import Registry
from .comm import Comm
from .head_inputs import HeadChunk
from .influence_math import (
    ekfac_cross_influence,
    ekfac_eigenvalue_sums,
    ekfac_self_influence,
    exact_self_influence,
    hessian_sum,
    kfac_sums,
    resolve_damping,
)

SCORERS: Registry[type[Scorer]] = Registry("scorer")
DEFAULT_SCORER = "influence"
DEFAULT_DAMPING_RATIO = 0.1
DEFAULT_MAX_EXACT_PARAMS = 12_000  # an explicit float64 Hessian of 12k parameters is 1.15 GB


@dataclass
class ScoringContext:
    """What a scorer knows about the run.

    Attributes:
        num_classes: C.
        num_features: d (the classifier layer has C x (d + 1) parameters with its bias).
        sample_idx: int64 `[N]` every sample's index (all processes), on the CPU.
        comm: the collective operations of the run.
        chunks: yields this process's stored samples (on `comm.device`), once per call.
    """

    num_classes: int
    num_features: int
    sample_idx: Tensor
    comm: Comm
    chunks: Callable[[], Iterator[HeadChunk]]

    @property
    def num_params(self) -> int:
        return self.num_classes * (self.num_features + 1)

    @property
    def device(self) -> torch.device:
        return self.comm.device


class Scorer:
    """Base class: see the module docstring for the call order. Subclasses set `name` and implement `score`.

    Attributes:
        needs_model: a whole-model scorer (`influence_full`): besides the classifier-layer inputs it needs the
            teacher and the loader, and gets them once, through `fit_model`, after the teacher pass.
    """

    name: ClassVar[str] = ""
    needs_model: ClassVar[bool] = False

    def begin(self, ctx: ScoringContext) -> None:
        self.ctx = ctx

    def fit_model(self, teacher: nn.Module, batches: Iterable[dict[str, Tensor]]) -> None:
        """Whole-model scorers only (`needs_model`): the frozen teacher and this process's shard again (a loader
        that can be iterated several times), after the pass and before `fit`; every process calls it."""
        raise NotImplementedError(f"scorer {self.name!r} does not use the model (needs_model is False)")

    def observe(self, chunk: HeadChunk) -> None:
        """Accumulate statistics from a batch of the teacher pass (on the device)."""

    def fit(self) -> None:
        """Reduce the statistics across processes (called by every process, after the pass)."""

    def score(self, chunk: HeadChunk) -> Tensor:
        """float64 `[n]` scores of the chunk's samples."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """The scorer's settings (and values it derived, such as the damping), stored with the scores."""
        return {}


def make_scorer(name: str, **options: Any) -> Scorer:
    """A scorer by registry name, e.g. `make_scorer("influence", damping_ratio=0.01)`."""
    cls = SCORERS.get(name)
    try:
        return cls(**options)
    except TypeError as e:
        raise TypeError(f"scorer {name!r} does not take {sorted(options)}: {e}") from None


@SCORERS.register("loss")
class LossScorer(Scorer):
    """The teacher's cross-entropy -log p_y."""

    name = "loss"

    def score(self, chunk: HeadChunk) -> Tensor:
        return chunk.loss


@SCORERS.register("el2n")
class EL2NScorer(Scorer):
    """|p - onehot(y)|_2, the EL2N score (Paul et al., arXiv 2107.07075), from the final teacher only."""

    name = "el2n"

    def score(self, chunk: HeadChunk) -> Tensor:
        return chunk.residual.norm(dim=1)


@SCORERS.register("grad_norm")
class GradNormScorer(Scorer):
    """|g_i| of the classifier layer (weights and bias) = |p - onehot(y)| |[h; 1]|."""

    name = "grad_norm"

    def score(self, chunk: HeadChunk) -> Tensor:
        return chunk.residual.norm(dim=1) * chunk.phi.norm(dim=1)


@SCORERS.register("random")
class RandomScorer(Scorer):
    """Uniform [0, 1) values from a seeded generator, given to the samples in `sample_idx` order, so a sample's
    value does not depend on the order or sharding of the data."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def begin(self, ctx: ScoringContext) -> None:
        super().begin(ctx)
        self._sorted_idx = torch.sort(ctx.sample_idx).values
        generator = torch.Generator().manual_seed(self.seed)
        self._values = torch.rand(len(self._sorted_idx), generator=generator, dtype=torch.float64)

    def score(self, chunk: HeadChunk) -> Tensor:
        pos = torch.searchsorted(self._sorted_idx, chunk.sample_idx.cpu())
        return self._values[pos].to(chunk.labels.device)

    def settings(self) -> dict[str, Any]:
        return {"seed": self.seed}


@SCORERS.register("influence")
class EKFACInfluence(Scorer):
    """Self-influence g_i^T (H + lambda I)^-1 g_i of the classifier layer with an EK-FAC Hessian (the default).

    Args:
        damping: lambda, absolute; overrides `damping_ratio`.
        damping_ratio: lambda = damping_ratio x tr(H) / (C (d + 1)), the mean eigenvalue of H.
    """

    name = "influence"

    def __init__(self, damping: float | None = None, damping_ratio: float = DEFAULT_DAMPING_RATIO):
        if damping is not None and not damping > 0:
            raise ValueError(f"damping must be > 0, got {damping}")
        if not damping_ratio > 0:
            raise ValueError(f"damping_ratio must be > 0, got {damping_ratio}")
        self.damping, self.damping_ratio = damping, float(damping_ratio)
        self.damping_used: float | None = None
        self.mean_eigenvalue: float | None = None

    def begin(self, ctx: ScoringContext) -> None:
        super().begin(ctx)
        c, d1 = ctx.num_classes, ctx.num_features + 1
        kw = dict(dtype=torch.float64, device=ctx.device)
        self._a, self._g, self._scalars = torch.zeros(d1, d1, **kw), torch.zeros(c, c, **kw), torch.zeros(2, **kw)

    def observe(self, chunk: HeadChunk) -> None:
        a, g, trace = kfac_sums(chunk.phi, chunk.probs)
        self._a += a
        self._g += g
        self._scalars += torch.stack([trace, trace.new_tensor(float(len(chunk)))])

    def fit(self) -> None:
        comm = self.ctx.comm
        a, g, scalars = comm.sum(self._a), comm.sum(self._g), comm.sum(self._scalars)
        n = float(scalars[1])
        if n == 0:
            raise ValueError("no samples were scored: the data set is empty")
        # The eigenbases on the main process only, broadcast: eigenvector signs (and, for repeated eigenvalues,
        # the basis itself) are arbitrary, so each process computing its own could disagree.
        if comm.is_main:
            q_a = torch.linalg.eigh(a / n).eigenvectors
            q_g = torch.linalg.eigh(g / n).eigenvectors
        else:
            q_a, q_g = torch.empty_like(a), torch.empty_like(g)
        self.q_a, self.q_g = comm.broadcast(q_a), comm.broadcast(q_g)
        eig = torch.zeros(g.shape[0], a.shape[0], dtype=torch.float64, device=self.ctx.device)
        for chunk in self.ctx.chunks():
            eig += ekfac_eigenvalue_sums(chunk.phi, chunk.probs, self.q_a, self.q_g)
        eigenvalues = comm.sum(eig) / n
        trace_h = float(scalars[0]) / n
        self.mean_eigenvalue = trace_h / self.ctx.num_params
        self.damping_used = resolve_damping(trace_h, self.ctx.num_params, self.damping, self.damping_ratio)
        self.inv_eigenvalues = comm.broadcast(1.0 / (eigenvalues + self.damping_used))
        self.num_samples = int(n)

    def score(self, chunk: HeadChunk) -> Tensor:
        return ekfac_self_influence(chunk.phi, chunk.residual, self.q_a, self.q_g, self.inv_eigenvalues)

    def settings(self) -> dict[str, Any]:
        return {
            "hessian": "ekfac-classifier-layer",
            "damping": self.damping_used,
            "damping_ratio": None if self.damping is not None else self.damping_ratio,
            "damping_rule": "absolute" if self.damping is not None else "damping_ratio * tr(H) / (C * (d + 1))",
            "mean_eigenvalue": self.mean_eigenvalue,
        }


@SCORERS.register("influence_val")
class EKFACValidationInfluence(EKFACInfluence):
    """g_val^T (H + lambda I)^-1 g_i with g_val the mean gradient of a held-out slice of the training split
    (EK-FAC Hessian). Higher = up-weighting the sample lowers the slice's loss more. Sensitive to the damping.

    Args:
        damping: lambda, absolute; overrides `damping_ratio`.
        damping_ratio: lambda = damping_ratio x tr(H) / (C (d + 1)).
        val_fraction: the slice's share of the training split, drawn by `seed` in `sample_idx` order.
        seed: seed of the slice.
    """

    name = "influence_val"

    def __init__(
        self,
        damping: float | None = None,
        damping_ratio: float = DEFAULT_DAMPING_RATIO,
        val_fraction: float = 0.1,
        seed: int = 0,
    ):
        super().__init__(damping, damping_ratio)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        self.val_fraction, self.seed = float(val_fraction), int(seed)

    def begin(self, ctx: ScoringContext) -> None:
        super().begin(ctx)
        ordered = torch.sort(ctx.sample_idx).values
        k = max(1, math.floor(self.val_fraction * len(ordered) + 0.5))
        perm = torch.randperm(len(ordered), generator=torch.Generator().manual_seed(self.seed))
        self._val_idx = torch.sort(ordered[perm[:k]]).values.to(ctx.device)
        kw = dict(dtype=torch.float64, device=ctx.device)
        self._val_grad = torch.zeros(ctx.num_classes, ctx.num_features + 1, **kw)
        self._val_count = torch.zeros(1, **kw)

    def observe(self, chunk: HeadChunk) -> None:
        super().observe(chunk)
        member = torch.isin(chunk.sample_idx, self._val_idx)
        self._val_grad += chunk.residual[member].T @ chunk.phi[member]
        self._val_count += member.sum()

    def fit(self) -> None:
        super().fit()
        comm = self.ctx.comm
        mean_grad = comm.sum(self._val_grad) / comm.sum(self._val_count)
        self._target = (self.q_g.T @ mean_grad @ self.q_a) * self.inv_eigenvalues
        self.val_size = int(len(self._val_idx))

    def score(self, chunk: HeadChunk) -> Tensor:
        return ekfac_cross_influence(chunk.phi, chunk.residual, self.q_a, self.q_g, self._target)

    def settings(self) -> dict[str, Any]:
        return super().settings() | {
            "val_fraction": self.val_fraction,
            "val_size": self.val_size,
            "seed": self.seed,
            "sign": "g_val^T (H + lambda I)^-1 g_i: higher = up-weighting lowers the held-out loss more",
        }


@SCORERS.register("influence_exact")
class ExactInfluence(Scorer):
    """Self-influence with the explicit damped Hessian of the classifier layer, solved by Cholesky (small heads).

    Memory: the Hessian holds (C (d + 1))^2 float64 values on every process (C = 10, d = 256: 53 MB; C = 100,
    d = 256: 5.3 GB, refused by default).

    Args:
        damping: lambda, absolute; overrides `damping_ratio`.
        damping_ratio: lambda = damping_ratio x tr(H) / (C (d + 1)) (the same rule as `influence`).
        max_params: refuse heads with more parameters than this.
    """

    name = "influence_exact"

    def __init__(
        self,
        damping: float | None = None,
        damping_ratio: float = DEFAULT_DAMPING_RATIO,
        max_params: int = DEFAULT_MAX_EXACT_PARAMS,
    ):
        if damping is not None and not damping > 0:
            raise ValueError(f"damping must be > 0, got {damping}")
        if not damping_ratio > 0:
            raise ValueError(f"damping_ratio must be > 0, got {damping_ratio}")
        self.damping, self.damping_ratio, self.max_params = damping, float(damping_ratio), int(max_params)
        self.damping_used: float | None = None
        self.mean_eigenvalue: float | None = None

    def begin(self, ctx: ScoringContext) -> None:
        super().begin(ctx)
        p = ctx.num_params
        if p > self.max_params:
            raise ValueError(
                f"influence_exact builds the {p} x {p} Hessian of the classifier layer ({ctx.num_classes} classes x "
                f"{ctx.num_features + 1} inputs), {p * p * 8 / 2**30:.1f} GiB in float64, over max_params="
                f"{self.max_params}. Use the scorer 'influence' (EK-FAC, the same quantity in closed form), or pass "
                f"max_params={p} if the memory is there"
            )
        self._h = torch.zeros(p, p, dtype=torch.float64, device=ctx.device)
        self._scalars = torch.zeros(1, dtype=torch.float64, device=ctx.device)

    def observe(self, chunk: HeadChunk) -> None:
        hessian_sum(chunk.phi, chunk.probs, out=self._h)
        self._scalars += len(chunk)

    def fit(self) -> None:
        comm = self.ctx.comm
        h, n = comm.sum(self._h), float(comm.sum(self._scalars)[0])
        if n == 0:
            raise ValueError("no samples were scored: the data set is empty")
        del self._h
        h /= n
        trace_h = float(torch.diagonal(h).sum())
        self.mean_eigenvalue = trace_h / self.ctx.num_params
        self.damping_used = resolve_damping(trace_h, self.ctx.num_params, self.damping, self.damping_ratio)
        if comm.is_main:
            h.diagonal().add_(self.damping_used)
            factor = torch.linalg.cholesky(h)
        else:
            factor = torch.empty_like(h)
        del h
        self.cholesky = comm.broadcast(factor)
        self.num_samples = int(n)

    def score(self, chunk: HeadChunk) -> Tensor:
        # Bound the [n, C(d+1)] gradient block to ~64 MB.
        rows = max(1, (64 * 2**20) // (8 * self.ctx.num_params))
        return torch.cat(
            [
                exact_self_influence(chunk.phi[i : i + rows], chunk.residual[i : i + rows], self.cholesky)
                for i in range(0, max(len(chunk), 1), rows)
            ]
        )

    def settings(self) -> dict[str, Any]:
        return {
            "hessian": "exact-classifier-layer",
            "damping": self.damping_used,
            "damping_ratio": None if self.damping is not None else self.damping_ratio,
            "damping_rule": "absolute" if self.damping is not None else "damping_ratio * tr(H) / (C * (d + 1))",
            "mean_eigenvalue": self.mean_eigenvalue,
        }


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
    s = make_scorer(scorer) if isinstance(scorer, str) else scorer
    n = features.shape[0]
    idx = torch.arange(n) if sample_idx is None else torch.as_tensor(sample_idx, dtype=torch.int64)
    chunk = HeadChunk(features.float().cpu(), log_probs.float().cpu(), labels.long().cpu(), idx.cpu())
    ctx = ScoringContext(log_probs.shape[1], features.shape[1], idx.cpu(), Comm(), chunks=lambda: iter([chunk]))
    s.begin(ctx)
    s.observe(chunk)
    s.fit()
    return s.score(chunk)
