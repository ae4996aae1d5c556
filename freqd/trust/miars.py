"""The user-level black-box membership attack from top-k lists (MIARS-style; docs/trust.md).

The adversary sees only a user's recommendation list and knows the user's history. Users with at
least :data:`MIN_INTERACTIONS` interactions are split at random into three disjoint parts: a shadow
part and a target part, each halved into members (whose training pairs the recommender trains on)
and non-members, and a vectorisation part whose interactions are factorised (truncated SVD) into
item vectors. A user's feature is the centroid of the item vectors of its history minus the
centroid of those of its list. Members get the recommender's top-k of their unobserved items;
non-members, whom the recommender has never seen, get what a deployed system serves a stranger: the
k most popular items of its training pairs. An MLP trained on the shadow recommender's users
(labels known to the adversary) scores the target recommender's users.

The shadow and the target recommenders are whole comparisons trained on pairs files — the teacher
and every arm's student distilled from it on the same members — so each audited model is attacked
with a shadow of its own pipeline. Their folders are ``<report>/miars/{shadow,target}/``; an
interrupted report continues where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from freqd.trust.privacy import attack_metrics

MIN_INTERACTIONS = 20
SIDES = ("shadow", "target")
VECTOR_DIM = 32
HIDDEN = (32, 8)


@dataclass(frozen=True)
class UserSplit:
    """Disjoint sorted user ids: shadow members and non-members, target members and non-members, vectorisation."""

    shadow_in: np.ndarray
    shadow_out: np.ndarray
    target_in: np.ndarray
    target_out: np.ndarray
    vector: np.ndarray

    def members(self, side: str) -> np.ndarray:
        return self.shadow_in if side == "shadow" else self.target_in

    def others(self, side: str) -> np.ndarray:
        return self.shadow_out if side == "shadow" else self.target_out


def user_split(counts: np.ndarray, seed: int, min_interactions: int = MIN_INTERACTIONS) -> UserSplit:
    """Split the users with ``counts[u] >= min_interactions`` (padding id 0 never) into the five parts.

    Thirds for shadow, target and vectorisation (the remainder to vectorisation); shadow and target
    halved into members and non-members. Needs at least two users in each of the four labelled parts.
    """
    counts = np.asarray(counts)
    eligible = np.flatnonzero(counts >= min_interactions)
    eligible = eligible[eligible > 0]
    third = len(eligible) // 3
    if third < 4:
        raise ValueError(f"MIARS needs at least 12 users with {min_interactions}+ interactions, found {len(eligible)}")
    order = np.random.default_rng(seed).permutation(eligible)
    shadow, target, vector = order[:third], order[third: 2 * third], order[2 * third:]
    half = third // 2
    return UserSplit(*(np.sort(part) for part in (shadow[:half], shadow[half:], target[:half], target[half:], vector)))


def item_vectors(users: np.ndarray, items: np.ndarray, n_items: int, dim: int = VECTOR_DIM, seed: int = 0
                 ) -> np.ndarray:
    """Item vectors (n_items × d) from a truncated SVD of the binary user-item matrix of the given pairs:
    each item's right singular vector coordinates scaled by the singular values (scikit-learn)."""
    from scipy.sparse import csr_matrix
    from sklearn.decomposition import TruncatedSVD

    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    rows = np.unique(users, return_inverse=True)[1]
    matrix = csr_matrix((np.ones(len(users)), (rows, items)), shape=(int(rows.max()) + 1, n_items))
    matrix.data[:] = 1.0  # a repeated pair counts once
    dim = max(1, min(dim, min(matrix.shape) - 1))
    svd = TruncatedSVD(n_components=dim, random_state=seed).fit(matrix)
    return (svd.components_.T * svd.singular_values_).astype(np.float64)


def features(history_users: np.ndarray, history_items: np.ndarray, users: np.ndarray, lists: np.ndarray,
             vectors: np.ndarray) -> np.ndarray:
    """Per user of ``users``: the mean vector of its history items minus the mean vector of its list (row of ``lists``)."""
    users = np.asarray(users, np.int64)
    position = {int(u): r for r, u in enumerate(users)}
    sums = np.zeros((len(users), vectors.shape[1]))
    counts = np.zeros(len(users))
    for user, item in zip(np.asarray(history_users, np.int64), np.asarray(history_items, np.int64)):
        row = position.get(int(user))
        if row is not None:
            sums[row] += vectors[item]
            counts[row] += 1
    if (counts == 0).any():
        missing = users[counts == 0][:5].tolist()
        raise ValueError(f"MIARS: users {missing} have no history to describe them")
    return sums / counts[:, None] - vectors[np.asarray(lists, np.int64)].mean(axis=1)


def popular_list(items: np.ndarray, n_items: int, k: int, first_item: int = 1) -> np.ndarray:
    """The k most frequent items of the training pairs (ties to the lower id); never the padding item."""
    counts = np.bincount(np.asarray(items, np.int64), minlength=n_items)[first_item:]
    return first_item + np.argsort(-counts, kind="stable")[:k]


def member_lists(scores: np.ndarray, users: np.ndarray, train_users: np.ndarray, train_items: np.ndarray, k: int,
                 first_item: int = 1) -> np.ndarray:
    """Top-k of each user's score row (rows of ``scores`` in ``users`` order) over the items it did not train on."""
    scores = np.array(scores, dtype=np.float64)
    scores[:, :first_item] = -np.inf
    row_of = {int(u): r for r, u in enumerate(np.asarray(users, np.int64))}
    rows = np.array([row_of.get(int(u), -1) for u in np.asarray(train_users, np.int64)])
    keep = rows >= 0
    scores[rows[keep], np.asarray(train_items, np.int64)[keep]] = -np.inf
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def attack(train_x: np.ndarray, train_member: np.ndarray, test_x: np.ndarray, test_member: np.ndarray,
           seed: int = 0) -> dict[str, float]:
    """Fit the MLP (scikit-learn, standardised inputs) on the shadow users; the attack metrics on the target users."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=HIDDEN, max_iter=2000, random_state=seed))
    model.fit(train_x, np.asarray(train_member, bool))
    return attack_metrics(model.predict_proba(test_x)[:, 1], test_member)


def member_pairs(train_users: np.ndarray, train_items: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The training pairs of the member users."""
    keep = np.isin(train_users, members)
    return train_users[keep], train_items[keep]


def run_sides(comparison, record, data, folder: Path, split: UserSplit, seeds: list[int], arms: list[str] | None,
              jobs: int = 1, progress: bool = True) -> dict[str, Path]:
    """Train (or reuse) the shadow and the target comparisons on their members' training pairs."""
    from freqd.trust.shadows import shadow_comparison, train_on_pairs

    base = shadow_comparison(comparison, record)
    return {side: train_on_pairs(base, folder / side, data,
                                 partial(member_pairs, data.train_users, data.train_items, split.members(side)),
                                 f"MIARS {side}: the training pairs of {len(split.members(side))} member users", seeds,
                                 arms, jobs, progress)
            for side in SIDES}


__all__ = ["MIN_INTERACTIONS", "UserSplit", "attack", "features", "item_vectors", "member_lists", "member_pairs",
           "popular_list", "run_sides", "user_split"]
