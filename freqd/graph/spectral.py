"""Spectral references (docs/method.md): exact per-frequency losses (small graphs, and bipartite graphs of a
few thousand users through one SVD), Rayleigh quotients (any graph)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

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


class BipartiteSpectrum(NamedTuple):
    """The thin SVD B = U diag(σ) Vᵀ of the user–item block of a bipartite Â = [[0, B], [Bᵀ, 0]].

    It is the whole eigendecomposition of L = I − Â: each (σ_k, u_k, v_k) gives the eigenvectors
    [u_k; ±v_k]/√2 with λ = 1 ∓ σ_k, and every vector orthogonal to all of them (the rest of either
    side) has λ = 1.
    """

    sigma: Tensor  # (r,), r = min(n_users, n_items), descending
    left: Tensor  # (n_users, r)
    right: Tensor  # (n_items, r)

    @property
    def eigenvalues(self) -> Tensor:
        """L's N = n_users + n_items eigenvalues, ascending."""
        n = self.left.shape[0] + self.right.shape[0]
        ones = self.sigma.new_ones(n - 2 * self.sigma.numel())
        return torch.cat([1 - self.sigma, 1 + self.sigma, ones]).sort().values


def bipartite_spectrum(adj: Tensor, n_users: int) -> BipartiteSpectrum:
    """The :class:`BipartiteSpectrum` of a bipartite normalised adjacency (users are nodes [0, n_users)).

    One float64 SVD of the n_users × n_items block, O(n_u n_i min(n_u, n_i)) time and n_u n_i memory,
    instead of a dense N × N eigendecomposition: exact per-frequency energies on graphs such as
    citeulike-t (5 k users, 25 k items). Raises if ``adj`` has an edge inside one side.
    """
    a = adj.to_sparse_coo().coalesce()
    rows, cols = a.indices()
    values = a.values().to(torch.float64)
    n_items = a.shape[0] - n_users
    if bool(((rows < n_users) == (cols < n_users)).any()):
        raise ValueError("bipartite_spectrum needs a bipartite adjacency: an edge joins two nodes of one side")
    keep = rows < n_users
    block = torch.zeros(n_users, n_items, dtype=torch.float64)
    block[rows[keep], cols[keep] - n_users] = values[keep]
    left, sigma, right_t = torch.linalg.svd(block, full_matrices=False)
    return BipartiteSpectrum(sigma, left, right_t.T)


def bipartite_frequency_energies(spectrum: BipartiteSpectrum, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
    """(λ, E) for the signal X = [users; items]: E_k = ‖φ_kᵀ X‖² over L's eigenvectors, Σ E = ‖X‖² (Parseval).

    The pairs come first (λ = 1 − σ_k, then 1 + σ_k); the last entry is the energy of the rest, at
    λ = 1 (the part of each side orthogonal to its singular vectors).
    """
    xu, xi = users.detach().to(torch.float64), items.detach().to(torch.float64)
    a, b = spectrum.left.T @ xu, spectrum.right.T @ xi
    plus, minus = (a + b).pow(2).sum(1) / 2, (a - b).pow(2).sum(1) / 2
    rest = (xu.pow(2).sum() - a.pow(2).sum() + xi.pow(2).sum() - b.pow(2).sum()).clamp_min(0)
    lam = torch.cat([1 - spectrum.sigma, 1 + spectrum.sigma, spectrum.sigma.new_ones(1)])
    return lam, torch.cat([plus, minus, rest.reshape(1)])
