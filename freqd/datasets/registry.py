"""Named data sets, prepared from the shared raw files into RecBole pre-split atomic files.

``prepare_dataset(name)`` reads the source files under the data root (see
:func:`find_data_root`), applies the documented split rule, writes
``<out_root>/<name>/<name>.{train,valid,test}.inter`` and returns the RecBole config dict.
A manifest ``<out_root>/<name>/freqd_source.json`` records the sources' sha256, the rule,
the seed, what the readers read, the counts, every pair dropped (by reason) and the outputs'
sha256; the files are reused only while all of these still match, otherwise they are
regenerated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from freqd.io import atomic_write_bytes

from .atomic import SPLIT_NAMES, CleanReport, benchmark_config, clean_splits, write_benchmark_files
from .pairs import unique_sorted
from .readers import ReadReport, read_lightgcn_txt, read_pair_tsv, read_users_dat
from .splits import carve_validation, filter_core, split_per_user

logger = logging.getLogger(__name__)

DATA_ROOT_ENV = "FREQD_DATA_ROOT"
MANIFEST_NAME = "freqd_source.json"
# Bump when a builder's output or the manifest's content for the same inputs changes, so old
# caches are rebuilt. 2: the duplicates the readers drop are recorded.
MANIFEST_VERSION = 2


class Built(NamedTuple):
    """A builder's splits, the readers' reports (one per source) and where their dropped
    duplicates count in the manifest: the ``dropped`` key per source (``train_duplicates``
    for a training file, ``source_duplicates`` for a file split later)."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    reads: tuple[ReadReport, ...]
    duplicate_keys: tuple[str, ...]


@dataclass(frozen=True)
class DatasetSpec:
    """How one named data set is built: its source files (relative to the data root), the
    rule in words (recorded in the manifest), whether the seed matters, and the builder."""

    sources: tuple[str, ...]
    rule: str
    seeded: bool
    build: Callable[[list[Path], int], Built]


def _build_gowalla(paths: list[Path], seed: int) -> Built:
    train, train_read = read_lightgcn_txt(paths[0])
    test, test_read = read_lightgcn_txt(paths[1])
    train, valid = carve_validation(train, fraction=0.1, seed=seed)
    return Built(train, valid, test, (train_read, test_read), ("train_duplicates", "test_duplicates"))


def _build_citeulike_t(paths: list[Path], seed: int) -> Built:
    pairs, read = read_users_dat(paths[0])
    core = filter_core(pairs, min_user=5, min_item=0)
    splits = split_per_user(core.pairs, ratios=(0.8, 0.1, 0.1), order="random", seed=seed)
    return Built(*splits, (read,), ("source_duplicates",))


def _build_three_files(reader: Callable) -> Callable[[list[Path], int], Built]:
    def build(paths: list[Path], seed: int) -> Built:
        (train, train_read), (valid, valid_read), (test, test_read) = (reader(path) for path in paths)
        keys = tuple(f"{split}_duplicates" for split in SPLIT_NAMES)
        return Built(train, valid, test, (train_read, valid_read, test_read), keys)

    return build


DATASETS: dict[str, DatasetSpec] = {
    "gowalla": DatasetSpec(
        sources=("gowalla/train.txt", "gowalla/test.txt"),
        rule=(
            "LightGCN Gowalla train/test as shipped; validation carved from train with "
            "carve_validation(fraction=0.1): per user with n>=2 train items, "
            "clip(round_half_up(0.1n), 1, n-1) random items move to valid"
        ),
        seeded=True,
        build=_build_gowalla,
    ),
    "citeulike-t": DatasetSpec(
        sources=("citeulike-t/users.dat",),
        rule=(
            "users.dat, user 5-core, no item core, ids re-indexed in ascending order; "
            "per-user seeded random 8:1:1 split: train max(floor(0.8n),1), valid up to floor(0.9n)"
        ),
        seeded=True,
        build=_build_citeulike_t,
    ),
    "citeulike-t-kds": DatasetSpec(
        sources=tuple(f"citeulike-t/kds_split/{split}.txt" for split in SPLIT_NAMES),
        rule="woriazzc/KDs reference split files used as is (order-given 8:1:1 on the 5-core)",
        seeded=False,
        build=_build_three_files(read_pair_tsv),
    ),
    "ml-1m": DatasetSpec(
        sources=tuple(f"ml-1m-lightgcnpp/{split}.txt" for split in SPLIT_NAMES),
        rule="LightGCN++ ML-1M train/valid/test files used as is",
        seeded=False,
        build=_build_three_files(read_lightgcn_txt),
    ),
}
BUNDLED = {"ml-100k": {"dataset": "ml-100k"}}
KNOWN_DATASETS = tuple(sorted([*DATASETS, *BUNDLED]))


def default_data_roots() -> list[Path]:
    """Where to look for the data when ``FREQD_DATA_ROOT`` is unset: ``shared/data`` beside the checkout."""
    repo_root = Path(__file__).resolve().parents[2]
    return [repo_root.parent / "shared" / "data"]


def find_data_root() -> Path:
    """The folder holding the shared raw data.

    Looked up in order: the ``FREQD_DATA_ROOT`` environment variable (an error if it is set
    but not a folder), then ``<repository root>/../shared/data``.
    """
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"{DATA_ROOT_ENV}={env!r} is not a folder")
        return root
    candidates = default_data_roots()
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"no data root found: set {DATA_ROOT_ENV}, or provide one of these folders: {looked}"
    )


def prepare_dataset(
    name: str,
    out_root: str | os.PathLike[str] = "dataset",
    data_root: str | os.PathLike[str] | None = None,
    seed: int = 2020,
) -> dict:
    """Make the named data set available as RecBole pre-split atomic files; return its config.

    Known names: ``gowalla``, ``citeulike-t``, ``citeulike-t-kds``, ``ml-1m`` and ``ml-100k``
    (RecBole's bundled copy: nothing is written). ``seed`` only affects the seeded rules
    (``gowalla``'s validation carve-out and ``citeulike-t``'s random split). The returned
    dict is ready for ``Config(config_dict=...)``.
    """
    key = name.strip().lower()
    if key in BUNDLED:
        return dict(BUNDLED[key])
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(KNOWN_DATASETS)}")
    spec = DATASETS[key]
    root = Path(data_root) if data_root is not None else find_data_root()
    sources = [root / rel for rel in spec.sources]
    missing = [str(path) for path in sources if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"dataset {key!r}: source file(s) not found: {', '.join(missing)}")
    folder = Path(out_root) / key
    manifest_path = folder / MANIFEST_NAME
    wanted = {
        "manifest_version": MANIFEST_VERSION,
        "dataset": key,
        "rule": spec.rule,
        "seed": seed if spec.seeded else None,
        "sources": {rel: file_digest(path) for rel, path in zip(spec.sources, sources)},
    }
    if _cache_is_valid(manifest_path, wanted):
        logger.info("%s: reusing %s (manifest matches)", key, folder)
        return benchmark_config(out_root, key)

    logger.info("%s: preparing from %s into %s", key, root, folder)
    manifest_path.unlink(missing_ok=True)
    built = spec.build(sources, seed)
    cleaned = clean_splits(built.train, built.valid, built.test)
    config = write_benchmark_files(out_root, key, cleaned.train, cleaned.valid, cleaned.test)
    outputs = {
        path.name: file_digest(path)
        for path in (folder / f"{key}.{split}.inter" for split in SPLIT_NAMES)
    }
    counts = {split: len(getattr(cleaned, split)) for split in SPLIT_NAMES}
    all_pairs = np.concatenate([cleaned.train, cleaned.valid, cleaned.test])
    counts["users"] = int(len(unique_sorted(all_pairs[:, 0])))
    counts["items"] = int(len(unique_sorted(all_pairs[:, 1])))
    manifest = {
        **wanted,
        "data_root": str(root),
        "read": {
            rel: {"lines": read.lines, "pairs": read.pairs, "duplicates_dropped": read.duplicates_dropped}
            for rel, read in zip(spec.sources, built.reads)
        },
        "counts": counts,
        "dropped": dropped_counts(cleaned.report, zip(built.duplicate_keys, built.reads)),
        "outputs": outputs,
    }
    atomic_write_bytes(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    return config


def dropped_counts(report: CleanReport, reads: Iterable[tuple[str, ReadReport]] = ()) -> dict[str, int]:
    """A manifest's ``dropped``: :func:`clean_splits`' counts plus the duplicates the readers dropped,
    each under its source's key (``source_duplicates`` for sources split later)."""
    dropped = {"source_duplicates": 0, **report.as_dict()}
    for key, read in reads:
        dropped[key] += read.duplicates_dropped
    return dropped


def read_manifest(out_root: str | os.PathLike[str], name: str) -> dict | None:
    """The manifest written by :func:`prepare_dataset`, or None if there is none."""
    path = Path(out_root) / name / MANIFEST_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _cache_is_valid(manifest_path: Path, wanted: dict) -> bool:
    """True if the manifest matches ``wanted`` and every output file still has its digest."""
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    if not isinstance(manifest, dict) or any(manifest.get(k) != v for k, v in wanted.items()):
        return False
    outputs = manifest.get("outputs")
    if not isinstance(outputs, dict) or len(outputs) != len(SPLIT_NAMES):
        return False
    for file_name, digest in outputs.items():
        path = manifest_path.parent / file_name
        if not path.is_file() or file_digest(path) != digest:
            return False
    return True


def file_digest(path: Path) -> dict:
    """Size and sha256 of a file."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return {"size": path.stat().st_size, "sha256": sha.hexdigest()}
