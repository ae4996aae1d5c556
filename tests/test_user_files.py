"""Your own atomic files (single or pre-split): checked and cleaned into a derived copy like the named datasets."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from freqd.datasets import DataFormatError, user_files
from freqd.datasets.loading import dataset_config
from freqd.datasets.user_files import CLEAN_DIR, CLEAN_MANIFEST

HEADER = "user_id:token\titem_id:token\n"


def write_files(root: Path, name: str, files: dict[str, list[tuple]], header: str = HEADER) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for suffix, rows in files.items():
        (folder / f"{name}.{suffix}").write_text(header + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    return folder


def rows_of(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()[1:]]


def test_clean_files_are_read_as_they_are(tmp_path):
    write_files(tmp_path, "toy", {"inter": [(1, 2), (1, 3), (2, 2)]})
    config = {"data_path": str(tmp_path), "epochs": 1}
    assert dataset_config("toy", config) == config
    assert not (tmp_path / "toy" / CLEAN_DIR).exists()


def test_pre_split_files_with_twins_leaks_and_cold_users_are_cleaned(tmp_path, caplog):
    """The issue's case: every pair twice, test pairs in train, test users without training pairs."""
    train = [(u, i) for u in range(4) for i in range(5)] * 2
    valid = [(0, 5), (0, 5), (1, 0), (7, 1)]
    test = [(0, 6), (2, 1), (3, 7), (3, 7), (0, 5), (8, 2), (9, 2)]
    folder = write_files(tmp_path, "toy", {"train.inter": train, "valid.inter": valid, "test.inter": test})
    sources = {p.name: p.read_bytes() for p in folder.iterdir()}
    with caplog.at_level(logging.WARNING, logger="freqd.datasets.user_files"):
        config = dataset_config("toy", {"data_path": str(tmp_path)})
    out = folder / CLEAN_DIR / "toy"
    assert config == {"data_path": str(folder / CLEAN_DIR), "benchmark_filename": ["train", "valid", "test"]}
    assert "training reads the cleaned copy" in caplog.text and "train_duplicates=20" in caplog.text
    assert rows_of(out / "toy.train.inter") == [[str(u), str(i)] for u in range(4) for i in range(5)]
    assert rows_of(out / "toy.valid.inter") == [["0", "5"]]
    assert rows_of(out / "toy.test.inter") == [["0", "6"], ["3", "7"]]
    manifest = json.loads((out / CLEAN_MANIFEST).read_text())
    assert manifest["dropped"] == {
        "train_duplicates": 20, "valid_duplicates": 1, "test_duplicates": 1, "valid_in_train": 1,
        "test_in_train": 1, "test_in_valid": 1, "valid_without_train_user": 1, "test_without_train_user": 2,
    }
    assert manifest["rows"]["toy.test.inter"] == {"read": 7, "kept": 2}
    assert set(manifest["sources"]) == set(sources)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == sources  # never modified


def test_clean_copy_is_reused_and_rebuilt_when_a_source_changes(tmp_path, monkeypatch):
    folder = write_files(tmp_path, "toy", {"inter": [(1, 2), (1, 2), (2, 3)]})
    config = {"data_path": str(tmp_path)}
    dataset_config("toy", config)
    writes = []
    real = user_files.atomic_write_bytes
    monkeypatch.setattr(user_files, "atomic_write_bytes", lambda p, d: writes.append(p) or real(p, d))
    dataset_config("toy", config)
    assert writes == []
    (folder / "toy.inter").write_text(HEADER + "1\t2\n1\t2\n1\t2\n2\t3\n")
    dataset_config("toy", config)
    manifest = json.loads((folder / CLEAN_DIR / "toy" / CLEAN_MANIFEST).read_text())
    assert writes and manifest["dropped"] == {"duplicates": 2}
    (folder / CLEAN_DIR / "toy" / "toy.inter").write_text(HEADER + "9\t9\n")  # a damaged copy is rebuilt
    assert dataset_config("toy", config)["data_path"] == str(folder / CLEAN_DIR)
    assert rows_of(folder / CLEAN_DIR / "toy" / "toy.inter") == [["1", "2"], ["2", "3"]]


def test_single_file_keeps_whole_rows_the_earliest_twin_and_the_other_files(tmp_path):
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    rows = [(1, 2, 5, 30), (1, 3, 4, 10), (1, 2, 1, 20), (2, 2, 3, 5)]
    folder = write_files(tmp_path, "toy", {"inter": rows}, header=header)
    (folder / "toy.item").write_text("item_id:token\tgenre:token\n2\ta\n3\tb\n")
    config = dataset_config("toy", {"data_path": str(tmp_path)})
    out = Path(config["data_path"]) / "toy"
    assert (out / "toy.inter").read_text().splitlines() == [header.strip(), "1\t3\t4\t10", "1\t2\t1\t20", "2\t2\t3\t5"]
    assert (out / "toy.item").read_bytes() == (folder / "toy.item").read_bytes()


def test_other_benchmark_files_count_duplicates_per_part(tmp_path):
    folder = write_files(tmp_path, "toy", {"a.inter": [(1, 2), (1, 2)], "b.inter": [(1, 2)]})
    config = dataset_config("toy", {"data_path": str(tmp_path), "benchmark_filename": ["a", "b"]})
    manifest = json.loads((folder / CLEAN_DIR / "toy" / CLEAN_MANIFEST).read_text())
    assert manifest["dropped"] == {"a_duplicates": 1, "b_duplicates": 0}
    assert config["benchmark_filename"] == ["a", "b"]


def test_missing_files_are_named_and_unnamed_parts_are_format_checked(tmp_path, caplog):
    write_files(tmp_path, "toy", {"tr.inter": [(1, 2), (1, 2)], "te.inter": [(1, 3)]})
    with caplog.at_level(logging.WARNING, logger="freqd.datasets.user_files"):
        assert dataset_config("toy", {"data_path": str(tmp_path)}) == {"data_path": str(tmp_path)}
    assert "no toy.inter and no benchmark_filename" in caplog.text and "toy.te.inter, toy.tr.inter" in caplog.text
    (tmp_path / "toy" / "toy.te.inter").write_text(HEADER + "1\t\n")
    with pytest.raises(DataFormatError, match="empty field"):
        dataset_config("toy", {"data_path": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match=r"toy/toy\.va\.inter not found \(benchmark_filename \['tr', 'va'"):
        dataset_config("toy", {"data_path": str(tmp_path), "benchmark_filename": ["tr", "va", "te"]})
    with pytest.raises(FileNotFoundError, match="no atomic files.*freqd datasets import"):
        dataset_config("other", {"data_path": str(tmp_path)})


def test_malformed_files_still_raise(tmp_path):
    folder = write_files(tmp_path, "toy", {"inter": [(1, 2)]})
    (folder / "toy.inter").write_text(HEADER + "1\t2\n3\t\n")
    with pytest.raises(DataFormatError, match="line 3, column 'item_id': empty field"):
        dataset_config("toy", {"data_path": str(tmp_path)})
    (folder / "toy.inter").write_bytes(b"\xef\xbb\xbf" + HEADER.encode() + b"1\t2\n")
    with pytest.raises(DataFormatError, match="byte-order mark"):
        dataset_config("toy", {"data_path": str(tmp_path)})


@pytest.mark.filterwarnings("ignore::Warning:recbole.*", "ignore:__array_wrap__:DeprecationWarning")
def test_recbole_loads_the_cleaned_copy(tmp_path, fast_config):
    """What RecBole reads: no duplicate row, no test pair in train, every test user in train."""
    from freqd.runs import setup

    train = ([(u, i) for u in range(6) for i in range(8)] + [(6, i) for i in range(10, 15)]) * 2
    valid = [(u, 8) for u in range(6)] * 2 + [(0, 1)]
    test = [(u, 9) for u in range(6)] * 2 + [(1, 2), (7, 9)]
    write_files(tmp_path, "toy", {"train.inter": train, "valid.inter": valid, "test.inter": test})
    config, _, loaders = setup("BPR", "toy", [], {**fast_config, "data_path": str(tmp_path)})
    train_data, valid_data, test_data = loaders
    assert (train_data.dataset.inter_num, valid_data.dataset.inter_num, test_data.dataset.inter_num) == (53, 6, 6)
    assert Path(config["data_path"]) == tmp_path / "toy" / CLEAN_DIR / "toy"  # RecBole appends the name
