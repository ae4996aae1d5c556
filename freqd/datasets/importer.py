"""``freqd datasets import``: one interaction file (CSV, TSV, ...) into a dataset freqd trains on.

:func:`import_interactions` reads the file with pandas, keeps the rows at or above a rating
threshold, drops repeated (user, item) pairs, applies a k-core (:func:`filter_core`), splits per
user (:func:`split_per_user`) and writes, under ``<out>/<name>/``:

- ``<name>.{train,valid,test}.inter``: RecBole atomic files (:func:`write_benchmark_files`);
- ``user_ids.tsv``, ``item_ids.tsv``: original token -> kept token (the k-core's dense ids);
- ``<name>.yaml``: ``dataset``, ``data_path``, ``benchmark_filename``, ``load_col`` for ``--config``;
- ``freqd_import.json``: the input's sha256, the options, every count (rows read = pairs kept +
  every dropped count) and the outputs' sha256.

With ``--out dataset`` (the default ``data_path``), ``freqd train --dataset <name>`` alone loads it.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import logging
import os
import re
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml

from freqd.io import atomic_write_json, atomic_write_text

from .atomic import SPLIT_NAMES, benchmark_config, clean_splits, write_benchmark_files
from .errors import DataFormatError
from .pairs import first_occurrences, pair_keys
from .registry import KNOWN_DATASETS, file_digest
from .splits import filter_core, split_per_user
from .user_files import IMPORT_MANIFEST

logger = logging.getLogger(__name__)

IMPORT_VERSION = 1
SEPARATORS = {"auto": None, "tab": "\t", "comma": ",", "space": r"\s+", "semicolon": ";", "pipe": "|"}
SPLITS = ("random", "time", "given")
# Header names recognised as the user / item column (lower case, without '_', '-', ' ' or a ':type').
USER_NAMES = ("userid", "user", "uid", "customerid", "visitorid")
ITEM_NAMES = ("itemid", "item", "iid", "movieid", "productid", "bookid", "songid", "artistid")
_LINE = re.compile(r"line (\d+)")
# First line of the YAML an import writes (before its other files): marks the folder as an import's.
YAML_MARK = f"# written by 'freqd datasets import'; see {IMPORT_MANIFEST}\n"


@dataclass(frozen=True)
class ImportOptions:
    """How to read and split the file; recorded in the manifest."""

    sep: str = "auto"
    header: bool | None = None
    user_col: str | None = None
    item_col: str | None = None
    rating_col: str | None = None
    min_rating: float | None = None
    time_col: str | None = None
    min_user: int = 5
    min_item: int = 0
    split: str = "random"
    valid_ratio: float = 0.1
    test_ratio: float = 0.1
    seed: int = 2020


def import_interactions(
    path: str | os.PathLike[str],
    name: str,
    out: str | os.PathLike[str] = "dataset",
    options: ImportOptions = ImportOptions(),
) -> dict[str, Any]:
    """Import ``path`` as dataset ``name`` under ``<out>/<name>/``; return the manifest written.

    Malformed input raises :class:`DataFormatError` naming the file, line, column and value; bad
    options raise ValueError.
    """
    path = Path(path)
    _check_options(name, options)
    folder = Path(out) / name
    _check_target(folder, name)
    raw = path.read_bytes()
    table = _read_table(path, raw, options)
    rows_read = len(table.users)
    keep = np.ones(rows_read, dtype=bool)
    if options.min_rating is not None:
        assert table.ratings is not None  # _check_options: --min-rating comes with --rating-col
        keep = table.ratings >= options.min_rating
    below = int(rows_read - keep.sum())
    rows = np.flatnonzero(keep)
    if table.times is not None:
        rows = rows[np.argsort(table.times[rows], kind="stable")]
    user_codes, user_tokens = _codes(table.users)
    item_codes, item_tokens = _codes(table.items)
    (keys,) = pair_keys(np.column_stack([user_codes[rows], item_codes[rows]]))
    first = first_occurrences(keys)
    duplicates = int(len(rows) - first.sum())
    rows = rows[first] if options.split == "time" else np.sort(rows[first])
    pairs = np.column_stack([user_codes[rows], item_codes[rows]])
    core = filter_core(pairs, min_user=options.min_user, min_item=options.min_item)
    n_users, n_items = len(np.unique(pairs[:, 0])), len(np.unique(pairs[:, 1]))
    if len(core.pairs) == 0:
        raise DataFormatError(path, f"no pairs left after the k-core (min_user={options.min_user}, "
                              f"min_item={options.min_item}) of {len(pairs)} distinct pair(s)", value=len(pairs))
    ratios = (1.0 - options.valid_ratio - options.test_ratio, options.valid_ratio, options.test_ratio)
    order_rule: Literal["random", "given"] = "random" if options.split == "random" else "given"
    cleaned = clean_splits(*split_per_user(core.pairs, ratios=ratios, order=order_rule, seed=options.seed))
    for split in ("valid", "test"):
        if len(getattr(cleaned, split)) == 0:
            raise DataFormatError(
                path, f"the {split} split is empty: no user has enough pairs for a {split} item at "
                f"--valid-ratio {options.valid_ratio} --test-ratio {options.test_ratio} (raise them or --min-user)",
                value=0)
    manifest_path = folder / IMPORT_MANIFEST
    manifest_path.unlink(missing_ok=True)
    yaml_path = folder / f"{name}.yaml"
    atomic_write_text(yaml_path, YAML_MARK + yaml.safe_dump(benchmark_config(out, name), sort_keys=False))
    config = write_benchmark_files(out, name, cleaned.train, cleaned.valid, cleaned.test)
    atomic_write_text(folder / "user_ids.tsv", _id_map(user_tokens[core.user_ids]))
    atomic_write_text(folder / "item_ids.tsv", _id_map(item_tokens[core.item_ids]))
    outputs = [*(f"{name}.{split}.inter" for split in SPLIT_NAMES), "user_ids.tsv", "item_ids.tsv", yaml_path.name]
    manifest = {
        "manifest_version": IMPORT_VERSION,
        "dataset": name,
        "input": {"path": str(path), "size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()},
        "options": asdict(options),
        "read": {"sep": table.sep, "header": table.header, "columns": table.columns, "used": table.used},
        "dropped": {
            "below_min_rating": below,
            "duplicates": duplicates,
            "kcore_pairs": int(len(pairs) - len(core.pairs)),
            **cleaned.report.as_dict(),
        },
        "counts": {
            "rows_read": rows_read,
            **{split: len(getattr(cleaned, split)) for split in SPLIT_NAMES},
            "users": len(core.user_ids),
            "items": len(core.item_ids),
            "users_removed_by_kcore": int(n_users - len(core.user_ids)),
            "items_removed_by_kcore": int(n_items - len(core.item_ids)),
        },
        "config": config,
        "outputs": {file: file_digest(folder / file) for file in outputs},
    }
    atomic_write_json(manifest_path, manifest)
    logger.info("imported %s into %s", path, folder)
    return manifest


def train_command(manifest: dict[str, Any]) -> str:
    """The ``freqd train`` command line for an imported dataset."""
    config_file = Path(manifest["config"]["data_path"]) / manifest["dataset"] / f"{manifest['dataset']}.yaml"
    name = shlex.quote(manifest["dataset"])
    return f"freqd train --model BPR --dataset {name} --config {shlex.quote(str(config_file))}"


@dataclass
class _Table:
    users: pd.Series
    items: pd.Series
    ratings: np.ndarray | None
    times: np.ndarray | None
    sep: str
    header: bool
    columns: list[str] | int
    used: dict[str, str | int]


def _read_table(path: Path, raw: bytes, options: ImportOptions) -> _Table:
    """The file's user/item tokens (stripped), ratings and times, every row checked."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataFormatError(path, "not valid UTF-8 text", line=line, value=raw[exc.start : exc.start + 8]) from None
    text = text.replace("\r\n", "\n")
    if "\r" in text:
        line = text.count("\n", 0, text.index("\r")) + 1
        raise DataFormatError(path, "stray carriage return (\\r) inside a line", line=line)
    if "\x00" in text:
        raise DataFormatError(path, "NUL character: not a text file", line=text.count("\n", 0, text.index("\x00")) + 1)
    lines = text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataFormatError(path, "empty file", line=1)
    blank = next((i for i, line in enumerate(lines) if not line.strip()), None)
    if blank is not None:
        raise DataFormatError(path, "blank line", line=blank + 1)
    sep = SEPARATORS.get(options.sep, options.sep)
    if sep is None:
        sep = _sniff(path, lines)
    try:
        frame = pd.read_csv(
            io.StringIO("\n".join(lines) + "\n"),
            sep=sep,
            header=None,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=False,
            engine="python" if len(sep) > 1 and sep != r"\s+" else "c",
        )
    except (pd.errors.ParserError, csv.Error) as exc:
        match = _LINE.search(str(exc))
        raise DataFormatError(path, f"cannot split into columns with separator {sep!r}: {exc}",
                              line=int(match[1]) if match else None) from None
    if len(frame) != len(lines):
        raise DataFormatError(path, f"{len(lines)} lines but {len(frame)} rows: a quoted field spans lines")
    first = [str(v).strip() for v in frame.iloc[0].tolist()]
    header = options.header if options.header is not None else _has_header(frame, first, options)
    names = first if header else None
    data = frame.iloc[1:] if header else frame
    if len(data) == 0:
        raise DataFormatError(path, "no data rows" + (" after the header" if header else ""), line=2 if header else 1)
    line_offset = 2 if header else 1
    default_user = _find_name(names, USER_NAMES) if names else None
    default_item = _find_name(names, ITEM_NAMES) if names else None
    used: dict[str, str | int] = {}
    columns: dict[str, int] = {}
    for role, spec, default in (
        ("user", options.user_col, default_user if default_user is not None else 0),
        ("item", options.item_col, default_item if default_item is not None else 1),
        ("rating", options.rating_col, None),
        ("time", options.time_col, None),
    ):
        if spec is None and default is None:
            continue
        index = _resolve_column(path, spec if spec is not None else str(default), names, frame.shape[1], role)
        columns[role] = index
        used[role] = names[index] if names else index
    if columns["user"] == columns["item"]:
        raise DataFormatError(path, "the user and item columns are the same column", column=str(used["user"]), line=1)

    def values(role: str) -> pd.Series:
        series = data.iloc[:, columns[role]].fillna("").astype(str).str.strip()
        empty = (series == "").to_numpy()
        if empty.any():
            row = int(np.flatnonzero(empty)[0])
            raise DataFormatError(path, f"empty or missing {role} field", line=row + line_offset,
                                  column=str(used[role]), value=lines[row + line_offset - 1])
        return series

    users, items = values("user"), values("item")
    ratings = times = None
    if "rating" in columns:
        ratings = _numbers(path, values("rating"), "rating", str(used["rating"]), line_offset)
    if "time" in columns:
        times = _times(path, values("time"), str(used["time"]), line_offset)
    return _Table(users.reset_index(drop=True), items.reset_index(drop=True), ratings, times, sep, bool(header),
                  names if names else frame.shape[1], used)


def _sniff(path: Path, lines: list[str]) -> str:
    """The separator among tab, comma, semicolon, pipe and space (as whitespace runs) that splits the
    most of the first 50 lines into the same number of fields (ties: that order). Restricted to these,
    unlike pandas' ``sep=None``, which sniffs the first line alone and may pick any character (a
    digit of a one-column file)."""
    sample = lines[:50]
    best, best_share = None, 0.0
    for candidate in ("\t", ",", ";", "|", " "):
        if candidate == " ":
            counts = [len(re.findall(r"\s+", line.strip())) for line in sample]
        else:
            counts = [line.count(candidate) for line in sample]
        share = max((counts.count(c) for c in set(counts) if c > 0), default=0) / len(sample)
        if share > best_share:
            best, best_share = candidate, share
    if best is None:
        raise DataFormatError(path, "cannot detect the column separator (tab, comma, semicolon, pipe or space); "
                              "pass --sep", line=1, value=lines[0][:80])
    return r"\s+" if best == " " else best


def _normalise(name: str) -> str:
    base = name.split(":", 1)[0] if re.fullmatch(r"[^:]+:[a-z_]+", name) else name
    return re.sub(r"[\s_\-]", "", base).lower()


def _find_name(names: list[str], wanted: tuple[str, ...]) -> int | None:
    normalised = [_normalise(n) for n in names]
    for candidate in wanted:
        if candidate in normalised:
            return normalised.index(candidate)
    return None


def _has_header(frame: pd.DataFrame, first: list[str], options: ImportOptions) -> bool:
    """Auto-detection: a column option given by name, a recognised user/item name in the first row,
    or a first row that is not numeric where the next rows are."""
    specs = [options.user_col, options.item_col, options.rating_col, options.time_col]
    if any(spec is not None and not spec.isdigit() for spec in specs):
        return True
    if _find_name(first, USER_NAMES) is not None or _find_name(first, ITEM_NAMES) is not None:
        return True
    if len(frame) < 2:
        return False
    sample = frame.iloc[1:51]
    for column in range(min(frame.shape[1], 4)):
        below = pd.to_numeric(sample.iloc[:, column], errors="coerce")
        if not below.isna().any() and pd.isna(pd.to_numeric(pd.Series([first[column]]), errors="coerce")[0]):
            return True
    return False


def _resolve_column(path: Path, spec: str, names: list[str] | None, width: int, role: str) -> int:
    """A column name (exact, then case-insensitive, then without ':type') or a 0-based position."""
    if names:
        for match in (lambda n: n == spec, lambda n: n.lower() == spec.lower(),
                      lambda n: _normalise(n) == _normalise(spec)):
            hits = [i for i, n in enumerate(names) if match(n)]
            if len(hits) > 1:
                raise DataFormatError(path, f"{len(hits)} columns are named like the {role} column", line=1,
                                      column=spec)
            if hits:
                return hits[0]
    if spec.isdigit():
        if int(spec) < width:
            return int(spec)
        raise DataFormatError(path, f"no {role} column at position {spec} (0-based): the file has {width} column(s)",
                              line=1, column=spec)
    if names:
        raise DataFormatError(path, f"no {role} column {spec!r}; the columns are {names}", line=1, column=spec)
    raise DataFormatError(path, f"no header, so the {role} column must be a 0-based position (the file has "
                          f"{width} column(s))", column=spec)


def _numbers(path: Path, series: pd.Series, role: str, column: str, line_offset: int) -> np.ndarray:
    numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(numbers)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataFormatError(path, f"{role} is not a finite number", line=row + line_offset, column=column,
                              value=series.iat[row])
    return numbers


def _times(path: Path, series: pd.Series, column: str, line_offset: int) -> np.ndarray:
    """Numbers as they are, or else ISO 8601 dates and times (as nanoseconds); not a mix."""
    numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
    numeric = np.isfinite(numbers)
    if numeric.all():
        return numbers
    parsed = pd.to_datetime(series, errors="coerce", format="ISO8601", utc=True)
    bad = ~numeric if numeric.any() else parsed.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        reason = "time is not a number like the others" if numeric.any() else "time is not an ISO 8601 date"
        raise DataFormatError(path, reason, line=row + line_offset, column=column, value=series.iat[row])
    return parsed.to_numpy().astype("datetime64[ns]").astype(np.int64).astype(np.float64)


def _codes(tokens: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of string tokens, ranked in numeric order when every token is a plain
    non-negative integer, else in string order; and the tokens per code."""
    codes, uniques = pd.factorize(tokens)
    uniques = np.asarray(uniques, dtype=object)
    numeric = all(t.isascii() and t.isdigit() and (t == "0" or not t.startswith("0")) and len(t) < 19 for t in uniques)
    order = np.argsort(uniques.astype(np.int64) if numeric else uniques.astype(str), kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[codes], uniques[order]


def _id_map(tokens: np.ndarray) -> str:
    """TSV ``original_token<TAB>token`` (the kept token is the row's 0-based index)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(["original_token", "token"])
    writer.writerows(zip(tokens.tolist(), range(len(tokens))))
    return buffer.getvalue()


def _check_options(name: str, options: ImportOptions) -> None:
    if not name or name in {".", ".."} or "/" in name or os.sep in name or name != name.strip():
        raise ValueError(f"--name must be a plain folder name, got {name!r}")
    if name in KNOWN_DATASETS:
        raise ValueError(f"--name {name!r} is a named dataset ({', '.join(KNOWN_DATASETS)}); choose another name")
    if options.split not in SPLITS:
        raise ValueError(f"--split must be one of {', '.join(SPLITS)}, got {options.split!r}")
    if options.split == "time" and options.time_col is None:
        raise ValueError("--split time needs --time-col")
    if (options.min_rating is None) != (options.rating_col is None):
        raise ValueError("--min-rating and --rating-col go together (the rating column is only read for the threshold)")
    if options.min_rating is not None and not np.isfinite(options.min_rating):
        raise ValueError(f"--min-rating must be a finite number, got {options.min_rating!r}")
    for flag, value in (("--valid-ratio", options.valid_ratio), ("--test-ratio", options.test_ratio)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{flag} must be in (0, 1), got {value!r}")
    if options.valid_ratio + options.test_ratio >= 1.0:
        total = options.valid_ratio + options.test_ratio
        raise ValueError(f"--valid-ratio + --test-ratio must be below 1, got {total!r}")
    if options.min_user < 0 or options.min_item < 0:
        raise ValueError(f"--min-user and --min-item must be >= 0, got {options.min_user}, {options.min_item}")
    if options.sep == "":
        raise ValueError("--sep must not be empty")


def _check_target(folder: Path, name: str) -> None:
    """Refuse a folder holding atomic files that no earlier import (finished or not) wrote."""
    marker = folder / f"{name}.yaml"
    if folder.is_dir() and not (marker.is_file() and marker.read_bytes().startswith(YAML_MARK.encode())):
        own = sorted(p.name for p in folder.glob(f"{name}*.inter"))
        if own:
            raise ValueError(f"{folder} already holds {', '.join(own)}, not written by 'freqd datasets import'; "
                             "choose another --name or --out, or remove them")


def add_import_parser(actions: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``import`` under ``freqd datasets``."""
    p = actions.add_parser(
        "import", help="your own interaction file -> atomic files, id maps, manifest and a config to train on",
        description="Read FILE (CSV/TSV/...), keep rows with rating >= --min-rating, drop repeated (user, item) "
                    "pairs, apply a k-core, split every user's items into train/valid/test, and write "
                    "<out>/<name>/: <name>.{train,valid,test}.inter, user_ids.tsv, item_ids.tsv, <name>.yaml and "
                    f"{IMPORT_MANIFEST}. Prints the command that trains on it.")
    p.add_argument("file", metavar="FILE", help="interaction file: one (user, item[, rating, time, ...]) row per line")
    p.add_argument("--name", required=True, help="dataset name (the folder and RecBole's 'dataset')")
    p.add_argument("--out", default="dataset", help="folder for <name>/ (RecBole's data_path; default: dataset)")
    p.add_argument("--sep", default="auto", metavar="SEP",
                   help="column separator: auto (the default: detected from the first 50 lines), tab, comma, "
                        "space (runs of whitespace), semicolon, pipe, or the character itself")
    header = p.add_mutually_exclusive_group()
    header.add_argument("--header", dest="header", action="store_true", default=None,
                        help="the first line names the columns (default: detected)")
    header.add_argument("--no-header", dest="header", action="store_false", help="the first line is data")
    for role, default in (("user", "a column named user/user_id/userId/..., else position 0"),
                          ("item", "a column named item/item_id/movieId/..., else position 1")):
        p.add_argument(f"--{role}-col", dest=f"{role}_col", default=None, metavar="NAME_OR_POS",
                       help=f"{role} column: a header name or a 0-based position (default: {default})")
    p.add_argument("--rating-col", dest="rating_col", default=None, metavar="NAME_OR_POS",
                   help="rating column, read only for --min-rating")
    p.add_argument("--min-rating", dest="min_rating", type=float, default=None, metavar="X",
                   help="keep rows with rating >= X (implicit feedback from ratings)")
    p.add_argument("--time-col", dest="time_col", default=None, metavar="NAME_OR_POS",
                   help="time column (numbers or ISO 8601 dates): the earliest row of a repeated pair is kept; "
                        "--split time orders by it")
    p.add_argument("--min-user", dest="min_user", type=int, default=5, metavar="N",
                   help="k-core: every user keeps >= N items (default 5)")
    p.add_argument("--min-item", dest="min_item", type=int, default=0, metavar="N",
                   help="k-core: every item keeps >= N users (default 0)")
    p.add_argument("--split", default="random", choices=SPLITS,
                   help="per-user split of each user's items: random (seeded), time (chronological, by "
                        "--time-col) or given (file order) (default random)")
    p.add_argument("--valid-ratio", dest="valid_ratio", type=float, default=0.1, metavar="R",
                   help="share of each user's items for validation (default 0.1)")
    p.add_argument("--test-ratio", dest="test_ratio", type=float, default=0.1, metavar="R",
                   help="share of each user's items for test (default 0.1); train keeps the rest, at least one")
    p.add_argument("--seed", type=int, default=2020, help="seed of the random split (default 2020)")
    p.set_defaults(func=cmd_import)
    return p


def cmd_import(args: argparse.Namespace, overrides: dict[str, Any] | None = None) -> int:
    """Run ``freqd datasets import`` and print what was written and the train command."""
    if overrides:
        raise ValueError(f"freqd datasets import takes no config overrides, got {sorted(overrides)}")
    options = ImportOptions(**{field: getattr(args, field) for field in ImportOptions.__dataclass_fields__})
    manifest = import_interactions(args.file, args.name, out=args.out, options=options)
    print(summary(manifest))
    return 0


def summary(manifest: dict[str, Any]) -> str:
    """What an import kept and dropped, where it is, and the command that trains on it."""
    counts, dropped = manifest["counts"], manifest["dropped"]
    folder = Path(manifest["config"]["data_path"]) / manifest["dataset"]
    return "\n".join([
        f"imported {manifest['input']['path']} -> {folder}/: {counts['users']} users, {counts['items']} items, "
        f"{counts['train']} train / {counts['valid']} valid / {counts['test']} test pairs",
        f"rows read {counts['rows_read']}; dropped {dropped['below_min_rating']} below --min-rating, "
        f"{dropped['duplicates']} repeated pairs, {dropped['kcore_pairs']} by the k-core "
        f"({counts['users_removed_by_kcore']} users, {counts['items_removed_by_kcore']} items), "
        f"{sum(v for k, v in dropped.items() if k not in ('below_min_rating', 'duplicates', 'kcore_pairs'))} "
        "leaked or cold-user pairs",
        f"read with separator {manifest['read']['sep']!r}, "
        + (f"header {manifest['read']['columns']}" if manifest["read"]["header"] else "no header")
        + f"; user column {manifest['read']['used']['user']!r}, item column {manifest['read']['used']['item']!r}",
        f"manifest: {folder / IMPORT_MANIFEST}",
        f"train:    {train_command(manifest)}",
    ])
