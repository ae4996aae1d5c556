"""Top-K co-occurrence graphs over users or items (docs/method.md), built without a dense N×N matrix."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from freqd.graph.adjacency import normalized_adjacency

_WORK_BUDGET = 1 << 23
"""Upper bound on the multiply-adds (hence on the nonzeros) of one chunk of R[chunk] @ Rᵀ."""


def _as_numpy_ids(ids: Tensor | np.ndarray | list[int], name: str, upper: int) -> np.ndarray:
    arr = ids.detach().cpu().numpy() if isinstance(ids, Tensor) else np.asarray(ids)
    arr = arr.astype(np.int64, copy=False).ravel()
    if arr.size and (arr.min() < 0 or arr.max() >= upper):
        raise ValueError(f"{name} ids must lie in [0, {upper}), got range [{arr.min()}, {arr.max()}]")
    return arr


def _row_chunks(work: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Split rows into contiguous chunks whose summed ``work`` stays under ``budget`` (≥ 1 row each)."""
    bounds, start, n = [], 0, len(work)
    cum = np.concatenate([[0], np.cumsum(work)])
    while start < n:
        stop = int(np.searchsorted(cum, cum[start] + budget, side="right")) - 1
        stop = min(max(stop, start + 1), n)
        bounds.append((start, stop))
        start = stop
    return bounds


def _topk_chunk(
    counts: sp.csr_matrix, offset: int, k: int, tie_rank: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` off-diagonal columns of each row of ``counts`` (rows ``offset…``).

    Ties go to the smaller column, or to the smaller ``tie_rank[column]`` (a permutation) if given.
    """
    rows = np.repeat(np.arange(counts.shape[0], dtype=np.int64), np.diff(counts.indptr))
    cols = counts.indices.astype(np.int64, copy=False)
    data = counts.data.astype(np.int64, copy=False)
    keep = (cols != rows + offset) & (data > 0)
    rows, cols, data = rows[keep], cols[keep], data[keep]
    if rows.size == 0:
        return rows, cols
    n_cols, top = counts.shape[1], int(data.max())
    tie = cols if tie_rank is None else tie_rank[cols]
    if counts.shape[0] * (top + 1) * n_cols < 2**62:
        # One int64 key ordered by (row, count descending, tie rank ascending): a single argsort.
        order = np.argsort(rows * ((top + 1) * n_cols) + (top - data) * n_cols + tie, kind="stable")
    else:
        order = np.lexsort((tie, -data, rows))
    rows, cols = rows[order], cols[order]
    first = np.searchsorted(rows, rows, side="left")
    selected = np.arange(rows.size) - first < k
    return rows[selected] + offset, cols[selected]


def cooccurrence_adjacency(
    users: Tensor | np.ndarray,
    items: Tensor | np.ndarray,
    n_rows: int,
    n_cols: int,
    k: int = 5,
    side: str = "user",
    dtype: torch.dtype = torch.float32,
    tie_seed: int | None = None,
) -> Tensor:
    """Normalised top-``k`` co-occurrence graph of users (C = R Rᵀ) or items (C = Rᵀ R), as an N×N CSR.

    ``users``/``items`` are the training pairs of the binary matrix R (n_rows × n_cols); duplicates
    count once. Each node keeps its ``k`` largest off-diagonal counts as unweighted edges (the
    diagonal is excluded explicitly; ties go to the smaller neighbour index; rows with fewer than
    ``k`` co-occurring nodes keep all of them). The edge set is symmetrised as (A + Aᵀ)/2, so mutual
    top-k pairs weigh 1 and one-sided pairs 0.5, then normalised with :func:`normalized_adjacency`:
    zero-degree nodes (padding id 0, cold nodes) get zero rows. C is computed in row chunks with
    scipy and never densified.

    Ties are frequent (on Gowalla about 2/3 of rows tie at the k-th place), so smaller-index
    tie-breaking concentrates edges on low ids (max degree 1,045 users / 3,351 items vs 859 / 2,474
    with shuffled ids). ``tie_seed`` breaks ties by a seeded random permutation of node ids instead
    (still deterministic).

    Measured on Gowalla's training split (29,858 users × 40,981 items, 810k pairs, k = 5, one CPU
    thread on a busy machine): about 5.5 s per graph (users or items), peak ≈ 0.35 GB above baseline.
    """
    if side not in ("user", "item"):
        raise ValueError(f"side must be 'user' or 'item', got {side!r}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    u = _as_numpy_ids(users, "user", n_rows)
    i = _as_numpy_ids(items, "item", n_cols)
    if u.shape != i.shape:
        raise ValueError(f"users and items must pair up, got {u.size} and {i.size} ids")
    r = sp.csr_matrix((np.ones(u.size, dtype=np.int32), (u, i)), shape=(n_rows, n_cols))
    r.sum_duplicates()
    r.data[:] = 1
    m = r if side == "user" else r.T.tocsr()
    mt = m.T.tocsr()
    n = m.shape[0]
    work = m @ np.diff(mt.indptr).astype(np.int64)
    tie_rank = None if tie_seed is None else np.random.default_rng(tie_seed).permutation(n)
    src, dst = [], []
    for start, stop in _row_chunks(work, _WORK_BUDGET):
        s, d = _topk_chunk((m[start:stop] @ mt).tocsr(), start, k, tie_rank)
        src.append(s)
        dst.append(d)
    src_all = np.concatenate(src) if src else np.zeros(0, dtype=np.int64)
    dst_all = np.concatenate(dst) if dst else np.zeros(0, dtype=np.int64)
    a = sp.csr_matrix((np.ones(src_all.size), (src_all, dst_all)), shape=(n, n))
    sym = ((a + a.T) * 0.5).tocsr()
    sym.sum_duplicates()
    sym.sort_indices()
    coo = sym.tocoo()
    edge_index = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    return normalized_adjacency(edge_index, n, torch.from_numpy(coo.data).to(dtype))
