"""Interaction-level membership inference by thresholding a model's own signal (docs/trust.md).

Members are training pairs (u, i); non-members are held-out true positives of the same users (their
test items). Each user contributes as many members as non-members, drawn at random, so a user's
identity (activity, score scale) cannot separate the two classes. The attacker thresholds one of
three signals: the score s(u, i), the rank of i among all items (negated: a better rank signals
membership), or the difficulty-calibrated score s(u, i) − mean_j s(u, j) (the mean over all items:
the expectation over random items, without sampling noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

SIGNALS = ("score", "rank", "calibrated")
LOW_FPRS = (0.01, 0.001)


@dataclass(frozen=True)
class MembershipSample:
    """Balanced (user, item, member) triples, sorted by user."""

    users: np.ndarray
    items: np.ndarray
    member: np.ndarray

    def __len__(self) -> int:
        return len(self.users)


def membership_sample(train_users: np.ndarray, train_items: np.ndarray, test_users: np.ndarray,
                      test_items: np.ndarray, seed: int = 0) -> MembershipSample:
    """Per user with both kinds, min(#train, #test) members and as many non-members, drawn without replacement.

    The draw depends only on the pairs and ``seed``, so every model of a report is attacked on the same sample.
    """
    rng = np.random.default_rng(seed)
    train_users, train_items = np.asarray(train_users, np.int64), np.asarray(train_items, np.int64)
    test_users, test_items = np.asarray(test_users, np.int64), np.asarray(test_items, np.int64)
    if len(np.intersect1d(train_users * (1 << 32) + train_items, test_users * (1 << 32) + test_items)):
        raise ValueError("a (user, item) pair is both a training and a test pair: members and non-members must differ")
    tr_order, te_order = np.argsort(train_users, kind="stable"), np.argsort(test_users, kind="stable")
    tr_u, tr_i = train_users[tr_order], train_items[tr_order]
    te_u, te_i = test_users[te_order], test_items[te_order]
    users = np.intersect1d(tr_u, te_u)
    out_u, out_i, out_m = [], [], []
    for user in users:
        a = tr_i[np.searchsorted(tr_u, user, "left"): np.searchsorted(tr_u, user, "right")]
        b = te_i[np.searchsorted(te_u, user, "left"): np.searchsorted(te_u, user, "right")]
        n = min(len(a), len(b))
        out_u.append(np.full(2 * n, user))
        out_i.append(np.concatenate([rng.choice(a, n, replace=False), rng.choice(b, n, replace=False)]))
        out_m.append(np.repeat([True, False], n))
    if not out_u:
        raise ValueError("no user has both training and test pairs: nothing to attack")
    return MembershipSample(np.concatenate(out_u), np.concatenate(out_i), np.concatenate(out_m))


def signals_from_scores(scores: np.ndarray, items: np.ndarray, first_item: int = 1) -> dict[str, np.ndarray]:
    """The three signals of pairs (row r, ``items[r]``) from full score rows ``scores`` (pairs × items).

    Items below ``first_item`` (RecBole's padding item 0) are not ranked and not averaged.
    """
    return signals_from_user_rows(scores, np.arange(len(items)), items, first_item)


def signals_from_user_rows(scores: np.ndarray, rows: np.ndarray, items: np.ndarray,
                           first_item: int = 1) -> dict[str, np.ndarray]:
    """The three signals of pairs (``rows[p]``, ``items[p]``) from one full score row per user (users × items).

    Each row is sorted once and its pairs' ranks are found by binary search, so a user with many
    pairs costs one sort instead of one pass over the catalogue per pair. ``rows`` must be
    non-decreasing (pairs grouped by user, as :func:`membership_sample` orders them).
    """
    scores = np.asarray(scores)[:, first_item:]
    rows, items = np.asarray(rows, dtype=np.int64), np.asarray(items, dtype=np.int64) - first_item
    if len(rows) > 1 and np.any(np.diff(rows) < 0):
        raise ValueError("rows must be grouped by user (non-decreasing)")
    own = scores[rows, items]
    rank = np.empty(len(rows), dtype=np.float64)
    ordered = np.sort(scores, axis=1)
    present = np.unique(rows)
    starts, stops = np.searchsorted(rows, present, "left"), np.searchsorted(rows, present, "right")
    n = scores.shape[1]
    for row, start, stop in zip(present, starts, stops):  # items scored strictly above each pair's own score
        rank[start:stop] = 1 + n - np.searchsorted(ordered[row], own[start:stop], side="right")
    mean = scores.mean(axis=1, dtype=np.float64)
    own64 = own.astype(np.float64)
    return {"score": own64, "rank": -rank, "calibrated": own64 - mean[rows]}


def attack_metrics(signal: np.ndarray, member: np.ndarray) -> dict[str, float]:
    """ROC AUC, TPR at 1% and 0.1% FPR (the best TPR at FPR ≤ the level) and membership advantage max(TPR − FPR)."""
    member = np.asarray(member, dtype=bool)
    if member.all() or not member.any():
        raise ValueError("the attack needs both members and non-members")
    fpr, tpr, _ = roc_curve(member, signal)
    out = {"auc": float(roc_auc_score(member, signal)), "advantage": float(np.max(tpr - fpr))}
    for level in LOW_FPRS:
        out[f"tpr@{level:g}"] = float(tpr[fpr <= level].max())
    return out


def roc_points(signal: np.ndarray, member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) of the attack, for the log-scale ROC plot."""
    fpr, tpr, _ = roc_curve(np.asarray(member, dtype=bool), signal)
    return fpr, tpr
