"""Per-user splitting and core filtering of (user, item) pair arrays.

All functions take and return int64 arrays of shape [n, 2] and are deterministic: random
choices come from a ``numpy.random.Generator`` seeded with the ``seed`` argument.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np

from .pairs import as_pairs, group_positions, unique_sorted

# Slack added before flooring ratio * n: a product that is mathematically an integer but comes
# out of floating point just below it must still floor to that integer.
_FLOOR_EPS = 1e-9


def split_per_user(
    pairs: np.ndarray,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    order: Literal["random", "given"] = "random",
    seed: int = 2020,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split every user's items into train / valid / test ("ROU" rule of the FreqD reference).

    With ``ratios`` (a, b, c) normalised to sum 1, a user with n items in the chosen order gets
    train = the first max(floor(a·n), 1) items, valid = the following items up to position
    floor((a+b)·n), test = the rest. For 8:1:1 this is the woriazzc/KDs rule: every user keeps
    at least one training item, and small users may get no validation (or test) item.

    ``order="given"`` keeps each user's items in file order (chronological when the file is
    time-ordered); ``order="random"`` shuffles them per user with ``default_rng(seed)``.
    Each returned array is grouped by user in order of user id, items in split order.
    """
    pairs = as_pairs(pairs)
    weights = np.asarray(ratios, dtype=np.float64)
    if weights.shape != (3,) or not np.all(np.isfinite(weights)) or weights.min() < 0 or weights.sum() <= 0:
        raise ValueError(f"ratios must be three non-negative numbers with a positive sum, got {ratios!r}")
    train_share, valid_share, _ = weights / weights.sum()
    if order == "random":
        keys = np.random.default_rng(seed).random(len(pairs))
        perm = np.lexsort((keys, pairs[:, 0]))
    elif order == "given":
        perm = np.argsort(pairs[:, 0], kind="stable")
    else:
        raise ValueError(f"order must be 'random' or 'given', got {order!r}")
    ordered = pairs[perm]
    position, size = group_positions(ordered[:, 0])
    n_train = np.maximum(np.floor(train_share * size + _FLOOR_EPS), 1)
    n_train_valid = np.maximum(np.floor((train_share + valid_share) * size + _FLOOR_EPS), n_train)
    train = ordered[position < n_train]
    valid = ordered[(position >= n_train) & (position < n_train_valid)]
    test = ordered[position >= n_train_valid]
    return train, valid, test


def carve_validation(
    train: np.ndarray, fraction: float = 0.1, seed: int = 2020
) -> tuple[np.ndarray, np.ndarray]:
    """Move a random part of each user's training items to a new validation split.

    For data shipped with only train/test (LightGCN Gowalla). Rule, per user with n training
    items: if n >= 2, k = round_half_up(fraction·n) clipped to [1, n-1] items, chosen uniformly
    at random with ``default_rng(seed)``, move to validation; a user with a single training item
    keeps it and gets no validation item. No user's training set is ever emptied, and
    train + valid is exactly the input. Both outputs keep the input's row order.
    """
    train = as_pairs(train, "train")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    keys = np.random.default_rng(seed).random(len(train))
    perm = np.lexsort((keys, train[:, 0]))
    position, size = group_positions(train[perm, 0])
    n_valid = np.clip(np.floor(fraction * size + 0.5), 1, size - 1)
    to_valid = np.zeros(len(train), dtype=bool)
    to_valid[perm] = (size >= 2) & (position < n_valid)
    return train[~to_valid], train[to_valid]


class CoreFilterResult(NamedTuple):
    """Filtered pairs with dense ids, and the maps back: ``user_ids[new_id] = original id``."""

    pairs: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray


def filter_core(pairs: np.ndarray, min_user: int = 5, min_item: int = 0) -> CoreFilterResult:
    """Keep the largest subset where every user has >= min_user and every item >= min_item pairs.

    Users and items below a threshold are removed repeatedly until nothing changes (removing
    items can push users below theirs, and back). Survivors are re-indexed 0..n-1 in ascending
    order of their original ids, so relative order is preserved; the pair order is kept.
    Each row counts once, so drop duplicate pairs first (the readers already do).
    """
    pairs = as_pairs(pairs)
    min_user, min_item = operator.index(min_user), operator.index(min_item)
    if min_user < 0 or min_item < 0:
        raise ValueError(f"min_user and min_item must be >= 0, got {min_user}, {min_item}")
    user_ids, users = np.unique(pairs[:, 0], return_inverse=True)
    item_ids, items = np.unique(pairs[:, 1], return_inverse=True)
    keep = np.ones(len(pairs), dtype=bool)
    while True:
        user_ok = np.bincount(users[keep], minlength=len(user_ids)) >= min_user
        item_ok = np.bincount(items[keep], minlength=len(item_ids)) >= min_item
        new_keep = keep & user_ok[users] & item_ok[items]
        if new_keep.sum() == keep.sum():
            break
        keep = new_keep
    kept = pairs[keep]
    new_user_ids = unique_sorted(kept[:, 0])
    new_item_ids = unique_sorted(kept[:, 1])
    remapped = np.column_stack(
        [np.searchsorted(new_user_ids, kept[:, 0]), np.searchsorted(new_item_ids, kept[:, 1])]
    ).astype(np.int64)
    return CoreFilterResult(remapped, new_user_ids, new_item_ids)
