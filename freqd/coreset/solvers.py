"""Coreset solvers: the units to KEEP for training a teacher or distilling (docs/coreset.md).

A selection maximises f(S) = Σ_{z∈S} I(z) − α Σ_{z,s∈S} K(z, s) over sets of exactly p units:
importance I rewards informative units, the similarity K (sparse, symmetric, zero diagonal)
penalises redundant pairs. :func:`select` returns the indices to KEEP, sorted, unique, exactly
``budget`` of them, deterministic for a seed; it never returns pruned indices. Selections are
static: computed once, before training.

Solvers (``solver``):

- ``infomax``: the relaxation over the capped simplex {x ∈ [0, 1]^N : Σx = p}, solved by
  Frank–Wolfe (``method="frank_wolfe"``: x ← (1 − γ)x + γ·1[top-p of ∇f], γ = 2/(t + 2); the
  linear oracle over that set is exactly the top-p indicator) or by softmax ascent
  (``method="softmax"``: x ← p·softmax(∇f/τ), capped at 1), then rounded to the top p of x and
  improved by single swaps while f rises (f is not concave: K has a zero diagonal);
- ``greedy``: add the unit of largest marginal gain I(z) − 2α Σ_{s∈S} K(z, s) until |S| = p;
- ``random``: p units drawn uniformly with ``seed``;
- ``topk``: the p most important units (α = 0);
- ``kcenter``: greedy farthest-point selection on ``features`` (cosine distance), from the most
  important unit.

``partitions`` = d solves d random groups separately with proportional budgets, then trims the
union to exactly p by each unit's marginal gain within it.
"""

from __future__ import annotations

import math
from typing import Literal, NewType, get_args

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata

#: Sorted, unique indices of the units to keep (never the pruned ones).
KeepIndices = NewType("KeepIndices", np.ndarray)
Solver = Literal["infomax", "greedy", "random", "topk", "kcenter"]
SOLVERS: tuple[Solver, ...] = get_args(Solver)
Method = Literal["frank_wolfe", "softmax"]
METHODS: tuple[Method, ...] = get_args(Method)


def rank_normalise(values: np.ndarray) -> np.ndarray:
    """Ranks scaled to [0, 1] (ties share their mean rank); a constant input maps to 0.5."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2 or np.all(values == values[0]):
        return np.full(len(values), 0.5)
    return (rankdata(values) - 1.0) / (len(values) - 1.0)


def knn_similarity(features: np.ndarray, k: int) -> sp.csr_matrix:
    """Cosine similarity of each row to its ``k`` nearest rows (scikit-learn), symmetrised by the
    larger of the two directions, zero diagonal."""
    from sklearn.neighbors import NearestNeighbors

    features = np.asarray(features, dtype=np.float64)
    n = len(features)
    k = min(int(k), n - 1)
    if k < 1:
        return sp.csr_matrix((n, n))
    distances, neighbours = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(features).kneighbors(features)
    rows = np.repeat(np.arange(n), k + 1)
    sims = sp.csr_matrix((1.0 - distances.ravel(), (rows, neighbours.ravel())), shape=(n, n))
    return _symmetric_without_diagonal(sims)


def jaccard_similarity(histories: sp.spmatrix, k: int, block: int = 2048) -> sp.csr_matrix:
    """Jaccard similarity of binary histories (rows), the ``k`` largest per row kept, symmetrised, zero diagonal."""
    histories = sp.csr_matrix(histories, dtype=np.float64)
    histories.data[:] = 1.0
    n = histories.shape[0]
    sizes = np.asarray(histories.sum(1)).ravel()
    rows, cols, values = [], [], []
    for start in range(0, n, block):
        inter = (histories[start:start + block] @ histories.T).toarray()
        union = sizes[start:start + block, None] + sizes[None, :] - inter
        sims = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -1.0  # never one's own neighbour
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        chosen = np.take_along_axis(sims, top, axis=1)
        keep = chosen > 0
        rows.append(np.repeat(np.arange(start, start + len(sims)), k)[keep.ravel()])
        cols.append(top[keep])
        values.append(chosen[keep])
    sims = sp.csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return _symmetric_without_diagonal(sims)


def _symmetric_without_diagonal(matrix: sp.spmatrix) -> sp.csr_matrix:
    matrix = sp.csr_matrix(matrix)
    matrix = matrix.maximum(matrix.T).tolil()
    matrix.setdiag(0.0)
    out = sp.csr_matrix(matrix)
    out.eliminate_zeros()
    return out


def objective(keep: np.ndarray, importance: np.ndarray, similarity: sp.spmatrix | None, alpha: float) -> float:
    """f(S) = Σ_{z∈S} I(z) − α Σ_{z,s∈S} K(z, s) of the kept units."""
    keep = np.asarray(keep, dtype=np.int64)
    value = float(np.asarray(importance, dtype=np.float64)[keep].sum())
    if similarity is not None and alpha:
        value -= alpha * float(sp.csr_matrix(similarity)[keep][:, keep].sum())
    return value


def select(importance: np.ndarray, similarity: sp.spmatrix | None, budget: int | float, *, alpha: float = 1.0,
           solver: Solver = "infomax", method: Method = "frank_wolfe", iters: int = 50, temperature: float = 0.1,
           partitions: int = 1, features: np.ndarray | None = None, seed: int = 0) -> KeepIndices:
    """The units to KEEP: sorted, unique, exactly ``budget`` of them (an int, or a fraction in (0, 1]).

    ``importance`` has one value per unit (rank-normalise it first to mix sources:
    :func:`rank_normalise`); ``similarity`` is an N × N sparse matrix (symmetric, zero diagonal;
    None: no redundancy term); ``features`` are needed by ``kcenter`` only.
    """
    importance = np.asarray(importance, dtype=np.float64)
    n = len(importance)
    p = _budget(budget, n)
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    if int(partitions) < 1 or int(iters) < 1:
        raise ValueError(f"partitions and iters must be >= 1, got partitions={partitions!r}, iters={iters!r}")
    if not np.all(np.isfinite(importance)):
        raise ValueError("importance has NaN or infinite values")
    if similarity is not None:
        similarity = sp.csr_matrix(similarity, dtype=np.float64)
        if similarity.shape != (n, n):
            raise ValueError(f"similarity must be {n} x {n} (one row per unit), got {similarity.shape}")
    if solver == "kcenter" and (features is None or len(features) != n):
        raise ValueError(f"solver='kcenter' needs features with one row per unit ({n})")
    rng = np.random.default_rng(seed)
    if partitions == 1 or solver in ("random", "topk"):
        keep = _solve(importance, similarity, p, alpha, solver, method, iters, temperature, features, rng)
    else:
        keep = _partitioned(importance, similarity, p, alpha, solver, method, iters, temperature, features, rng,
                            int(partitions))
    keep = np.unique(keep)
    assert len(keep) == p, (len(keep), p)
    return KeepIndices(keep.astype(np.int64))


def _budget(budget: int | float, n: int) -> int:
    """A count (an int in 1..n) or a fraction (a float in (0, 1]) as a number of units."""
    if isinstance(budget, (float, np.floating)):
        if not 0 < budget <= 1:
            raise ValueError(f"budget as a fraction must lie in (0, 1], got {budget}")
        return max(1, round(float(budget) * n))
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise ValueError(f"budget must be a number of units or a fraction in (0, 1], got {budget!r}")
    if not 1 <= budget <= n:
        raise ValueError(f"budget must lie in 1..{n} (the number of units), got {budget}")
    return int(budget)


def _top(values: np.ndarray, p: int, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``p`` largest values; ties by ``tiebreak`` (larger first), then the smaller index."""
    keys = (np.arange(len(values)),) if tiebreak is None else (np.arange(len(values)), -tiebreak)
    return np.lexsort((*keys, -values))[:p]


def _solve(importance, similarity, p, alpha, solver, method, iters, temperature, features, rng) -> np.ndarray:
    n = len(importance)
    if p == n:
        return np.arange(n)
    if solver == "random":
        return rng.choice(n, size=p, replace=False)
    if solver == "topk":
        return _top(importance, p)
    if similarity is None:
        similarity = sp.csr_matrix((n, n))
    if solver == "greedy":
        return _greedy(importance, similarity, p, alpha)
    if solver == "kcenter":
        return _kcenter(np.asarray(features, dtype=np.float64), importance, p)
    return _infomax(importance, similarity, p, alpha, method, iters, temperature)


def _gradient(importance: np.ndarray, similarity: sp.csr_matrix, x: np.ndarray, alpha: float) -> np.ndarray:
    return importance - 2.0 * alpha * (similarity @ x)


def _infomax(importance, similarity, p, alpha, method, iters, temperature) -> np.ndarray:
    n = len(importance)
    x = np.full(n, p / n)
    for t in range(iters):
        grad = _gradient(importance, similarity, x, alpha)
        if method == "frank_wolfe":
            vertex = np.zeros(n)
            vertex[_top(grad, p)] = 1.0
            gamma = 2.0 / (t + 2.0)
            x = (1.0 - gamma) * x + gamma * vertex
        else:
            x = _capped_mass(np.exp((grad - grad.max()) / temperature), p)
    return _swap_polish(_top(x, p, tiebreak=_gradient(importance, similarity, x, alpha)), importance, similarity, alpha)


def _swap_polish(keep: np.ndarray, importance: np.ndarray, similarity: sp.csr_matrix, alpha: float,
                 candidates: int = 64) -> np.ndarray:
    """Local search after rounding: the best single swap among the ``candidates`` kept units of least
    contribution and outside units of most gain, while f rises
    (f(S − z + y) − f(S) = gain(y) − loss(z) + 2αK(y, z)); at most N swaps."""
    n = len(importance)
    inside = np.zeros(n)
    inside[keep] = 1.0
    penalty = similarity @ inside
    for _ in range(n):
        marginal = importance - 2.0 * alpha * penalty
        kept = inside > 0
        if kept.all():
            break
        outside_idx, kept_idx = np.flatnonzero(~kept), np.flatnonzero(kept)
        ys = outside_idx[np.argsort(-marginal[outside_idx], kind="stable")[:candidates]]
        zs = kept_idx[np.argsort(marginal[kept_idx], kind="stable")[:candidates]]
        delta = marginal[ys, None] - marginal[None, zs] + 2.0 * alpha * similarity[ys][:, zs].toarray()
        best = np.unravel_index(int(np.argmax(delta)), delta.shape)
        if delta[best] <= 1e-12:
            break
        y, z = int(ys[best[0]]), int(zs[best[1]])
        inside[z], inside[y] = 0.0, 1.0
        penalty += similarity.getrow(y).toarray().ravel() - similarity.getrow(z).toarray().ravel()
    return np.flatnonzero(inside)


def _capped_mass(weights: np.ndarray, p: int) -> np.ndarray:
    """``weights`` scaled to total mass p with every entry capped at 1 (the capped part redistributed)."""
    x = np.zeros_like(weights)
    free = np.ones(len(weights), dtype=bool)
    mass = float(p)
    while True:
        scaled = weights[free] * (mass / max(weights[free].sum(), 1e-300))
        over = scaled > 1.0
        if not over.any():
            x[free] = scaled
            return x
        idx = np.flatnonzero(free)[over]
        x[idx] = 1.0
        free[idx] = False
        mass -= len(idx)


def _greedy(importance, similarity, p, alpha) -> np.ndarray:
    penalty = np.zeros(len(importance))
    chosen = np.zeros(len(importance), dtype=bool)
    order = []
    for _ in range(p):
        gain = np.where(chosen, -np.inf, importance - 2.0 * alpha * penalty)
        z = int(np.argmax(gain))  # ties: the smaller index
        chosen[z] = True
        order.append(z)
        row = similarity.getrow(z)
        penalty[row.indices] += row.data
    return np.asarray(order)


def _kcenter(features, importance, p) -> np.ndarray:
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    first = int(np.argmax(importance))
    chosen = [first]
    distance = 1.0 - unit @ unit[first]
    distance[first] = -np.inf
    for _ in range(p - 1):
        z = int(np.argmax(distance))
        chosen.append(z)
        distance = np.minimum(distance, 1.0 - unit @ unit[z])
        distance[chosen] = -np.inf
    return np.asarray(chosen)


def _partitioned(importance, similarity, p, alpha, solver, method, iters, temperature, features, rng,
                 partitions) -> np.ndarray:
    n = len(importance)
    groups = np.array_split(rng.permutation(n), partitions)
    kept = []
    for group in groups:
        if not len(group):
            continue
        group = np.sort(group)
        share = min(len(group), math.ceil(p * len(group) / n))
        sub_sim = None if similarity is None else similarity[group][:, group]
        sub_features = None if features is None else np.asarray(features)[group]
        kept.append(group[_solve(importance[group], sub_sim, share, alpha, solver, method, iters, temperature,
                                 sub_features, rng)])
    union = np.sort(np.concatenate(kept))
    if len(union) > p:  # trim by each unit's marginal gain within the union
        inside = np.zeros(n)
        inside[union] = 1.0
        gain = importance[union] - (0.0 if similarity is None else 2.0 * alpha * (similarity @ inside)[union])
        union = union[_top(gain, p)]
    return union
