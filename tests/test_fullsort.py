"""Chunked full-sort evaluation: the same ranked lists and metrics as a brute-force ranking and as RecBole."""

from __future__ import annotations

import math

import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.evaluator import Evaluator
from recbole.evaluator.collector import DataStruct
from recbole.utils import init_seed

from freqd.config import Config
from freqd.evaluation.fullsort import full_sort_evaluate, rank_topk, topk_hits
from freqd.models import BPR
from freqd.trainers import Trainer

K = 5


def _synthetic(seed: int = 0, n_users: int = 7, n_items: int = 30, dim: int = 4):
    """Random tables (distinct scores) and disjoint random history / positive item sets per user."""
    gen = torch.Generator().manual_seed(seed)
    user_all, item_all = torch.randn(n_users, dim, generator=gen), torch.randn(n_items, dim, generator=gen)
    history, positives = [], []
    for user in range(n_users):
        perm = torch.randperm(n_items - 1, generator=gen) + 1
        n_hist = user % 4 * 3
        history.append(perm[:n_hist])
        positives.append(perm[n_hist:n_hist + 1 + user % 3])
    return user_all, item_all, history, positives


def _brute_force(user_all, item_all, history, positives, k):
    """Per user, in plain Python: ranked top-k list, hit flags, Recall@k and NDCG@k."""
    ranked, recalls, ndcgs = [], [], []
    for user in range(len(user_all)):
        excluded = {0, *history[user].tolist()}
        scores = [(float(user_all[user] @ item_all[item]), item) for item in range(len(item_all)) if item not in excluded]
        top = [item for _, item in sorted(scores, reverse=True)[:k]]
        wanted = set(positives[user].tolist())
        hits = [item in wanted for item in top]
        ideal = sum(1 / math.log2(rank + 2) for rank in range(min(len(wanted), k)))
        ranked.append(top)
        recalls.append(sum(hits) / len(wanted))
        ndcgs.append(sum(hit / math.log2(rank + 2) for rank, hit in enumerate(hits)) / ideal)
    return ranked, sum(recalls) / len(recalls), sum(ndcgs) / len(ndcgs)


@pytest.mark.parametrize("chunk", [1, 3, 7, 100])
def test_rank_topk_matches_brute_force(chunk):
    user_all, item_all, history, positives = _synthetic()
    users = torch.arange(len(user_all))
    ranked, rec_topk = rank_topk(user_all, item_all, users, history, positives, K, chunk)
    expected_ranked, recall, ndcg = _brute_force(user_all, item_all, history, positives, K)
    assert ranked.tolist() == expected_ranked
    config = Config(model="BPR", dataset="ml-100k",
                    config_dict={"metrics": ["Recall", "NDCG"], "topk": [K], "metric_decimal_place": 12})
    struct = DataStruct()
    struct.set("rec.topk", rec_topk)
    result = Evaluator(config).evaluate(struct)
    assert result[f"recall@{K}"] == pytest.approx(recall, abs=1e-12)
    assert result[f"ndcg@{K}"] == pytest.approx(ndcg, abs=1e-12)


def test_topk_hits_flags_positives_and_counts_a_repeated_pair_once():
    topk_idx = torch.tensor([[4, 2, 9], [1, 3, 5]])
    positive_u = torch.tensor([0, 0, 0, 1])
    positive_i = torch.tensor([9, 7, 9, 6])
    assert topk_hits(topk_idx, positive_u, positive_i, n_items=10).tolist() == [[0, 0, 1, 2], [0, 0, 0, 1]]


@pytest.fixture(scope="module")
def ml100k_bpr():
    config = Config(model="BPR", dataset="ml-100k",
                    config_dict={"use_gpu": False, "state": "ERROR", "embedding_size": 8, "show_progress": False})
    init_seed(config["seed"], True)
    data = create_dataset(config)
    train, _, test = data_preparation(config, data)
    return config, test, Trainer(config, BPR(config, train._dataset))


@pytest.mark.slow
@pytest.mark.parametrize("chunk", [None, 5])
def test_full_sort_evaluate_matches_recbole_on_ml100k(ml100k_bpr, chunk):
    config, test, trainer = ml100k_bpr
    config["eval_chunk_users"] = chunk
    try:
        expected = trainer.evaluate(test, load_best_model=False)
        assert full_sort_evaluate(trainer, test) == expected
    finally:
        config["eval_chunk_users"] = None


def test_full_sort_evaluate_declines_metrics_beyond_the_topk(ml100k_bpr):
    config, test, trainer = ml100k_bpr
    metrics = config["metrics"]
    config["metrics"] = [*metrics, "GAUC"]
    try:
        assert full_sort_evaluate(trainer, test) is None
    finally:
        config["metrics"] = metrics
