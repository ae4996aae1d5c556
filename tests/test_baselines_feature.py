"""Feature- and relation-based baselines (FitNet, DE, HTD, PCKD): known answers on tiny hand-made
tables, Gumbel annealing, PCKD's teacher-ranked sampling, settings errors, and one end-to-end
DE distillation on ml-100k with resume. The shared contract (finite loss, frozen teacher, loss
decreases) is in test_distiller_contract.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from freqd import load_checkpoint
from freqd.distillers import StepTables, get_distiller
from freqd.distillers.de import DE, DESettings
from freqd.distillers.feature_kd import geometric_anneal
from freqd.distillers.fitnet import FitNet, FitNetSettings
from freqd.distillers.htd import HTD, HTDSettings
from freqd.distillers.pckd import PCKD, PCKDSettings, rank_decay_sample
from freqd.distillers.rankings import teacher_topk
from freqd.settings import SettingsError

QUIET = {"show_progress": False, "state": "ERROR", "use_gpu": False}


class Cfg(dict):
    """A config that, like RecBole's, reads a missing key as None."""

    def __missing__(self, key):
        return None


class Tables(nn.Module):
    """A tiny embedding model: fixed user/item tables behind the backbone interface."""

    USER_ID, ITEM_ID, NEG_ITEM_ID = "user_id", "item_id", "neg_item_id"

    def __init__(self, users, items, trainable=True):
        super().__init__()
        self.user_embedding = nn.Embedding.from_pretrained(users.clone(), freeze=not trainable)
        self.item_embedding = nn.Embedding.from_pretrained(items.clone(), freeze=not trainable)
        self.n_users, self.n_items, self.embedding_size = users.shape[0], items.shape[0], users.shape[1]

    def embeddings(self):
        return self.user_embedding.weight, self.item_embedding.weight


def tiny(d_t=6, d_s=3, n_users=5, n_items=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    teacher = Tables(torch.randn(n_users, d_t, generator=g), torch.randn(n_items, d_t, generator=g), trainable=False)
    student = Tables(torch.randn(n_users, d_s, generator=g), torch.randn(n_items, d_s, generator=g))
    return teacher, student


BATCH = {"user_id": torch.tensor([1, 2, 2, 3]), "item_id": torch.tensor([1, 2, 3, 1]),
         "neg_item_id": torch.tensor([4, 5, 4, 6])}
B = 4


def build(cls, teacher, student, train=None, **settings):
    torch.manual_seed(0)
    distiller = cls(Cfg({"epochs": 10, **settings}), teacher, student, train)
    distiller.on_epoch_start(0, student)
    return distiller


def expert(mixture, m, s):
    """Expert m of a GumbelExperts written out: ReLU(s W1 + b1) W2 + b2."""
    e = mixture.experts
    return torch.relu(s @ e.w1[m] + e.b1[m, 0]) @ e.w2[m] + e.b2[m, 0]


# -- FitNet --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", [False, True])
@pytest.mark.parametrize("projector", ["linear", "mlp"])
def test_fitnet_batch_loss_is_the_hint_regression_by_hand(norm, projector):
    teacher, student = tiny()
    fit = build(FitNet, teacher, student, fitnet_sample="batch", fitnet_norm=norm, projector=projector,
                projector_dropout=0.0).eval()
    n = (lambda x: F.normalize(x, dim=0)) if norm else (lambda x: x)
    t_u, t_i = teacher.embeddings()
    s_u, s_i = student.embeddings()
    expected = sum(((n(fit.user_projector(s_u[u])) - n(t_u[u])) ** 2).sum() for u in (1, 2, 3))
    expected += sum(((n(fit.item_projector(s_i[i])) - n(t_i[i])) ** 2).sum() for i in (1, 2, 3, 4, 5, 6))
    assert float(fit(BATCH, StepTables.of(student))) == pytest.approx(float(expected) / B, rel=1e-5)


def test_fitnet_random_sample_draws_distinct_real_entities_independent_of_the_batch():
    teacher, student = tiny(n_users=50, n_items=60)
    fit = build(FitNet, teacher, student, fitnet_sample="random", projector_dropout=0.0).eval()
    users, items = fit.entities(*BATCH.values())
    assert len(users) == len(items) == B
    assert len(set(users.tolist())) == len(set(items.tolist())) == B
    assert users.min() >= 1 and items.min() >= 1 and users.max() < 50 and items.max() < 60
    # A batch at least as large as the tables draws every real row: the loss is over all of them.
    teacher, student = tiny()
    fit = build(FitNet, teacher, student, fitnet_sample="random", fitnet_norm=False, projector="linear")
    big = {k: v.repeat(2) for k, v in BATCH.items()}
    t_u, t_i = teacher.embeddings()
    s_u, s_i = student.embeddings()
    expected = (((fit.user_projector(s_u[1:]) - t_u[1:]) ** 2).sum()
                + ((fit.item_projector(s_i[1:]) - t_i[1:]) ** 2).sum()) / (2 * B)
    assert float(fit(big, StepTables.of(student))) == pytest.approx(float(expected), rel=1e-5)


# -- DE ------------------------------------------------------------------------------------------------
def test_de_with_one_expert_is_the_summed_reconstruction_error_by_hand():
    teacher, student = tiny()
    de = build(DE, teacher, student, de_experts=1)
    t_u, t_i = teacher.embeddings()
    s_u, s_i = student.embeddings()
    err_u = lambda u: ((t_u[u] - expert(de.user_experts, 0, s_u[u])) ** 2).sum()  # noqa: E731
    err_i = lambda i: ((t_i[i] - expert(de.item_experts, 0, s_i[i])) ** 2).sum()  # noqa: E731
    expected = (sum(err_u(u) for u in (1, 2, 3)) + 0.5 * sum(err_i(i) for i in (1, 2, 3))
                + 0.5 * sum(err_i(i) for i in (4, 5, 6)))
    assert float(de(BATCH, StepTables.of(student))) == pytest.approx(float(expected) / B, rel=1e-5)
    assert de.user_experts.experts.w1.shape == (1, 3, (3 + 6) // 2)


def test_de_temperature_anneals_geometrically_and_selection_becomes_one_hot():
    teacher, student = tiny()
    de = build(DE, teacher, student, de_experts=3, de_anneal_epochs=10)
    assert de.tau == 1.0
    taus = []
    for epoch in (5, 10, 20):
        de.on_epoch_start(epoch, student)
        taus.append(de.tau)
    assert taus == pytest.approx([1e-5, 1e-10, 1e-10])
    weights = de.user_experts.selection(de.t_users, de.tau)
    assert torch.equal(weights.max(1).values, torch.ones(5)) and torch.equal((weights > 0).sum(1), torch.ones(5).long())
    # A selector certain of expert 2 (others have log p ≈ −100): the loss is that expert's error.
    for mixture in (de.user_experts, de.item_experts):
        with torch.no_grad():
            mixture.selector.weight.zero_()
            mixture.selector.bias.copy_(torch.tensor([0.0, 0.0, 100.0]))
    t_u, t_i = teacher.embeddings()
    s_u, s_i = student.embeddings()
    expected = (((t_u[[1, 2, 3]] - expert(de.user_experts, 2, s_u[[1, 2, 3]])) ** 2).sum()
                + 0.5 * ((t_i[1:] - expert(de.item_experts, 2, s_i[1:])) ** 2).sum())
    assert float(de(BATCH, StepTables.of(student))) == pytest.approx(float(expected) / B, rel=1e-5)
    assert de.epoch_log(student)["de_user_usage_entropy"] == 0.0


def test_geometric_anneal_endpoints():
    assert geometric_anneal(0, 1.0, 1e-10, 1000) == 1.0
    assert geometric_anneal(500, 1.0, 1e-10, 1000) == pytest.approx(1e-5)
    assert geometric_anneal(7, 0.1, 0.1, 1000) == pytest.approx(0.1)


# -- HTD -----------------------------------------------------------------------------------------------
def _cos(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def _topology_by_hand(htd, s, t, z, positive_only, group_topology):
    """L_TD with explicit loops over entity pairs, groups and entities."""
    n = len(z)
    total = 0.0
    for a in range(n):
        for b in range(n):
            if z[a] == z[b] and (not positive_only or _cos(t[a], t[b]) > 0):
                total += (_cos(s[a], s[b]) - _cos(t[a], t[b])) ** 2
    groups = sorted(set(z))
    p_s = {g: s[[k for k in range(n) if z[k] == g]].mean(0) for g in groups}
    p_t = {g: t[[k for k in range(n) if z[k] == g]].mean(0) for g in groups}
    for g in groups:
        others = [(s[k], t[k]) for k in range(n)] if group_topology == "entity" else [(p_s[h], p_t[h]) for h in groups]
        total += sum((_cos(p_s[g], x) - _cos(p_t[g], y)) ** 2 for x, y in others)
    return total


@pytest.mark.parametrize("positive_only", [True, False])
@pytest.mark.parametrize("group_topology", ["entity", "prototype"])
def test_htd_topology_matches_explicit_pair_and_prototype_sums(positive_only, group_topology):
    teacher, student = tiny(n_users=8, n_items=9)
    htd = build(HTD, teacher, student, htd_groups=2, htd_positive_pairs_only=positive_only,
                htd_group_topology=group_topology)
    users, items = torch.tensor([1, 2, 3, 5, 7]), torch.tensor([1, 2, 4, 6, 8])
    (s_u, s_i), (t_u, t_i) = student.embeddings(), teacher.embeddings()
    rows = (s_u[users], t_u[users], s_i[items], t_i[items])
    z = torch.cat([htd.user_groups.assign(rows[1]), htd.item_groups.assign(rows[3]) + 2]).tolist()
    assert len(set(z)) >= 3, "the tiny case should have several groups"
    expected = _topology_by_hand(htd, torch.cat(rows[0::2]).detach(), torch.cat(rows[1::2]), z, positive_only,
                                 group_topology)
    assert float(htd.topology(*rows)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("group_topology", ["entity", "prototype"])
def test_htd_topology_is_zero_when_student_cosines_equal_teachers(group_topology):
    teacher, _ = tiny(d_t=6)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(1)))
    t_u, t_i = teacher.embeddings()
    student = Tables(3.0 * t_u @ rotation, 0.5 * t_i @ rotation)  # cosines kept, norms changed
    htd = build(HTD, teacher, student, htd_groups=2, htd_alpha=1.0, htd_group_topology=group_topology,
                htd_positive_pairs_only=False)
    assert abs(float(htd(BATCH, StepTables.of(student)))) < 1e-6


def test_htd_group_assignment_with_one_group_is_the_unweighted_reconstruction_error():
    teacher, student = tiny()
    htd = build(HTD, teacher, student, htd_groups=1, htd_alpha=0.0)
    (s_u, s_i), (t_u, t_i) = student.embeddings(), teacher.embeddings()
    expected = (((t_u[[1, 2, 3]] - expert(htd.user_groups, 0, s_u[[1, 2, 3]])) ** 2).sum()
                + ((t_i[1:] - expert(htd.item_groups, 0, s_i[1:])) ** 2).sum())
    assert float(htd(BATCH, StepTables.of(student))) == pytest.approx(float(expected) / B, rel=1e-5)


# -- PCKD ----------------------------------------------------------------------------------------------
def tiny_train(n_users=6, n_items=40, per_user=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    users, items = [], []
    for u in range(1, n_users):
        chosen = torch.randperm(n_items - 1, generator=g)[:per_user] + 1
        users += [u] * per_user
        items += chosen.tolist()
    return SimpleNamespace(inter_feat={"user_id": torch.tensor(users), "item_id": torch.tensor(items)},
                           uid_field="user_id", iid_field="item_id", user_num=n_users, item_num=n_items)


def test_pckd_samples_come_from_teacher_top_k_in_rank_order_never_training_items():
    train = tiny_train()
    teacher, student = tiny(n_users=6, n_items=40)
    pckd = build(PCKD, teacher, student, train, pckd_topk=20, pckd_samples=5, de_experts=2)
    topk = teacher_topk(teacher, train, 20)
    scores = teacher.user_embedding.weight @ teacher.item_embedding.weight.T
    positives = {}
    for u, i in zip(train.inter_feat["user_id"].tolist(), train.inter_feat["item_id"].tolist()):
        positives.setdefault(u, set()).add(i)
    for epoch in range(3):
        pckd.on_epoch_start(epoch, student)
        assert pckd.samples.shape == (6, 5)
        for u in range(1, 6):
            row = pckd.samples[u].tolist()
            assert not set(row) & positives[u] and 0 not in row
            ranks = [topk[u].tolist().index(i) for i in row]
            assert ranks == sorted(ranks) and len(set(ranks)) == 5
            assert torch.all(scores[u, row][:-1] >= scores[u, row][1:])


def test_rank_decay_sampling_prefers_top_ranks():
    ranks = torch.arange(100).repeat(4000, 1)
    sample = rank_decay_sample(ranks, 10, 10.0, generator=torch.Generator().manual_seed(0))
    assert torch.all(sample[:, 1:] > sample[:, :-1])
    counts = torch.bincount(sample.reshape(-1), minlength=100).float()
    bands = counts.view(10, 10).sum(1)
    assert torch.all(bands[:-1] >= bands[1:]) and bands[0] > 5 * bands[4]
    assert counts[0] / 4000 > 0.5 and counts[90:].sum() / 4000 < 0.05


@pytest.mark.parametrize("consistency", ["projector", "teacher"])
@pytest.mark.parametrize("loss", ["list", "pair"])
def test_pckd_loss_is_feature_loss_plus_alpha_consistency_by_hand(consistency, loss):
    train = tiny_train(n_users=5, n_items=7, per_user=1)
    teacher, student = tiny()
    pckd = build(PCKD, teacher, student, train, pckd_topk=4, pckd_samples=3, de_experts=1, pckd_alpha=0.3,
                 pckd_loss=loss, pckd_consistency=consistency, pckd_tau_ce=0.5)
    (s_u, s_i), (t_u, t_i) = student.embeddings(), teacher.embeddings()
    de = pckd.feature
    feature = (sum(((t_u[u] - expert(de.user_experts, 0, s_u[u])) ** 2).sum() for u in (1, 2, 3))
               + 0.5 * sum(((t_i[i] - expert(de.item_experts, 0, s_i[i])) ** 2).sum() for i in range(1, 7)))
    assert pckd.samples.shape == (5, 3 if loss == "list" else 2)
    pc = 0.0
    for u in BATCH["user_id"].tolist():
        items = pckd.samples[u].tolist()
        pre = torch.stack([s_u[u] @ s_i[i] for i in items])
        if consistency == "projector":
            post_u = expert(de.user_experts, 0, s_u[u])
            a, c = torch.stack([post_u @ expert(de.item_experts, 0, s_i[i]) for i in items]), pre
        else:
            a, c = pre, torch.stack([t_u[u] @ t_i[i] for i in items])
        if loss == "list":
            pc += -(torch.softmax(c / 0.5, 0) * torch.log_softmax(a / 0.5, 0)).sum()
        else:
            pc += -F.logsigmoid((a[0] - a[1]) * (c[0] - c[1]))
    assert float(pckd(BATCH, StepTables.of(student))) == pytest.approx(float(feature + 0.3 * pc) / B, rel=1e-5)


@pytest.mark.parametrize("consistency, student_learns", [("projector", False), ("teacher", True)])
def test_pckd_consistency_gradient_reaches_the_side_it_should(consistency, student_learns):
    train = tiny_train(n_users=5, n_items=7, per_user=1)
    teacher, student = tiny()
    pckd = build(PCKD, teacher, student, train, pckd_topk=4, pckd_samples=3, de_experts=2,
                 pckd_consistency=consistency)
    s_u, s_i = student.embeddings()
    pckd.consistency(BATCH["user_id"], s_u, s_i).backward()
    student_grad = student.user_embedding.weight.grad
    assert (student_grad is not None and student_grad.abs().sum() > 0) == student_learns
    expert_grad = pckd.feature.item_experts.experts.w2.grad
    assert (expert_grad is not None and expert_grad.abs().sum() > 0) == (not student_learns)


# -- all four: gradients, settings ---------------------------------------------------------------------
@pytest.mark.parametrize("cls, settings", [
    (FitNet, {}), (DE, {}), (HTD, {}), (HTD, {"htd_group_topology": "prototype"}), (PCKD, {}),
    (PCKD, {"pckd_feature": "fitnet", "pckd_loss": "pair"}),
])
def test_every_distiller_parameter_and_the_student_learn_and_the_teacher_does_not(cls, settings):
    train = tiny_train(n_users=5, n_items=7, per_user=1)
    teacher, student = tiny()
    distiller = build(cls, teacher, student, train, pckd_topk=4, pckd_samples=3, htd_groups=3, de_experts=3,
                      fitnet_sample="batch", **settings)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    distiller(BATCH, StepTables.of(student)).backward()
    assert student.user_embedding.weight.grad.abs().sum() > 0 and student.item_embedding.weight.grad.abs().sum() > 0
    missing = [name for name, p in distiller.named_parameters() if p.grad is None]
    assert not missing, f"no gradient: {missing}"
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    teacher_side = ("t_users", "t_items", "topk", "samples")
    assert not any(k.split(".")[-1] in teacher_side for k in distiller.state_dict())
    assert cls is get_distiller(cls.name)


@pytest.mark.parametrize("cls, key, value, message", [
    (FitNetSettings, "fitnet_sample", "batches", "fitnet_sample='batches': Input should be 'random' or 'batch'"),
    (FitNetSettings, "projector", "conv", "projector='conv': Input should be 'linear', 'mlp' or 'experts'"),
    (FitNetSettings, "projector_dropout", 1.0, "projector_dropout=1.0: Input should be less than 1"),
    (DESettings, "de_experts", 0, "de_experts=0: Input should be greater than or equal to 1"),
    (DESettings, "de_tau_end", 2.0, "de_tau_end=2.0 must be <= de_tau_start=1.0"),
    (HTDSettings, "htd_alpha", 1.5, "htd_alpha=1.5: Input should be less than or equal to 1"),
    (HTDSettings, "htd_group_topology", "first", "htd_group_topology='first': Input should be 'entity' or 'prototype'"),
    (PCKDSettings, "pckd_feature", "vkd", "pckd_feature='vkd': Input should be 'de' or 'fitnet'"),
    (PCKDSettings, "pckd_samples", 101, "pckd_samples=101 exceeds pckd_topk=100"),
    (PCKDSettings, "pckd_loss", "margin", "pckd_loss='margin': Input should be 'list' or 'pair'"),
    (PCKDSettings, "pckd_consistency", "student", "pckd_consistency='student': Input should be 'projector' or"),
])
def test_bad_settings_are_named(cls, key, value, message):
    with pytest.raises(SettingsError, match=message):
        cls.validate_values({key: value})


def test_missing_config_keys_take_the_reference_defaults():
    assert DESettings.from_config(Cfg()) == DESettings(de_experts=5, de_tau_start=1.0, de_tau_end=1e-10)
    assert PCKDSettings.from_config(Cfg({"pckd_alpha": 0.1})).pckd_alpha == 0.1
    teacher, student = tiny()
    with pytest.raises(ValueError, match="de_anneal_epochs=None and epochs=None"):
        DE(Cfg(), teacher, student, None)


# -- end to end on ml-100k -----------------------------------------------------------------------------
@pytest.mark.slow
def test_de_end_to_end_student_checkpoint_serves_alone_and_distiller_state_resumes(bpr_teacher_32, one_thread):
    from freqd.runs import distill

    settings = {**QUIET, "embedding_size": 8, "train_batch_size": 8192, "de_experts": 2,
                "de_anneal_epochs": 2}
    first = distill(bpr_teacher_32, "BPR", "DE", config_dict={**settings, "epochs": 1})
    saved = load_checkpoint(first["checkpoint"])
    assert set(saved["state_dict"]) == {"user_embedding.weight", "item_embedding.weight"}
    state = saved["freqd"]["distiller_state"]
    assert state and all(k.startswith(("user_experts.", "item_experts.")) for k in state)
    assert saved["freqd"]["kd"] == "DE"
    resumed = distill(bpr_teacher_32, "BPR", "DE", config_dict={**settings, "epochs": 2},
                          resume=first["checkpoint"])
    import pandas as pd

    metrics = pd.read_csv(f"{resumed['run_dir']}/metrics.csv")
    assert metrics["epoch"].tolist() == [1] and metrics["de_tau"].iloc[0] == pytest.approx(1e-5)
    assert {"kd_loss", "de_user_usage_entropy", "de_item_usage_entropy"} <= set(metrics.columns)
