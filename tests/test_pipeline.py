"""Backbones and trainer on the bundled ml-100k: equivalence with stock RecBole, protocols, checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from freqd import load_checkpoint
from freqd.config import Config
from freqd.evaluation import build_dataloaders
from freqd.models import BPR, LightGCN
from freqd.runs import train
from freqd.trainers import Trainer


@pytest.fixture(scope="module")
def ml100k():
    """ml-100k dataset and loaders (recbole protocol), built once."""
    config = Config(model="BPR", dataset="ml-100k", config_dict={"use_gpu": False, "state": "ERROR"})
    init_seed(config["seed"], True)
    data = create_dataset(config)
    return config, data, data_preparation(config, data)


@pytest.mark.slow
def test_bpr_matches_stock_recbole_metrics():
    """Same seed and config as stock RecBole BPR on ml-100k -> the same metrics."""
    from recbole.config import Config as RecBoleConfig
    from recbole.model.general_recommender import BPR as RecBoleBPR
    from recbole.trainer import Trainer

    settings = {"epochs": 3, "show_progress": False, "state": "ERROR", "use_gpu": False, "embedding_size": 32,
                "metrics": ["Recall", "NDCG", "Hit"], "topk": [10, 20], "valid_metric": "NDCG@20",
                "metric_decimal_place": 6, "fused_optimizer": False}
    config = RecBoleConfig(model="BPR", dataset="ml-100k", config_dict=dict(settings))
    init_seed(config["seed"], config["reproducibility"])
    data = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, data)
    init_seed(config["seed"], config["reproducibility"])
    stock = Trainer(config, RecBoleBPR(config, train_data._dataset))
    stock.fit(train_data, valid_data, saved=False)
    expected = stock.evaluate(test_data, load_best_model=False)

    result = train("BPR", "ml-100k", config_dict=dict(settings), saved=False)
    assert result["test_result"] == {k: float(v) for k, v in expected.items()}
    assert result["test_result"]["ndcg@20"] > 0.05


@pytest.mark.slow
def test_lightgcn_matches_stock_recbole_propagation(ml100k, monkeypatch):
    """RecBole's LightGCN (with a working adjacency) and ours score identically from one state dict."""
    from recbole.model.general_recommender import LightGCN as RecBoleLightGCN

    config, _, (train, _, test) = ml100k
    config["n_layers"], config["reg_weight"], config["require_pow"], config["embedding_size"] = 3, 1e-5, False, 16
    config["init_std"] = None
    ours = LightGCN(config, train._dataset)
    adj = ours.norm_adj.to_sparse_coo()
    monkeypatch.setattr(RecBoleLightGCN, "get_norm_adj_mat", lambda self: adj)
    stock = RecBoleLightGCN(config, train._dataset)
    assert set(stock.state_dict()) == set(ours.state_dict())
    stock.load_state_dict(ours.state_dict())
    ours.load_state_dict(stock.state_dict())
    users = torch.arange(1, 40)
    interaction = {ours.USER_ID: users}
    ours.eval(), stock.eval()
    torch.testing.assert_close(ours.full_sort_predict(interaction), stock.full_sort_predict(interaction),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model_cls", [BPR, LightGCN])
def test_bpr_state_dicts_move_both_ways(ml100k, model_cls):
    from recbole.model.general_recommender import BPR as RecBoleBPR

    config, _, (train, _, _) = ml100k
    config["embedding_size"], config["n_layers"], config["reg_weight"], config["require_pow"] = 8, 2, 0.0, False
    config["init_std"] = 0.1
    ours = model_cls(config, train._dataset)
    stock = RecBoleBPR(config, train._dataset)
    stock.load_state_dict(ours.state_dict())
    ours.load_state_dict(stock.state_dict())
    assert "norm_adj" not in ours.state_dict()
    assert torch.equal(ours.user_embedding.weight, stock.user_embedding.weight)
    assert ours.user_embedding.weight.std().item() == pytest.approx(0.1, rel=0.05)


def test_lightgcn_propagation_matches_dense(ml100k):
    config, _, (train, _, _) = ml100k
    config["embedding_size"], config["n_layers"], config["init_std"] = 4, 2, None
    model = LightGCN(config, train._dataset)
    dense = model.norm_adj.to_dense()
    x = torch.cat([model.user_embedding.weight, model.item_embedding.weight])
    expected = (x + dense @ x + dense @ (dense @ x)) / 3
    users, items = model.embeddings()
    torch.testing.assert_close(torch.cat([users, items]), expected, rtol=1e-4, atol=1e-6)
    assert torch.count_nonzero(users[0]) == torch.count_nonzero(model.user_embedding.weight[0]) and \
        torch.allclose(users[0], model.user_embedding.weight[0] / 3)


def _reference_metrics(model, dataset, train, valid, test, k: int) -> dict:
    """Independent dense recomputation of the reference protocol (train items masked only)."""
    n_users, n_items = dataset.user_num, dataset.item_num
    with torch.no_grad():
        model.eval()
        scores = model.full_sort_predict({model.USER_ID: torch.arange(n_users)}).view(n_users, n_items).numpy()
    uid, iid = dataset.uid_field, dataset.iid_field

    def as_sets(loader):
        sets = {}
        for u, i in zip(loader._dataset.inter_feat[uid].tolist(), loader._dataset.inter_feat[iid].tolist()):
            sets.setdefault(u, set()).add(i)
        return sets

    seen, truth = as_sets(train), as_sets(test)
    recall = ndcg = 0.0
    for u in range(1, n_users):
        row = scores[u].copy()
        row[0] = -np.inf
        row[list(seen.get(u, ()))] = -np.inf
        top = np.argsort(-row, kind="stable")[:k]
        targets = truth.get(u, set())
        if not targets:
            continue
        hits = np.array([i in targets for i in top], dtype=float)
        recall += hits.sum() / len(targets)
        idcg = sum(1 / np.log2(r + 2) for r in range(min(len(targets), k)))
        ndcg += (hits / np.log2(np.arange(2, k + 2))).sum() / idcg
    return {f"recall@{k}": recall / (n_users - 1), f"ndcg@{k}": ndcg / (n_users - 1)}


@pytest.mark.slow
def test_reference_protocol_matches_independent_computation(fast_config):
    config = Config(model="BPR", dataset="ml-100k", config_dict={**fast_config, "protocol": "reference",
                                                                  "embedding_size": 16})
    init_seed(config["seed"], True)
    data = create_dataset(config)
    train, valid, test = build_dataloaders(config, data)
    model = BPR(config, train._dataset)
    trainer = Trainer(config, model)
    trainer.fit(train, valid, saved=False)
    result = trainer.evaluate(test, load_best_model=False)
    expected = _reference_metrics(model, data, train, valid, test, k=20)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=2e-6), key
    # The recbole protocol masks validation items too and averages over users with targets.
    config["protocol"] = "recbole"
    _, _, test_recbole = data_preparation(config, create_dataset(config))
    assert trainer.evaluate(test_recbole, load_best_model=False)["ndcg@20"] != pytest.approx(result["ndcg@20"])


@pytest.mark.slow
def test_run_writes_checkpoint_results_and_metrics(fast_config):
    result = train("LightGCN", "ml-100k", config_dict={**fast_config, "embedding_size": 8, "n_layers": 1})
    checkpoint = load_checkpoint(result["checkpoint"])
    assert set(checkpoint) >= {"config", "epoch", "state_dict", "optimizer", "other_parameter", "freqd"}
    meta = checkpoint["freqd"]
    assert meta["dataset"] == "ml-100k" and meta["n_items"] == 1683 and meta["embedding_size"] == 8
    assert len(meta["data_fingerprint"]) == 40
    stored = json.loads(open(f"{result['run_dir']}/results.json").read())
    assert stored["test_result"] == result["test_result"] and stored["protocol"] == "recbole"
    lines = open(f"{result['run_dir']}/metrics.csv").read().splitlines()
    assert len(lines) == 1 + 2 and lines[0].startswith("epoch,train_seconds,train_loss")
    assert "valid_ndcg@20" in lines[0]


@pytest.mark.slow
def test_resume_continues_from_checkpoint(fast_config):
    first = train("BPR", "ml-100k", config_dict={**fast_config, "embedding_size": 8})
    resumed = train("BPR", "ml-100k", config_dict={**fast_config, "embedding_size": 8, "epochs": 3},
                        resume=first["checkpoint"])
    assert [row.split(",")[0] for row in open(f"{resumed['run_dir']}/metrics.csv").read().splitlines()[1:]] == ["2"]


@pytest.mark.slow
def test_resume_refuses_another_split_and_never_writes_its_input(fast_config):
    import hashlib

    first = train("BPR", "ml-100k", config_dict={**fast_config, "embedding_size": 8, "split_seed": 2020})
    digest = hashlib.sha256(open(first["checkpoint"], "rb").read()).hexdigest()
    with pytest.raises(ValueError, match="another training split of 'ml-100k'"):
        train("BPR", "ml-100k", config_dict={**fast_config, "embedding_size": 8, "split_seed": 7, "epochs": 3},
                  resume=first["checkpoint"])
    resumed = train("BPR", "ml-100k", config_dict={**fast_config, "embedding_size": 8, "split_seed": 2020,
                                                       "epochs": 3}, resume=first["checkpoint"])
    assert resumed["checkpoint"] != first["checkpoint"]
    assert hashlib.sha256(open(first["checkpoint"], "rb").read()).hexdigest() == digest
    assert load_checkpoint(resumed["checkpoint"])["epoch"] >= 1


@pytest.mark.slow
def test_resume_refuses_another_model(fast_config):
    first = train("BPR", "ml-100k", config_dict={**fast_config, "embedding_size": 8})
    with pytest.raises(ValueError, match="holds a BPR model, not LightGCN"):
        train("LightGCN", "ml-100k", config_dict={**fast_config, "embedding_size": 8}, resume=first["checkpoint"])


def test_bad_protocol_is_rejected():
    with pytest.raises(ValueError, match="protocol='loo'"):
        Config(model="BPR", dataset="ml-100k", config_dict={"protocol": "loo", "use_gpu": False})


def test_missing_config_file_is_named():
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        Config(model="BPR", dataset="ml-100k", config_file_list=["nope.yaml"])
