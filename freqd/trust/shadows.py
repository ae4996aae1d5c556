"""The shadow-model likelihood-ratio membership attack (LiRA-style) with the distillation pipeline inside.

Shadow m trains on a random half of the pool of candidate pairs — every training pair and every
test pair of the split — through the whole comparison: a shadow teacher on that half, then each
arm's shadow student distilled from it on the same half (as in "Students Parrot Their Teachers").
Each pair is in the training half of exactly half of the shadows. For a target model and a pair
(u, i) with score s, the attack's signal is the log-likelihood ratio of s under two Gaussians fitted
to the pair's scores in the shadows that trained on it (IN) and in those that did not (OUT), with
one variance per side pooled over pairs (per-pair variances need many more shadows).

The shadows are ordinary comparison folders (``<report>/shadows/m<m>/``) trained on pairs files
(``train_pairs``), so an interrupted run continues where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from freqd.compare.config import ComparisonConfig, load_comparison_config


def assignments(n_pairs: int, n_shadows: int, seed: int) -> np.ndarray:
    """Boolean (shadows × pairs): shadow m trains on pair p. Every pair is in exactly half of the shadows."""
    if n_shadows < 2 or n_shadows % 2:
        raise ValueError(f"shadows must be an even number >= 2, got {n_shadows}")
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((n_shadows, n_pairs)), axis=0)
    return order < n_shadows // 2


def likelihood_ratio(target: np.ndarray, shadow_scores: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """log N(s; μ_in, σ_in²) − log N(s; μ_out, σ_out²) per pair, from (shadows × pairs) scores and IN flags.

    μ per pair and side; σ² per side, pooled over pairs: the squared deviations from the pair means
    summed over all pairs, divided by (observations − pairs).
    """
    shadow_scores, inside = np.asarray(shadow_scores, np.float64), np.asarray(inside, bool)
    if shadow_scores.shape != inside.shape:
        raise ValueError(f"shadow scores {shadow_scores.shape} and IN flags {inside.shape} must align")
    if not (inside.any(axis=0) & (~inside).any(axis=0)).all():
        raise ValueError("every pair needs at least one IN and one OUT shadow")
    out = np.zeros(shadow_scores.shape[1])
    for flags, sign in ((inside, 1.0), (~inside, -1.0)):
        count = flags.sum(axis=0)
        mean = np.where(flags, shadow_scores, 0.0).sum(axis=0) / count
        variance = max(float(np.where(flags, (shadow_scores - mean) ** 2, 0.0).sum() / max(flags.sum() - count.size, 1)),
                       1e-12)
        out += sign * (-0.5 * (np.asarray(target) - mean) ** 2 / variance - 0.5 * np.log(variance))
    return out


def shadow_comparison(comparison: ComparisonConfig, stored_config: dict[str, Any]) -> ComparisonConfig:
    """The comparison the shadows repeat: its YAML's teacher (trained, never a given checkpoint), its overrides."""
    source = comparison.source
    base = load_comparison_config(source) if source is not None else comparison
    overrides = stored_config.get("command_line_overrides") or {}
    base = base.with_overrides(overrides=overrides.get("all") or None,
                               teacher_overrides=overrides.get("teacher") or None,
                               student_overrides=overrides.get("student") or None)
    if base.teacher.spec is None:
        raise ValueError(f"{source}: the teacher is a checkpoint; shadow teachers must be trained, so the comparison "
                         "YAML needs a 'teacher' model section")
    return replace(base, latency=replace(base.latency, enabled=False))


def run_shadows(comparison: ComparisonConfig, stored_config: dict[str, Any], data, folder: Path, n_shadows: int,
                seed: int, arms: list[str] | None, jobs: int = 1, progress: bool = True) -> list[Path]:
    """Train (or reuse) the shadows; return their comparison folders, shadow m's at index m."""
    base = shadow_comparison(comparison, stored_config)
    users, items = pool(data)
    flags = assignments(len(users), n_shadows, seed)

    def half(m: int) -> tuple[np.ndarray, np.ndarray]:
        return users[flags[m]], items[flags[m]]

    return [train_on_pairs(base, folder / f"m{m}", data, partial(half, m),
                           f"shadow {m} of {n_shadows} (seed {seed}): a random half of train+test pairs", [m], arms,
                           jobs, progress)
            for m in range(n_shadows)]


def train_on_pairs(base: ComparisonConfig, out: Path, data, pairs_of: Callable[[], tuple[np.ndarray, np.ndarray]],
                   note: str, seeds: list[int], arms: list[str] | None, jobs: int = 1, progress: bool = True) -> Path:
    """The comparison ``base`` trained (or reused) in ``out`` on the training pairs ``pairs_of()`` gives: they are
    drawn and written to ``out/pairs.json`` once, so an interrupted run continues on the same pairs."""
    from freqd.compare.runner import run_comparison
    from freqd.datasets.train_pairs import write_pairs

    out.mkdir(parents=True, exist_ok=True)
    pairs = out / "pairs.json"
    if not pairs.is_file():
        write_pairs(pairs, data.ctx.train_dataset, *pairs_of(), note={"note": note})
    config = base.with_overrides(seeds=seeds, arms=arms, overrides={"train_pairs": str(pairs.resolve()),
                                                                    "train_sampler": "fast"})
    run_comparison(config, out=out, progress=progress, jobs=jobs)
    return out


def pool(data) -> tuple[np.ndarray, np.ndarray]:
    """Every candidate pair: the split's training pairs, then its test pairs."""
    return (np.concatenate([data.train_users, data.test_users]), np.concatenate([data.train_items, data.test_items]))


def in_flags(data, n_shadows: int, seed: int) -> np.ndarray:
    """(shadows × sample pairs): whether shadow m trained on each pair of the membership sample."""
    users, items = pool(data)
    n_items = int(data.ctx.train_dataset.item_num)
    keys = users * n_items + items
    order = np.argsort(keys)
    wanted = data.sample.users * n_items + data.sample.items
    position = order[np.searchsorted(keys, wanted, sorter=order)]
    return assignments(len(users), n_shadows, seed)[:, position]


@torch.no_grad()
def pair_scores(model, users: np.ndarray, items: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """The model's own score (RecBole's ``predict``) of each (user, item) pair."""
    from recbole.data.interaction import Interaction

    model.eval()
    out = []
    for begin in range(0, len(users), chunk):
        interaction = Interaction({model.USER_ID: torch.from_numpy(np.asarray(users[begin: begin + chunk])),
                                   model.ITEM_ID: torch.from_numpy(np.asarray(items[begin: begin + chunk]))})
        out.append(model.predict(interaction).double().cpu().numpy())
    return np.concatenate(out)
