"""Tests for freqd.datasets: readers, splits, atomic files, the registry (tiny inline files)."""

from __future__ import annotations

import logging
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from freqd.datasets import (
    KNOWN_DATASETS,
    CleanReport,
    DataFormatError,
    carve_validation,
    check_atomic_file,
    clean_splits,
    filter_core,
    find_data_root,
    prepare_dataset,
    read_lightgcn_txt,
    read_manifest,
    read_pair_tsv,
    read_users_dat,
    registry,
    split_per_user,
    write_benchmark_files,
)

EMPTY = np.empty((0, 2), dtype=np.int64)
SPLITS = ("train", "valid", "test")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def pairs_of(rows: list[tuple[int, int]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


def assert_names(err: pytest.ExceptionInfo, path: Path, line: int | None, value: str | None) -> None:
    """The message names the file, the 1-based line and the offending value."""
    message = str(err.value)
    assert str(path) in message
    assert err.value.line == line
    if line is not None:
        assert f"line {line}" in message
    if value is not None:
        assert repr(value) in message or value in message


# --------------------------------------------------------------------------- readers


@pytest.mark.parametrize(
    "text",
    [
        "0 1 2\n1 3\n2\n",
        "0 1 2\r\n1 3\r\n2\r\n",  # CRLF
        "0 1 2\n1 3\n2",  # no final newline
        "0 1 2\n1 3\n2\n\n\n",  # trailing blank lines are ignored
        "0  1\t2\n1 3 \n2\n",  # runs of whitespace
    ],
)
def test_read_lightgcn_txt(tmp_path, text):
    pairs, report = read_lightgcn_txt(write(tmp_path, "train.txt", text))
    assert pairs.dtype == np.int64
    np.testing.assert_array_equal(pairs, [[0, 1], [0, 2], [1, 3]])
    assert (report.lines, report.pairs, report.users, report.items) == (3, 3, 3, 3)
    assert report.users_without_items == 1
    assert report.duplicates_dropped == 0


@pytest.mark.parametrize(
    "text, line, value, reason",
    [
        ("0 1 x\n", 1, "x", "not a non-negative integer"),
        ("0 1\n1 2.5\n", 2, "2.5", "not a non-negative integer"),
        ("0 1\n1 ３\n", 2, "３", "not a non-negative integer"),  # non-ASCII digit
        ("0 1\n1 -3\n", 2, "-3", "negative id"),
        ("0 1\n-1 3\n", 2, "-1", "negative id"),
        ("0 1\n\n1 2\n", 2, "", "blank line"),
        ("0 1\n1 2\n0 3\n", 3, "0", "already listed on line 1"),
        ("0 99999999999999999999\n", 1, "99999999999999999999", "int64"),
    ],
)
def test_read_lightgcn_txt_errors(tmp_path, text, line, value, reason):
    path = write(tmp_path, "bad.txt", text)
    with pytest.raises(DataFormatError, match=reason) as err:
        read_lightgcn_txt(path)
    assert_names(err, path, line, value)


@pytest.mark.parametrize("text", ["", "\n\n", "0\n1\n2"])
def test_read_lightgcn_txt_empty(tmp_path, text):
    path = write(tmp_path, "empty.txt", text)
    with pytest.raises(DataFormatError, match="no \\(user, item\\) pairs") as err:
        read_lightgcn_txt(path)
    assert_names(err, path, None, None)


def test_read_lightgcn_txt_drops_duplicates(tmp_path, caplog):
    path = write(tmp_path, "dup.txt", "0 1 1 2\n1 2 2 2 1\n")
    with caplog.at_level(logging.WARNING, logger="freqd.datasets.readers"):
        pairs, report = read_lightgcn_txt(path)
    np.testing.assert_array_equal(pairs, [[0, 1], [0, 2], [1, 2], [1, 1]])  # first copies, in order
    assert report.duplicates_dropped == 3
    assert report.pairs == 4
    assert "dropped 3 duplicate" in caplog.text and str(path) in caplog.text


def test_read_users_dat(tmp_path):
    pairs, report = read_users_dat(write(tmp_path, "users.dat", "2 5 6\n0\n1 7"))
    np.testing.assert_array_equal(pairs, [[0, 5], [0, 6], [2, 7]])
    assert (report.lines, report.users, report.users_without_items) == (3, 3, 1)


@pytest.mark.parametrize(
    "text, line, value, reason",
    [
        ("3 1 2\n", 1, "3", "item count 3 does not match the 2 item"),
        ("2 1 2\n1 4 5", 2, "1", "item count 1 does not match the 2 item"),
        ("2 1 2\n2 4 five", 2, "five", "not a non-negative integer"),
        ("2 1 -2", 1, "-2", "negative id"),
        ("1 1\n\n1 2", 2, "", "blank line"),
    ],
)
def test_read_users_dat_errors(tmp_path, text, line, value, reason):
    path = write(tmp_path, "users.dat", text)
    with pytest.raises(DataFormatError, match=reason) as err:
        read_users_dat(path)
    assert_names(err, path, line, value)


def test_read_users_dat_duplicates_and_empty(tmp_path):
    pairs, report = read_users_dat(write(tmp_path, "users.dat", "3 4 4 5\n2 1 1"))
    np.testing.assert_array_equal(pairs, [[0, 4], [0, 5], [1, 1]])
    assert report.duplicates_dropped == 2
    path = write(tmp_path, "empty.dat", "0\n0")
    with pytest.raises(DataFormatError, match="no \\(user, item\\) pairs"):
        read_users_dat(path)


def test_read_pair_tsv(tmp_path):
    pairs, report = read_pair_tsv(write(tmp_path, "t.txt", "USER\tITEM\r\n0\t1\r\n0\t2\r\n3\t1\r\n0\t1"))
    np.testing.assert_array_equal(pairs, [[0, 1], [0, 2], [3, 1]])
    assert (report.lines, report.pairs, report.users, report.duplicates_dropped) == (4, 3, 2, 1)


@pytest.mark.parametrize(
    "text, line, value, reason",
    [
        ("", 1, None, "empty file"),
        ("user\titem\n0\t1\n", 1, "user\titem", "expected the header"),
        ("USER\tITEM\n0\t1\n0 1\n", 3, "0 1", "expected 2 tab-separated fields, got 1"),
        ("USER\tITEM\n0\t1\t2\n", 2, "0\t1\t2", "got 3"),
        ("USER\tITEM\n0\tx\n", 2, "x", "not a non-negative integer"),
        ("USER\tITEM\n0\t\n", 2, "", "not a non-negative integer"),
        ("USER\tITEM\n0\t-4\n", 2, "-4", "negative id"),
        ("USER\tITEM\n0\t1\n\n0\t2\n", 3, "", "blank line"),
    ],
)
def test_read_pair_tsv_errors(tmp_path, text, line, value, reason):
    path = write(tmp_path, "t.txt", text)
    with pytest.raises(DataFormatError, match=reason) as err:
        read_pair_tsv(path)
    assert_names(err, path, line, value)


def test_read_pair_tsv_header_only(tmp_path):
    path = write(tmp_path, "t.txt", "USER\tITEM\n")
    with pytest.raises(DataFormatError, match="no \\(user, item\\) pairs"):
        read_pair_tsv(path)


def test_data_format_error_pickles_and_is_value_error():
    err = DataFormatError("a/b.txt", "negative id", line=4, column="item_id", value="-1")
    assert isinstance(err, ValueError)
    assert str(err) == "a/b.txt, line 4, column 'item_id': negative id (value '-1')"
    copy = pickle.loads(pickle.dumps(err))
    assert (str(copy), copy.line, copy.value) == (str(err), 4, "-1")


# --------------------------------------------------------------------------- splits

# n items per user -> expected (train, valid, test) counts under the 8:1:1 rule.
ROU_SIZES = {1: (1, 0, 0), 2: (1, 0, 1), 3: (2, 0, 1), 5: (4, 0, 1), 10: (8, 1, 1), 11: (8, 1, 2), 20: (16, 2, 2)}


def rou_example() -> np.ndarray:
    """User u (listed in reverse order of users) with items 100u + n-1, ..., 100u (descending)."""
    rows = []
    for user, n in reversed(list(enumerate(ROU_SIZES))):
        rows += [(user, 100 * user + k) for k in reversed(range(n))]
    return pairs_of(rows)


def by_user(pairs: np.ndarray) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for user, item in pairs.tolist():
        out.setdefault(user, []).append(item)
    return out


@pytest.mark.parametrize("ratios", [(0.8, 0.1, 0.1), (8, 1, 1)])
def test_split_per_user_given_order_exact(ratios):
    train, valid, test = split_per_user(rou_example(), ratios=ratios, order="given")
    tr, va, te = by_user(train), by_user(valid), by_user(test)
    for user, (n, (n_tr, n_va, n_te)) in enumerate(ROU_SIZES.items()):
        items = [100 * user + k for k in reversed(range(n))]  # file order
        assert tr.get(user, []) == items[:n_tr]
        assert va.get(user, []) == items[n_tr : n_tr + n_va]
        assert te.get(user, []) == items[n_tr + n_va :]
        assert n_tr + n_va + n_te == n
    assert np.all(np.diff(train[:, 0]) >= 0)  # grouped by user id


@pytest.mark.parametrize("ratios, sizes", [((0.6, 0.2, 0.2), (6, 2, 2)), ((1, 0, 0), (10, 0, 0)), ((0.5, 0, 0.5), (5, 0, 5))])
def test_split_per_user_other_ratios(ratios, sizes):
    pairs = pairs_of([(0, i) for i in range(10)])
    assert tuple(map(len, split_per_user(pairs, ratios=ratios, order="given"))) == sizes


def test_split_per_user_random_is_seeded():
    rng = np.random.default_rng(0)
    pairs = np.unique(np.column_stack([rng.integers(0, 50, 3000), rng.integers(0, 400, 3000)]), axis=0)
    first = split_per_user(pairs, order="random", seed=7)
    again = split_per_user(pairs, order="random", seed=7)
    other = split_per_user(pairs, order="random", seed=8)
    given = split_per_user(pairs, order="given")
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))
    # Same per-user sizes as the given order, disjoint splits that cover the input.
    for a, b in zip(first, given):
        np.testing.assert_array_equal(np.bincount(a[:, 0], minlength=50), np.bincount(b[:, 0], minlength=50))
    union = np.concatenate(first)
    assert len(np.unique(union, axis=0)) == len(union) == len(pairs)


@pytest.mark.parametrize("kwargs", [{"ratios": (0.8, 0.2)}, {"ratios": (-1, 1, 1)}, {"ratios": (0, 0, 0)}, {"order": "time"}])
def test_split_per_user_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        split_per_user(pairs_of([(0, 1)]), **kwargs)


@pytest.mark.parametrize(
    "fraction, n, expected",
    [(0.1, 1, 0), (0.1, 2, 1), (0.1, 10, 1), (0.1, 14, 1), (0.1, 15, 2), (0.1, 25, 3), (0.5, 2, 1), (0.9, 3, 2)],
)
def test_carve_validation_sizes(fraction, n, expected):
    train = pairs_of([(3, i) for i in range(n)])
    new_train, valid = carve_validation(train, fraction=fraction, seed=1)
    assert (len(new_train), len(valid)) == (n - expected, expected)


@pytest.mark.parametrize("seed", [0, 1, 2020])
def test_carve_validation_never_empties_train(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 30, 200)
    train = pairs_of([(u, i) for u, n in enumerate(sizes) for i in range(n)])
    new_train, valid = carve_validation(train, fraction=0.3, seed=seed)
    np.testing.assert_array_equal(np.bincount(new_train[:, 0], minlength=200) >= 1, True)
    assert len(new_train) + len(valid) == len(train)
    merged = np.concatenate([new_train, valid])
    np.testing.assert_array_equal(np.unique(merged, axis=0), np.unique(train, axis=0))
    again = carve_validation(train, fraction=0.3, seed=seed)
    np.testing.assert_array_equal(again[1], valid)
    assert not np.array_equal(carve_validation(train, fraction=0.3, seed=seed + 1)[1], valid)


def test_filter_core_iterates_and_reindexes():
    # u40 has one item; removing it leaves item 9 with one user (u30), whose removal follows.
    pairs = pairs_of([(10, 7), (10, 3), (20, 3), (20, 7), (30, 7), (30, 9), (40, 9)])
    result = filter_core(pairs, min_user=2, min_item=2)
    np.testing.assert_array_equal(result.user_ids, [10, 20])
    np.testing.assert_array_equal(result.item_ids, [3, 7])
    np.testing.assert_array_equal(result.pairs, [[0, 1], [0, 0], [1, 0], [1, 1]])


def test_filter_core_user_only():
    pairs = pairs_of([(5, i) for i in range(5)] + [(2, 50), (2, 51)])
    result = filter_core(pairs, min_user=5, min_item=0)
    np.testing.assert_array_equal(result.pairs, [[0, i] for i in range(5)])
    np.testing.assert_array_equal(result.item_ids, range(5))


# --------------------------------------------------------------------------- atomic files


def test_clean_splits_counts():
    train = pairs_of([(0, 1), (0, 2), (0, 1), (1, 1)])
    valid = pairs_of([(0, 3), (0, 3), (0, 2), (2, 5), (1, 4)])
    test = pairs_of([(0, 1), (0, 3), (1, 4), (1, 6), (3, 3)])
    out = clean_splits(train, valid, test)
    np.testing.assert_array_equal(out.train, [[0, 1], [0, 2], [1, 1]])
    np.testing.assert_array_equal(out.valid, [[0, 3], [1, 4]])
    np.testing.assert_array_equal(out.test, [[1, 6]])
    assert out.report == CleanReport(
        train_duplicates=1,
        valid_duplicates=1,
        valid_in_train=1,
        test_in_train=1,
        test_in_valid=2,
        valid_without_train_user=1,
        test_without_train_user=1,
    )
    assert out.report.total == 8


def test_write_benchmark_files(tmp_path, caplog):
    train, valid, test = pairs_of([(0, 1), (0, 2), (1, 1)]), pairs_of([(0, 3), (0, 1)]), pairs_of([(1, 2), (9, 9)])
    with caplog.at_level(logging.WARNING, logger="freqd.datasets.atomic"):
        config = write_benchmark_files(tmp_path / "out", "toy", train, valid, test)
    assert config == {
        "dataset": "toy",
        "data_path": str(tmp_path / "out"),
        "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id"]},
    }
    folder = tmp_path / "out" / "toy"
    assert (folder / "toy.train.inter").read_text() == "user_id:token\titem_id:token\n0\t1\n0\t2\n1\t1\n"
    assert (folder / "toy.valid.inter").read_text() == "user_id:token\titem_id:token\n0\t3\n"
    assert (folder / "toy.test.inter").read_text() == "user_id:token\titem_id:token\n1\t2\n"
    assert "dropped 2 pair(s)" in caplog.text
    assert sorted(p.name for p in folder.iterdir()) == ["toy.test.inter", "toy.train.inter", "toy.valid.inter"]
    for split in SPLITS:
        assert check_atomic_file(folder / f"toy.{split}.inter").fields == {"user_id": "token", "item_id": "token"}


def test_write_benchmark_files_empty_train(tmp_path):
    with pytest.raises(DataFormatError, match="training split is empty") as err:
        write_benchmark_files(tmp_path, "toy", EMPTY, pairs_of([(0, 1)]), EMPTY)
    assert "toy.train.inter" in str(err.value)
    assert not (tmp_path / "toy").exists() or not any((tmp_path / "toy").iterdir())


HEADER = "user_id:token\titem_id:token\n"


@pytest.mark.parametrize(
    "text, line, column, reason",
    [
        (HEADER + "1\t2\n3\t\n", 3, "item_id", "empty field"),
        (HEADER + "1\t2\n\t4\n", 3, "user_id", "empty field"),
        ("user_id:token\tx:float\titem_id:token\n1\t\t2\n", 2, "x", "empty field"),
        (HEADER + "1\t2\n3\n", 3, None, "1 field\\(s\\), the header has 2"),
        (HEADER + "1\t2\t5\n", 2, None, "3 field\\(s\\)"),
        (HEADER + "1\t2\n\n3\t4\n", 3, None, "blank line"),
        (HEADER + "1\t2\nNA\t4\n", 3, "user_id", "missing value"),
        (HEADER + "1\t2\n3\t   \n", 3, "item_id", "whitespace"),
        (HEADER + "1\t2\n3\t4 \n", 3, "item_id", "whitespace"),
        (HEADER + "1\t2\n3 \t4\n", 3, "user_id", "whitespace"),
        (HEADER + '1\t"2"\n', 2, "item_id", "double quote"),
        ("user_id:token\titem_id:token\trating:float\n1\t2\t4.5\n1\t3\tfive\n", 3, "rating", "not a valid float"),
        ("user_id:token\titem_id:token\trating:float\n1\t2\tnan\n", 2, "rating", "missing value"),
        ("user_id:token\titem_id:token\ttags:float_seq\n1\t2\t1.0 x\n", 2, "tags", "not a valid float_seq"),
        ("user_id:token\titem_id:int\n1\t2\n", 1, None, "must be 'name:type'"),
        ("user_id:token\trating:float\n1\t2\n", 1, None, "needs the field 'item_id:token'"),
        ("user_id:token\tuser_id:token\titem_id:token\n1\t2\t3\n", 1, None, "duplicate field"),
        (HEADER, 2, None, "no data rows"),
        ("user_id:token\titem_id:token", 2, None, "no data rows"),
        (HEADER + "1\t2\n3\r4\n", 3, None, "carriage return"),
    ],
)
def test_check_atomic_file_errors(tmp_path, text, line, column, reason):
    path = write(tmp_path, "x.inter", text)
    with pytest.raises(DataFormatError, match=reason) as err:
        check_atomic_file(path)
    assert_names(err, path, line, None)
    assert err.value.column == column
    if column is not None:
        assert f"column {column!r}" in str(err.value)


@pytest.mark.parametrize(
    "text, rows",
    [
        (HEADER + "1\t2\n3\t4\n", 2),
        (HEADER.replace("\n", "\r\n") + "1\t2\r\n3\t4", 2),
        (HEADER + "1\t2\n3\t4\n\n\n", 2),
        ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t4\t8.8e8\n", 1),
        ("user_id:token\titem_id:token\ttags:token_seq\n1\t2\ta b c\n", 1),
    ],
)
def test_check_atomic_file_accepts(tmp_path, text, rows):
    assert check_atomic_file(write(tmp_path, "ok.inter", text)).rows == rows


def _python_calls(function, *args) -> int:
    """The number of Python and builtin function calls made by ``function(*args)``."""
    calls = 0

    def count(frame, event, arg):
        nonlocal calls
        calls += event in ("call", "c_call")

    sys.setprofile(count)
    try:
        function(*args)
    finally:
        sys.setprofile(None)
    return calls


def test_check_atomic_file_work_does_not_grow_with_the_rows(tmp_path):
    """Vectorised over the bytes: 1000× the rows, the same Python calls (a per-row step adds ≥ 100k)."""
    rng = np.random.default_rng(0)
    paths = {}
    for rows in (100, 100_000):
        pairs = rng.integers(0, 50_000, (rows, 2))
        body = "\n".join(map("{}\t{}".format, pairs[:, 0].tolist(), pairs[:, 1].tolist()))
        paths[rows] = write(tmp_path, f"n{rows}.inter", HEADER + body + "\n")
        assert check_atomic_file(paths[rows]).rows == rows
    small, big = (_python_calls(check_atomic_file, paths[rows]) for rows in (100, 100_000))
    assert big - small < 1_000, (small, big)


# --------------------------------------------------------------------------- RecBole round trip


@pytest.mark.filterwarnings("ignore::Warning:recbole.*", "ignore:__array_wrap__:DeprecationWarning")
def test_benchmark_files_load_in_recbole(tmp_path, monkeypatch):
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation

    import freqd.compat  # noqa: F401  (numpy-2 aliases RecBole 1.2.1 needs)

    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(3)
    pairs = np.unique(np.column_stack([rng.integers(0, 40, 600), rng.integers(0, 30, 600)]), axis=0)
    train, valid, test = split_per_user(pairs, seed=3)
    config_dict = write_benchmark_files(tmp_path / "data", "toy", train, valid, test)
    config = Config(
        model="BPR",
        config_dict={**config_dict, "show_progress": False, "eval_args": {"mode": "full"}, "state": "ERROR"},
    )
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    assert train_data.dataset.inter_num == len(train)
    assert valid_data.dataset.inter_num == len(valid)
    assert test_data.dataset.inter_num == len(test)
    assert dataset.user_num == len(np.unique(pairs[:, 0])) + 1  # + RecBole's padding id 0
    inter = train_data.dataset.inter_feat
    users = dataset.id2token("user_id", inter["user_id"].numpy()).astype(np.int64)
    items = dataset.id2token("item_id", inter["item_id"].numpy()).astype(np.int64)
    np.testing.assert_array_equal(np.column_stack([users, items]), train)


# --------------------------------------------------------------------------- registry


def make_data_root(root: Path) -> Path:
    """A miniature copy of the shared data layout."""
    files = {
        "gowalla/train.txt": "".join(f"{u} " + " ".join(str(i) for i in range(u, u + 12)) + "\n" for u in range(6)),
        "gowalla/test.txt": "".join(f"{u} {u + 20} {u + 21}\n" for u in range(6)),
        "citeulike-t/users.dat": "\n".join(
            [f"{n} " + " ".join(str(10 * u + k) for k in range(n)) for u, n in enumerate([3, 5, 10, 12, 4, 7])]
        ),
        "ml-1m-lightgcnpp/train.txt": "0 1 2 3\n1 2 3\n2 1\n",
        "ml-1m-lightgcnpp/valid.txt": "0 4\n1 1\n",
        "ml-1m-lightgcnpp/test.txt": "0 5\n1 5\n2 3\n",
    }
    kds_rows = {"train": [(0, 0), (0, 1), (1, 1)], "valid": [(0, 2)], "test": [(0, 3), (1, 3)]}
    for split, rows in kds_rows.items():
        files[f"citeulike-t/kds_split/{split}.txt"] = "USER\tITEM\n" + "".join(f"{u}\t{i}\n" for u, i in rows)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.mark.parametrize(
    "name, counts",
    [
        ("gowalla", {"train": 66, "valid": 6, "test": 12, "users": 6, "items": 24}),
        ("citeulike-t", {"train": 26, "valid": 3, "test": 5, "users": 4, "items": 34}),
        ("citeulike-t-kds", {"train": 3, "valid": 1, "test": 2, "users": 2, "items": 4}),
        ("ml-1m", {"train": 6, "valid": 2, "test": 3, "users": 3, "items": 5}),
    ],
)
def test_prepare_dataset(tmp_path, name, counts):
    data_root = make_data_root(tmp_path / "raw")
    out = tmp_path / "out"
    config = prepare_dataset(name, out_root=out, data_root=data_root, seed=5)
    assert config == {
        "dataset": name,
        "data_path": str(out),
        "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id"]},
    }
    manifest = read_manifest(out, name)
    assert manifest["counts"] == counts
    assert set(manifest["sources"]) == set(registry.DATASETS[name].sources)
    for split in SPLITS:
        assert check_atomic_file(out / name / f"{name}.{split}.inter").rows == counts[split]


def test_prepare_dataset_cache(tmp_path, monkeypatch):
    data_root = make_data_root(tmp_path / "raw")
    out = tmp_path / "out"
    prepare_dataset("gowalla", out_root=out, data_root=data_root, seed=1)
    valid_file = out / "gowalla" / "gowalla.valid.inter"
    first = valid_file.read_text()

    calls = []
    real_write = registry.write_benchmark_files
    monkeypatch.setattr(registry, "write_benchmark_files", lambda *a: calls.append(a) or real_write(*a))
    prepare_dataset("gowalla", out_root=out, data_root=data_root, seed=1)
    assert calls == []  # manifest matches: reused
    prepare_dataset("gowalla", out_root=out, data_root=data_root, seed=2)
    assert len(calls) == 1 and read_manifest(out, "gowalla")["seed"] == 2
    assert valid_file.read_text() != first  # a different seed carves a different validation set
    valid_file.write_text(first)  # a hand-edited output invalidates the cache
    prepare_dataset("gowalla", out_root=out, data_root=data_root, seed=2)
    assert len(calls) == 2
    with open(data_root / "gowalla" / "test.txt", "a") as handle:  # so does a changed source
        handle.write("6 1\n")  # a test user without training items: dropped and counted
    prepare_dataset("gowalla", out_root=out, data_root=data_root, seed=2)
    manifest = read_manifest(out, "gowalla")
    assert len(calls) == 3 and manifest["counts"]["test"] == 12
    assert manifest["dropped"]["test_without_train_user"] == 1
    (out / "gowalla" / "freqd_source.json").write_text("{not json")
    prepare_dataset("gowalla", out_root=out, data_root=data_root, seed=2)
    assert len(calls) == 4
    # Unseeded data sets ignore the seed.
    prepare_dataset("ml-1m", out_root=out, data_root=data_root, seed=1)
    prepare_dataset("ml-1m", out_root=out, data_root=data_root, seed=2)
    assert len(calls) == 5


def test_manifest_records_the_duplicates_the_readers_drop(tmp_path):
    """The readers drop repeated pairs before clean_splits sees them; the manifest counts them too."""
    data_root = make_data_root(tmp_path / "raw")
    train = data_root / "gowalla" / "train.txt"
    lines = train.read_text().splitlines()
    lines[0] += " 0 1"  # user 0 already has items 0..11
    lines[1] += " 5"
    train.write_text("\n".join(lines) + "\n")
    with open(data_root / "citeulike-t" / "users.dat", "a") as handle:
        handle.write("\n6 1 1 2 3 4 4")
    (data_root / "citeulike-t" / "kds_split" / "test.txt").write_text("USER\tITEM\n0\t3\n1\t3\n1\t3\n")
    out = tmp_path / "out"
    expected = {"gowalla": ("train_duplicates", "gowalla/train.txt", 3),
                "citeulike-t": ("source_duplicates", "citeulike-t/users.dat", 2),
                "citeulike-t-kds": ("test_duplicates", "citeulike-t/kds_split/test.txt", 1)}
    for name, (key, source, count) in expected.items():
        prepare_dataset(name, out_root=out, data_root=data_root, seed=5)
        manifest = read_manifest(out, name)
        assert manifest["dropped"][key] == count
        assert sum(manifest["dropped"].values()) == count
        assert manifest["read"][source]["duplicates_dropped"] == count
    assert read_manifest(out, "gowalla")["counts"]["train"] + read_manifest(out, "gowalla")["counts"]["valid"] == 72


def test_prepare_dataset_names_and_missing_sources(tmp_path):
    assert prepare_dataset("ml-100k", out_root=tmp_path) == {"dataset": "ml-100k"}
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match="unknown dataset 'netflix'.*citeulike-t-kds.*gowalla.*ml-100k"):
        prepare_dataset("netflix", out_root=tmp_path)
    assert set(KNOWN_DATASETS) == {"gowalla", "citeulike-t", "citeulike-t-kds", "ml-1m", "ml-100k"}
    with pytest.raises(FileNotFoundError, match="gowalla/train.txt"):
        prepare_dataset("gowalla", out_root=tmp_path / "out", data_root=tmp_path)


def test_find_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("FREQD_DATA_ROOT", str(tmp_path))
    assert find_data_root() == tmp_path
    monkeypatch.setenv("FREQD_DATA_ROOT", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="FREQD_DATA_ROOT"):
        find_data_root()
    monkeypatch.delenv("FREQD_DATA_ROOT")
    monkeypatch.setattr(registry, "default_data_roots", lambda: [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(FileNotFoundError, match=f"FREQD_DATA_ROOT.*{tmp_path / 'a'}.*{tmp_path / 'b'}"):
        find_data_root()
    (tmp_path / "b").mkdir()
    assert find_data_root() == tmp_path / "b"


# --------------------------------------------------------------------------- real data


def real_data_root(*needed: str) -> Path:
    """The shared data root, or skip when it (or one of the ``needed`` files) is missing."""
    try:
        root = find_data_root()
    except FileNotFoundError:
        pytest.skip("shared data root not found (set FREQD_DATA_ROOT)")
    missing = [rel for rel in needed if not (root / rel).is_file()]
    if missing:
        pytest.skip(f"missing under {root}: {', '.join(missing)}")
    return root


def test_real_citeulike_t_reproduces_kds_split():
    root = real_data_root("citeulike-t/users.dat", *(f"citeulike-t/kds_split/{s}.txt" for s in SPLITS))
    pairs, report = read_users_dat(root / "citeulike-t" / "users.dat")
    assert (report.users, report.pairs, report.duplicates_dropped) == (7947, 134_860, 0)
    core = filter_core(pairs, min_user=5, min_item=0)
    assert (len(core.user_ids), len(core.item_ids), len(core.pairs)) == (5219, 25_181, 125_580)
    splits = split_per_user(core.pairs, ratios=(8, 1, 1), order="given")
    assert tuple(map(len, splits)) == (98_405, 12_451, 14_724)
    for split, ours in zip(SPLITS, splits):
        reference, _ = read_pair_tsv(root / "citeulike-t" / "kds_split" / f"{split}.txt")
        np.testing.assert_array_equal(np.unique(ours, axis=0), np.unique(reference, axis=0))


@pytest.mark.slow
def test_real_gowalla_counts():
    root = real_data_root("gowalla/train.txt", "gowalla/test.txt")
    train, _ = read_lightgcn_txt(root / "gowalla" / "train.txt")
    test, _ = read_lightgcn_txt(root / "gowalla" / "test.txt")
    new_train, valid = carve_validation(train, fraction=0.1, seed=2020)
    assert len(train) == len(new_train) + len(valid) == 810_128
    assert len(test) == 217_242
    assert len(np.unique(new_train[:, 0])) == 29_858
    out = clean_splits(new_train, valid, test)
    assert out.report.total == 0
