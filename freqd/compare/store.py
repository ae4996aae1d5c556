"""The on-disk layout of a comparison folder: where each result lives, how it is written, read and checked.

Layout::

    teacher.json, teacher.npz        the teacher's result and per-user test metrics
    teacher/                          its checkpoint and run folder (when trained here)
    arms/<arm>/s<seed>.json, .npz     one result per (arm, seed), written last, atomically
    arms/<arm>/s<seed>/               that run's checkpoint and run folder (metrics.csv)

A result's JSON names the SHA-256 of its per-user arrays and is written after them, so a JSON
that loads and matches its arrays marks a finished run. Its ``key`` (the hash of the run's
inputs) decides whether it can be reused; the measurements stored with it (``size``, ``latency``)
are not part of the key, so results stored without them stay reusable.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

import numpy as np

from freqd.compare.config import ComparisonConfig, ComparisonConfigError
from freqd.io import atomic_write_bytes, atomic_write_json

logger = logging.getLogger(__name__)


class StaleResultError(ComparisonConfigError):
    """Stored results were made with another configuration."""


@dataclass
class StoredResults:
    """Every stored result of a comparison: the teacher's and each arm's, one per seed (in config order)."""

    teacher: dict[str, Any]
    teacher_users: dict[str, np.ndarray]
    arms: dict[str, list[dict[str, Any]]]
    users: dict[str, dict[int, dict[str, np.ndarray]]]


def teacher_paths(out: Path) -> tuple[Path, Path, Path]:
    """The teacher's result JSON, per-user arrays and work folder."""
    return out / "teacher.json", out / "teacher.npz", out / "teacher"


def arm_paths(out: Path, arm: str, seed: int) -> tuple[Path, Path, Path]:
    """One (arm, seed) run's result JSON, per-user arrays and work folder."""
    folder = out / "arms" / arm
    return folder / f"s{seed}.json", folder / f"s{seed}.npz", folder / f"s{seed}"


def write_result(json_path: Path, npz_path: Path, result: dict[str, Any], per_user: dict[str, np.ndarray]) -> None:
    """The per-user arrays first, then the JSON that vouches for them (its presence marks completion)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **per_user)  # type: ignore[arg-type]  # numpy stubs: **dict may bind allow_pickle
    data = buffer.getvalue()
    atomic_write_bytes(npz_path, data)
    result = {**result, "per_user_file": npz_path.name, "per_user_sha256": sha256(data).hexdigest()}
    atomic_write_json(json_path, result)


def load_result(json_path: Path, npz_path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """A stored result and its per-user arrays, or None when either is missing or they do not match."""
    if not json_path.is_file() or not npz_path.is_file():
        return None
    result = json.loads(json_path.read_text(encoding="utf-8"))
    data = npz_path.read_bytes()
    if sha256(data).hexdigest() != result.get("per_user_sha256"):
        return None
    with np.load(io.BytesIO(data)) as arrays:
        return result, {k: arrays[k] for k in arrays.files}


def is_done(json_path: Path, npz_path: Path, key: str) -> bool:
    """Whether a complete result with input hash ``key`` is stored."""
    stored = load_result(json_path, npz_path)
    return stored is not None and stored[0]["key"] == key


def read_results(comparison: ComparisonConfig, out: Path) -> StoredResults:
    """The teacher's and every (arm, seed) result in ``out``; FileNotFoundError names a missing one."""
    out = Path(out)
    teacher, teacher_users = _require(*teacher_paths(out)[:2])
    arms: dict[str, list[dict[str, Any]]] = {}
    users: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    for arm in comparison.arms:
        arms[arm.name], users[arm.name] = [], {}
        for seed in comparison.seeds:
            result, arrays = _require(*arm_paths(out, arm.name, seed)[:2])
            arms[arm.name].append(result)
            users[arm.name][seed] = arrays
    return StoredResults(teacher=teacher, teacher_users=teacher_users, arms=arms, users=users)


def _require(json_path: Path, npz_path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    loaded = load_result(json_path, npz_path)
    if loaded is None:
        raise FileNotFoundError(f"missing or incomplete result {json_path} (rerun the comparison to produce it)")
    return loaded


def stored_key(json_path: Path) -> tuple[str, dict[str, Any]] | None:
    """The input hash and hashed spec of a stored result, or None when there is none."""
    if not json_path.is_file():
        return None
    stored = json.loads(json_path.read_text(encoding="utf-8"))
    return stored.get("key"), stored.get("spec") or {}


def spec_changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two hashed specs."""
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if isinstance(a, dict) and isinstance(b, dict):
            changes += spec_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return changes


def check_stale(out: Path, teacher_key: str, teacher_content: dict, keys: dict, rerun_stale: bool) -> None:
    """Refuse (before any training) to mix results made with another configuration.

    ``keys`` maps (arm name, seed) to that run's (key, hashed spec). With ``rerun_stale`` the
    stale results are only listed (they are recomputed as their runs come up).
    """
    stale = []
    stored = stored_key(teacher_paths(out)[0])
    if stored and stored[0] != teacher_key:
        stale.append(("teacher.json", spec_changes(stored[1], teacher_content)))
    for (arm, seed), (key, content) in keys.items():
        json_path = arm_paths(out, arm, seed)[0]
        stored = stored_key(json_path)
        if stored and stored[0] != key:
            stale.append((str(json_path.relative_to(out)), spec_changes(stored[1], content)))
    if not stale:
        return
    lines = [f"  {name}: {'; '.join(changes[:6]) or 'different inputs'}" for name, changes in stale]
    if rerun_stale:
        logger.warning("rerunning results made with another configuration:\n" + "\n".join(lines))
        print("rerunning stale results:\n" + "\n".join(lines), file=sys.stderr)
        return
    raise StaleResultError(
        f"results in {out} were made with another configuration:\n" + "\n".join(lines)
        + "\ndelete them, choose another --out, or pass --rerun-stale to recompute them")
