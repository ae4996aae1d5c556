"""Compiled Hamming top-k for :class:`freqd.codes.HammingIndex` (``random`` tie-break), via Numba.

NumPy needs about seven passes over every user × item block (XOR, popcount, widen, shift, or,
mask, select) and ``torch.topk`` on the keys; FAISS's binary index has no per-user exclusions
and breaks ties by item id, so neither serves the declared ranking fast. This kernel makes one
pass per user over the catalogue and selects without sorting it:

1. distances ``popcount(u XOR i)`` summed over the words of a code, in item blocks of ``BLOCK``,
   keeping a lower bound of each block's minimum; excluded items then get the distance
   ``bits + 1`` (they rank after all others);
2. a histogram of the blocks with the k smallest bounds (at least k items) gives a distance t
   with at least k items at distance ≤ t, so t is at least the true k-th distance;
3. the items at distance ≤ t (only in blocks whose bound is ≤ t) hold the top k; they are ranked
   by the integer key ``distance · 2^shift + (item key XOR user mask)``.

Integers only, as the ``random`` scheme promises. Importing this module imports Numba.
"""

from __future__ import annotations

import numba
import numpy as np

BLOCK = 64

_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)
_S1, _S2, _S4, _S56 = np.uint64(1), np.uint64(2), np.uint64(4), np.uint64(56)


@numba.njit(nogil=True, cache=True, inline="always")
def _popcount(x):  # pragma: no cover - compiled
    """Bits set in a uint64; LLVM turns this form into the popcount instruction."""
    x = x - ((x >> _S1) & _M1)
    x = (x & _M2) + ((x >> _S2) & _M2)
    x = (x + (x >> _S4)) & _M4
    return (x * _H01) >> _S56


@numba.njit(nogil=True, cache=True, inline="always")
def _level_reaching(hist, k):  # pragma: no cover - compiled
    """The smallest value v with hist[0] + … + hist[v] ≥ k (the histogram holds at least k)."""
    seen = 0
    level = 0
    while seen + hist[level] < k:
        seen += hist[level]
        level += 1
    return level


@numba.njit(nogil=True, cache=True)
def topk_random(user_words, item_words, users, item_keys, user_masks, shift, indptr, indices, k, bits,
                dist, out):  # pragma: no cover - compiled
    """``out[r]`` = the k items of ``users[r]`` with the smallest keys, smallest first.

    ``user_words``: users × words; ``item_words``: words × items (one row per word); ``dist``: an
    items-long scratch array of an unsigned type that holds ``bits + 1``; ``indptr``/``indices``:
    the CSR of excluded items over all users; ``k`` ≤ items.
    """
    n_words, n_items = item_words.shape
    sentinel = bits + 1
    n_blocks = (n_items + BLOCK - 1) // BLOCK
    n_full = n_items // BLOCK
    block_min = np.empty(n_blocks, np.int64)
    block_hist = np.zeros(bits + 2, np.int64)
    hist = np.zeros(bits + 2, np.int64)
    keys = np.empty(n_items, np.int64)
    picked = np.empty(n_items, np.int64)
    for r in range(users.shape[0]):
        u = users[r]
        user_row = user_words[u]
        for b in range(n_full):  # whole blocks: fixed-length loops, which LLVM vectorises
            b0 = b * BLOCK
            word = user_row[0]
            row = item_words[0]
            for i in range(BLOCK):
                dist[b0 + i] = _popcount(np.uint64(word ^ row[b0 + i]))
            for w in range(1, n_words):
                word = user_row[w]
                row = item_words[w]
                for i in range(BLOCK):
                    dist[b0 + i] += np.uint8(_popcount(np.uint64(word ^ row[b0 + i])))
            lo = dist[b0]
            for i in range(BLOCK):
                lo = min(lo, dist[b0 + i])
            block_min[b] = lo
        if n_full < n_blocks:
            b0 = n_full * BLOCK
            for i in range(b0, n_items):
                dist[i] = _popcount(np.uint64(user_row[0] ^ item_words[0, i]))
            for w in range(1, n_words):
                for i in range(b0, n_items):
                    dist[i] += np.uint8(_popcount(np.uint64(user_row[w] ^ item_words[w, i])))
            lo = dist[b0]
            for i in range(b0, n_items):
                lo = min(lo, dist[i])
            block_min[n_full] = lo
        for j in range(indptr[u], indptr[u + 1]):
            dist[indices[j]] = sentinel  # block minima stay lower bounds: every step below still holds
        bound = sentinel
        if n_blocks >= k:
            block_hist[:] = 0
            for b in range(n_blocks):
                block_hist[block_min[b]] += 1
            bound = _level_reaching(block_hist, k)
        hist[:] = 0
        for b in range(n_blocks):
            if block_min[b] <= bound:
                for i in range(b * BLOCK, min(b * BLOCK + BLOCK, n_items)):
                    hist[dist[i]] += 1
        t = _level_reaching(hist, k)
        m = 0
        mask = np.int64(user_masks[u])
        for b in range(n_blocks):
            if block_min[b] <= t:
                for i in range(b * BLOCK, min(b * BLOCK + BLOCK, n_items)):
                    if dist[i] <= t:
                        keys[m] = (np.int64(dist[i]) << shift) | (np.int64(item_keys[i]) ^ mask)
                        picked[m] = i
                        m += 1
        if m < k:  # cannot happen while steps 2-3 hold; an error instead of reading past the candidates
            raise RuntimeError("Hamming top-k: fewer candidates than k")
        order = np.argsort(keys[:m])
        for j in range(k):
            out[r, j] = picked[order[j]]
