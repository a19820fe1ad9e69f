"""How much a float16 cache can change the KD loss: the bound that its rounding implies, stated and computable.

Storing a teacher logit t in float16 moves it by at most `fp16_rounding(t) = max(2^-11 |t|, 2^-25)` (half a unit in
the last place: 11 significant bits in the normal range, a subnormal step of 2^-24 below 2^-14; |t| < 65504). For
vanilla KD (Hinton et al., arXiv 1503.02531), L = w T^2 mean_i KL(p_i || q_i) with p = softmax(t / T) and
q = softmax(s / T). For one sample let eta = max_j |t'_j - t_j| / T, r_j = log p_j - log q_j and KL = sum_j p_j r_j.
Then

    |KL(p' || q) - KL(p || q)| <= 2 eta e^(2 eta) (3 eta + sum_j p_j |r_j - KL|)

Proof sketch: log-softmax moves each log p_j by d_j with |d_j| <= 2 eta. KL' - KL = sum_j (p'_j - p_j) r'_j +
sum_j p_j d_j with r' = r + d. The second sum is -KL(p || p'), in [-2 eta^2 e^(2 eta), 0]. The first equals
sum_j p_j (e^(d_j) - 1)(r'_j - KL), because sum_j p_j (e^(d_j) - 1) = 0, and |e^d - 1| <= 2 eta e^(2 eta),
|r'_j - KL| <= |r_j - KL| + 2 eta. To first order the bound is 2 eta E_p|r - KL|, the gradient's own bound.

So the KD term of a float16 cache differs from that of a float32 cache by at most `kd_loss_rounding_bound(...)`:
w T^2 times the batch mean of the per-sample bounds. With logits of magnitude at most M, eta <= M 2^-11 / T: for
T = 4, M = 20 that is eta <= 0.0024, and the KD term (w = 0.9) moves by at most about 0.07 E_p|r - KL| (worst case; the
rounding errors of the C logits do not all push one way, so measured changes are far smaller, see
benchmarks/results/teacher_cache.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

FP16_UNIT_ROUNDOFF = 2.0**-11  # half the spacing of float16 numbers in [1, 2)
FP16_SUBNORMAL_HALF_STEP = 2.0**-25  # half the spacing below 2^-14
FP16_MAX = 65504.0


def fp16_rounding(logits: Tensor) -> Tensor:
    """The most `logits.half()` can move each value: `max(2^-11 |t|, 2^-25)` (finite values below 65504)."""
    magnitude = logits.float().abs()
    if magnitude.numel() and float(magnitude.max()) >= FP16_MAX:
        raise ValueError(f"logits of magnitude {float(magnitude.max()):.4g} overflow float16: build a float32 cache")
    return torch.clamp(magnitude * FP16_UNIT_ROUNDOFF, min=FP16_SUBNORMAL_HALF_STEP)


def kl_rounding_bound(teacher_logits: Tensor, student_logits: Tensor, temperature: float, rounding: Tensor) -> Tensor:
    """Per sample, the most KL(softmax(t'/T) || softmax(s/T)) can differ from KL(softmax(t/T) || ...) when each
    teacher logit moves by at most `rounding` (see the module docstring). Float64, shape `[n]`."""
    t, s = teacher_logits.double(), student_logits.double()
    eta = rounding.double().amax(dim=1) / temperature
    log_p = F.log_softmax(t / temperature, dim=1)
    r = log_p - F.log_softmax(s / temperature, dim=1)
    p = log_p.exp()
    kl = (p * r).sum(dim=1, keepdim=True)
    spread = (p * (r - kl).abs()).sum(dim=1)
    return 2 * eta * torch.exp(2 * eta) * (3 * eta + spread)


def kd_loss_rounding_bound(
    teacher_logits: Tensor, student_logits: Tensor, temperature: float, weight: float = 1.0
) -> float:
    """The most a float16 cache can change the KD term `weight * T^2 * batchmean KL` of these rows (the rows'
    float32 teacher and student logits)."""
    per_sample = kl_rounding_bound(teacher_logits, student_logits, temperature, fp16_rounding(teacher_logits))
    return float(weight * temperature**2 * per_sample.mean()) if per_sample.numel() else 0.0
