"""FastTrainDataLoader: distribution and exclusion of negatives, epoch coverage, seeding, RecBole's layout."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.data.dataloader import TrainDataLoader
from recbole.utils import InputType, init_seed
from scipy.stats import chisquare

from freqd import load_checkpoint
from freqd.config import Config
from freqd.datasets import write_benchmark_files
from freqd.datasets.train_loader import FastTrainDataLoader, check_fast_sampler_config
from freqd.evaluation import build_dataloaders
from freqd.runs import train

QUIET = {"use_gpu": False, "state": "ERROR", "show_progress": False}


def _ml100k(sample_num: int):
    config = Config(model="BPR", dataset="ml-100k",
                    config_dict={**QUIET, "train_neg_sample_args": {"sample_num": sample_num}})
    init_seed(config["seed"], True)
    train, _, _ = data_preparation(config, create_dataset(config))
    return config, train


@pytest.fixture(scope="module")
def ml100k_k1():
    """ml-100k config and RecBole's training loader, one negative per positive."""
    return _ml100k(1)


@pytest.fixture(scope="module")
def ml100k_k3():
    """ml-100k config and RecBole's training loader, three negatives per positive."""
    return _ml100k(3)


def _fast(config, recbole_train, **kwargs) -> FastTrainDataLoader:
    return FastTrainDataLoader(config, recbole_train._dataset, recbole_train._sampler, **kwargs)


def _train_pairs(dataset) -> set[tuple[int, int]]:
    inter = dataset.inter_feat
    return set(zip(inter[dataset.uid_field].tolist(), inter[dataset.iid_field].tolist()))


def test_negatives_uniform_over_each_users_allowed_items(tmp_path):
    """Synthetic data with a known answer: user u's negatives are uniform over the items u never trained on."""
    n_items = 12
    train_items = {1: range(1, 9), 2: [1, 2], 3: range(3, 13, 2), 4: [12]}
    train = np.array([(u, i) for u, items in train_items.items() for i in items])
    valid = np.array([(1, 9), (2, 3), (3, 4), (4, 1)])
    test = np.array([(1, 10), (2, 4), (3, 6), (4, 2)])
    files = write_benchmark_files(tmp_path, "toy", train, valid, test)
    config = Config(model="BPR", dataset="toy",
                    config_dict={**QUIET, **files, "train_neg_sample_args": {"sample_num": 4}})
    init_seed(config["seed"], True)
    recbole_train, _, _ = data_preparation(config, create_dataset(config))
    loader = _fast(config, recbole_train)
    dataset = loader.dataset
    assert loader.n_items == n_items + 1  # RecBole's padding id 0 plus the 12 real items
    positives = _train_pairs(dataset)
    counts = Counter()
    for _ in range(300):
        for batch in loader:
            counts.update(zip(batch["user_id"].tolist(), batch["neg_item_id"].tolist()))
    for token, items in train_items.items():
        user = int(dataset.token2id("user_id", str(token)))
        allowed = [i for i in range(1, n_items + 1) if (user, i) not in positives]
        assert len(allowed) == n_items - len(list(items))
        drawn = {i: c for (u, i), c in counts.items() if u == user}
        assert set(drawn) == set(allowed), f"user {token}: negatives outside the allowed items"
        observed = [drawn[i] for i in allowed]
        assert chisquare(observed).pvalue > 1e-3, f"user {token}: {observed}"
        # The same counts against uniform over all real items: the test notices a wrong support.
        everywhere = [drawn.get(i, 0) for i in range(1, n_items + 1)]
        assert chisquare(everywhere).pvalue < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["ml100k_k1", "ml100k_k3"])
def test_no_training_positive_among_negatives(fixture, request):
    config, recbole_train = request.getfixturevalue(fixture)
    loader = _fast(config, recbole_train)
    positives = _train_pairs(loader.dataset)
    n_negatives = 0
    for _ in range(2):
        for batch in loader:
            negatives = batch["neg_item_id"]
            assert int(negatives.min()) >= 1 and int(negatives.max()) < loader.n_items
            pairs = zip(batch["user_id"].tolist(), negatives.tolist())
            assert not any(pair in positives for pair in pairs)
            n_negatives += len(negatives)
    assert n_negatives == 2 * len(loader.dataset) * loader.neg_sample_num


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["ml100k_k1", "ml100k_k3"])
def test_every_training_interaction_once_per_epoch(fixture, request):
    config, recbole_train = request.getfixturevalue(fixture)
    loader = _fast(config, recbole_train)
    k, fields = loader.neg_sample_num, ["user_id", "item_id", "rating", "timestamp"]
    inter = loader.dataset.inter_feat
    expected = Counter(zip(*(inter[f].tolist() for f in fields)))
    for _ in range(2):
        seen = Counter()
        for batch in loader:
            rows = len(batch) // k
            first = [batch[f][:rows] for f in fields]
            for j in range(1, k):
                for f, values in zip(fields, first):
                    assert torch.equal(batch[f][j * rows:(j + 1) * rows], values)
            seen.update(zip(*(values.tolist() for values in first)))
        assert seen == expected


def _batches(loader, epoch):
    loader.set_epoch(epoch)
    return [batch.interaction for batch in loader]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(torch.equal(x[f], y[f]) for f in x)
                                    for x, y in zip(a, b))


def test_draw_depends_only_on_seed_and_epoch(ml100k_k1):
    config, recbole_train = ml100k_k1
    first, second = _fast(config, recbole_train), _fast(config, recbole_train)
    assert _same(_batches(first, 5), _batches(second, 5))
    assert not torch.equal(_batches(first, 5)[0]["user_id"], _batches(first, 6)[0]["user_id"])
    assert not torch.equal(_batches(first, 5)[0]["neg_item_id"], _batches(first, 6)[0]["neg_item_id"])
    # Epochs in a row (the loader advancing itself) equal epochs set directly, as after a resume.
    running = _fast(config, recbole_train)
    in_a_row = [[batch.interaction for batch in running] for _ in range(3)]
    assert _same(in_a_row[2], _batches(second, 2))
    seed = config["seed"]
    config["seed"] = seed + 1
    try:
        reseeded = _fast(config, recbole_train)
    finally:
        config["seed"] = seed
    assert not torch.equal(_batches(reseeded, 5)[0]["user_id"], _batches(first, 5)[0]["user_id"])


@pytest.mark.parametrize("shuffle", [False, True])
def test_layout_matches_recbole_pairwise_loader(ml100k_k3, shuffle):
    """Same batches as RecBole's loader but for the random draws: fields, dtypes, sizes, pairing."""
    config, recbole_train = ml100k_k3
    dataset, sampler = recbole_train._dataset, recbole_train._sampler
    theirs = list(TrainDataLoader(config, dataset, sampler, shuffle=shuffle))
    fast = _fast(config, recbole_train, shuffle=shuffle)
    ours = list(fast)
    assert len(fast) == len(ours) == len(theirs) and fast.step == recbole_train.step
    assert [len(b) for b in ours] == [len(b) for b in theirs]
    assert len(ours[0]) == config["train_batch_size"] // 3 * 3
    for mine, stock in zip(ours, theirs):
        assert mine.interaction.keys() == stock.interaction.keys()
        assert {f: v.dtype for f, v in mine.interaction.items()} == {f: v.dtype for f, v in stock.interaction.items()}
        rows = len(stock) // 3
        for batch in (mine, stock):  # row j * rows + i: positive i with its j-th negative
            for f in ("user_id", "item_id"):
                assert torch.equal(batch[f], batch[f][:rows].repeat(3))
        if not shuffle:  # RecBole visits the interactions in order too: only the negatives differ
            for f in ("user_id", "item_id", "rating", "timestamp"):
                assert torch.equal(mine[f], stock[f])
            assert not torch.equal(mine["neg_item_id"], stock["neg_item_id"])


@pytest.mark.parametrize("change, key, value", [
    ({"train_neg_sample_args": {"distribution": "popularity", "sample_num": 1}}, "distribution", "popularity"),
    ({"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1, "dynamic": True,
                                "candidate_num": 2}}, "dynamic", "True"),
    ({"train_neg_sample_args": {"distribution": "uniform", "sample_num": 0}}, "sample_num", "0"),
    ({"MODEL_INPUT_TYPE": InputType.POINTWISE}, "MODEL_INPUT_TYPE", "POINTWISE"),
])
def test_unsupported_settings_are_refused(ml100k_k1, change, key, value):
    config, _ = ml100k_k1
    settings = {k: config[k] for k in ("train_neg_sample_args", "MODEL_INPUT_TYPE", "MODEL_TYPE", "model",
                                       "transform", "single_spec")}
    settings.update(change)
    with pytest.raises(ValueError, match=key) as err:
        check_fast_sampler_config(settings)
    assert value in str(err.value)


@pytest.mark.slow
def test_build_dataloaders_switch():
    with pytest.raises(ValueError, match="train_sampler.*'fastest'"):  # refused by the Config, before any data
        Config(model="BPR", dataset="ml-100k", config_dict={**QUIET, "train_sampler": "fastest"})
    config = Config(model="BPR", dataset="ml-100k",
                    config_dict={**QUIET, "train_sampler": "fast", "protocol": "reference"})
    assert Config(model="BPR", dataset="ml-100k", config_dict=QUIET)["train_sampler"] == "recbole"
    init_seed(config["seed"], True)
    train, _, test = build_dataloaders(config, create_dataset(config))
    assert isinstance(train, FastTrainDataLoader)
    assert test._sampler is train._sampler and train._sampler.phase == "train"


@pytest.mark.slow
def test_run_freqd_with_fast_sampler_resumes_like_an_uninterrupted_run(fast_config):
    """Two epochs, then a resumed third, give the same model as three epochs in one go."""
    settings = {**fast_config, "train_sampler": "fast", "embedding_size": 8, "learning_rate": 0.01,
                "eval_batch_size": 1_000_000, "fused_optimizer": False}
    whole = train("BPR", "ml-100k", config_dict={**settings, "epochs": 3})
    assert whole["config"]["train_sampler"] == "fast" and whole["epochs_run"] == 3
    assert whole["test_result"]["ndcg@20"] > 0.05
    first = train("BPR", "ml-100k", config_dict={**settings, "epochs": 2})
    assert load_checkpoint(first["checkpoint"])["epoch"] == 1  # the resume continues at epoch 2
    resumed = train("BPR", "ml-100k", config_dict={**settings, "epochs": 3}, resume=first["checkpoint"])
    assert load_checkpoint(whole["checkpoint"])["epoch"] == load_checkpoint(resumed["checkpoint"])["epoch"] == 2
    assert resumed["test_result"] == whole["test_result"]
