"""Spectral references (docs/method.md): exact per-frequency losses (small graphs), Rayleigh quotients (any graph)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _dense(adj: Tensor) -> Tensor:
    return (adj.to_dense() if adj.layout != torch.strided else adj).to(torch.float64)


def laplacian_eigh(adj: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues (ascending) and orthonormal eigenvectors of L = I − Â, dense float64.

    ``adj`` is the (symmetric) normalised adjacency, CSR or dense. O(N³): small graphs only.
    """
    a = _dense(adj)
    lap = torch.eye(a.shape[0], dtype=torch.float64, device=a.device) - a
    return torch.linalg.eigh((lap + lap.T) / 2)


def per_frequency_losses(adj: Tensor, residual: Tensor) -> tuple[Tensor, Tensor]:
    """(λ_k, L_k) with L_k = ‖u_kᵀ R‖², the decomposition of docs/method.md: Σ_k L_k = ‖R‖²_F (Parseval)."""
    lam, vecs = laplacian_eigh(adj)
    r = residual.detach().to(torch.float64)
    coeffs = vecs.T @ (r if r.dim() == 2 else r[:, None])
    return lam, coeffs.pow(2).sum(1)


def rayleigh_quotients(adj: Tensor, residual: Tensor, powers: Sequence[int] = (1, 2, 3, 4)) -> dict[int, float]:
    """tr(Rᵀ L^p R) / tr(Rᵀ R) for each p, with sparse products only (no eigendecomposition).

    Equals Σ_k λ_k^p L_k / Σ_k L_k: where the residual's energy sits in the spectrum (per-epoch
    logging). Uses tr(Rᵀ L^p R) = ⟨L^a R, L^(p−a) R⟩ with a = ⌊p/2⌋, so the largest power
    costs ⌈p/2⌉ products. ``adj`` must be symmetric (no edge dropout). A zero residual gives 0.0.
    """
    if any(p < 0 for p in powers):
        raise ValueError(f"powers must be non-negative, got {tuple(powers)}")
    with torch.no_grad():
        r = residual.detach()
        r = r if r.dim() == 2 else r[:, None]
        if adj.dtype != r.dtype:
            adj = adj.to(r.dtype)
        levels = [r]
        for _ in range((max(powers, default=0) + 1) // 2):
            levels.append(levels[-1] - adj @ levels[-1])
        energy = float(torch.sum(r * r, dtype=torch.float64))
        out = {}
        for p in powers:
            a = p // 2
            num = float(torch.sum(levels[a] * levels[p - a], dtype=torch.float64))
            out[int(p)] = num / energy if energy > 0 else 0.0
        return out
