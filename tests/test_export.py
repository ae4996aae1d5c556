"""``freqd export`` and :mod:`freqd.serving`: the exported top-K (NumPy/torch and the TorchScript
``scorer.pt``) against a brute force on the checkpoint."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from recbole.data import create_dataset

from freqd import load_checkpoint
from freqd.cli import main
from freqd.config import Config
from freqd.evaluation import build_dataloaders
from freqd.export import TopKScorer, export_model, load_scorer, scorer_bytes
from freqd.runs import train
from freqd.serving import Recommender

pytestmark = pytest.mark.usefixtures("one_thread")
RUN = {"show_progress": False, "state": "ERROR", "use_gpu": False, "epochs": 2, "embedding_size": 8,
       "split_seed": 2020}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    import os

    cwd = os.getcwd()
    os.chdir(folder)
    try:
        result = train("BPR", "ml-100k", config_dict=RUN)
    finally:
        os.chdir(cwd)
    return folder / result["checkpoint"]


def _brute_force_top_k(checkpoint, users, k):
    """Top-k item tokens from the checkpoint's raw tables, masking train + valid items read from RecBole."""
    state = load_checkpoint(checkpoint)["state_dict"]
    config = Config(model="BPR", dataset="ml-100k", config_dict={**RUN})
    from recbole.utils import init_seed

    init_seed(2020, True)
    data = create_dataset(config)
    train, valid, _ = build_dataloaders(config, data)
    u_tab, i_tab = state["user_embedding.weight"].double(), state["item_embedding.weight"].double()
    known = {}
    for d in (train._dataset, valid._dataset):
        for u, i in zip(d.inter_feat[d.uid_field].tolist(), d.inter_feat[d.iid_field].tolist()):
            known.setdefault(u, set()).add(i)
    out = []
    for token in users:
        u = int(data.token2id(data.uid_field, token))
        scores = (i_tab @ u_tab[u]).numpy()
        ranked = [i for i in np.argsort(-scores, kind="stable") if i != 0 and i not in known.get(u, set())][:k]
        out.append([str(data.id2token(data.iid_field, i)) for i in ranked])
    return out


@pytest.mark.slow
def test_export_serves_the_checkpoints_full_sort_top_k(trained, tmp_path):
    card = export_model(trained, tmp_path / "exp", latency_users=64)
    rec = Recommender.load(tmp_path / "exp")
    users = rec.users[1:41]
    served = [[item for item, _ in row] for row in rec.recommend(users, k=20)]
    assert served == _brute_force_top_k(trained, users, 20)
    assert card["n_users"] == 943 and card["n_items"] == 1682 and card["embedding_size"] == 8
    assert card["bytes"]["tables_float32"] == (944 + 1683) * 8 * 4 < card["bytes"]["source_checkpoint"]
    assert card["latency"]["users_per_second"] > 0 and len(card["data_fingerprint"]) == 40
    # Scores are the inner products of the checkpoint's tables; seen items come back on request.
    state = load_checkpoint(trained)["state_dict"]
    first = rec.recommend([users[0]], k=3)[0]
    u, items = rec.user_ids([users[0]])[0], rec.item_ids([item for item, _ in first])
    expected = (state["item_embedding.weight"][items] @ state["user_embedding.weight"][u]).numpy()
    np.testing.assert_allclose([s for _, s in first], expected, rtol=1e-5)
    np.testing.assert_allclose(rec.score(users[0], [item for item, _ in first]), expected, rtol=1e-5)
    with_seen = {item for item, _ in rec.recommend([users[0]], k=50, exclude_seen=False)[0]}
    seen = {rec.items[i] for i in rec.seen_indices[rec.seen_indptr[u]:rec.seen_indptr[u + 1]]}
    assert with_seen & seen and not {item for item, _ in rec.recommend([users[0]], k=50)[0]} & seen


def test_ties_at_the_k_th_score_go_to_the_smaller_index():
    users = np.array([[0.0], [1.0]], dtype=np.float32)
    items = np.array([[0.0], [2.0], [1.0], [1.0], [1.0]], dtype=np.float32)
    rec = Recommender(users, items, np.array([0, 0, 0]), np.array([], dtype=np.int64), ["[PAD]", "u"],
                      ["[PAD]", "a", "b", "c", "d"], {})
    assert [item for item, _ in rec.recommend(["u"], k=2)[0]] == ["a", "b"]
    assert [item for item, _ in rec.recommend(["u"], k=3)[0]] == ["a", "b", "c"]


def _scripted(rec, folder):
    """``rec``'s arrays as a ``scorer.pt`` written to ``folder`` and loaded back with ``torch.jit.load``."""
    (folder / "scorer.pt").write_bytes(scorer_bytes(rec))
    return load_scorer(folder / "scorer.pt")


def test_scorer_breaks_ties_like_top_k(tmp_path):
    """Small integer tables: many exact ties, inside the top-k and at the k-th score, with seen items."""
    users = np.array([[0.0], [1.0]], dtype=np.float32)
    items = np.array([[0.0], [2.0], [1.0], [1.0], [1.0]], dtype=np.float32)
    rec = Recommender(users, items, np.array([0, 0, 0]), np.array([], dtype=np.int32), ["[PAD]", "u"],
                      ["[PAD]", "a", "b", "c", "d"], {})
    scorer = _scripted(rec, tmp_path)
    for k in (1, 2, 3, 4, 9):
        items_k, _ = scorer(torch.tensor([1]), k)
        assert items_k.tolist() == rec.top_k(np.array([1]), k)[0].tolist()
    assert scorer(torch.tensor([1]), 3)[0].tolist() == [[1, 2, 3]]

    rng = np.random.default_rng(0)
    n_users, n_items = 300, 400
    user_table = rng.integers(-2, 3, (n_users, 3)).astype(np.float32)
    item_table = rng.integers(-2, 3, (n_items, 3)).astype(np.float32)
    seen = [np.sort(rng.choice(np.arange(1, n_items), rng.integers(0, 40), replace=False)) for _ in range(n_users)]
    indptr = np.concatenate([[0], np.cumsum([len(row) for row in seen])]).astype(np.int64)
    rec = Recommender(user_table, item_table, indptr, np.concatenate(seen).astype(np.int32),
                      [str(u) for u in range(n_users)], [str(i) for i in range(n_items)], {})
    scorer = _scripted(rec, tmp_path)
    for ids in (np.arange(1, n_users), rng.permutation(np.arange(1, n_users))[:77]):
        for k in (1, 10, 50, n_items - 1, n_items + 5):
            for exclude_seen in (True, False):
                expected_items, expected_scores = rec.top_k(ids, k, exclude_seen)
                got_items, got_scores = scorer(torch.from_numpy(ids), k, exclude_seen)
                np.testing.assert_array_equal(got_items.numpy(), expected_items)
                np.testing.assert_array_equal(got_scores.numpy(), expected_scores)
    for bad in (torch.tensor([0]), torch.tensor([n_users]), torch.tensor([[1]])):
        with pytest.raises(torch.jit.Error, match="user indices|1-D"):
            scorer(bad, 5)
    assert [t.shape for t in scorer(torch.tensor([], dtype=torch.long), 5)] == [(0, 5), (0, 5)]
    assert isinstance(TopKScorer(user_table, item_table, indptr, np.concatenate(seen)), torch.nn.Module)


@pytest.mark.slow
def test_torchscript_scorer_equals_top_k_and_the_full_sort(trained, tmp_path):
    card = export_model(trained, tmp_path / "exp", latency_users=64)
    rec = Recommender.load(tmp_path / "exp")
    scorer_file = tmp_path / "exp" / "scorer.pt"
    assert card["scorer"]["sha256"] == hashlib.sha256(scorer_file.read_bytes()).hexdigest()
    assert card["bytes"]["scorer.pt"] == scorer_file.stat().st_size
    assert card["latency_torchscript"]["users_per_second"] > 0
    scorer = load_scorer(scorer_file)
    ids = np.arange(1, len(rec.users))
    expected_items, expected_scores = rec.top_k(ids, 20)
    got_items, got_scores = scorer(torch.from_numpy(ids), 20)
    np.testing.assert_array_equal(got_items.numpy(), expected_items)
    np.testing.assert_allclose(got_scores.numpy(), expected_scores, rtol=1e-6)
    users = rec.users[1:41]
    assert [[rec.items[i] for i in row] for row in got_items[:40].tolist()] == _brute_force_top_k(trained, users, 20)
    # Plain torch in a fresh process: no freqd (nor RecBole) imported to load and run it.
    code = ("import sys, torch; s = torch.jit.load(sys.argv[1]); items, scores = s(torch.arange(1, 6), 20); "
            "assert not any(m.split('.')[0] in ('freqd', 'recbole') for m in sys.modules); print(items.tolist())")
    out = subprocess.run([sys.executable, "-c", code, str(scorer_file)], check=True, capture_output=True, text=True,
                         cwd=tmp_path).stdout
    assert json.loads(out) == expected_items[:5].tolist()


@pytest.mark.slow
def test_serving_imports_no_recbole(trained, tmp_path):
    export_model(trained, tmp_path / "exp", latency_users=0)
    code = ("import sys; from freqd.serving import Recommender; r = Recommender.load(sys.argv[1]); "
            "r.recommend([r.users[1]], k=5); assert not any(m.startswith('recbole') for m in sys.modules), "
            "sorted(m for m in sys.modules if m.startswith('recbole'))")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "exp")], check=True)


@pytest.mark.slow
def test_export_refuses_another_split_and_bad_users(trained, tmp_path):
    with pytest.raises(ValueError, match="different training split"):
        export_model(trained, tmp_path / "other", config_dict={"split_seed": 7}, latency_users=0)
    export_model(trained, tmp_path / "exp", latency_users=0)
    rec = Recommender.load(tmp_path / "exp")
    with pytest.raises(KeyError, match="unknown user 'nobody'"):
        rec.recommend(["nobody"])
    (tmp_path / "exp" / "tokens.json").write_text(json.dumps({"users": ["[PAD]"], "items": rec.items}))
    with pytest.raises(ValueError, match="does not match"):
        Recommender.load(tmp_path / "exp")
    with pytest.raises(FileNotFoundError, match="card.json is missing"):
        (tmp_path / "exp" / "card.json").unlink()
        Recommender.load(tmp_path / "exp")


@pytest.mark.slow
def test_cli_export_and_recommend(trained, tmp_path, capsys):
    assert main(["export", str(trained), "--out", str(tmp_path / "exp"), "--threads", "1"]) == 0
    assert "model.safetensors" in capsys.readouterr().out
    user = Recommender.load(tmp_path / "exp").users[5]
    assert main(["recommend", str(tmp_path / "exp"), "--user", user, "--k", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == f"user {user}:" and len(lines) == 5
    assert main(["recommend", str(tmp_path / "exp"), "--user", "nobody"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("ties", ["random", "score"])
def test_a_code_student_exports_packed_codes_served_by_hamming_ranking(tmp_path, ties, monkeypatch):
    from freqd.codes import tie_tables

    monkeypatch.chdir(tmp_path)
    result = train("Hash", "ml-100k", config_dict={**RUN, "epochs": 1, "hash_bits": 16, "hash_ties": ties,
                                                     "hash_tie_seed": 3})
    checkpoint = tmp_path / result["checkpoint"]
    card = export_model(checkpoint, tmp_path / "exp", latency_users=32)
    assert not (tmp_path / "exp" / "scorer.pt").exists() and card["scorer"] is None
    assert card["codes"] == {**card["codes"], "bits": 16, "ties": ties, "tie_seed": 3}
    assert card["bytes"]["codes"] == (944 + 1683) * 16 // 8
    rec = Recommender.load(tmp_path / "exp")
    state = load_checkpoint(checkpoint)["state_dict"]
    z_u, z_i = state["user_embedding.weight"].double().numpy(), state["item_embedding.weight"].double().numpy()
    h_u, h_i = np.where(z_u >= 0, 1, -1), np.where(z_i >= 0, 1, -1)
    keys, masks, _ = tie_tables(944, 1683, 3)
    cosine = (z_u / np.linalg.norm(z_u, axis=1, keepdims=True)) @ (z_i / np.linalg.norm(z_i, axis=1, keepdims=True)).T
    for u in (1, 2, 500):
        seen = set(rec.seen_indices[rec.seen_indptr[u]:rec.seen_indptr[u + 1]].tolist()) | {0}
        distance = (16 - h_i @ h_u[u]) // 2
        tie = [int(keys[i]) ^ int(masks[u]) if ties == "random" else -cosine[u, i] for i in range(1683)]
        expected = sorted((i for i in range(1683) if i not in seen), key=lambda i: (distance[i], tie[i]))[:20]
        items, scores = rec.top_k(np.array([u]), 20)
        assert items[0].tolist() == expected
        np.testing.assert_allclose(scores[0], (16 - 2 * distance[expected]) / 16)
    np.testing.assert_allclose(rec.score(rec.users[1], [rec.items[5]]), [h_u[1] @ h_i[5] / 16])
