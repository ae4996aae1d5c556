"""Polynomial graph filters h(λ) on L = I − Â, edge dropout and curriculum schedules (docs/method.md)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from freqd.graph.adjacency import sym_spmm
from freqd.resolver import Registry

Num = TypeVar("Num", float, np.ndarray, Tensor)  # what h(λ) evaluates on, returned in kind


@dataclass(frozen=True)
class PolynomialFilter:
    """h(λ) = Σ_k a_k λ^k on the normalised Laplacian L = I − Â; H = h(L) = Σ_k b_k Â^k.

    λ ∈ [0, 2] is the graph frequency: small λ = smooth over the graph (low), large λ = oscillating
    (high). The FreqD loss ‖H R‖²_F weights frequency λ by w(λ) = h(λ)² (docs/method.md), so the sign of h
    does not matter and a zero of h removes that frequency. Trailing zero coefficients are dropped,
    so ``order`` is the true degree (``first_order(0)`` is the identity, order 0).

    ==========================  ====================================================================
    setting                     frequencies emphasised (λ of L)
    ==========================  ====================================================================
    first_order(α), α < 0       high-boost: w = (1 − αλ)² increases with λ
    first_order(0)              all-pass, w ≡ 1: plain feature distillation (docs/method.md)
    first_order(α), 0 < α ≤ ½   low-pass, w decreasing on [0, 2]; α = ½ removes λ = 2
    first_order(α), α > ½       not monotone: w = 0 at λ = 1/α, rises to (2α − 1)² at λ = 2
    second_order(α), 0 < α ≤ ½  low-pass, w = (1 − αλ)⁴, steeper than first order
    quadratic(a0, a1, a2)       general; keep a0 = h(0) = 1 to keep λ_KD comparable with plain FD
    ==========================  ====================================================================
    """

    coefficients: tuple[float, ...]

    def __post_init__(self) -> None:
        coeffs = [float(c) for c in self.coefficients]
        if not coeffs:
            raise ValueError("a polynomial filter needs at least one coefficient")
        if not all(math.isfinite(c) for c in coeffs):
            raise ValueError(f"filter coefficients must be finite, got {coeffs}")
        while len(coeffs) > 1 and coeffs[-1] == 0.0:
            coeffs.pop()
        object.__setattr__(self, "coefficients", tuple(coeffs))

    @classmethod
    def first_order(cls, alpha: float) -> PolynomialFilter:
        """h(λ) = 1 − αλ, i.e. H = (1 − α) I + α Â (every reference FreqD version)."""
        return cls((1.0, -float(alpha)))

    @classmethod
    def second_order(cls, alpha: float) -> PolynomialFilter:
        """Canonical quadratic h(λ) = (1 − αλ)², i.e. H = ((1 − α) I + α Â)²."""
        a = float(alpha)
        return cls((1.0, -2.0 * a, a * a))

    @classmethod
    def quadratic(cls, a0: float, a1: float, a2: float) -> PolynomialFilter:
        """General quadratic h(λ) = a0 + a1 λ + a2 λ²."""
        return cls((a0, a1, a2))

    @property
    def order(self) -> int:
        """Degree K of h: the number of sparse products (and hops) H needs."""
        return len(self.coefficients) - 1

    def response(self, lam: Num) -> Num:
        """h(λ), by Horner; works on floats, numpy arrays and tensors."""
        out = self.coefficients[-1] + 0 * lam
        for a in reversed(self.coefficients[:-1]):
            out = out * lam + a
        return out

    def weight(self, lam: Num) -> Num:
        """Spectral loss weight w(λ) = h(λ)² (docs/method.md)."""
        h = self.response(lam)
        return h * h

    def adjacency_coefficients(self) -> tuple[float, ...]:
        """b_0..b_K with H = Σ_j b_j Â^j, from λ = 1 − μ: b_j = (−1)^j Σ_{k≥j} a_k C(k, j)."""
        a = self.coefficients
        return tuple(
            (-1) ** j * sum(a[k] * math.comb(k, j) for k in range(j, len(a))) for j in range(len(a))
        )

    def apply(self, adj: Tensor, x: Tensor, symmetric: bool = False) -> Tensor:
        """H·X with K products by Â (Horner in Â; Â^k is never formed). Differentiable in ``x``.

        ``symmetric=True`` reuses ``adj`` in the backward (:func:`sym_spmm`); only valid for a
        symmetric ``adj``, i.e. not after :func:`edge_dropout`.
        """
        b = self.adjacency_coefficients()
        spmm = sym_spmm if symmetric else torch.matmul
        if adj.dtype != x.dtype:
            adj = adj.to(x.dtype)
        out = b[-1] * x
        for coef in reversed(b[:-1]):
            out = spmm(adj, out) + coef * x
        return out


def edge_dropout(adj: Tensor, keep_prob: float, generator: torch.Generator | None = None) -> Tensor:
    """DropEdge on a CSR matrix: keep each nonzero with probability p and scale survivors by 1/p.

    No re-normalisation: E[result] = adj, but the result is not symmetric.
    ``keep_prob == 1`` returns ``adj`` itself.
    """
    if not 0.0 < keep_prob <= 1.0:
        raise ValueError(f"keep_prob must lie in (0, 1], got {keep_prob}")
    if keep_prob == 1.0:
        return adj
    crow, col, val = adj.crow_indices(), adj.col_indices(), adj.values()
    keep = torch.rand(val.numel(), generator=generator, device=val.device) < keep_prob
    n_rows = crow.numel() - 1
    row = torch.repeat_interleave(torch.arange(n_rows, device=crow.device), crow.diff())
    counts = torch.bincount(row[keep], minlength=n_rows)
    new_crow = torch.cat([crow.new_zeros(1), counts.cumsum(0)]).to(crow.dtype)
    return torch.sparse_csr_tensor(
        new_crow, col[keep], val[keep] / keep_prob, size=adj.shape, check_invariants=False
    )


#: α_t = f(epoch, length, α_0, α_end) by schedule name; :func:`alpha_schedule` documents the formulas.
ALPHA_SCHEDULES: Registry[Callable[[int, int | None, float, float], float]] = Registry("alpha schedule")


def _progress(kind: str, epoch: int, length: int | None) -> float:
    """t/T, held at 1 after ``length`` epochs."""
    if length is None or length <= 0:
        raise ValueError(f"schedule {kind!r} needs a positive curriculum length, got {length}")
    return min(epoch, length) / length


def _cos_half(frac: float) -> float:
    return (1.0 + math.cos(math.pi * frac)) / 2.0


@ALPHA_SCHEDULES.register("const")
def _const(epoch: int, length: int | None, alpha0: float, alpha_end: float) -> float:
    return float(alpha0)


@ALPHA_SCHEDULES.register("cos")
def _cos(epoch: int, length: int | None, alpha0: float, alpha_end: float) -> float:
    return float(alpha_end + (alpha0 - alpha_end) * _cos_half(_progress("cos", epoch, length)))


@ALPHA_SCHEDULES.register("linear")
def _linear(epoch: int, length: int | None, alpha0: float, alpha_end: float) -> float:
    return float(alpha0 + (alpha_end - alpha0) * _progress("linear", epoch, length))


@ALPHA_SCHEDULES.register("reverse")
def _reverse(epoch: int, length: int | None, alpha0: float, alpha_end: float) -> float:
    return float(alpha_end + (alpha0 - alpha_end) * (1.0 - _cos_half(_progress("reverse", epoch, length))))


SCHEDULES = ("const", "cos", "linear", "reverse")


def alpha_schedule(
    kind: str, epoch: int, alpha0: float, alpha_end: float = 0.0, length: int | None = None
) -> float:
    """α_t for the first-order curriculum h_t(λ) = 1 − α_t λ (docs/method.md); held after ``length`` epochs.

    - ``const``: α_0 (reference FreqD; ``length`` unused);
    - ``cos``: α_end + (α_0 − α_end)(1 + cos(π t/T))/2, low-pass → all-pass (→ high-boost if α_end < 0);
    - ``linear``: α_0 + (α_end − α_0) t/T, the same path linearly;
    - ``reverse``: α_end + (α_0 − α_end)(1 − cos(π t/T))/2, all-pass → low-pass (ablation; with
      α_end = 0 this is the spec's α_0(1 − cos(π t/T))/2).

    ``kind`` is looked up in :data:`ALPHA_SCHEDULES` (case, '-' and '_' ignored).
    """
    schedule = ALPHA_SCHEDULES.resolve(kind)
    if epoch < 0:
        raise ValueError(f"epoch must be non-negative, got {epoch}")
    return schedule(epoch, length, alpha0, alpha_end)
