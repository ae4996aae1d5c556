"""A teacher without freqd's fingerprint (stock RecBole) is checked by the split settings it carries."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from recbole.config import Config as RecBoleConfig
from recbole.data import create_dataset
from recbole.model.general_recommender import BPR as RecBoleBPR
from recbole.utils import init_seed

from freqd.checkpoints import load_teacher
from freqd.config import Config
from freqd.evaluation import build_dataloaders
from freqd.runs import distill

pytestmark = pytest.mark.usefixtures("one_thread")
QUIET = {"show_progress": False, "state": "ERROR", "use_gpu": False}


@pytest.fixture(scope="module")
def student():
    """The student's config and training split on ml-100k (RecBole's seeded 8:1:1 split, seed 2020)."""
    config = Config(model="BPR", dataset="ml-100k", config_dict={**QUIET, "embedding_size": 8})
    init_seed(config["seed"], True)
    train, _, _ = build_dataloaders(config, create_dataset(config))
    return config, train._dataset


def _stock_teacher(folder: Path, train_dataset, **settings) -> Path:
    """A stock RecBole BPR checkpoint (no ``freqd`` entry, RecBole's own Config) with ``settings``."""
    config = RecBoleConfig(model="BPR", dataset="ml-100k", config_dict={"use_gpu": False, "embedding_size": 16,
                                                                        **settings})
    path = folder / f"stock-{len(list(folder.glob('stock-*.pth')))}.pth"
    torch.save({"config": config, "state_dict": RecBoleBPR(config, train_dataset).state_dict(), "epoch": 0}, path,
               pickle_protocol=4)
    return path


def test_stock_teacher_on_the_same_split_is_accepted_with_a_warning(student, tmp_path, caplog):
    config, train = student
    path = _stock_teacher(tmp_path, train, eval_args={"split": {"RS": [8, 1, 1]}, "order": "RO",
                                                      "group_by": "user", "mode": "uni100"})
    with caplog.at_level(logging.WARNING, logger="freqd.checkpoints"):
        teacher = load_teacher(path, config, train)
    assert teacher.split_verified is False and "cannot be verified" in teacher.split_note
    (record,) = [r for r in caplog.records if r.name == "freqd.checkpoints"]
    assert record.levelno == logging.WARNING and str(path) in record.getMessage()
    assert "cannot be verified" in record.getMessage()


@pytest.mark.parametrize("settings, named", [
    ({"seed": 7}, r"split seed \(seed\) is 7, this run's \(seed\) is 2020"),
    ({"eval_args": {"split": {"RS": [0.7, 0.2, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"}},
     r"its eval_args.split is \{'RS': \[0.7, 0.2, 0.1\]\}, this run's is \{'RS': \[0.8, 0.1, 0.1\]\}"),
    ({"eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "group_by": "user", "mode": "full"}},
     r"its eval_args.order is 'TO', this run's is 'RO'"),
    ({"rm_dup_inter": "first"}, r"its rm_dup_inter is 'first', this run's is None"),
])
def test_stock_teacher_on_another_split_is_refused_naming_the_key(student, tmp_path, settings, named):
    config, train = student
    path = _stock_teacher(tmp_path, train, **settings)
    with pytest.raises(ValueError, match=named) as error:
        load_teacher(path, config, train)
    assert str(path) in str(error.value)


def test_the_split_seed_is_the_students_split_seed_and_only_for_random_splits(student, tmp_path):
    config, train = student
    teacher = _stock_teacher(tmp_path, train, seed=2020)
    other = Config(model="BPR", dataset="ml-100k", config_dict={**QUIET, "embedding_size": 8, "seed": 0,
                                                                 "split_seed": 2020})
    assert load_teacher(teacher, other, train).split_verified is False  # seed 0, split drawn with 2020: same split
    other = Config(model="BPR", dataset="ml-100k", config_dict={**QUIET, "embedding_size": 8, "split_seed": 7})
    with pytest.raises(ValueError, match=r"split seed \(seed\) is 2020, this run's \(split_seed\) is 7"):
        load_teacher(teacher, other, train)
    temporal = {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "group_by": "user", "mode": "full"}
    teacher = _stock_teacher(tmp_path, train, seed=7, eval_args=temporal)
    ordered = Config(model="BPR", dataset="ml-100k", config_dict={**QUIET, "embedding_size": 8, "eval_args": temporal})
    assert load_teacher(teacher, ordered, train).split_verified is False  # a temporal split draws nothing


def test_a_freqd_teacher_with_its_fingerprint_is_verified(student, bpr_teacher_32):
    config, train = student
    teacher = load_teacher(bpr_teacher_32, config, train)
    assert teacher.split_verified is True and teacher.split_note is None


@pytest.mark.slow
def test_distill_records_an_unverified_teacher_split(student, tmp_path):
    _, train = student
    path = _stock_teacher(tmp_path, train)
    result = distill(str(path), "BPR", "FreqD", config_dict={**QUIET, "epochs": 1, "embedding_size": 8,
                                                               "train_sampler": "fast", "freqd_neighbors": 2,
                                                               "freqd_spectral_log_every": 0})
    stored = json.loads((Path(result["run_dir"]) / "results.json").read_text())
    assert result["teacher_split_verified"] is False and stored["teacher_split_verified"] is False
    assert "cannot be verified" in stored["teacher_split_note"]
