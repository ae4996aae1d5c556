"""``freqd.testing``: each contract check fails on a distiller that breaks it; fake backbones; spectral oracles."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from freqd.distillers import Distiller, available
from freqd.distillers.base import REGISTRY
from freqd.graph import PolynomialFilter, rayleigh_quotients
from freqd.models import BPR, LightGCN
from freqd.testing import (
    ContractViolation,
    FakeDataset,
    TinyEmbeddingModel,
    check_distiller_contract,
    check_forward_reads_only_its_tables,
    check_loss_and_gradients,
    check_loss_decreases,
    contract_setup,
    dense_bipartite_adjacency,
    exact_rayleigh_quotients,
    fake_batch,
    fake_config,
    random_graph,
    random_pairs,
    spectral_filter,
    tiny_models,
)

_LEAKED: list[nn.Module] = []


class Honest(Distiller):
    """A projected feature loss on the batch's users: keeps the contract (unnamed, so not registered)."""

    def __init__(self, config, teacher, student, train_dataset):
        super().__init__(config, teacher, student, train_dataset)
        self.projector = nn.Linear(student.embedding_size, self.t_users.shape[1], bias=False)

    def forward(self, interaction, tables):
        users = interaction[self.USER_ID]
        return (self.projector(tables.users[users]) - self.t_users[users]).pow(2).sum(1).mean()


class KeepsStudent(Honest):
    def __init__(self, config, teacher, student, train_dataset):
        super().__init__(config, teacher, student, train_dataset)
        self.scorer = student.embeddings


class CallsEmbeddings(Honest):
    def on_epoch_start(self, epoch, student):
        _LEAKED[:] = [student]

    def forward(self, interaction, tables):
        users = interaction[self.USER_ID]
        return (self.projector(_LEAKED[0].embeddings()[0][users]) - self.t_users[users]).pow(2).sum(1).mean()


class IgnoresTables(Honest):
    def forward(self, interaction, tables):
        return self.projector.weight.pow(2).sum() + 0.0 * tables.users.sum()


class StoresTeacher(Honest):
    def __init__(self, config, teacher, student, train_dataset):
        super().__init__(config, teacher, student, train_dataset)
        self.register_buffer("teacher_copy", self.t_items.clone())


class TrainsTeacher(Honest):
    def __init__(self, config, teacher, student, train_dataset):
        super().__init__(config, teacher, student, train_dataset)
        self.teacher_users = teacher.user_embedding.weight

    def forward(self, interaction, tables):
        return super().forward(interaction, tables) + 1e-3 * self.teacher_users.pow(2).sum()


class Grows(Honest):
    def __init__(self, config, teacher, student, train_dataset):
        super().__init__(config, teacher, student, train_dataset)
        self.calls = 0

    def forward(self, interaction, tables):
        self.calls += 1
        return super().forward(interaction, tables) * 0.0 + float(self.calls)


def _trainable_teacher(data):
    teacher, student = tiny_models(data)
    return TinyEmbeddingModel(teacher.user_embedding.weight, teacher.item_embedding.weight), student


def test_a_distiller_keeping_the_contract_passes_every_check():
    check_distiller_contract(Honest, {})


@pytest.mark.parametrize("cls, message", [
    (KeepsStudent, "keeps the student"),
    (CallsEmbeddings, r"student.embeddings\(\) was called"),
    (IgnoresTables, "ignores the tables"),
])
def test_forward_check_catches(cls, message):
    s = contract_setup(cls, {})
    with pytest.raises(ContractViolation, match=message):
        check_forward_reads_only_its_tables(s.distiller, s.student, s.batch)


@pytest.mark.parametrize("cls, models, message", [
    (StoresTeacher, None, "teacher table is in the distiller's state_dict as 'teacher_copy'"),
    (TrainsTeacher, _trainable_teacher, "gradients reached the teacher"),
    (IgnoresTables, None, "no gradient reached the student"),
])
def test_loss_check_catches(cls, models, message):
    s = contract_setup(cls, {}, models=models)
    with pytest.raises(ContractViolation, match=message):
        check_loss_and_gradients(s.distiller, s.teacher, s.student, s.batch)


def test_steps_check_catches_a_loss_that_does_not_fall():
    s = contract_setup(Grows, {})
    with pytest.raises(ContractViolation, match="did not lower the loss: 3 -> 38"):
        check_loss_decreases(s.distiller, s.student, s.batch)


def test_unnamed_distillers_stay_out_of_the_registry():
    """The test distillers here have no ``name``, so the contract's parametrisation never sees them."""
    available()
    assert not {Honest, KeepsStudent, CallsEmbeddings, IgnoresTables, StoresTeacher, TrainsTeacher,
                Grows} & set(REGISTRY.values())


@pytest.mark.slow
def test_importing_freqd_testing_does_not_import_pytest():
    code = "import sys, freqd.testing; assert 'pytest' not in sys.modules, 'pytest imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- fake backbones --------------------------------------------------------------------------------
def test_fake_dataset_builds_freqds_own_backbones():
    data = FakeDataset.random(n_users=5, n_items=9, per_user=3, seed=1)
    assert len(data) == 12 and data.num("user_id") == 5 and data.num("item_id") == 9
    bpr = BPR(fake_config(embedding_size=4), data)
    lightgcn = LightGCN(fake_config(embedding_size=4, n_layers=1), data)
    assert (bpr.n_users, bpr.n_items) == (lightgcn.n_users, lightgcn.n_items) == (5, 9)
    users, _ = lightgcn.embeddings()
    torch.testing.assert_close(users[0], lightgcn.user_embedding.weight[0] / 2)  # padding user 0: no edges
    check_distiller_contract("FreqD", models=lambda d: (BPR(fake_config(embedding_size=6), d).requires_grad_(False),
                                                         LightGCN(fake_config(embedding_size=3, n_layers=1), d)),
                             data=data)


def test_fake_dataset_rows_and_batches():
    data = FakeDataset.random(n_users=4, n_items=6, per_user=5)
    users, items = data.inter_feat["user_id"].tolist(), data.inter_feat["item_id"].tolist()
    assert users == [1] * 5 + [2] * 5 + [3] * 5
    assert all(len(set(items[i:i + 5])) == 5 and 0 not in items[i:i + 5] for i in range(0, 15, 5))
    batch = fake_batch(data, n=20, seed=3)
    assert set(zip(batch["user_id"].tolist(), batch["item_id"].tolist())) <= set(zip(users, items))
    assert 1 <= int(batch["neg_item_id"].min()) and int(batch["neg_item_id"].max()) < 6
    with pytest.raises(ValueError, match="item ids must lie in 1..5"):
        FakeDataset([1], [6], 3, 6)
    assert fake_config()["missing"] is None


# -- spectral oracles ------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(3))
def test_identity_and_adjacency_responses_are_known_filters(seed):
    adj = random_graph("bipartite", seed)
    x = torch.randn(adj.shape[0], 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    torch.testing.assert_close(spectral_filter(adj, x, torch.ones_like), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(spectral_filter(adj, x, lambda lam: 1.0 - lam), adj @ x, rtol=0, atol=1e-12)
    torch.testing.assert_close(spectral_filter(adj, x[:, 0], lambda lam: 1.0 - lam), adj @ x[:, 0], rtol=0, atol=1e-12)
    filt = PolynomialFilter.second_order(0.3)
    torch.testing.assert_close(spectral_filter(adj, x, filt.response), filt.apply(adj, x), rtol=1e-10, atol=1e-12)


def test_rayleigh_quotient_of_one_edge_is_known():
    # One edge, user 1 – item 1 (nodes 1 and 3); R = e₁ is half on λ = 0 and half on λ = 2.
    adj = dense_bipartite_adjacency([1], [1], 2, 2)
    residual = torch.tensor([[0.0], [1.0], [0.0], [0.0]], dtype=torch.float64)
    assert exact_rayleigh_quotients(adj, residual, powers=(0, 1, 2)) == pytest.approx({0: 1.0, 1: 1.0, 2: 2.0})
    assert rayleigh_quotients(adj.to_sparse_csr(), residual, powers=(1, 2)) == pytest.approx({1: 1.0, 2: 2.0})


def test_dense_bipartite_adjacency_counts_a_repeated_pair_once():
    users, items = random_pairs(0, 5, 6, 30)
    once = dense_bipartite_adjacency(users, items, 5, 6)
    torch.testing.assert_close(dense_bipartite_adjacency(torch.cat([users, users]), torch.cat([items, items]), 5, 6),
                               once)
    assert once[0].abs().sum() == 0 and torch.equal(once, once.T)
