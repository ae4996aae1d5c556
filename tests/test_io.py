"""Tests for freqd.io: JSON-safe conversion, atomic writes and the weights digest."""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from freqd.io import atomic_write_json, atomic_write_text, state_digest, to_jsonable


def _strict_loads(text: str):
    """``json.loads`` that refuses the non-standard NaN/Infinity tokens."""
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("value, expected", [
    (np.float32(0.5), 0.5),
    (np.int64(7), 7),
    (np.bool_(True), True),
    (float("nan"), None),
    (float("inf"), None),
    (np.float64(-np.inf), None),
    (Path("a/b.pth"), "a/b.pth"),
    ((1, "x", None), [1, "x", None]),
    ({1: {"k": [np.float64(0.25), math.nan]}}, {"1": {"k": [0.25, None]}}),
    (object, str(object)),
])
def test_to_jsonable(value, expected):
    out = to_jsonable(value)
    assert out == expected
    assert type(out) is type(expected)


def test_atomic_write_json_is_strict_json(tmp_path):
    path = tmp_path / "sub" / "r.json"
    atomic_write_json(path, {"ndcg": np.float64(0.3), "p": float("nan"), "curve": [1.0, float("inf")]})
    assert _strict_loads(path.read_text()) == {"ndcg": 0.3, "p": None, "curve": [1.0, None]}
    assert path.read_text().endswith("\n")


def test_interrupted_write_keeps_the_old_file_and_no_temporaries(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    atomic_write_text(path, "old")

    def fail(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_json(path, {"new": 1})
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_temporaries_of_killed_writers_are_removed_by_the_next_write_in_their_folder(tmp_path):
    import os

    target = tmp_path / "results.json"
    dead = tmp_path / ".results.json.999999999.00ff00ff00ff00ff.tmp"  # above any pid_max: no such process
    alive = tmp_path / f".results.json.{os.getpid()}.0123456789abcdef.tmp"  # a write in progress
    other = tmp_path / ".other.json.999999999.00ff00ff00ff00ff.tmp"  # another file's, its writer dead too
    mine = tmp_path / ".notes.tmp"  # not a name atomic writes use: never touched
    for path in (dead, alive, other, mine):
        path.write_text("partial")
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert not dead.exists() and not other.exists() and alive.exists() and mine.exists()


def test_sweep_reaches_run_folders_one_level_down(tmp_path):
    """A resumed run writes new files: the sweep at its start removes the killed run's temporaries."""
    import os

    from freqd.io import sweep_orphans

    run = tmp_path / "results" / "BPR-ml-100k-old"
    deeper = run / "sub"
    deeper.mkdir(parents=True)
    orphan = run / ".metrics.csv.999999999.00ff00ff00ff00ff.tmp"
    too_deep = deeper / ".x.csv.999999999.00ff00ff00ff00ff.tmp"
    alive = run / f".metrics.csv.{os.getpid()}.0123456789abcdef.tmp"
    for path in (orphan, too_deep, alive):
        path.write_text("partial")
    assert sweep_orphans(tmp_path / "results", tmp_path / "missing") == [orphan]
    assert not orphan.exists() and too_deep.exists() and alive.exists()


def test_a_write_error_is_one_line_from_the_cli(tmp_path, monkeypatch, capsys):
    from freqd import io as freqd_io
    from freqd.cli import main

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "out" / "tokens.json"))

    monkeypatch.setattr(freqd_io.os, "fsync", disk_full)
    from freqd.cli import build_parser

    args = build_parser().parse_args(["datasets", "list"])
    args.func = lambda *a: freqd_io.atomic_write_json(tmp_path / "out" / "tokens.json", {})  # a command that writes
    monkeypatch.setattr("freqd.cli.build_parser", lambda: _Fixed(args))
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("freqd: error: No space left on device") and "Traceback" not in err
    assert not list((tmp_path / "out").glob(".*.tmp"))


class _Fixed:
    """A parser stand-in that returns fixed arguments."""

    def __init__(self, args):
        self.args = args

    def parse_known_args(self, argv):
        return self.args, []


def test_checkpoint_names_of_runs_started_together_never_collide(tmp_path, monkeypatch):
    """Two runs in the same instant and folder get different files (RecBole's names collide per second)."""
    from datetime import datetime

    import freqd.trainers.trainer as trainer

    class Frozen:
        @staticmethod
        def now():
            return datetime(2026, 12, 2, 8, 57, 1, 123456)

    monkeypatch.setattr(trainer, "datetime", Frozen)
    first = trainer.unique_checkpoint_name(str(tmp_path), "BPR")
    assert first == str(tmp_path / "BPR-Dec-02-2026_08-57-01-123456.pth")
    open(first, "w").close()
    second = trainer.unique_checkpoint_name(str(tmp_path), "BPR")
    assert second == str(tmp_path / "BPR-Dec-02-2026_08-57-01-123456-2.pth")
    open(tmp_path / "BPR-Dec-02-2026_08-57-01-123456-2-last.pth", "w").close()  # a -last alone also claims it
    assert trainer.unique_checkpoint_name(str(tmp_path), "BPR").endswith("-123456-3.pth")


def test_state_digest_hashes_names_dtypes_shapes_and_bytes_in_name_order():
    state = {"b": torch.tensor(1.5), "a": torch.tensor([[1, -2]])}
    expected = hashlib.sha1(b"a|torch.int64|(1, 2)|" + struct.pack("<2q", 1, -2)
                            + b"b|torch.float32|()|" + struct.pack("<f", 1.5)).hexdigest()
    assert state_digest(state) == expected
    assert state_digest(dict(reversed(list(state.items())))) == expected  # order of the dict does not matter
    assert state_digest({**state, "b": torch.tensor(1.5, dtype=torch.float64)}) != expected  # same value, other dtype
    assert state_digest({**state, "a": torch.tensor([1, -2])}) != expected  # same bytes, other shape
    assert state_digest({**state, "b": torch.tensor([[1.5]]).t()[0, 0]}) == expected  # a view hashes its values
    with pytest.raises(ValueError, match="'c'] is not a tensor"):
        state_digest({**state, "c": 3})
