"""Atomic file writes (readers never see a half-written file, an interrupted write keeps the old one)
and file hashes."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import torch


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a temporary file in the target folder, fsync, then ``os.replace`` it.

    The file gets the usual permissions (0o666 minus the umask), unlike ``mkstemp``'s 0o600. The
    temporary's name carries the writer's pid, so a later write into the same folder deletes the
    temporaries of writers that were killed mid-write (:func:`remove_orphans`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    remove_orphans(path.parent)


#: The temporaries :func:`atomic_write_bytes` writes: ``.<name>.<pid>.<16 hex digits>.tmp``.
_TEMPORARY = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{16}\.tmp$")


def remove_orphans(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporaries in ``folder`` whose writer died mid-write (``kill -9``: its pid is gone).

    Returns the files removed. A temporary of a live process (or of another user's) is kept.
    """
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for tmp in folder.glob(".*.tmp"):
        match = _TEMPORARY.match(tmp.name)
        if match is None:
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
        except (PermissionError, OverflowError):  # alive under another user, or not a pid
            continue
    return removed


def sweep_orphans(*folders: str | os.PathLike[str]) -> list[Path]:
    """:func:`remove_orphans` in each folder and its direct subfolders (a results folder's run folders):
    a resumed run writes new files, so the temporaries of the run it replaces are removed here."""
    removed: list[Path] = []
    for folder in map(Path, folders):
        if folder.is_dir():
            removed += remove_orphans(folder)
            for sub in folder.iterdir():
                if sub.is_dir():
                    removed += remove_orphans(sub)
    return removed


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: numpy scalars as Python numbers, paths as strings, NaN/±inf as
    ``None`` (JSON has no NaN; ``json.dumps`` would write an invalid ``NaN`` token), other objects as
    their ``str``."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def read_json_file(path: str | os.PathLike[str], key: str, what: str = "file") -> Any:
    """A JSON file's content; errors name the setting ``key``, the kind of file and its path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{key}: {what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{key}: {path} is not JSON ({exc})") from None


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> None:
    """``data`` (made JSON-safe by :func:`to_jsonable`) written atomically, indented, with a final newline."""
    atomic_write_text(path, json.dumps(to_jsonable(data), indent=2) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """``torch.save`` into memory, then an atomic write: never a torn checkpoint."""
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    atomic_write_bytes(path, buffer.getvalue())


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes: the key of per-teacher caches (top-N rankings)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def state_digest(state: Any) -> str:
    """sha1 of a state dict's tensors (each one's name, dtype, shape and bytes, in name order): the
    model's weights, whatever else a checkpoint file holds around them."""
    digest = hashlib.sha1()
    for name in sorted(state):
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"state_dict[{name!r}] is not a tensor ({type(tensor).__name__})")
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
