"""`influence_full`: self-influence over the whole teacher, with an EK-FAC Hessian of every Linear and Conv2d module.

"Improve Knowledge Distillation via Label Revision and Data Selection" (Lan et al., arXiv 2404.03693), Eq. 5: the
influence -H^-1 grad L(x_i, theta) is over all parameters theta. The default scorer `influence` restricts it to
the classifier layer, where H has a closed form (about one inference pass); this one takes every weight of the
teacher's `nn.Linear` and `nn.Conv2d` modules, through the kronfluence library (Grosse et al., "Studying Large
Language Model Generalization with Influence Functions", arXiv 2308.03296; EK-FAC: George et al., arXiv 1806.03884):
s_i = sum over modules m of g_im^T (H_m + lambda_m I)^-1 g_im, with H block-diagonal per module and each block
EK-FAC (the eigenbases of the activation and output-gradient covariances, the exact second moments in that basis).
BatchNorm's affine parameters are not covered (kronfluence handles Linear and Conv2d). It needs the optional
extra: `pip install "kd-zoo[influence]"`.

The same quantity as `influence` on the classifier layer, with the same conventions: the Hessian is the true Fisher
(labels drawn from the teacher's softmax; the draw of sample i is fixed by (`seed`, its `sample_idx`), so it does
not depend on the order or the sharding of the data); the damping of a module is `damping_ratio` (0.1) x the mean
of its EK-FAC eigenvalues, i.e. of its Hessian block's (kronfluence's heuristic, and the `influence` rule), or an
absolute `damping`; higher = harder.

How it runs: it is a whole-model scorer (`needs_model`): after the teacher pass, `ScoringPass.fit_model_scorers`
hands it the frozen teacher and this process's shard, and it runs three more passes over the shard, each a
forward and a backward of a copy of the teacher (the teacher itself is not touched): the covariances, the
eigenvalue corrections, the scores. Statistics are summed across processes in float64 and the eigenbases computed
on the main process and broadcast, as for the other scorers; kronfluence's own distributed mode and its files are
not used (nothing is written to disk). The scores go through the score-set format, sharding and fingerprints of
every scorer. Cost: about 50 inference passes (48x and 54x on two digits teachers; Spearman 0.991 and 0.998 with
`influence`, benchmarks/results/influence_full.md).
"""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
import math
import warnings
from collections.abc import Iterable, Iterator
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .head_inputs import HeadChunk
from .scorers import DEFAULT_DAMPING_RATIO, SCORERS, Scorer, ScoringContext

INSTALL_HINT = 'pip install "kd-zoo[influence]" (or: pip install kronfluence)'


def load_kronfluence() -> SimpleNamespace:
    """The parts of kronfluence this scorer uses, or an ImportError that says how to install it."""
    try:
        analyzer = importlib.import_module("kronfluence.analyzer")
        arguments = importlib.import_module("kronfluence.arguments")
        covariance = importlib.import_module("kronfluence.factor.covariance")
        eigen = importlib.import_module("kronfluence.factor.eigen")
        self_scores = importlib.import_module("kronfluence.score.self")
        constants = importlib.import_module("kronfluence.utils.constants")
    except ImportError as err:
        raise ImportError(
            f"the scorer 'influence_full' needs the kronfluence library, which could not be imported ({err}): "
            f"{INSTALL_HINT}. The classifier-layer scorer 'influence' needs nothing extra."
        ) from None
    return SimpleNamespace(
        version=importlib.metadata.version("kronfluence"),
        prepare_model=analyzer.prepare_model,
        FactorArguments=arguments.FactorArguments,
        ScoreArguments=arguments.ScoreArguments,
        fit_covariance=covariance.fit_covariance_matrices_with_loader,
        eigendecomposition=eigen.perform_eigendecomposition,
        fit_lambda=eigen.fit_lambda_matrices_with_loader,
        self_scores=self_scores.compute_self_scores_with_loaders,
        LAMBDA=constants.LAMBDA_MATRIX_NAME,
        NUM_LAMBDA=constants.NUM_LAMBDA_PROCESSED,
        EIGENVECTORS=(constants.ACTIVATION_EIGENVECTORS_NAME, constants.GRADIENT_EIGENVECTORS_NAME),
        EIGENVALUES=(constants.ACTIVATION_EIGENVALUES_NAME, constants.GRADIENT_EIGENVALUES_NAME),
        COVARIANCES=(constants.ACTIVATION_COVARIANCE_MATRIX_NAME, constants.GRADIENT_COVARIANCE_MATRIX_NAME),
    )


class _LocalState:
    """kronfluence's process state as this process alone: the cross-process sums are done here, with `Comm`."""

    num_processes, process_index, local_process_index = 1, 0, 0
    use_distributed, is_main_process, is_local_main_process, is_last_process = False, True, True, True

    def __init__(self, device: torch.device):
        self.device = device

    def wait_for_everyone(self) -> None:
        pass


class _CrossEntropyTask:
    """kronfluence's `Task` interface, in full (duck-typed, so importing kd_zoo does not import kronfluence): the
    summed cross-entropy of the teacher's logits, with labels drawn from its softmax for the Fisher (`sample=True`).

    The draw of a sample is the inverse CDF at a uniform value fixed by its `sample_idx` and the pass (covariances,
    eigenvalue corrections), so it is the same for any order or sharding of the data.
    """

    enable_post_process_per_sample_gradient = False

    def __init__(self, uniforms: Tensor, sorted_idx: Tensor, empirical_fisher: bool):
        self.uniforms, self.sorted_idx, self.empirical_fisher = uniforms, sorted_idx, empirical_fisher
        self.draw = 0  # which row of `uniforms` the current pass uses

    def compute_train_loss(self, batch: dict[str, Tensor], model: nn.Module, sample: bool = False) -> Tensor:
        logits = model(batch["image"]).float()
        labels = batch["label"]
        if sample and not self.empirical_fisher:
            with torch.no_grad():
                pos = torch.searchsorted(self.sorted_idx, batch["sample_idx"].cpu())
                u = self.uniforms[self.draw, pos].to(logits.device)
                cdf = logits.double().softmax(dim=1).cumsum(dim=1)
                labels = (cdf < u[:, None]).sum(dim=1).clamp_max(logits.shape[1] - 1)
        return F.cross_entropy(logits, labels, reduction="sum")  # kronfluence expects a sum over the batch

    def compute_measurement(self, batch: dict[str, Tensor], model: nn.Module) -> Tensor:
        return self.compute_train_loss(batch, model, sample=False)

    def get_influence_tracked_modules(self) -> list[str] | None:
        return None  # every Linear and Conv2d

    def get_attention_mask(self, batch: Any) -> None:
        return None

    def post_process_per_sample_gradient(self, module_name: str, gradient: Tensor) -> Tensor:
        return gradient


class _ShardBatches:
    """This process's batches as kronfluence iterates them: again and again, empty batches skipped; remembers the
    `sample_idx` order of the last pass (the order of the scores)."""

    def __init__(self, batches: Iterable[dict[str, Tensor]]):
        self.batches = batches
        self.order: list[Tensor] = []
        self.dataset = self  # kronfluence reads len(loader.dataset) (it matters only in its own distributed mode)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        self.order = []
        for batch in self.batches:
            if batch["image"].shape[0]:
                self.order.append(batch["sample_idx"].cpu())
                yield {"image": batch["image"], "label": batch["label"], "sample_idx": batch["sample_idx"]}

    def __len__(self) -> int:
        return len(self.batches) if hasattr(self.batches, "__len__") else 0


def _check_modules(model: nn.Module) -> tuple[int, int]:
    """(modules, parameters) covered; subclasses of Linear / Conv2d are refused (kronfluence knows the exact types)."""
    covered = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    odd = sorted({type(m).__name__ for m in covered if type(m) not in (nn.Linear, nn.Conv2d)})
    if odd:
        raise TypeError(
            f"influence_full covers plain nn.Linear and nn.Conv2d modules; the teacher has subclasses of them ({odd}) "
            "that kronfluence cannot track. Use the scorer 'influence' (the classifier layer), or a teacher built "
            "from plain layers"
        )
    if not covered:
        raise TypeError(f"{type(model).__name__} has no nn.Linear or nn.Conv2d module for influence_full to cover")
    return len(covered), sum(p.numel() for m in covered for p in m.parameters(recurse=False))


@SCORERS.register("influence_full")
class FullInfluence(Scorer):
    """Self-influence over every Linear and Conv2d weight of the teacher, EK-FAC per module (kronfluence).

    Args:
        damping: lambda, absolute, for every module; overrides `damping_ratio`.
        damping_ratio: lambda_m = damping_ratio x the mean EK-FAC eigenvalue of module m.
        seed: seed of the labels drawn from the teacher for the Fisher.
        empirical_fisher: use the true labels instead of drawn ones (the empirical Fisher).

    Raises:
        ImportError: kronfluence is not installed (`pip install "kd-zoo[influence]"`).
    """

    name = "influence_full"
    needs_model = True

    def __init__(
        self,
        damping: float | None = None,
        damping_ratio: float = DEFAULT_DAMPING_RATIO,
        seed: int = 0,
        empirical_fisher: bool = False,
    ):
        self.kf = load_kronfluence()
        if damping is not None and not damping > 0:
            raise ValueError(f"damping must be > 0, got {damping}")
        if not damping_ratio > 0:
            raise ValueError(f"damping_ratio must be > 0, got {damping_ratio}")
        self.damping, self.damping_ratio = damping, float(damping_ratio)
        self.seed, self.empirical_fisher = int(seed), bool(empirical_fisher)
        self._scores: tuple[Tensor, Tensor] | None = None  # this process's (sorted sample_idx, scores)
        self._summary: dict[str, Any] = {}

    def begin(self, ctx: ScoringContext) -> None:
        super().begin(ctx)
        self._sorted_idx = torch.sort(ctx.sample_idx).values
        generator = torch.Generator().manual_seed(self.seed)
        uniforms = torch.rand(2, len(self._sorted_idx), generator=generator, dtype=torch.float64)
        self._task = _CrossEntropyTask(uniforms, self._sorted_idx, self.empirical_fisher)

    def fit_model(self, teacher: nn.Module, batches: Iterable[dict[str, Tensor]]) -> None:
        kf, comm = self.kf, self.ctx.comm
        modules, params = _check_modules(teacher)
        model = kf.prepare_model(copy.deepcopy(teacher).to(comm.device).eval(), self._task)
        state, shard = _LocalState(comm.device), _ShardBatches(batches)
        factor_args = kf.FactorArguments(strategy="ekfac", use_empirical_fisher=self.empirical_fisher)
        quiet = dict(disable_tqdm=True)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="kronfluence")  # its GradScaler call
            self._task.draw = 0
            _, covariances = kf.fit_covariance(model, state, self._task, shard, factor_args, **quiet)
            covariances = self._sum(covariances)
            if comm.is_main:
                eigen = kf.eigendecomposition(covariances, model, state, factor_args, **quiet)
            else:
                eigen = self._eigen_placeholders(covariances)
            eigen = {name: {m: self._broadcast(t) for m, t in per.items()} for name, per in eigen.items()}
            self._task.draw = 1
            _, lambdas = kf.fit_lambda(model, state, self._task, shard, factor_args, eigen_factors=eigen, **quiet)
            lambdas, damping = self._damped(self._sum(lambdas))
            score_args = kf.ScoreArguments(damping_factor=0.0)  # the damping is already in the lambdas
            scores = kf.self_scores(
                {**eigen, **lambdas}, model, state, self._task, shard, score_args, factor_args, None, **quiet
            )
        (local,) = scores.values()  # the sum over modules
        order = torch.cat(shard.order) if shard.order else torch.zeros(0, dtype=torch.int64)
        if len(order) != len(local):
            raise RuntimeError(f"influence_full scored {len(local)} samples but saw {len(order)} in its last pass")
        sorted_idx, perm = torch.sort(order)
        self._scores = (sorted_idx, local.double()[perm])
        self._summary = {
            "modules": modules,
            "parameters": params,
            "damping_min": min(damping.values()),
            "damping_max": max(damping.values()),
        }
        del model

    def _sum(self, factors: dict[str, dict[str, Tensor]]) -> dict[str, dict[str, Tensor]]:
        """Per-module statistics summed across processes (floats in float64), back on the CPU in their dtypes."""
        comm = self.ctx.comm
        out: dict[str, dict[str, Tensor]] = {}
        for name, per_module in factors.items():
            out[name] = {}
            for module, t in per_module.items():
                wide = t.to(comm.device, torch.float64 if t.is_floating_point() else t.dtype)
                out[name][module] = comm.sum(wide).to("cpu", t.dtype)
        return out

    def _broadcast(self, tensor: Tensor) -> Tensor:
        comm = self.ctx.comm
        return comm.broadcast(tensor.to(comm.device)).cpu()

    def _eigen_placeholders(self, covariances: dict[str, dict[str, Tensor]]) -> dict[str, dict[str, Tensor]]:
        """Tensors of the eigendecomposition's shapes, for the processes that receive it by broadcast."""
        out: dict[str, dict[str, Tensor]] = {}
        for cov, vectors, values in zip(self.kf.COVARIANCES, self.kf.EIGENVECTORS, self.kf.EIGENVALUES, strict=True):
            out[vectors] = {m: torch.empty_like(c) for m, c in covariances[cov].items()}
            out[values] = {m: torch.empty(c.shape[0], dtype=c.dtype) for m, c in covariances[cov].items()}
        return out

    def _damped(self, lambdas: dict[str, dict[str, Tensor]]) -> tuple[dict[str, dict[str, Tensor]], dict[str, float]]:
        """The summed eigenvalue corrections with each module's damping added (kronfluence divides by the count)."""
        kf = self.kf
        damping = {}
        for module, total in lambdas[kf.LAMBDA].items():
            count = lambdas[kf.NUM_LAMBDA][module].to(torch.float64)
            mean = float(total.to(torch.float64).mean() / count.reshape(-1)[0])
            damping[module] = self.damping if self.damping is not None else self.damping_ratio * mean
            if not math.isfinite(damping[module]) or damping[module] <= 0:
                raise ValueError(
                    f"influence_full: module {module!r} has no curvature (mean eigenvalue {mean}): the teacher's "
                    "gradients there are zero on this data; pass an absolute damping=... or use the scorer 'influence'"
                )
            lambdas[kf.LAMBDA][module] = (total.to(torch.float64) + damping[module] * count).to(total.dtype)
        return lambdas, damping

    def fit(self) -> None:
        if self._scores is None:
            raise RuntimeError(
                "influence_full was not given the teacher: ScoringPass.fit_model_scorers(teacher, batches) must run "
                "before finish() (score_batches and score_dataset do it)"
            )

    def score(self, chunk: HeadChunk) -> Tensor:
        sorted_idx, scores = self._scores
        idx = chunk.sample_idx.cpu()
        pos = torch.searchsorted(sorted_idx, idx).clamp_max(max(len(sorted_idx) - 1, 0))
        if len(idx) and (not len(sorted_idx) or not torch.equal(sorted_idx[pos], idx)):
            raise RuntimeError(
                "influence_full's passes saw other samples than the teacher pass: the loader given to "
                "fit_model_scorers must be the one of the pass (this process's shard, every sample once)"
            )
        return scores[pos].to(chunk.labels.device)

    def settings(self) -> dict[str, Any]:
        return {
            "hessian": "ekfac-all-linear-conv2d (kronfluence, block-diagonal per module)",
            "kronfluence_version": self.kf.version,
            "fisher": "empirical (true labels)" if self.empirical_fisher else "true (labels drawn from the teacher)",
            "seed": self.seed,
            "damping": self.damping,
            "damping_ratio": None if self.damping is not None else self.damping_ratio,
            "damping_rule": "absolute" if self.damping is not None else "damping_ratio * mean eigenvalue, per module",
            **self._summary,
        }
