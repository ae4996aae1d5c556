"""Compiled user–item pair scores for :func:`freqd.distillers.sampling.pair_scores`, via Numba.

The ranking distillers score each batch user against a few hundred listed items (RRD: 300 on
Gowalla). In torch that is a gather of the item rows into a (rows, k, d) block, a batched product,
and in the backward pass a product per side plus a scatter of the item rows' gradients: four passes
over the block for d = 20 multiply-adds per pair. These loops make one pass each way and never
build the block. Each score and each gradient entry is summed in the order the torch path uses
(over the d components; over the listed items in row order), so the results are the same on the
sizes checked (``benchmarks/bench_pair_scores.py`` records whether they are bit-equal).
Importing this module imports Numba.
"""

from __future__ import annotations

import numba


@numba.njit(nogil=True, cache=True)
def scores(user_rows, item_table, items, out):  # pragma: no cover - compiled
    """out[r, j] = ⟨user_rows[r], item_table[items[r, j]]⟩."""
    n_rows, k = items.shape
    d = item_table.shape[1]
    for r in range(n_rows):
        for j in range(k):
            item = items[r, j]
            acc = item_table[item, 0] * user_rows[r, 0]  # in the tables' precision, as torch sums
            for c in range(1, d):
                acc += item_table[item, c] * user_rows[r, c]
            out[r, j] = acc


@numba.njit(nogil=True, cache=True)
def scores_backward(user_rows, item_table, items, grad, grad_users, grad_items):  # pragma: no cover - compiled
    """Accumulate the gradients of Σ grad[r, j] · out[r, j] into ``grad_users`` (rows) and ``grad_items``
    (the whole table; rows never listed stay as they are)."""
    n_rows, k = items.shape
    d = item_table.shape[1]
    for r in range(n_rows):
        for j in range(k):
            item = items[r, j]
            g = grad[r, j]
            for c in range(d):
                grad_users[r, c] += g * item_table[item, c]
                grad_items[item, c] += g * user_rows[r, c]

