"""Fairness of a model's top-k lists: user activity groups and item popularity (docs/trust.md).

Pure numpy over per-user metrics and top-k lists, so the comparison's stored per-user results
are reused instead of recomputed.
"""

from __future__ import annotations

import math

import numpy as np


def gini(exposure: np.ndarray) -> float:
    """Gini coefficient of non-negative exposure counts: 0 when uniform, (n − 1)/n when one item gets all.

    G = Σ_i (2i − n − 1) · c_(i) / (n · Σ c), with c sorted ascending and i = 1..n.
    """
    counts = np.sort(np.asarray(exposure, dtype=np.float64))
    if counts.ndim != 1 or len(counts) == 0:
        raise ValueError(f"exposure must be a non-empty vector, got shape {counts.shape}")
    if (counts < 0).any():
        raise ValueError("exposure counts must be non-negative")
    total = counts.sum()
    if total == 0:
        return 0.0
    n = len(counts)
    ranks = np.arange(1, n + 1)
    return float(np.sum((2 * ranks - n - 1) * counts) / (n * total))


def lorenz(exposure: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Lorenz curve of exposure: (share of items, share of exposure), items from least to most exposed."""
    counts = np.sort(np.asarray(exposure, dtype=np.float64))
    total = counts.sum()
    y = np.concatenate([[0.0], np.cumsum(counts) / total if total else np.zeros(len(counts))])
    return np.linspace(0.0, 1.0, len(counts) + 1), y


def top_share_mask(values: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of the ⌈fraction·n⌉ largest ``values`` (ties broken by position, stably)."""
    values = np.asarray(values)
    n_top = max(1, math.ceil(fraction * len(values)))
    mask = np.zeros(len(values), dtype=bool)
    mask[np.argsort(-values, kind="stable")[:n_top]] = True
    return mask


def user_fairness(ndcg: np.ndarray, train_counts: np.ndarray, active_fraction: float = 0.2,
                  quantiles: int = 5) -> dict[str, float]:
    """NDCG of active users (the top ``active_fraction`` by training interactions) and of the rest, their
    gap (active − inactive), and the standard deviation of mean NDCG over activity ``quantiles``."""
    ndcg, train_counts = np.asarray(ndcg, dtype=np.float64), np.asarray(train_counts)
    if ndcg.shape != train_counts.shape:
        raise ValueError(f"ndcg {ndcg.shape} and train_counts {train_counts.shape} must align")
    active = top_share_mask(train_counts, active_fraction)
    order = np.argsort(train_counts, kind="stable")
    groups = [g for g in np.array_split(order, quantiles) if len(g)]
    means = np.array([ndcg[g].mean() for g in groups])
    return {"ndcg_active": float(ndcg[active].mean()), "ndcg_inactive": float(ndcg[~active].mean()),
            "user_gap": float(ndcg[active].mean() - ndcg[~active].mean()), "quintile_std": float(means.std())}


def item_fairness(topk: np.ndarray, test_rows: np.ndarray, test_items: np.ndarray, item_train_counts: np.ndarray,
                  head_fraction: float = 0.2, deciles: int = 10) -> dict[str, float]:
    """Item-side metrics of top-k lists over items 0..n−1 (``item_train_counts`` has one entry per item).

    ``topk`` is (users, k) item ids; ``test_rows``/``test_items`` list each test interaction as (row of
    ``topk``, item). Head items are the top ``head_fraction`` by training degree, the rest tail.
    Per-group recall pools the group's test interactions (hits / interactions); APLT@k is the mean
    share of tail items in a list; Coverage@k the share of items recommended to anyone; Gini of the
    exposure counts over all items; ``decile_recall_std`` the std of pooled recall over popularity deciles.
    """
    topk = np.asarray(topk)
    n_items = len(item_train_counts)
    if topk.size and (topk.min() < 0 or topk.max() >= n_items):
        raise ValueError(f"top-k item ids must lie in 0..{n_items - 1}")
    k = topk.shape[1]
    head = top_share_mask(item_train_counts, head_fraction)
    test_items = np.asarray(test_items, dtype=np.int64)
    listed = np.repeat(np.arange(topk.shape[0], dtype=np.int64), k) * n_items + topk.ravel()
    hit = np.isin(np.asarray(test_rows, dtype=np.int64) * n_items + test_items, listed)
    exposure = np.bincount(topk.ravel(), minlength=n_items)
    order = np.argsort(item_train_counts, kind="stable")
    decile = np.empty(n_items, dtype=np.int64)
    for index, group in enumerate(np.array_split(order, deciles)):
        decile[group] = index
    decile_recall = [hit[decile[test_items] == d].mean() for d in range(deciles) if (decile[test_items] == d).any()]
    in_head = head[test_items]
    return {
        "head_recall": float(hit[in_head].mean()) if in_head.any() else math.nan,
        "tail_recall": float(hit[~in_head].mean()) if (~in_head).any() else math.nan,
        "aplt": float((~head[topk]).sum(axis=1).mean() / k),
        "coverage": float((exposure > 0).sum() / n_items),
        "gini": gini(exposure),
        "decile_recall_std": float(np.std(decile_recall)),
    }
