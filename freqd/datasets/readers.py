"""Strict parsers for the interaction-file formats used by the shared data sets.

Every reader returns ``(pairs, report)``: ``pairs`` is an int64 array of shape [n, 2] holding
(user, item) rows in file order, and ``report`` is a :class:`ReadReport` with counts,
including ``duplicates_dropped``.

Rules shared by all readers:

- Ids must be non-negative decimal integers that fit in int64. Anything else raises
  :class:`~freqd.datasets.errors.DataFormatError` naming the file, the 1-based line and the
  offending token.
- LF and CRLF line endings are accepted, with or without a final newline. Blank lines at the
  end of a file are ignored; a blank line anywhere else is an error.
- A (user, item) pair repeated within one file is a fixable defect, not an error: later
  copies are dropped (the first keeps its position) and the number dropped is logged as a
  warning and recorded in ``report.duplicates_dropped``.
- A file without a single (user, item) pair is an error.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np

from .errors import DataFormatError
from .pairs import drop_duplicates, unique_sorted

logger = logging.getLogger(__name__)

_INT64_MAX = np.iinfo(np.int64).max
_ID_LINE = re.compile(r"[ \t]*[0-9]+(?:[ \t]+[0-9]+)*[ \t]*", re.ASCII)
_TSV_PAIR = re.compile(r"([0-9]+)\t([0-9]+)", re.ASCII)
PAIR_TSV_HEADER = "USER\tITEM"


@dataclass(frozen=True)
class ReadReport:
    """What a reader found in one file.

    ``lines`` counts data lines (a header excluded); ``pairs`` is the number of pairs
    returned, after ``duplicates_dropped`` repeated pairs were removed.
    """

    path: str
    lines: int
    pairs: int
    users: int
    items: int
    users_without_items: int
    duplicates_dropped: int


def read_lightgcn_txt(path: str | os.PathLike[str]) -> tuple[np.ndarray, ReadReport]:
    """Read the LightGCN/NGCF split format: one line per user, ``user item item ...``.

    A line holding only a user id is a user without items (allowed). The same user id on
    two lines is an error, since split files list each user once.
    """
    path = Path(path)
    lines = _read_lines(path)
    users: list[int] = []
    counts: list[int] = []
    items: list[int] = []
    first_line: dict[int, int] = {}
    for lineno, line in enumerate(lines, 1):
        values = _parse_ids(path, lineno, line, "'user item item ...'")
        user = values[0]
        if user in first_line:
            raise DataFormatError(
                path, f"user id already listed on line {first_line[user]}", line=lineno, value=user
            )
        first_line[user] = lineno
        users.append(user)
        counts.append(len(values) - 1)
        items.extend(values[1:])
    return _finish(path, len(lines), users, counts, items)


def read_users_dat(path: str | os.PathLike[str]) -> tuple[np.ndarray, ReadReport]:
    """Read a CiteULike ``users.dat``: line k (0-based) is user k, ``<count> item item ...``.

    ``<count>`` must equal the number of items on the line; a mismatch means a truncated or
    merged line, so it is an error rather than something to guess around.
    """
    path = Path(path)
    lines = _read_lines(path)
    counts: list[int] = []
    items: list[int] = []
    for lineno, line in enumerate(lines, 1):
        values = _parse_ids(path, lineno, line, "'<count> item item ...'")
        count, line_items = values[0], values[1:]
        if count != len(line_items):
            raise DataFormatError(
                path,
                f"item count {count} does not match the {len(line_items)} item(s) on the line",
                line=lineno,
                value=count,
            )
        counts.append(count)
        items.extend(line_items)
    return _finish(path, len(lines), list(range(len(lines))), counts, items)


def read_pair_tsv(path: str | os.PathLike[str]) -> tuple[np.ndarray, ReadReport]:
    """Read the woriazzc/KDs split format: header ``USER<TAB>ITEM``, then ``user<TAB>item``."""
    path = Path(path)
    lines = _read_lines(path)
    if not lines:
        raise DataFormatError(path, f"empty file, expected the header {PAIR_TSV_HEADER!r}", line=1)
    if lines[0] != PAIR_TSV_HEADER:
        raise DataFormatError(
            path, f"expected the header {PAIR_TSV_HEADER!r}", line=1, value=lines[0]
        )
    users: list[int] = []
    items: list[int] = []
    for lineno, line in enumerate(lines[1:], 2):
        match = _TSV_PAIR.fullmatch(line)
        if match is None:
            fields = line.split("\t")
            if not line.strip():
                raise DataFormatError(path, "blank line, expected 'user<TAB>item'", line=lineno, value=line)
            if len(fields) != 2:
                raise DataFormatError(
                    path, f"expected 2 tab-separated fields, got {len(fields)}", line=lineno, value=line
                )
            _raise_bad_token(path, lineno, fields)
        user, item = int(match[1]), int(match[2])
        if max(user, item) > _INT64_MAX:
            raise DataFormatError(path, "id does not fit in int64", line=lineno, value=max(user, item))
        users.append(user)
        items.append(item)
    return _finish(path, len(lines) - 1, users, [1] * len(users), items)


def _read_lines(path: Path) -> list[str]:
    """The file's lines without line terminators (LF or CRLF) and without trailing blank lines."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataFormatError(
            path, "not valid UTF-8 text", line=line, value=data[exc.start : exc.start + 8]
        ) from None
    lines = text.split("\n")
    if "\r" in text:
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _parse_ids(path: Path, lineno: int, line: str, expected: str) -> list[int]:
    """Whitespace-separated non-negative int64 ids of one line (at least one)."""
    if _ID_LINE.fullmatch(line) is None:
        if not line.strip():
            raise DataFormatError(path, f"blank line, expected {expected}", line=lineno, value=line)
        _raise_bad_token(path, lineno, line.split())
    values = list(map(int, line.split()))
    if max(values) > _INT64_MAX:
        raise DataFormatError(path, "id does not fit in int64", line=lineno, value=max(values))
    return values


def _raise_bad_token(path: Path, lineno: int, tokens: list[str]) -> NoReturn:
    """Raise for the first token that is not a non-negative integer."""
    for token in tokens:
        if token.isascii() and token.isdigit():
            continue
        digits = token[1:]
        if token.startswith("-") and digits.isascii() and digits.isdigit():
            raise DataFormatError(path, "negative id", line=lineno, value=token)
        raise DataFormatError(path, "not a non-negative integer id", line=lineno, value=token)
    raise DataFormatError(path, "malformed line", line=lineno, value=" ".join(tokens))


def _finish(
    path: Path, n_lines: int, users: list[int], counts: list[int], items: list[int]
) -> tuple[np.ndarray, ReadReport]:
    """Assemble the pair array, drop repeated pairs and build the report."""
    user_col = np.repeat(np.asarray(users, dtype=np.int64), np.asarray(counts, dtype=np.int64))
    pairs = np.column_stack([user_col, np.asarray(items, dtype=np.int64)])
    if len(pairs) == 0:
        raise DataFormatError(path, f"no (user, item) pairs found in {n_lines} line(s)")
    pairs, dropped = drop_duplicates(pairs)
    if dropped:
        logger.warning("%s: dropped %d duplicate (user, item) pair(s)", path, dropped)
    report = ReadReport(
        path=str(path),
        lines=n_lines,
        pairs=len(pairs),
        users=len(set(users)),
        items=len(unique_sorted(pairs[:, 1])),
        users_without_items=sum(1 for count in counts if count == 0),
        duplicates_dropped=dropped,
    )
    return pairs, report
