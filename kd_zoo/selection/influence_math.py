"""Closed-form influence math for a classifier layer (softmax cross-entropy): K-FAC, EK-FAC, the exact Hessian.

The classifier layer maps the pooled pre-logit features h (d values) to C logits: z = W h + b. With the bias as an
extra input 1, phi = [h; 1] (D = d + 1 values) and the layer's parameters are the C x D matrix [W | b], flattened
row-major (entry (c, a) at position c * D + a). For the cross-entropy of sample i with softmax output p_i and
one-hot label y_i (see shared/reference/influence.md):

* gradient: g_i = (p_i - y_i) kron phi_i, i.e. the matrix r_i phi_i^T with the residual r_i = p_i - y_i;
* Hessian (equal to the Gauss-Newton matrix for this layer): H = (1/N) sum_i F_i kron phi_i phi_i^T with
  F_i = diag(p_i) - p_i p_i^T;
* K-FAC: H ~ G kron A, with G = E[F_i] and A = E[phi phi^T]; EK-FAC (George et al., arXiv 1806.03884) keeps the
  eigenbases Q_G, Q_A and replaces the eigenvalue products by the exact diagonal of H in that basis,
  Lambda*_{c,a} = E_i[(q_c^T F_i q_c) (q_a^T phi_i)^2];
* self-influence with damping lambda: s_i = g_i^T (H + lambda I)^-1 g_i, which under EK-FAC is
  sum_{c,a} v_{i,c}^2 u_{i,a}^2 / (Lambda*_{c,a} + lambda), with u_i = Q_A^T phi_i and v_i = Q_G^T r_i.

EK-FAC is exact when H is diagonal in the Kronecker eigenbasis, e.g. when every sample has the same F_i (the same
softmax output): then H = F kron A exactly. `hessian_sum` builds H explicitly (size (C D)^2) as the oracle.

Every function takes float64 tensors and returns *sums* over the samples it is given (not means), so that shards
of the data can be summed across processes before dividing by N.
"""

from __future__ import annotations

import torch
from torch import Tensor


def append_bias(features: Tensor) -> Tensor:
    """phi = [h; 1] in float64: `[n, d]` -> `[n, d + 1]`."""
    features = features.to(torch.float64)
    return torch.cat([features, features.new_ones(features.shape[0], 1)], dim=1)


def residual(probs: Tensor, labels: Tensor) -> Tensor:
    """r = p - onehot(y), the gradient of the cross-entropy with respect to the logits: `[n, C]`."""
    r = probs.clone()
    r[torch.arange(r.shape[0], device=r.device), labels] -= 1.0
    return r


def kfac_sums(phi: Tensor, probs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Sums over the given samples of phi phi^T `[D, D]`, F_i `[C, C]` and tr(F_i kron phi_i phi_i^T) (a scalar).

    tr(F_i kron phi phi^T) = tr(F_i) |phi_i|^2 = (1 - |p_i|^2) |phi_i|^2 (the sum of p_i is one); summed and divided
    by N it is tr(H), which sets the default damping.
    """
    a = phi.T @ phi
    g = torch.diag(probs.sum(0)) - probs.T @ probs
    trace = ((probs.sum(1) - (probs * probs).sum(1)) * (phi * phi).sum(1)).sum()
    return a, g, trace


def ekfac_eigenvalue_sums(phi: Tensor, probs: Tensor, q_a: Tensor, q_g: Tensor) -> Tensor:
    """Sum over the given samples of (q_c^T F_i q_c) (q_a^T phi_i)^2: `[C, D]` (divide by N for Lambda*)."""
    u = phi @ q_a
    # q_c^T (diag p - p p^T) q_c = sum_k p_k q_ck^2 - (p^T q_c)^2
    f = probs @ (q_g * q_g) - (probs @ q_g) ** 2
    return f.T @ (u * u)


def ekfac_self_influence(phi: Tensor, resid: Tensor, q_a: Tensor, q_g: Tensor, inv_eigenvalues: Tensor) -> Tensor:
    """s_i = sum_{c,a} (Q_G^T r_i)_c^2 (Q_A^T phi_i)_a^2 / (Lambda*_{c,a} + lambda): `[n]`.

    Args:
        phi: `[n, D]` features with the bias 1.
        resid: `[n, C]` p - onehot(y).
        q_a: `[D, D]` eigenvectors of A (columns).
        q_g: `[C, C]` eigenvectors of G (columns).
        inv_eigenvalues: `[C, D]` 1 / (Lambda* + lambda).
    """
    u2 = (phi @ q_a) ** 2
    v2 = (resid @ q_g) ** 2
    return ((v2 @ inv_eigenvalues) * u2).sum(1)


def ekfac_cross_influence(
    phi: Tensor, resid: Tensor, q_a: Tensor, q_g: Tensor, preconditioned_target: Tensor
) -> Tensor:
    """t^T (H + lambda I)^-1 g_i for each sample, with `preconditioned_target` = (Q_G^T T Q_A) / (Lambda* + lambda)
    `[C, D]` for a target gradient T (a C x D matrix): `[n]`."""
    return ((resid @ q_g) @ preconditioned_target * (phi @ q_a)).sum(1)


def per_sample_gradients(phi: Tensor, resid: Tensor) -> Tensor:
    """g_i = r_i kron phi_i, flattened row-major: `[n, C * D]`."""
    return (resid[:, :, None] * phi[:, None, :]).reshape(phi.shape[0], -1)


def hessian_sum(phi: Tensor, probs: Tensor, out: Tensor | None = None) -> Tensor:
    """Sum over the given samples of F_i kron phi_i phi_i^T, explicitly: `[C D, C D]` (the oracle; small heads only).

    Entry ((c, a), (c', b)) is sum_i (delta_cc' p_ic - p_ic p_ic') phi_ia phi_ib. With `out`, the sum is added to
    it in place (no second (C D)^2 buffer).
    """
    d = phi.shape[1]
    c = probs.shape[1]
    if out is None:
        out = phi.new_zeros(c * d, c * d)
    m = per_sample_gradients(phi, probs)  # rows p_i kron phi_i
    out.addmm_(m.T, m, alpha=-1.0)
    idx = torch.arange(c, device=phi.device)
    # the diag(p) kron phi phi^T part: one d x d block per class on the block diagonal
    out.view(c, d, c, d)[idx, :, idx, :] += torch.einsum("nc,na,nb->cab", probs, phi, phi)
    return out


def exact_self_influence(phi: Tensor, resid: Tensor, cholesky: Tensor) -> Tensor:
    """g_i^T (H + lambda I)^-1 g_i from the lower Cholesky factor L of H + lambda I: |L^-1 g_i|^2, `[n]`."""
    g = per_sample_gradients(phi, resid)
    x = torch.linalg.solve_triangular(cholesky, g.T, upper=False)
    return (x * x).sum(0)


def classifier_hvp(phi: Tensor, probs: Tensor, v: Tensor) -> Tensor:
    """H v for the mean Hessian over the given samples, without forming H: `v` and the result are `[C, D]`.

    (1/n) sum_i F_i V phi_i phi_i^T, with F_i z = p_i * z - p_i (p_i^T z) for z = V phi_i. This is the product a
    LiSSA-style iterative solver repeats (see benchmarks/selection_speed.py).
    """
    z = phi @ v.T
    fz = probs * z - probs * (probs * z).sum(1, keepdim=True)
    return fz.T @ phi / phi.shape[0]


def resolve_damping(trace_h: float, num_params: int, damping: float | None = None, damping_ratio: float = 0.1) -> float:
    """The damping lambda: `damping` if given, else `damping_ratio` x the mean eigenvalue of H (= tr(H) / #params).

    Raises:
        ValueError: a non-positive result (H + lambda I must be positive definite: H is singular along the
            all-ones direction of the logits, since the softmax is shift-invariant).
    """
    value = float(damping) if damping is not None else float(damping_ratio) * trace_h / num_params
    if not value > 0.0:
        source = f"damping={damping}" if damping is not None else f"damping_ratio={damping_ratio} x tr(H)/P"
        raise ValueError(
            f"the damping must be positive (H is singular), got {value} from {source}; pass damping > 0 or "
            "damping_ratio > 0 (default 0.1)"
        )
    return value
