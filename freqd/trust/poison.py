"""Poisoning with fake users (shilling): does distillation pass a promotion on to the student? (docs/trust.md)

Fake users — a share of the genuine users' count, each with the genuine users' average training
profile length — each rate every target item (drawn at random from the tail: items outside the
comparison's head share with at least one training interaction) plus fillers: uniform items
(``random``) or items of the head (``bandwagon``; uniform items once the head runs out). The
comparison's split is written out as pre-split files whose training part also holds the fake users'
pairs (tokens: the split's internal ids, fake users numbered after the genuine ones), and the whole
comparison is retrained on it: the teacher learns from the poisoned data and every student is
distilled from it on the same poisoned data. Validation and test are the split's, so the fake users
are never evaluated. Reported per model: the target items' hit ratio among genuine test users (the
mean over targets of the share of users whose top-k holds it) and their exposure (the share of users
with any target in their top-k), clean against poisoned.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from freqd.compare.config import ComparisonConfig

KINDS = ("random", "bandwagon")
N_TARGETS = 5


def parse_poison(text: str | None) -> tuple[tuple[str, float], ...]:
    """``random:0.03,bandwagon:0.03`` → ((random, 0.03), (bandwagon, 0.03)); ValueError naming a bad item."""
    from freqd.trust.edges import parse_kinds

    return parse_kinds(text, KINDS, "poison", "SHARE")


def label(kind: str, share: float) -> str:
    return f"{kind}-{share:g}"


def target_items(item_counts: np.ndarray, head: np.ndarray, n_targets: int, seed: int) -> np.ndarray:
    """``n_targets`` sorted distinct tail items (not in ``head``, at least one training interaction; never id 0)."""
    item_counts, head = np.asarray(item_counts), np.asarray(head, bool)
    tail = np.flatnonzero((item_counts > 0) & ~head)
    tail = tail[tail > 0]
    if len(tail) < n_targets:
        raise ValueError(f"poison: {n_targets} target items asked for, the tail holds {len(tail)}")
    return np.sort(np.random.default_rng(seed).choice(tail, n_targets, replace=False))


def fake_profiles(train_users: np.ndarray, train_items: np.ndarray, n_items: int, head: np.ndarray,
                  targets: np.ndarray, kind: str, share: float, first_user: int, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) of the fake users' pairs: round(share × genuine users) users numbered from ``first_user``,
    each with every target and fillers up to the genuine average profile length, no pair twice."""
    if kind not in KINDS:
        raise ValueError(f"poison: unknown kind {kind!r}; choose from {', '.join(KINDS)}")
    users = np.unique(np.asarray(train_users))
    n_fake = max(1, round(share * len(users)))
    length = max(len(targets) + 1, round(len(train_items) / len(users)))
    n_fill = length - len(targets)
    targets = np.asarray(targets, np.int64)
    pool = np.setdiff1d(np.arange(1, n_items), targets)
    popular = np.setdiff1d(np.flatnonzero(np.asarray(head, bool)), np.concatenate([targets, [0]]))
    if n_fill > len(pool):
        raise ValueError(f"poison: profiles of {length} items need {n_fill} fillers, the catalogue offers {len(pool)}")
    rng = np.random.default_rng(seed)
    out_u, out_i = [], []
    for k in range(n_fake):
        if kind == "random" or len(popular) == 0:
            fillers = rng.choice(pool, n_fill, replace=False)
        else:
            fillers = rng.choice(popular, min(n_fill, len(popular)), replace=False)
            if len(fillers) < n_fill:
                fillers = np.concatenate([fillers, rng.choice(np.setdiff1d(pool, fillers), n_fill - len(fillers),
                                                              replace=False)])
        out_u.append(np.full(length, first_user + k, dtype=np.int64))
        out_i.append(np.concatenate([targets, fillers]))
    return np.concatenate(out_u), np.concatenate(out_i)


def target_hits(lists: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """``hr``: mean over targets of the share of lists holding it; ``exposure``: the share of lists with any target."""
    holds = np.stack([(np.asarray(lists) == t).any(axis=1) for t in np.asarray(targets)], axis=1)
    return {"hr": float(holds.mean(axis=0).mean()), "exposure": float(holds.any(axis=1).mean())}


def run_poison(comparison, record, data, folder: Path, specs, seeds: list[int], arms: list[str] | None, seed: int,
               n_targets: int = N_TARGETS, jobs: int = 1, progress: bool = True
               ) -> dict[str, tuple[Path, ComparisonConfig]]:
    """Write (or reuse) each poisoned split and train (or reuse) its comparison; return (folder, comparison) by label."""
    from freqd.compare.evaluate import loader_pairs
    from freqd.compare.runner import run_comparison
    from freqd.datasets.atomic import write_benchmark_files
    from freqd.io import atomic_write_json
    from freqd.trust.shadows import shadow_comparison

    base = shadow_comparison(comparison, record)
    ctx = data.ctx
    train = ctx.train_dataset
    n_users, n_items = int(train.user_num), int(train.item_num)
    head = ctx.head_items.numpy()
    targets = target_items(np.bincount(data.train_items, minlength=n_items), head, n_targets, seed)
    valid = np.stack(loader_pairs(ctx.valid_data, train.uid_field), axis=1)
    test = np.stack([data.test_users, data.test_items], axis=1)
    out = {}
    for index, (kind, share) in enumerate(specs):
        tag = label(kind, share)
        where = folder / tag
        name = f"{comparison.dataset}-poisoned-{tag}"
        info = where / "poison.json"
        if not info.is_file():
            fake_u, fake_i = fake_profiles(data.train_users, data.train_items, n_items, head, targets, kind, share,
                                           first_user=n_users, seed=seed + index)
            write_benchmark_files(where / "data", name,
                                  np.stack([np.concatenate([data.train_users, fake_u]),
                                            np.concatenate([data.train_items, fake_i])], axis=1), valid, test)
            atomic_write_json(info, {"kind": kind, "share": share, "targets": targets.tolist(),
                                     "fake_users": int(len(np.unique(fake_u))), "fake_pairs": int(len(fake_u)),
                                     "note": "tokens are the clean split's internal ids; fake users follow them"})
        stored = json.loads(info.read_text(encoding="utf-8"))
        if stored["targets"] != targets.tolist():
            raise ValueError(f"{info}: written for targets {stored['targets']}, this report draws {targets.tolist()} "
                             "(another --seed or comparison); remove the folder to redo it")
        poisoned = replace(base, dataset=name).with_overrides(
            seeds=seeds, arms=arms, overrides={"data_path": str((where / "data").resolve()),
                                               "benchmark_filename": ["train", "valid", "test"],
                                               "load_col": {"inter": ["user_id", "item_id"]}})
        run_comparison(poisoned, out=where, progress=progress, jobs=jobs)
        out[tag] = (where, poisoned)
    return out


def in_poisoned_ids(train_dataset, items: np.ndarray) -> np.ndarray:
    """The clean split's item ids as ids of a poisoned dataset (whose tokens are the clean ids)."""
    index = train_dataset.field2token_id[train_dataset.iid_field]
    return np.array([index[str(int(i))] for i in items], dtype=np.int64)


__all__ = ["KINDS", "N_TARGETS", "fake_profiles", "in_poisoned_ids", "label", "parse_poison", "run_poison",
           "target_hits", "target_items"]
