"""Your own RecBole atomic files, checked and cleaned like the named datasets before RecBole reads them.

``<data_path>/<name>/<name>.inter`` (RecBole splits it) or the pre-split
``<name>.<part>.inter`` files of ``benchmark_filename`` (inferred as ``[train, valid, test]``
when those three files exist and ``<name>.inter`` does not) are validated with
:func:`~freqd.datasets.atomic.check_atomic_file` (as are the folder's other ``<name>*.inter``
files) and checked for the defects
:func:`~freqd.datasets.atomic.clean_splits` removes from the named datasets: repeated
(user, item) pairs, validation/test pairs already in train (leakage), test pairs already in
validation, and validation/test pairs of users without training pairs.

Files with none of these are read as they are. Files with any are **cleaned into a derived
copy**, not refused: ``<data_path>/<name>/freqd-clean/<name>/`` holds the kept rows (whole
lines, every column), copies of the folder's other ``<name>.*`` files (``.user``, ``.item``,
...) and a manifest ``freqd_clean.json`` (the sources' sha256, rows read and kept per file,
every dropped row by reason); training then reads that copy (its ``data_path``), and a warning
names the copy and the counts on every run. Cleaning rather than refusing gives user files
exactly the treatment and the manifest entries of the named datasets, which drop, count and
record the same defects; the source files are never modified, the copy is rebuilt when a
source changes, and ``freqd datasets import`` writes files that need no cleaning.

Only the config dict is seen here (command-line keys; the ``dataset``/``data_path`` of config
files): pre-split files named other than train/valid/test whose ``benchmark_filename`` is set
in a ``--config`` file alone get the format check and a warning, not the pair checks.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from freqd.io import atomic_write_bytes, atomic_write_json

from .atomic import SPLIT_NAMES, check_atomic_file, clean_masks, load_atomic_file
from .pairs import first_occurrences, pair_keys
from .registry import file_digest

logger = logging.getLogger(__name__)

CLEAN_DIR = "freqd-clean"
CLEAN_MANIFEST = "freqd_clean.json"
CLEAN_VERSION = 1
IMPORT_MANIFEST = "freqd_import.json"
# The keys of an imported dataset's YAML that say how to read its files.
IMPORTED_KEYS = ("benchmark_filename", "load_col")


def user_dataset_config(dataset: str, config_dict: dict[str, Any]) -> dict[str, Any]:
    """Config entries that load the atomic files under ``<data_path>/<dataset>/``, checked and, if
    needed, cleaned (see the module docstring). Raises FileNotFoundError when there are none."""
    data_path = config_dict.get("data_path", "dataset")
    folder = Path(data_path) / dataset
    present = sorted(folder.glob(f"{dataset}*.inter")) if folder.is_dir() else []
    if not present:
        from .registry import KNOWN_DATASETS

        raise FileNotFoundError(
            f"dataset {dataset!r}: no atomic files {folder}/{dataset}*.inter and not one of the named "
            f"datasets {list(KNOWN_DATASETS)}; 'freqd datasets import FILE --name {dataset}' makes them "
            "from an interaction file"
        )
    config = {**imported_settings(folder, dataset), **config_dict}
    parts = config.get("benchmark_filename")
    if parts is None and not (folder / f"{dataset}.inter").is_file():
        if all((folder / f"{dataset}.{split}.inter").is_file() for split in SPLIT_NAMES):
            parts = list(SPLIT_NAMES)
            config["benchmark_filename"] = parts
            logger.info("%s: pre-split files found, benchmark_filename: %s", folder, parts)
    fields = (config.get("USER_ID_FIELD", "user_id"), config.get("ITEM_ID_FIELD", "item_id"))
    found = ", ".join(path.name for path in present)
    if parts is None and not (folder / f"{dataset}.inter").is_file():
        for path in present:
            check_atomic_file(path, fields)
        logger.warning(
            "dataset %r: %s has no %s.inter and no benchmark_filename was given here, so only the format of %s "
            "was checked, not repeated pairs or leaks: name the files %s.{train,valid,test}.inter or pass "
            "--benchmark_filename=[...] on the command line (a --config file's benchmark_filename is not seen here)",
            dataset, folder, dataset, found, dataset,
        )
        return config
    names = [f"{dataset}.{part}.inter" for part in parts] if parts else [f"{dataset}.inter"]
    missing = [str(folder / name) for name in names if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"dataset {dataset!r}: {', '.join(missing)} not found (benchmark_filename "
                                f"{parts}; the folder has {found})")
    loaded = [load_atomic_file(folder / name, fields) for name in names]
    for path in present:
        if path.name not in names:
            check_atomic_file(path, fields)
    masks, dropped = _defects(loaded, fields, parts, config.get("TIME_FIELD", "timestamp"))
    if not sum(dropped.values()):
        return config
    root = folder / CLEAN_DIR
    _write_clean_copy(folder, root / dataset, dataset, names, loaded, masks, dropped, parts)
    details = ", ".join(f"{key}={count}" for key, count in dropped.items() if count)
    logger.warning(
        "dataset %r: %s hold %d row(s) to drop (%s); training reads the cleaned copy %s (%s); "
        "fix the files, or make them with 'freqd datasets import', to read them directly",
        dataset, ", ".join(str(folder / n) for n in names), sum(dropped.values()), details,
        root / dataset, root / dataset / CLEAN_MANIFEST,
    )
    config["data_path"] = str(root)
    return config


def imported_settings(folder: Path, dataset: str) -> dict[str, Any]:
    """``benchmark_filename`` and ``load_col`` from the YAML ``freqd datasets import`` wrote next to
    its files (only where its manifest is), so ``--dataset NAME`` alone loads them."""
    path = folder / f"{dataset}.yaml"
    if not (folder / IMPORT_MANIFEST).is_file() or not path.is_file():
        return {}
    settings = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: expected a YAML mapping of config keys")
    return {key: settings[key] for key in IMPORTED_KEYS if key in settings}


def _defects(loaded, fields, parts, time_field) -> tuple[list[np.ndarray], dict[str, int]]:
    """Rows to keep per file and the dropped counts: the named datasets' reasons for three split
    files, repeated pairs per file otherwise (a single file keeps each pair's earliest row when
    it has a float time field, as RecBole's ``rm_dup_inter: first``)."""
    user, item = fields
    users = pd.concat([f.frame[user] for f in loaded], ignore_index=True)
    items = pd.concat([f.frame[item] for f in loaded], ignore_index=True)
    pairs = np.column_stack([pd.factorize(users)[0], pd.factorize(items)[0]]).astype(np.int64)
    per_file = np.split(pairs, np.cumsum([len(f.frame) for f in loaded])[:-1])
    if parts and len(parts) == 3:
        split_masks, report = clean_masks(*per_file)
        return list(split_masks), report.as_dict()
    masks: list[np.ndarray] = []
    dropped: dict[str, int] = {}
    for file, file_pairs, part in zip(loaded, per_file, parts or [None]):
        (keys,) = pair_keys(file_pairs)
        order = np.arange(len(keys))
        if part is None and file.info.fields.get(time_field) == "float":
            order = np.argsort(pd.to_numeric(file.frame[time_field]).to_numpy(), kind="stable")
        keep = np.zeros(len(keys), dtype=bool)
        keep[order[first_occurrences(keys[order])]] = True
        masks.append(keep)
        dropped["duplicates" if part is None else f"{part}_duplicates"] = int(len(keep) - keep.sum())
    return masks, dropped


def _write_clean_copy(folder, out, dataset, names, loaded, masks, dropped, parts) -> None:
    """Write the cleaned copy, or reuse it while its manifest matches the sources and outputs."""
    sources = sorted(p for p in folder.iterdir() if p.is_file() and p.name.startswith(f"{dataset}."))
    manifest_path = out / CLEAN_MANIFEST
    wanted = {
        "manifest_version": CLEAN_VERSION,
        "dataset": dataset,
        "source_folder": str(folder),
        "benchmark_filename": parts,
        "sources": {p.name: file_digest(p) for p in sources},
    }
    if _copy_is_valid(manifest_path, wanted):
        return
    manifest_path.unlink(missing_ok=True)
    for name, file, keep in zip(names, loaded, masks):
        rows = np.asarray(file.body.split(b"\n"), dtype=object)[keep]
        atomic_write_bytes(out / name, (file.header + "\n").encode("utf-8") + b"".join(r + b"\n" for r in rows))
    for path in sources:
        if path.name not in names:
            atomic_write_bytes(out / path.name, path.read_bytes())
    manifest = {
        **wanted,
        "rows": {name: {"read": len(keep), "kept": int(keep.sum())} for name, keep in zip(names, masks)},
        "dropped": dropped,
        "outputs": {p.name: file_digest(out / p.name) for p in sources},
    }
    atomic_write_json(manifest_path, manifest)


def _copy_is_valid(manifest_path: Path, wanted: dict) -> bool:
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or any(manifest.get(k) != v for k, v in wanted.items()):
        return False
    outputs = manifest.get("outputs")
    folder = manifest_path.parent
    return isinstance(outputs, dict) and all(
        (folder / name).is_file() and file_digest(folder / name) == digest for name, digest in outputs.items()
    )
