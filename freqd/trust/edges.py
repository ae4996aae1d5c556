"""Interaction perturbation: retrain the whole comparison on training pairs with a share ρ of the edges
dropped or random edges added, and measure the loss of clean test accuracy (docs/trust.md).

Every run of the perturbed comparison (the teacher and each arm's students) trains on the same
perturbed pairs, a ``train_pairs`` file; validation and test stay the split's. Added edges are
drawn with the users of random training edges (the activity distribution is kept) and uniform
items, never a pair of any split. Each perturbation is an ordinary comparison folder
(``<report>/edges/<kind>-<ρ>/``), so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np

KINDS = ("drop", "add")


def parse_kinds(text: str | None, kinds: tuple[str, ...], option: str, value: str) -> tuple[tuple[str, float], ...]:
    """``a:0.1,b:0.05`` → ((a, 0.1), (b, 0.05)) for a KIND in ``kinds`` and 0 < value < 1; ValueError naming the
    ``option`` and the bad item."""
    if not text:
        return ()
    out = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        kind, _, number = item.partition(":")
        try:
            share = float(number)
        except ValueError:
            share = math.nan
        if kind not in kinds or not 0 < share < 1:
            raise ValueError(f"{option}: {item!r} is not KIND:{value} with KIND in {', '.join(kinds)} and "
                             f"0 < {value} < 1")
        out.append((kind, share))
    return tuple(out)


def parse_edges(text: str | None) -> tuple[tuple[str, float], ...]:
    """``drop:0.1,add:0.05`` → ((drop, 0.1), (add, 0.05)); ValueError naming a bad item."""
    return parse_kinds(text, KINDS, "edges", "RHO")


def label(kind: str, rho: float) -> str:
    return f"{kind}-{rho:g}"


def perturbed_pairs(train_users: np.ndarray, train_items: np.ndarray, taken: np.ndarray, n_items: int, kind: str,
                    rho: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The training pairs with round(ρ·n) edges dropped at random, or as many random new edges added.

    ``taken`` holds the keys ``user * n_items + item`` of every pair of any split (never added).
    """
    rng = np.random.default_rng(seed)
    n = len(train_users)
    count = int(round(rho * n))
    if kind == "drop":
        keep = np.sort(rng.permutation(n)[: n - count])
        return train_users[keep], train_items[keep]
    if kind != "add":
        raise ValueError(f"edges: unknown kind {kind!r}")
    taken_set = np.unique(taken)
    users, items = np.empty(0, np.int64), np.empty(0, np.int64)
    while len(users) < count:
        u = train_users[rng.integers(0, n, 2 * (count - len(users)) + 16)]
        i = rng.integers(1, n_items, len(u))
        keys = u * n_items + i
        fresh = ~np.isin(keys, taken_set)
        u, i, keys = u[fresh], i[fresh], keys[fresh]
        _, first = np.unique(keys, return_index=True)
        first = np.sort(first)
        u, i = u[first], i[first]
        known = np.isin(u * n_items + i, users * n_items + items)
        users, items = np.concatenate([users, u[~known]]), np.concatenate([items, i[~known]])
    return np.concatenate([train_users, users[:count]]), np.concatenate([train_items, items[:count]])


def run_edges(comparison, record, data, folder: Path, specs, seeds: list[int], arms: list[str] | None, seed: int,
              jobs: int = 1, progress: bool = True) -> dict[str, Path]:
    """Train (or reuse) one perturbed comparison per (kind, ρ); return their folders by label."""
    from freqd.trust.shadows import shadow_comparison, train_on_pairs

    base = shadow_comparison(comparison, record)
    n_items = int(data.ctx.train_dataset.item_num)
    taken = np.concatenate([data.train_users * n_items + data.train_items, data.test_users * n_items + data.test_items,
                            valid_keys(data)])
    return {label(kind, rho): train_on_pairs(
                base, folder / label(kind, rho), data,
                partial(perturbed_pairs, data.train_users, data.train_items, taken, n_items, kind, rho, seed + index),
                f"{kind} {rho:g} of the training edges (seed {seed + index})", seeds, arms, jobs, progress)
            for index, (kind, rho) in enumerate(specs)}


def valid_keys(data) -> np.ndarray:
    """Keys ``user * n_items + item`` of the validation pairs of the comparison's split."""
    from freqd.compare.evaluate import loader_pairs

    users, items = loader_pairs(data.ctx.valid_data, data.ctx.train_dataset.uid_field)
    return users * int(data.ctx.train_dataset.item_num) + items
