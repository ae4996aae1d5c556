"""freqd datasets import: one interaction file into atomic files, id maps, a manifest and a config."""

from __future__ import annotations

import csv
import hashlib
import json
import shlex
import string
from pathlib import Path

import numpy as np
import pytest
import yaml

from freqd.cli import main
from freqd.datasets import DataFormatError, check_atomic_file
from freqd.datasets.importer import IMPORT_MANIFEST, ImportOptions, import_interactions

DROPPED = ("below_min_rating", "duplicates", "kcore_pairs")


def ratings_rows(users: int = 12, items: int = 40, seed: int = 0) -> list[tuple[str, str, int, int]]:
    """(user, item, rating, time) rows: every user with 12-20 distinct items."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        for k, i in enumerate(rng.choice(items, size=rng.integers(12, 21), replace=False)):
            rows.append((f"u{u}", str(int(i)), int(rng.integers(1, 6)), 1000 * u + k))
    return rows


def write_csv(path: Path, rows, header=("userId", "movieId", "rating", "timestamp"), sep=",", eol="\n", bom=False):
    lines = ([sep.join(header)] if header else []) + [sep.join(map(str, r)) for r in rows]
    path.write_bytes(("\ufeff" if bom else "").encode() + (eol.join(lines) + eol).encode("utf-8"))
    return path


def read_tsv(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle, delimiter="\t"))


def pairs_in(folder: Path, name: str, split: str) -> list[tuple[str, str]]:
    return [tuple(row) for row in read_tsv(folder / f"{name}.{split}.inter")[1:]]


def assert_consistent(manifest: dict) -> None:
    """Rows read = pairs kept + every dropped count."""
    counts = manifest["counts"]
    kept = counts["train"] + counts["valid"] + counts["test"]
    assert counts["rows_read"] == kept + sum(manifest["dropped"].values())


def test_import_writes_files_maps_manifest_and_config(tmp_path, capsys):
    rows = ratings_rows()
    rows = rows + rows[:3]  # three repeated pairs
    source = write_csv(tmp_path / "ratings.csv", rows, eol="\r\n", bom=True)
    assert main(["datasets", "import", str(source), "--name", "mine", "--rating-col", "rating",
                 "--min-rating", "3"]) == 0
    out = capsys.readouterr().out
    folder = Path("dataset/mine")
    manifest = json.loads((folder / IMPORT_MANIFEST).read_text())
    assert manifest["input"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert manifest["read"] == {"sep": ",", "header": True, "columns": ["userId", "movieId", "rating", "timestamp"],
                                "used": {"user": "userId", "item": "movieId", "rating": "rating"}}
    below = sum(1 for r in rows if r[2] < 3)
    assert manifest["counts"]["rows_read"] == len(rows)
    assert manifest["dropped"]["below_min_rating"] == below
    assert manifest["dropped"]["duplicates"] == sum(1 for r in rows[-3:] if r[2] >= 3)
    assert_consistent(manifest)
    assert manifest["options"]["min_rating"] == 3 and manifest["options"]["seed"] == 2020
    for file, digest in manifest["outputs"].items():
        assert hashlib.sha256((folder / file).read_bytes()).hexdigest() == digest["sha256"]
    assert yaml.safe_load((folder / "mine.yaml").read_text()) == {
        "dataset": "mine", "data_path": "dataset", "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id"]},
    }
    # The id maps turn every kept pair back into an original row at or above the threshold.
    users = dict((kept, orig) for orig, kept in read_tsv(folder / "user_ids.tsv")[1:])
    items = dict((kept, orig) for orig, kept in read_tsv(folder / "item_ids.tsv")[1:])
    originals = {(u, i) for u, i, rating, _ in rows if rating >= 3}
    kept = [pair for split in ("train", "valid", "test") for pair in pairs_in(folder, "mine", split)]
    assert len(kept) == len(set(kept)) == sum(manifest["counts"][s] for s in ("train", "valid", "test"))
    assert {(users[u], items[i]) for u, i in kept} <= originals
    assert len(users) == manifest["counts"]["users"] and len(items) == manifest["counts"]["items"]
    for split in ("train", "valid", "test"):
        check_atomic_file(folder / f"mine.{split}.inter")
    assert "train:    freqd train --model BPR --dataset mine --config dataset/mine/mine.yaml" in out
    assert f"rows read {len(rows)}" in out


def test_time_split_puts_each_users_latest_items_in_test(tmp_path):
    rows = ratings_rows(users=6)
    rows = list(reversed(rows))  # file order is not time order
    source = write_csv(tmp_path / "r.tsv", rows, header=("user", "item", "rating", "ts"), sep="\t")
    manifest = import_interactions(source, "t", options=ImportOptions(time_col="ts", split="time", min_user=0))
    assert manifest["read"]["sep"] == "\t"
    folder = Path("dataset/t")
    users = {kept: orig for orig, kept in read_tsv(folder / "user_ids.tsv")[1:]}
    items = {kept: orig for orig, kept in read_tsv(folder / "item_ids.tsv")[1:]}
    time_of = {(u, i): t for u, i, _, t in rows}
    last_train = {}
    for u, i in pairs_in(folder, "t", "train"):
        last_train[u] = max(last_train.get(u, -1), time_of[users[u], items[i]])
    for split in ("valid", "test"):
        for u, i in pairs_in(folder, "t", split):
            assert time_of[users[u], items[i]] > last_train[u]


def test_kcore_counts_and_earliest_twin(tmp_path):
    rows = [("a", str(i), 5, i) for i in range(10)] + [("b", "1", 5, 0), ("b", "2", 5, 0)]
    rows += [("a", "3", 5, -1)]  # an earlier twin of (a, 3): the kept row under --time-col
    source = write_csv(tmp_path / "x.csv", rows, header=None)
    manifest = import_interactions(source, "k", options=ImportOptions(min_user=3, time_col="3"))
    assert manifest["read"]["header"] is False and manifest["read"]["used"] == {"user": 0, "item": 1, "time": 3}
    assert manifest["dropped"]["duplicates"] == 1
    assert manifest["dropped"]["kcore_pairs"] == 2
    assert manifest["counts"]["users_removed_by_kcore"] == 1 and manifest["counts"]["users"] == 1
    assert_consistent(manifest)


@pytest.mark.parametrize("split, test_item", [("given", "9"), ("time", "0")])
def test_given_split_keeps_file_order_with_a_time_column(tmp_path, split, test_item):
    rows = [("a", str(i), 5, 100 - i) for i in range(10)]  # file order is reverse time order
    source = write_csv(tmp_path / "x.csv", rows, header=None)
    import_interactions(source, "g", options=ImportOptions(min_user=0, time_col="3", split=split))
    assert pairs_in(Path("dataset/g"), "g", "test") == [("0", test_item)]


@pytest.mark.parametrize(
    "first, row, header, used",
    [
        ("", "{u} {i}", False, {"user": 0, "item": 1}),  # numbers only: no header
        ("a b", "{u} {i}", True, {"user": "a", "item": "b"}),  # names over numbers: a header
        ("user_id:token\titem_id:token", "{u}\t{i}", True, {"user": "user_id:token", "item": "item_id:token"}),
        ("x;user;item", "9;u{u};i{i}", True, {"user": "user", "item": "item"}),  # recognised names, any position
    ],
)
def test_header_detection(tmp_path, first, row, header, used):
    rows = [row.format(u=u, i=i) for u in range(3) for i in range(12)]
    source = tmp_path / "f.txt"
    source.write_text("\n".join(([first] if first else []) + rows) + "\n")
    manifest = import_interactions(source, "h", options=ImportOptions(min_user=0))
    assert manifest["read"]["header"] is header and manifest["read"]["used"] == used
    assert manifest["counts"]["rows_read"] == 36
    assert_consistent(manifest)


@pytest.mark.parametrize(
    "text, options, line, column, match",
    [
        ("user,item\n1,2\n", {"user_col": "customer"}, 1, "customer",
         r"no user column 'customer'; the columns are \['user', 'item'\]"),
        ("1,2\n", {"item_col": "5"}, 1, "5", r"no item column at position 5 \(0-based\): the file has 2"),
        ("1,2\n", {"item_col": "movie", "header": False}, None, "movie", "no header, so the item column must be"),
        ("u,i,r\n1,2,5\n1,3,x\n", {"rating_col": "r", "min_rating": 3}, 3, "r", "rating is not a finite number"),
        ("u,i,t\n1,2,5\n1,3,yesterday\n", {"time_col": "t"}, 3, "t", "time is not a number like the others"),
        ("u,i,t\n1,2,2024-01-01\n1,3,soon\n", {"time_col": "t"}, 3, "t", "time is not an ISO 8601 date"),
        ("u,i\n1,2\n\n1,3\n", {}, 3, None, "blank line"),
        ("u,i\n1,2\n1,3,4\n", {}, 3, None, "cannot split into columns"),
        ("u,i,r\n1,2,5\n1\n", {}, 3, "i", "empty or missing item field"),
        ("u,i\n1,2\n , 3\n", {}, 3, "u", "empty or missing user field"),
        ("user,item\n", {}, 2, None, "no data rows after the header"),
        ("\n\n", {}, 1, None, "empty file"),
        ("12\n13\n", {}, 1, None, "cannot detect the column separator"),
        ("1,2\n1,\u00e9\n".encode("latin-1"), {}, 2, None, "not valid UTF-8"),
        ("1,2\r3,4\n", {}, 1, None, "stray carriage return"),
    ],
)
def test_malformed_files_name_file_line_column_and_value(tmp_path, text, options, line, column, match):
    source = tmp_path / "bad.csv"
    source.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DataFormatError, match=match) as err:
        import_interactions(source, "bad", options=ImportOptions(min_user=0, **options))
    assert str(source) in str(err.value)
    assert err.value.line == line and err.value.column == column
    assert not Path("dataset/bad").exists()


@pytest.mark.parametrize(
    "name, options, match",
    [
        ("gowalla", {}, "is a named dataset"),
        ("a/b", {}, "plain folder name"),
        ("x", {"split": "time"}, "--split time needs --time-col"),
        ("x", {"min_rating": 3.0}, "--min-rating and --rating-col go together"),
        ("x", {"valid_ratio": 0.0}, r"--valid-ratio must be in \(0, 1\)"),
        ("x", {"valid_ratio": 0.5, "test_ratio": 0.5}, "must be below 1"),
        ("x", {"min_item": -1}, "must be >= 0"),
    ],
)
def test_bad_options(tmp_path, name, options, match):
    source = write_csv(tmp_path / "r.csv", ratings_rows(2))
    with pytest.raises(ValueError, match=match):
        import_interactions(source, name, options=ImportOptions(**options))


def test_empty_splits_and_kcore_are_errors_naming_the_file(tmp_path):
    source = write_csv(tmp_path / "r.csv", [("a", str(i), 5, 0) for i in range(4)])
    with pytest.raises(DataFormatError, match="no pairs left after the k-core"):
        import_interactions(source, "e")
    with pytest.raises(DataFormatError, match="the valid split is empty"):
        import_interactions(source, "e", options=ImportOptions(min_user=0))


def test_refuses_a_folder_of_other_atomic_files_and_reimports_its_own(tmp_path):
    source = write_csv(tmp_path / "r.csv", ratings_rows(3))
    (Path("dataset") / "mine").mkdir(parents=True)
    (Path("dataset") / "mine" / "mine.inter").write_text("user_id:token\titem_id:token\n1\t2\n")
    with pytest.raises(ValueError, match="already holds mine.inter, not written by 'freqd datasets import'"):
        import_interactions(source, "mine")
    first = import_interactions(source, "ours", options=ImportOptions(seed=1))
    second = import_interactions(source, "ours", options=ImportOptions(seed=2))
    assert first["input"] == second["input"] and second["options"]["seed"] == 2


def test_cli_refuses_config_overrides(tmp_path, capsys):
    source = write_csv(tmp_path / "r.csv", ratings_rows(3))
    assert main(["datasets", "import", str(source), "--name", "m", "--epochs=3"]) == 2
    assert "takes no config overrides" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::Warning:recbole.*", "ignore:__array_wrap__:DeprecationWarning")
def test_printed_command_trains(tmp_path, capsys, fast_config):
    from freqd.runs import train

    source = write_csv(tmp_path / "ratings.csv", ratings_rows(users=30, items=80))  # top-50 needs 50 items
    assert main(["datasets", "import", str(source), "--name", "mine", "--out", "data"]) == 0
    command = shlex.split(capsys.readouterr().out.split("train:", 1)[1].strip())
    args = dict(zip(command[2::2], command[3::2]))
    assert command[:2] == ["freqd", "train"] and args["--dataset"] == "mine"
    assert args["--config"] == "data/mine/mine.yaml"
    manifest = json.loads(Path("data/mine", IMPORT_MANIFEST).read_text())
    result = train(args["--model"], args["--dataset"], config_file_list=[args["--config"]],
                   config_dict={**fast_config, "epochs": 1, "embedding_size": 8}, saved=False)
    tables = (manifest["counts"]["users"] + manifest["counts"]["items"] + 2) * 8  # + RecBole's padding rows
    assert result["dataset"] == "mine" and result["n_parameters"] == tables and result["epochs_run"] == 1
    assert result["config"]["benchmark_filename"] == ["train", "valid", "test"]
    assert result["test_result"]["ndcg@20"] >= 0
    # Into the default data_path, the name alone is enough.
    assert main(["datasets", "import", str(source), "--name", "mine"]) == 0
    result = train("BPR", "mine", config_dict={**fast_config, "epochs": 1, "embedding_size": 8}, saved=False)
    assert result["n_parameters"] == tables and result["config"]["data_path"] == str(Path("dataset", "mine"))


# --------------------------------------------------------------------------- property tests

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

TOKEN = st.one_of(st.integers(0, 10**6).map(str), st.text(string.ascii_letters + string.digits + "_-.", min_size=1,
                                                           max_size=6))
JUNK = st.one_of(st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=12),
                 st.sampled_from(["", " ", "\t", ",,", "a\x00", "\ufeff", '"', "1\r2", "NA", "1,2,3,4", "\u00e9"]))
SEP_NAMES = {"\t": "tab", ",": "comma", " ": "space", ";": "semicolon"}


@st.composite
def interaction_files(draw):
    """Bytes of an interaction file (valid rows, junk lines, BOM, CRLF, header or not, several
    separators) and the --sep to read it with (mostly auto or its own)."""
    sep = draw(st.sampled_from(list(SEP_NAMES)))
    users = draw(st.lists(TOKEN, min_size=1, max_size=8, unique=True))
    items = draw(st.lists(TOKEN, min_size=1, max_size=15, unique=True))
    n = draw(st.integers(1, 120))
    rows = [sep.join([draw(st.sampled_from(users)), draw(st.sampled_from(items))]) for _ in range(n)]
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 3]))):
        rows.insert(draw(st.integers(0, len(rows))), draw(JUNK))
    if draw(st.booleans()):
        rows.insert(0, sep.join(["user", "item"]))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    text = eol.join(rows) + draw(st.sampled_from(["", eol, eol * 2]))
    data = text.encode("utf-8")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    if draw(st.integers(0, 9)) == 0:
        data = data + draw(st.binary(min_size=1, max_size=4))
    return data, draw(st.sampled_from(["auto", "auto", SEP_NAMES[sep], "comma"]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(file=interaction_files(), min_user=st.integers(0, 3), seed=st.integers(0, 3))
def test_property_clean_import_or_a_named_error(tmp_path, file, min_user, seed):
    data, sep = file
    source = tmp_path / "in.txt"
    source.write_bytes(data)
    out = tmp_path / f"out{seed}"
    options = ImportOptions(sep=sep, min_user=min_user, seed=seed, valid_ratio=0.3, test_ratio=0.3)
    try:
        manifest = import_interactions(source, "p", out=out, options=options)
    except DataFormatError as exc:
        assert str(source) in str(exc)
        return
    assert_consistent(manifest)
    folder = out / "p"
    sizes = {split: check_atomic_file(folder / f"p.{split}.inter").rows for split in ("train", "valid", "test")}
    assert sizes == {split: manifest["counts"][split] for split in sizes}
    assert len(read_tsv(folder / "user_ids.tsv")) - 1 == manifest["counts"]["users"]
