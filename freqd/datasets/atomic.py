"""Writing and checking RecBole atomic ``.inter`` files.

RecBole 1.2.1 reads atomic files with ``pandas.read_csv`` and, on pandas 3, no longer fills
missing values: an empty field silently becomes NaN. It also skips all filtering for
pre-split (``benchmark_filename``) data. So ``freqd`` cleans splits before writing them and
checks user-supplied files before RecBole reads them.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from freqd.io import atomic_write_bytes

from .errors import DataFormatError
from .pairs import (
    as_pairs,
    first_occurrences,
    isin_sorted,
    pair_keys,
    unique_sorted,
)

logger = logging.getLogger(__name__)

INTER_HEADER = "user_id:token\titem_id:token"
SPLIT_NAMES = ("train", "valid", "test")
FIELD_TYPES = frozenset({"token", "token_seq", "float", "float_seq"})

# Strings pandas' CSV reader turns into NaN by default (RecBole does not switch that off),
# so a token such as "NA" or "null" would silently become a missing id.
PANDAS_NA_STRINGS = frozenset(
    {
        "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
        "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
    }
)  # fmt: skip


@dataclass(frozen=True)
class CleanReport:
    """Pairs removed by :func:`clean_splits`, per reason (all zero for clean input)."""

    train_duplicates: int = 0
    valid_duplicates: int = 0
    test_duplicates: int = 0
    valid_in_train: int = 0
    test_in_train: int = 0
    test_in_valid: int = 0
    valid_without_train_user: int = 0
    test_without_train_user: int = 0

    @property
    def total(self) -> int:
        """All pairs dropped."""
        return sum(asdict(self).values())

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class CleanSplits(NamedTuple):
    """The cleaned splits and what was removed."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    report: CleanReport


@dataclass(frozen=True)
class AtomicFileInfo:
    """What :func:`check_atomic_file` found: the ``name -> type`` fields and the row count."""

    path: str
    fields: dict[str, str]
    rows: int


def clean_splits(train: np.ndarray, valid: np.ndarray, test: np.ndarray) -> CleanSplits:
    """Make train/valid/test safe to hand to RecBole as pre-split files.

    Removed, in this order (each dropped pair is counted once, under the first reason):
    repeated pairs within a split; valid/test pairs already in train (leakage); test pairs
    already in valid; valid/test pairs of users with no training pair (RecBole would give
    them an untrained embedding). Items unseen in train are kept: they are a property of the
    split, not a defect. Row order is preserved.
    """
    train, valid, test = as_pairs(train, "train"), as_pairs(valid, "valid"), as_pairs(test, "test")
    (keep_train, keep_valid, keep_test), report = clean_masks(train, valid, test)
    if report.total:
        details = ", ".join(f"{name}={count}" for name, count in report.as_dict().items() if count)
        logger.warning("dropped %d pair(s) before writing splits: %s", report.total, details)
    return CleanSplits(train[keep_train], valid[keep_valid], test[keep_test], report)


def clean_masks(
    train: np.ndarray, valid: np.ndarray, test: np.ndarray
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], CleanReport]:
    """The rows :func:`clean_splits` keeps (one boolean mask per split) and the counts, without logging.

    Takes [n, 2] integer arrays (e.g. codes of string tokens), so callers holding more
    columns than the pair can keep whole rows.
    """
    train, valid, test = (np.asarray(a).reshape(-1, 2) for a in (train, valid, test))
    k_train, k_valid, k_test = pair_keys(train, valid, test)
    masks = [np.ones(len(k), dtype=bool) for k in (k_train, k_valid, k_test)]
    counts: dict[str, int] = {}

    def drop(name: str, split: int, keep: np.ndarray) -> None:
        rows = np.flatnonzero(masks[split])
        counts[name] = counts.get(name, 0) + int(len(rows) - keep.sum())
        masks[split][rows[~keep]] = False

    drop("train_duplicates", 0, first_occurrences(k_train))
    drop("valid_duplicates", 1, first_occurrences(k_valid[masks[1]]))
    drop("test_duplicates", 2, first_occurrences(k_test[masks[2]]))
    train_keys = k_train[masks[0]]
    drop("valid_in_train", 1, ~isin_sorted(k_valid[masks[1]], train_keys))
    drop("test_in_train", 2, ~isin_sorted(k_test[masks[2]], train_keys))
    drop("test_in_valid", 2, ~isin_sorted(k_test[masks[2]], k_valid[masks[1]]))
    train_users = unique_sorted(train[masks[0], 0])
    drop("valid_without_train_user", 1, isin_sorted(valid[masks[1], 0], train_users))
    drop("test_without_train_user", 2, isin_sorted(test[masks[2], 0], train_users))
    return (masks[0], masks[1], masks[2]), CleanReport(**counts)


def write_benchmark_files(
    out_root: str | os.PathLike[str],
    name: str,
    train: np.ndarray,
    valid: np.ndarray,
    test: np.ndarray,
) -> dict:
    """Write ``<out_root>/<name>/<name>.{train,valid,test}.inter`` and return the RecBole config.

    The splits go through :func:`clean_splits` first (drops are logged as a warning; call
    ``clean_splits`` yourself to inspect the counts). Each file is tab-separated with the
    header ``user_id:token<TAB>item_id:token`` and is written atomically. The returned dict
    (``dataset``, ``data_path``, ``benchmark_filename``, ``load_col``) is what ``Config``
    needs to load exactly these three files.
    """
    if not name or name in {".", ".."} or "/" in name or os.sep in name:
        raise ValueError(f"dataset name must be a plain folder name, got {name!r}")
    folder = Path(out_root) / name
    paths = {split: folder / f"{name}.{split}.inter" for split in SPLIT_NAMES}
    cleaned = clean_splits(train, valid, test)
    if len(cleaned.train) == 0:
        raise DataFormatError(
            paths["train"], "the training split is empty; RecBole needs training pairs", value=0
        )
    for split in SPLIT_NAMES:
        arr = getattr(cleaned, split)
        if len(arr) == 0:
            logger.warning("%s: the %s split is empty", paths[split], split)
        atomic_write_bytes(paths[split], _format_inter(arr).encode("ascii"))
    logger.info(
        "wrote %s: %d train / %d valid / %d test pairs",
        folder,
        len(cleaned.train),
        len(cleaned.valid),
        len(cleaned.test),
    )
    return benchmark_config(out_root, name)


def benchmark_config(out_root: str | os.PathLike[str], name: str) -> dict:
    """The RecBole config dict that loads the files written by :func:`write_benchmark_files`."""
    return {
        "dataset": name,
        "data_path": str(out_root),
        "benchmark_filename": list(SPLIT_NAMES),
        "load_col": {"inter": ["user_id", "item_id"]},
    }


def _format_inter(pairs: np.ndarray) -> str:
    body = "\n".join(map("{}\t{}".format, pairs[:, 0].tolist(), pairs[:, 1].tolist()))
    return f"{INTER_HEADER}\n{body}\n" if len(pairs) else f"{INTER_HEADER}\n"


def check_atomic_file(
    path: str | os.PathLike[str], required_tokens: tuple[str, ...] = ("user_id", "item_id")
) -> AtomicFileInfo:
    """Validate a RecBole atomic file (e.g. ``.inter``) before RecBole reads it.

    Checks: UTF-8 without a byte-order mark; a header of tab-separated ``name:type`` fields
    with a RecBole type and unique names; ``required_tokens`` present as ``token`` fields; at
    least one data row;
    the header's field count on every line; no blank line and no empty field; no field with
    leading or trailing whitespace (a blank field is missing, and " 5" is a token other than
    "5"); no value pandas would read as missing ("NA", "null", ...); float fields numeric and
    not NaN; no field starting with a double quote (pandas would parse it as quoted). Blank lines at
    the end of the file are ignored. Errors name the file, the 1-based line and the column.
    The structural checks are vectorised over the raw bytes, so megabyte files take
    milliseconds.
    """
    return load_atomic_file(path, required_tokens).info


class LoadedAtomicFile(NamedTuple):
    """A checked atomic file: what :func:`check_atomic_file` returns, the values as strings, the
    header line and the data rows' bytes (LF line ends, no final newline)."""

    info: AtomicFileInfo
    frame: pd.DataFrame
    header: str
    body: bytes


def load_atomic_file(
    path: str | os.PathLike[str], required_tokens: tuple[str, ...] = ("user_id", "item_id")
) -> LoadedAtomicFile:
    """:func:`check_atomic_file`, keeping what it read."""
    path = Path(path)
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataFormatError(
            path, "not valid UTF-8 text", line=line, value=data[exc.start : exc.start + 8]
        ) from None
    if data.startswith(b"\xef\xbb\xbf"):
        raise DataFormatError(
            path, "starts with a UTF-8 byte-order mark, which RecBole reads as part of the first field name", line=1
        )
    data = data.replace(b"\r\n", b"\n")
    if b"\r" in data:
        line = data.count(b"\n", 0, data.index(b"\r")) + 1
        raise DataFormatError(path, "stray carriage return (\\r) inside a line", line=line)
    header_end = data.find(b"\n")
    header = (data if header_end < 0 else data[:header_end]).decode("utf-8")
    fields = _parse_header(path, header, required_tokens)
    body = b"" if header_end < 0 else data[header_end + 1 :].rstrip(b"\n")
    if not body.strip():
        raise DataFormatError(path, "no data rows after the header", line=2)
    _check_structure(path, body, list(fields))
    frame = pd.read_csv(
        io.BytesIO(body),
        sep="\t",
        header=None,
        names=list(fields),
        dtype=str,
        na_filter=False,
        keep_default_na=False,
        quoting=csv.QUOTE_NONE,
        engine="c",
    )
    for column, ftype in fields.items():
        values = frame[column]
        bad = values.isin(PANDAS_NA_STRINGS)
        reason = "missing value (a string pandas reads as NaN)"
        if not bad.any() and ftype in {"float", "float_seq"}:
            if ftype == "float":
                bad = pd.to_numeric(values, errors="coerce").isna()
            else:
                bad = ~values.map(_is_float_seq).astype(bool)
            reason = f"not a valid {ftype} value"
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataFormatError(path, reason, line=row + 2, column=column, value=values.iat[row])
    return LoadedAtomicFile(AtomicFileInfo(path=str(path), fields=fields, rows=len(frame)), frame, header, body)


def _parse_header(path: Path, header: str, required_tokens: tuple[str, ...]) -> dict[str, str]:
    """``{name: type}`` from the header line, validated."""
    fields: dict[str, str] = {}
    for position, spec in enumerate(header.split("\t"), 1):
        parts = spec.split(":")
        if len(parts) != 2 or not parts[0].strip() or parts[1] not in FIELD_TYPES:
            raise DataFormatError(
                path,
                f"header field {position} must be 'name:type' with type one of {sorted(FIELD_TYPES)}",
                line=1,
                value=spec,
            )
        name, ftype = parts
        if name in fields:
            raise DataFormatError(path, "duplicate field name in header", line=1, value=name)
        fields[name] = ftype
    for name in required_tokens:
        if fields.get(name) != "token":
            raise DataFormatError(
                path, f"header needs the field '{name}:token'", line=1, value=header
            )
    return fields


def _check_structure(path: Path, body: bytes, names: list[str]) -> None:
    """Field counts, blank lines, empty fields and leading quotes, vectorised over the bytes."""
    raw = np.frombuffer(body, dtype=np.uint8)
    newlines = np.flatnonzero(raw == ord("\n"))
    starts: np.ndarray = np.r_[0, newlines + 1]
    ends: np.ndarray = np.r_[newlines, len(raw)]
    tabs = np.flatnonzero(raw == ord("\t"))
    tab_counts = np.searchsorted(tabs, ends) - np.searchsorted(tabs, starts)

    def fail(reason: str, position: int, with_column: bool) -> None:
        index = int(np.searchsorted(starts, position, side="right") - 1)
        column = None
        if with_column:
            column = names[int(np.count_nonzero(raw[starts[index] : position] == ord("\t")))]
        text = body[starts[index] : ends[index]].decode("utf-8")
        raise DataFormatError(path, reason, line=index + 2, column=column, value=text)

    wrong = np.flatnonzero(tab_counts != len(names) - 1)
    if len(wrong):
        index = int(wrong[0])
        if starts[index] == ends[index]:
            fail("blank line", int(starts[index]), with_column=False)
        fail(f"{tab_counts[index] + 1} field(s), the header has {len(names)}", int(starts[index]), False)
    field_start = np.zeros(len(raw) + 1, dtype=bool)
    field_start[starts] = True
    field_start[tabs + 1] = True
    field_end = np.zeros(len(raw) + 1, dtype=bool)
    field_end[ends] = True
    field_end[tabs] = True
    # An empty field starts where a field ends: at a tab or a line end (first such position).
    empty = np.flatnonzero(field_start & field_end)
    if len(empty):
        fail("empty field", int(empty[0]), with_column=True)
    quoted = np.flatnonzero(field_start[:-1] & (raw == ord('"')))
    if len(quoted):
        fail("field starts with a double quote, which pandas would parse as quoting", int(quoted[0]), True)
    # Edge whitespace: a blank field is a missing value, and " 5" would be a token other than "5".
    space = np.isin(raw, np.frombuffer(b" \x0b\x0c", dtype=np.uint8))
    padded = np.flatnonzero((field_start[:-1] & space) | (field_end[1:] & space))
    if len(padded):
        fail("field with leading or trailing whitespace (or blank)", int(padded[0]), True)


def _is_float_seq(value: str) -> bool:
    """RecBole splits float_seq fields on spaces and converts each part with float()."""
    try:
        parts = [float(part) for part in value.split(" ") if part]
    except ValueError:
        return False
    return bool(parts) and not any(math.isnan(part) for part in parts)
