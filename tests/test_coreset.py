"""Coreset selection: acceptance checks, brute force on small instances, similarity builders."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from freqd.coreset import SOLVERS, jaccard_similarity, knn_similarity, objective, rank_normalise, select


def _instance(rng, n):
    importance = rng.random(n)
    weights = rng.random((n, n)) * (rng.random((n, n)) < 0.4)
    upper = np.triu(weights, 1)
    return importance, sp.csr_matrix(upper + upper.T)


@pytest.mark.parametrize("solver", ["infomax", "greedy"])
@pytest.mark.parametrize("method", ["frank_wolfe", "softmax"])
def test_alpha_zero_returns_the_top_importance_set(solver, method):
    rng = np.random.default_rng(0)
    importance, similarity = _instance(rng, 40)
    keep = select(importance, similarity, 9, alpha=0.0, solver=solver, method=method)
    assert keep.tolist() == sorted(np.argsort(-importance)[:9].tolist())


@pytest.mark.parametrize("method", ["frank_wolfe", "softmax"])
@pytest.mark.parametrize("solver", ["infomax", "greedy"])
def test_two_identical_clusters_split_the_budget(solver, method):
    # Two clusters of identical points, equal importance, dense similarity (1 within a cluster): a large
    # α makes every second pick from the same cluster costly, so the budget splits evenly.
    n = 20
    cluster = np.repeat([0, 1], n // 2)
    dense = (cluster[:, None] == cluster[None, :]).astype(float)
    np.fill_diagonal(dense, 0.0)
    keep = select(np.ones(n), sp.csr_matrix(dense), 8, alpha=5.0, solver=solver, method=method)
    assert np.bincount(cluster[keep], minlength=2).tolist() == [4, 4]


@pytest.mark.parametrize("solver", SOLVERS)
def test_keep_indices_are_sorted_unique_of_the_budget_and_seeded(solver):
    rng = np.random.default_rng(1)
    importance, similarity = _instance(rng, 60)
    features = rng.normal(size=(60, 5))
    runs = [select(importance, similarity, 0.25, solver=solver, features=features, seed=3) for _ in range(2)]
    for keep in runs:
        assert keep.dtype == np.int64 and len(keep) == 15
        assert np.all(np.diff(keep) > 0) and keep.min() >= 0 and keep.max() < 60
    assert np.array_equal(*runs)
    if solver == "random":
        assert not np.array_equal(runs[0], select(importance, similarity, 0.25, solver="random", seed=4))


def test_infomax_against_greedy_and_brute_force_on_small_instances():
    """Stated tolerance: per instance, infomax (Frank–Wolfe, rounding, swaps) is within 0.25 per kept unit
    of the optimum and of greedy; on average it beats greedy and finds the optimum in most instances."""
    rng = np.random.default_rng(7)
    versus_greedy, to_optimum = [], []
    for _ in range(120):
        n = int(rng.integers(6, 13))
        p = int(rng.integers(2, n - 1))
        alpha = float(rng.choice([0.1, 0.5, 1.0, 2.0]))
        importance, similarity = _instance(rng, n)
        best = max(objective(np.array(c), importance, similarity, alpha) for c in itertools.combinations(range(n), p))
        infomax = objective(select(importance, similarity, p, alpha=alpha), importance, similarity, alpha)
        greedy = objective(select(importance, similarity, p, alpha=alpha, solver="greedy"), importance, similarity,
                           alpha)
        assert infomax <= best + 1e-9
        versus_greedy.append((infomax - greedy) / p)
        to_optimum.append((best - infomax) / p)
    assert min(versus_greedy) >= -0.25 and max(to_optimum) <= 0.25
    assert np.mean(versus_greedy) > 0 and np.mean(np.array(to_optimum) < 1e-9) >= 0.8


def test_partitions_keep_exactly_the_budget_and_recover_the_plain_solution_with_one_group():
    rng = np.random.default_rng(2)
    importance, similarity = _instance(rng, 90)
    plain = select(importance, similarity, 30, alpha=0.5)
    assert np.array_equal(select(importance, similarity, 30, alpha=0.5, partitions=1), plain)
    split = select(importance, similarity, 30, alpha=0.5, partitions=4, seed=1)
    assert len(split) == 30 and len(np.unique(split)) == 30


def test_kcenter_covers_separated_clusters():
    rng = np.random.default_rng(3)
    centres = np.eye(4) * 10
    features = np.concatenate([c + rng.normal(scale=0.01, size=(10, 4)) for c in centres])
    keep = select(np.zeros(40), None, 4, solver="kcenter", features=features)
    assert sorted(keep // 10) == [0, 1, 2, 3]


@pytest.mark.parametrize("budget, message", [(0, "1..10"), (11, "1..10"), (1.5, r"\(0, 1\]"), (0.0, r"\(0, 1\]"),
                                             (True, "number of units"), ("3", "number of units")])
def test_bad_budgets_are_named(budget, message):
    with pytest.raises(ValueError, match=message):
        select(np.ones(10), None, budget)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="solver must be one of"):
        select(np.ones(5), None, 2, solver="prune")
    with pytest.raises(ValueError, match="5 x 5"):
        select(np.ones(5), sp.csr_matrix((4, 4)), 2)
    with pytest.raises(ValueError, match="features"):
        select(np.ones(5), None, 2, solver="kcenter")
    with pytest.raises(ValueError, match="alpha"):
        select(np.ones(5), None, 2, alpha=-1.0)


def test_similarity_builders_against_dense_definitions():
    rng = np.random.default_rng(4)
    features = rng.normal(size=(12, 3))
    sims = knn_similarity(features, 3).toarray()
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    cosine = unit @ unit.T
    assert np.allclose(sims, sims.T) and np.all(np.diag(sims) == 0)
    for i in range(12):
        nearest = [j for j in np.argsort(-cosine[i]) if j != i][:3]
        assert np.allclose(sims[i, nearest], cosine[i, nearest])
    histories = sp.csr_matrix((rng.random((10, 15)) < 0.3).astype(float))
    jac = jaccard_similarity(histories, 2, block=4).toarray()
    dense = histories.toarray().astype(bool)
    for i in range(10):
        exact = [(dense[i] & dense[j]).sum() / max((dense[i] | dense[j]).sum(), 1) for j in range(10)]
        for j in np.flatnonzero(jac[i]):
            assert jac[i, j] == pytest.approx(exact[j])
    assert np.allclose(jac, jac.T) and np.all(np.diag(jac) == 0)


def test_rank_normalise():
    assert rank_normalise(np.array([3.0, 1.0, 2.0])).tolist() == [1.0, 0.0, 0.5]
    assert rank_normalise(np.array([2.0, 2.0])).tolist() == [0.5, 0.5]


# -- the pipeline on ml-100k ----------------------------------------------------------------------
QUIET = {"show_progress": False, "state": "ERROR", "use_gpu": False, "epochs": 1}


@pytest.fixture(scope="module")
def selection(bpr_teacher_32, tmp_path_factory):
    from freqd.runs import select_coreset

    path = tmp_path_factory.mktemp("coreset") / "keep.json"
    record = select_coreset(bpr_teacher_32, path, 0.2, config_dict={"state": "ERROR"})
    return path, record


@pytest.mark.slow
def test_selection_file_records_its_inputs(selection, bpr_teacher_32):
    from freqd.io import file_sha256

    path, record = selection
    assert record["budget"] == round(0.2 * 943) == len(set(record["keep"])) and record["n_units"] == 943
    assert record["teacher_sha256"] == file_sha256(bpr_teacher_32) and len(record["data_fingerprint"]) == 40
    assert record["solver"] == "infomax" and record["importance"] == "difficulty"


@pytest.mark.slow
def test_train_on_a_coreset_sees_only_the_selected_users(selection, monkeypatch, one_thread):
    from freqd import runs
    from freqd.coreset.files import read_selection

    path, record = selection
    seen = {}
    original = runs._with_coreset

    def spy(config, loaders):
        out, note = original(config, loaders)
        seen["users"] = set(out[0]._dataset.inter_feat["user_id"].tolist())
        seen["full"] = len(loaders[0]._dataset.inter_feat)
        seen["valid"] = (loaders[1] is out[1], loaders[2] is out[2])
        keep, _ = read_selection(path, loaders[0]._dataset)
        seen["keep"] = set(keep.tolist())
        return out, note

    monkeypatch.setattr(runs, "_with_coreset", spy)
    result = runs.train("BPR", "ml-100k", config_dict={**QUIET, "embedding_size": 8, "coreset": str(path)})
    assert seen["users"] == seen["keep"] and seen["valid"] == (True, True)
    assert result["coreset"]["users"] == record["budget"] and result["coreset"]["interactions"] < seen["full"]


@pytest.mark.slow
def test_kd_coreset_distils_the_selected_users_triples_only(selection, bpr_teacher_32, monkeypatch, one_thread):
    from freqd.coreset.files import read_selection
    from freqd.distillers import FreqD
    from freqd.runs import distill

    path, _ = selection
    batches = []
    forward = FreqD.forward

    def spy(self, interaction, tables):
        batches.append(interaction["user_id"].clone())
        return forward(self, interaction, tables)

    monkeypatch.setattr(FreqD, "forward", spy)
    result = distill(bpr_teacher_32, "BPR", "FreqD", config_dict={**QUIET, "embedding_size": 8,
                                                                  "kd_coreset": str(path)})
    from freqd.runs import setup

    _, _, (train, _, _) = setup("BPR", "ml-100k", [], {"state": "ERROR"})
    keep, _ = read_selection(path, train._dataset)
    users = torch.cat(batches)
    assert len(users) and bool(torch.isin(users, keep).all())
    assert result["kd_coreset"]["users"] == len(keep)


def test_fold_in_gives_outside_users_the_mean_of_their_training_items():
    from freqd.coreset.fold_in import FoldIn
    from freqd.testing import FakeDataset

    # users 1, 2 kept; 3 and 4 outside (4 with a repeated interaction); 5 has no training item
    data = FakeDataset([1, 1, 2, 3, 3, 4, 4, 4], [1, 2, 3, 2, 5, 4, 4, 6], 6, 7)
    model = torch.nn.Module()
    model.user_embedding, model.item_embedding = torch.nn.Embedding(6, 3), torch.nn.Embedding(7, 3)
    model._cache = ("stale",)
    before = model.user_embedding.weight.detach().clone()
    fold = FoldIn(data, torch.tensor([1, 2]))
    fold(model)
    items, users = model.item_embedding.weight.detach(), model.user_embedding.weight.detach()
    history = {3: [2, 5], 4: [4, 6]}
    for user in range(6):
        expected = items[history[user]].mean(0) if user in history else before[user]
        assert torch.allclose(users[user], expected, atol=1e-6), user
    assert fold.n_users == 2 and model._cache is None


def test_fold_in_modes():
    from freqd.coreset.fold_in import FoldIn, fold_in_for
    from freqd.models.bpr import BPR
    from freqd.testing import FakeDataset

    data = FakeDataset([1, 2], [1, 2], 3, 3)
    kept = torch.tensor([1])
    bpr = object.__new__(BPR)
    assert isinstance(fold_in_for("auto", bpr, data, kept), FoldIn) and fold_in_for("none", bpr, data, kept) is None
    other = torch.nn.Module()
    assert fold_in_for("auto", other, data, kept) is None
    with pytest.raises(ValueError, match="coreset_fold_in: 'mean' needs a BPR model"):
        fold_in_for("mean", other, data, kept)


def test_activity_counts_distinct_training_items():
    from collections import Counter

    from freqd.coreset.signals import activity
    from freqd.testing import FakeDataset

    pairs = [(1, 1), (1, 2), (1, 2), (2, 3), (4, 1), (4, 2), (4, 3)]
    data = FakeDataset([u for u, _ in pairs], [i for _, i in pairs], 5, 4)
    counts = Counter(u for u, _ in set(pairs))
    assert activity(data).tolist() == [counts.get(user, 0) for user in range(1, 5)]


@pytest.mark.slow
def test_a_coreset_teacher_folds_in_the_other_users(selection, tmp_path, monkeypatch, one_thread):
    from freqd.checkpoints import load_checkpoint
    from freqd.coreset.files import read_selection
    from freqd.runs import setup, train

    monkeypatch.chdir(tmp_path)
    path, _ = selection
    _, _, (loader, _, _) = setup("BPR", "ml-100k", [], {"state": "ERROR"})
    data = loader._dataset
    keep, _ = read_selection(path, data)
    runs = {mode: train("BPR", "ml-100k", config_dict={**QUIET, "embedding_size": 8, "coreset": str(path),
                                                         "coreset_fold_in": mode}) for mode in ("auto", "none")}
    assert runs["auto"]["coreset"]["folded_in_users"] == 943 - len(keep)
    assert runs["none"]["coreset"]["folded_in_users"] == 0
    users = data.inter_feat["user_id"].numpy()
    items = data.inter_feat["item_id"].numpy()
    outside = sorted(set(users.tolist()) - set(keep.tolist()))[:20]
    for mode, folded in (("auto", True), ("none", False)):
        state = load_checkpoint(runs[mode]["checkpoint"], map_location="cpu")["state_dict"]
        user_table, item_table = state["user_embedding.weight"].numpy(), state["item_embedding.weight"].numpy()
        means = np.stack([item_table[np.unique(items[users == u])].mean(0) for u in outside])
        assert np.allclose(user_table[outside], means, atol=1e-5) is folded


def test_selection_files_are_checked_against_the_data(tmp_path):
    from freqd.coreset.files import read_selection
    from freqd.testing import FakeDataset

    class Data(FakeDataset):
        dataset_name = "toy"
        field2token_id = {"user_id": {"[PAD]": 0, "a": 1, "b": 2}}

    data = Data([1, 2], [1, 2], 3, 3)
    path = tmp_path / "keep.json"
    for content, message in ((b"{", "not JSON"), (b'{"format": "x"}', "not a freqd selection file")):
        path.write_bytes(content)
        with pytest.raises(ValueError, match=message):
            read_selection(path, data)
    with pytest.raises(FileNotFoundError, match="coreset: selection file not found"):
        read_selection(tmp_path / "missing.json", data)
    path.write_text('{"format": "freqd-coreset/1", "keep": ["a"], "dataset": "other"}')
    with pytest.raises(ValueError, match="dataset 'other'"):
        read_selection(path, data)
