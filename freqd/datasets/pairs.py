"""Small helpers on [n, 2] int64 (user, item) arrays, shared by the other modules."""

from __future__ import annotations

import numpy as np


def as_pairs(pairs: np.ndarray, what: str = "pairs") -> np.ndarray:
    """Return ``pairs`` as a contiguous int64 [n, 2] array; ValueError if it cannot be one."""
    arr = np.asarray(pairs)
    if arr.size == 0:
        return np.empty((0, 2), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{what}: expected an array of shape [n, 2], got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what}: expected integer ids, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr.min() < 0:
        bad = tuple(int(v) for v in arr[np.flatnonzero((arr < 0).any(axis=1))[0]])
        raise ValueError(f"{what}: negative id in pair {bad}")
    return arr


def pair_keys(*arrays: np.ndarray) -> list[np.ndarray]:
    """One int64 key per pair, equal exactly when the pairs are equal, across all ``arrays``.

    Ids are first made dense (``np.unique``), so the key never overflows whatever the ids.
    """
    sizes = [len(a) for a in arrays]
    stacked = np.concatenate([a.reshape(-1, 2) for a in arrays]) if arrays else np.empty((0, 2))
    if len(stacked) == 0:
        return [np.empty(0, dtype=np.int64) for _ in arrays]
    _, users = np.unique(stacked[:, 0], return_inverse=True)
    items_unique, items = np.unique(stacked[:, 1], return_inverse=True)
    keys = users.astype(np.int64) * len(items_unique) + items.astype(np.int64)
    return np.split(keys, np.cumsum(sizes)[:-1])


def unique_sorted(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values, sort-based: numpy 2.4's hash-based ``np.unique`` takes about a
    second on a million wide-range int64 keys, a plain sort milliseconds."""
    ordered = np.sort(np.asarray(values).ravel())
    if len(ordered) == 0:
        return ordered
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]]


def isin_sorted(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``np.isin(values, reference)`` by sort + binary search (see :func:`unique_sorted`)."""
    values = np.asarray(values)
    table = np.sort(np.asarray(reference).ravel())
    if len(table) == 0:
        return np.zeros(values.shape, dtype=bool)
    index = np.minimum(np.searchsorted(table, values), len(table) - 1)
    return table[index] == values


def first_occurrences(keys: np.ndarray) -> np.ndarray:
    """Boolean mask keeping the first occurrence of every key, in the original order."""
    keep = np.zeros(len(keys), dtype=bool)
    if len(keys):
        _, first = np.unique(keys, return_index=True)
        keep[first] = True
    return keep


def drop_duplicates(pairs: np.ndarray) -> tuple[np.ndarray, int]:
    """Drop repeated (user, item) pairs, keeping each first occurrence and the order."""
    (keys,) = pair_keys(pairs)
    keep = first_occurrences(keys)
    return pairs[keep], int(len(pairs) - keep.sum())


def group_positions(users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by user: each row's 0-based position in its user's run and the run size."""
    n = len(users)
    if n == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    sizes = np.diff(np.r_[starts, n])
    position = np.arange(n, dtype=np.int64) - np.repeat(starts, sizes)
    return position, np.repeat(sizes, sizes)
