"""Response-based baselines RRD, DCD, CD, UnKD, KD: known answers, sampling masks, settings, end to end.

Most cases are tiny hand-made data (6 users, 40 items) scored by naive Python loops; the last
test distils on ml-100k through ``distill`` and checks the teacher top-N cache.
"""

from __future__ import annotations

import math

import pytest
import torch

from freqd.distillers import StepTables, get_distiller, rankings, sampling
from freqd.distillers.cd import CDSettings
from freqd.distillers.dcd import DCDSettings, correction_weights, dual_correction_sample
from freqd.distillers.kd import KDSettings
from freqd.distillers.rankings import training_csr
from freqd.distillers.rrd import RRDSettings, listwise_loss, relaxed_ranking_loss
from freqd.distillers.sampling import (
    compiled_pairs,
    gather_rows,
    pair_scores,
    rank_decay_logits,
    ranks_among_unobserved,
    sample_without_replacement,
    tournament_logits,
    training_keys,
    truncated_geometric,
    uniform_unobserved,
)
from freqd.distillers.unkd import UnKDSettings, pairs_per_group, popularity_groups
from freqd.graph import cooccurrence_adjacency
from freqd.settings import SettingsError

METHODS = ["RRD", "DCD", "CD", "UnKD", "KD"]
N_USERS, N_ITEMS = 6, 40  # id 0 is padding for both, as in RecBole
TINY = {"rrd_pool": 10, "rrd_interesting": 4, "rrd_uninteresting": 6, "rrd_temperature": 3.0,
        "dcd_pool": 12, "dcd_samples": 3, "dcd_temperature": 2.0,
        "cd_pool": 15, "cd_samples": 4, "cd_temperature": 1.0, "cd_t1": 2.0, "cd_t2": 0.5,
        "unkd_groups": 3, "unkd_pairs": 6, "unkd_pool": 8, "unkd_decay": 2.0,
        "kd_topk": 5, "kd_temperature": 0.7}


# -- tiny hand-made case ----------------------------------------------------------------------------
class _Config(dict):
    """RecBole's Config answers None for a missing key."""

    def __getitem__(self, key):
        return self.get(key)


class _Data:
    """A stand-in train dataset with RecBole's attribute names."""

    uid_field, iid_field = "user_id", "item_id"
    user_num, item_num = N_USERS, N_ITEMS

    def __init__(self, pairs):
        self.pairs = pairs
        self.inter_feat = {"user_id": torch.tensor([u for u, _ in pairs]),
                           "item_id": torch.tensor([i for _, i in pairs])}


class _Model(torch.nn.Module):
    """A BPR-like backbone: the scores are inner products of two tables."""

    USER_ID, ITEM_ID, NEG_ITEM_ID = "user_id", "item_id", "neg_item_id"

    def __init__(self, dim, seed, frozen=False):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.n_users, self.n_items, self.embedding_size = N_USERS, N_ITEMS, dim
        self.user_embedding = torch.nn.Embedding(N_USERS, dim)
        self.item_embedding = torch.nn.Embedding(N_ITEMS, dim)
        with torch.no_grad():
            self.user_embedding.weight.copy_(torch.randn(N_USERS, dim, generator=gen))
            self.item_embedding.weight.copy_(torch.randn(N_ITEMS, dim, generator=gen))
        self.requires_grad_(not frozen)

    def embeddings(self):
        return self.user_embedding.weight, self.item_embedding.weight

    def score(self, u, i):
        return float(self.user_embedding.weight[u].double() @ self.item_embedding.weight[i].double())


def _pairs():
    gen = torch.Generator().manual_seed(3)
    pairs = []
    for u in range(1, N_USERS):
        # Popularity skewed towards low ids, so UnKD's groups differ in size.
        items = torch.multinomial(1.0 / torch.arange(1, N_ITEMS).float(), 4 + 2 * u, generator=gen) + 1
        pairs += [(u, int(i)) for i in items]
    return pairs


@pytest.fixture
def tiny():
    data = _Data(_pairs())
    return data, _Model(4, seed=1, frozen=True), _Model(3, seed=2)


def _build(tiny, name, **settings):
    data, teacher, student = tiny
    torch.manual_seed(0)
    distiller = get_distiller(name)(_Config({**TINY, **settings}), teacher, student, data)
    distiller.on_epoch_start(0, student)
    return distiller


def _batch(users):
    users = torch.tensor(users)
    return {"user_id": users, "item_id": torch.ones_like(users), "neg_item_id": torch.ones_like(users)}


def _train_sets(data):
    seen = {u: set() for u in range(N_USERS)}
    for u, i in data.pairs:
        seen[u].add(i)
    return seen


def _naive_topk(model, data, n):
    """Per user, the n best unobserved non-padding items, by a full sort."""
    seen = _train_sets(data)
    out = []
    for u in range(N_USERS):
        candidates = [i for i in range(1, N_ITEMS) if i not in seen[u]]
        out.append(sorted(candidates, key=lambda i: -model.score(u, i))[:n])
    return out


BATCH = [1, 3, 3, 5, 2, 3, 1]  # repeats: RRD and DCD sum over unique users, CD/UnKD/KD over triples


# -- known answers ----------------------------------------------------------------------------------
def _plackett_luce(above, below):
    total = 0.0
    for k in range(len(above)):
        total -= above[k] - math.log(sum(math.exp(a) for a in above[k:]) + sum(math.exp(b) for b in below))
    return total


@pytest.mark.parametrize("n_below", [0, 1, 5])
def test_relaxed_ranking_loss_is_the_plackett_luce_sum(n_below):
    gen = torch.Generator().manual_seed(n_below)
    above, below = 3 * torch.randn(3, 4, generator=gen), 3 * torch.randn(3, n_below, generator=gen)
    expected = sum(_plackett_luce(a.tolist(), b.tolist()) for a, b in zip(above, below))
    assert float(relaxed_ranking_loss(above, below)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", ["RRD", "DCD"])
def test_listwise_loss_sums_over_unique_batch_users(tiny, name):
    distiller, (_, _, student) = _build(tiny, name), tiny
    above, below = (distiller.interesting, distiller.uninteresting) if name == "RRD" else (distiller.under,
                                                                                           distiller.over)
    expected = sum(_plackett_luce([student.score(u, i) for i in above[u].tolist()],
                                  [student.score(u, j) for j in below[u].tolist()]) for u in set(BATCH))
    got = distiller(_batch(BATCH), StepTables.of(student))
    assert float(got) == pytest.approx(expected / len(BATCH), rel=1e-5)


@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4)])
def test_gather_rows_is_a_one_hot_product_in_value_and_gradient(shape):
    """Rows of a table picked by an index with repeats: the values are onehot(index) @ table and the
    table's gradient is onehot(index)ᵀ @ upstream (repeats summed)."""
    gen = torch.Generator().manual_seed(len(shape))
    table = torch.randn(6, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, 6, shape, generator=gen)
    index.view(-1)[:2] = 5                                      # a repeated row for certain
    upstream = torch.randn(*shape, 4, generator=gen, dtype=torch.float64)
    one_hot = torch.nn.functional.one_hot(index.reshape(-1), 6).to(torch.float64)
    got = gather_rows(table, index)
    assert got.shape == (*shape, 4)
    torch.testing.assert_close(got.reshape(-1, 4), one_hot @ table.detach())
    (got * upstream).sum().backward()
    assert table.grad is not None
    torch.testing.assert_close(table.grad, one_hot.T @ upstream.reshape(-1, 4))


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize(("dtype", "index_dtype"), [(torch.float32, torch.int64), (torch.float64, torch.int32)])
def test_pair_scores_are_one_hot_products_in_value_and_gradient(compiled, dtype, index_dtype, monkeypatch, one_thread):
    """Scores ⟨u_r, V[items[r, j]]⟩ and both gradients against float64 one-hot products, repeated items
    in a row and across rows, by the compiled loops (when Numba is installed) and by torch's kernels."""
    if compiled:
        pytest.importorskip("numba")
    else:
        monkeypatch.setattr(sampling, "compiled_available", lambda: False)
    gen = torch.Generator().manual_seed(5)
    users = torch.randn(5, 3, generator=gen, dtype=dtype, requires_grad=True)
    table = torch.randn(8, 3, generator=gen, dtype=dtype, requires_grad=True)
    items = torch.randint(0, 8, (5, 4), generator=gen).to(index_dtype)
    items[0, :2] = 7
    items[3, 1] = 7                                              # one row repeated within and across users
    upstream = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    assert compiled_pairs(users, table, items) is compiled
    got = pair_scores(users, table, items)
    (got * upstream.to(dtype)).sum().backward()
    one_hot = torch.nn.functional.one_hot(items.long(), 8).to(torch.float64)    # (rows, k, items)
    u, v = users.detach().double(), table.detach().double()
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {}
    torch.testing.assert_close(got.double(), torch.einsum("rkn,nd,rd->rk", one_hot, v, u), **tol)
    assert users.grad is not None and table.grad is not None
    torch.testing.assert_close(users.grad.double(), torch.einsum("rk,rkn,nd->rd", upstream, one_hot, v), **tol)
    torch.testing.assert_close(table.grad.double(), torch.einsum("rk,rkn,rd->nd", upstream, one_hot, u), **tol)


def test_pair_scores_keep_torch_kernels_with_several_threads_or_other_dtypes(one_thread):
    users, table, items = torch.randn(2, 3), torch.randn(4, 3), torch.zeros(2, 2, dtype=torch.int64)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert not compiled_pairs(users, table, items)
    finally:
        torch.set_num_threads(before)
    assert not compiled_pairs(users.half(), table.half(), items)
    assert not compiled_pairs(users, table.double(), items)


@pytest.mark.parametrize("dense", [None, True, False])
@pytest.mark.parametrize("n_items", [30, 3000])
def test_listwise_loss_either_scoring_is_the_plackett_luce_sum(dense, n_items):
    """Gathering the listed items and scoring the whole catalogue give the brute-force loss, on a
    catalogue below and above the size where the automatic choice switches; the gradient reaches
    exactly the batch's users and their listed items."""
    gen = torch.Generator().manual_seed(n_items)
    users, items = torch.randn(5, 4, generator=gen), torch.randn(n_items, 4, generator=gen)
    above = torch.randint(0, n_items, (5, 3), generator=gen)
    below = torch.randint(0, n_items, (5, 2), generator=gen)
    batch = torch.tensor([1, 3, 3, 4])
    expected = sum(_plackett_luce([float(users[u] @ items[i]) for i in above[u].tolist()],
                                  [float(users[u] @ items[j]) for j in below[u].tolist()]) for u in {1, 3, 4})
    users.requires_grad_(True)
    items.requires_grad_(True)
    got = listwise_loss(batch, StepTables(users, items), above, below, dense=dense)
    assert float(got) == pytest.approx(expected / 4, rel=1e-5)
    got.backward()
    assert users.grad is not None and items.grad is not None
    assert float(users.grad[[0, 2]].abs().sum()) == 0 and float(users.grad[[1, 3, 4]].abs().min()) > 0
    listed = torch.zeros(n_items, dtype=torch.bool)
    listed[torch.cat([above[[1, 3, 4]].flatten(), below[[1, 3, 4]].flatten()])] = True
    assert float(items.grad[~listed].abs().sum()) == 0
    assert bool((items.grad[listed].abs().sum(dim=1) > 0).all())


@pytest.mark.parametrize("guide", ["student", "teacher", "random"])
def test_cd_loss_is_bce_towards_softened_teacher_scores(tiny, guide):
    distiller, (_, teacher, student) = _build(tiny, "CD", cd_guide=guide), tiny
    expected = 0.0
    for u in BATCH:
        for j in distiller.samples[u].tolist():
            q = 1 / (1 + math.exp(-(teacher.score(u, j) + TINY["cd_t2"]) / TINY["cd_t1"]))
            p = 1 / (1 + math.exp(-student.score(u, j)))
            expected -= q * math.log(p) + (1 - q) * math.log(1 - p)
    assert float(distiller(_batch(BATCH), StepTables.of(student))) == pytest.approx(expected / len(BATCH), rel=1e-5)


@pytest.mark.parametrize("guide", ["student", "teacher"])
def test_kd_loss_is_softmax_cross_entropy_on_the_guides_top_k(tiny, guide):
    distiller, (data, teacher, student) = _build(tiny, "KD", kd_guide=guide), tiny
    ranker = student if guide == "student" else teacher
    assert distiller.candidates.tolist() == _naive_topk(ranker, data, TINY["kd_topk"])
    tau, expected = TINY["kd_temperature"], 0.0
    for u in BATCH:
        items = distiller.candidates[u].tolist()
        t = [math.exp(teacher.score(u, i) / tau) for i in items]
        s = [math.exp(student.score(u, i) / tau) for i in items]
        expected -= sum(ti / sum(t) * math.log(si / sum(s)) for ti, si in zip(t, s))
    assert float(distiller(_batch(BATCH), StepTables.of(student))) == pytest.approx(expected / len(BATCH), rel=1e-5)
    whole = distiller.p_teacher.clone()
    distiller._set_candidates(distiller.candidates, chunk=3)  # the per-user targets, computed in chunks
    assert torch.allclose(distiller.p_teacher, whole)


@pytest.mark.parametrize("guide", ["student", "teacher"])
def test_kd_smoothed_scores_are_the_item_graph_filter_of_the_full_score_row(tiny, guide):
    """The official formulation: scores scattered into a zero row of all items, multiplied by the dense
    H = (1 − a)I + aÂ, read back at the candidates; the cross-entropy divided by (1 − a)²."""
    a, tau = 0.6, TINY["kd_temperature"]
    distiller, (data, teacher, student) = _build(tiny, "KD", kd_guide=guide, kd_smooth_alpha=a, kd_smooth_topk=12,
                                                      kd_topk=20), tiny
    graph = cooccurrence_adjacency(data.inter_feat["user_id"], data.inter_feat["item_id"], N_USERS, N_ITEMS, 12,
                                   "item").to_dense().double()
    h = (1 - a) * torch.eye(N_ITEMS, dtype=torch.float64) + a * graph
    linked = 0
    expected = 0.0
    for u in BATCH:
        items = distiller.candidates[u]
        linked += int(graph[items][:, items].count_nonzero())

        def smoothed(model, u=u, items=items):
            row = torch.zeros(N_ITEMS, dtype=torch.float64)
            row[items] = torch.tensor([model.score(u, int(i)) for i in items], dtype=torch.float64)
            return (h @ row)[items] / tau

        expected -= float((torch.softmax(smoothed(teacher), 0) * torch.log_softmax(smoothed(student), 0)).sum())
    assert linked > 0  # the candidates share edges, so the filter mixes their scores
    got = float(distiller(_batch(BATCH), StepTables.of(student)))
    assert got == pytest.approx(expected / len(BATCH) / (1 - a) ** 2, rel=1e-5)


def test_unkd_loss_averages_pair_log_likelihoods_per_user(tiny):
    distiller, (_, _, student) = _build(tiny, "UnKD"), tiny
    expected = 0.0
    for u in BATCH:
        terms = [math.log(1 + math.exp(-(student.score(u, p) - student.score(u, n))))
                 for p, n, ok in zip(distiller.pos[u].tolist(), distiller.neg[u].tolist(), distiller.valid[u].tolist())
                 if ok]
        expected += sum(terms) / max(len(terms), 1)
    assert float(distiller(_batch(BATCH), StepTables.of(student))) == pytest.approx(expected / len(BATCH), rel=1e-5)


@pytest.mark.parametrize("name", METHODS)
def test_only_the_student_learns_and_the_loss_decreases(tiny, name):
    distiller, (_, teacher, student) = _build(tiny, name), tiny
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    optimizer = torch.optim.Adam([*student.parameters(), *distiller.parameters()], lr=0.05)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = distiller(_batch(BATCH), StepTables.of(student))
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    assert student.user_embedding.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not distiller.state_dict() and not list(distiller.parameters())


# -- sampling ---------------------------------------------------------------------------------------
def test_rank_decay_sampling_is_distinct_and_prefers_top_ranks():
    torch.manual_seed(0)
    logits = rank_decay_logits(50, temperature=5.0)
    positions = sample_without_replacement(logits, 10, n_rows=3000)
    assert all(len(set(row)) == 10 for row in positions.tolist())
    counts = torch.bincount(positions.flatten(), minlength=50)
    assert counts[0] > counts[10] > counts[30]
    first = sample_without_replacement(logits, 1, n_rows=20000).flatten()
    freq = torch.bincount(first, minlength=50).double() / 20000
    assert torch.allclose(freq, torch.softmax(logits.double(), 0), atol=0.015)


def test_masked_logits_are_never_drawn():
    torch.manual_seed(0)
    logits = torch.zeros(100, 8)
    logits[:, ::2] = float("-inf")
    assert (sample_without_replacement(logits, 4) % 2 == 1).all()


def test_truncated_geometric_follows_its_law_within_each_length():
    torch.manual_seed(0)
    lengths = torch.tensor([1, 3, 60] * 4000)
    ranks = truncated_geometric(lengths, 5, decay=4.0)
    assert ((ranks >= 0) & (ranks < lengths.unsqueeze(1))).all()
    for length in (3, 60):
        got = torch.bincount(ranks[lengths == length].flatten(), minlength=length).double()
        expected = torch.softmax(rank_decay_logits(length, 4.0).double(), 0)
        assert torch.allclose(got / got.sum(), expected, atol=0.015)


def test_tournament_is_the_better_of_two_rank_decayed_draws():
    torch.manual_seed(0)
    n, temperature = 30, 0.05
    p = torch.softmax(rank_decay_logits(n, n * temperature).double(), 0)
    draws = torch.multinomial(p, 2 * 100000, replacement=True).view(-1, 2).min(1).values
    empirical = torch.bincount(draws, minlength=n).double() / 100000
    assert torch.allclose(empirical, tournament_logits(n, temperature).double().exp(), atol=0.005)


def test_uniform_unobserved_excludes_training_padding_and_pool_and_covers_the_rest(tiny):
    data = tiny[0]
    train, seen = training_csr(data), _train_sets(data)
    exclude = torch.stack([torch.arange(1, 11) + 2 * u for u in range(N_USERS)])  # ascending rows
    torch.manual_seed(0)
    users = torch.arange(N_USERS).repeat(200)
    allowed = {u: set(range(1, N_ITEMS)) - seen[u] - set(exclude[u].tolist()) for u in range(N_USERS)}
    k = min(len(a) for a in allowed.values())  # the tightest user gets all its allowed items
    samples = uniform_unobserved(users, k, N_ITEMS, training_keys(train), exclude=exclude[users])
    hits = {u: torch.zeros(N_ITEMS) for u in range(N_USERS)}
    for u, row in zip(users.tolist(), samples.tolist()):
        assert len(set(row)) == k and set(row) <= allowed[u]
        hits[u][row] += 1
    for u in range(N_USERS):
        counts = hits[u][sorted(allowed[u])]
        assert counts.min() > 0.6 * counts.mean()  # every allowed item, roughly uniformly


def test_student_ranks_count_higher_scoring_unobserved_items(tiny):
    data, _, student = tiny
    seen = _train_sets(data)
    items = torch.tensor([[i for i in range(1, N_ITEMS) if i not in seen[u]][:7] for u in range(N_USERS)])
    got = ranks_among_unobserved(*student.embeddings(), training_csr(data), items, chunk_size=2)
    for u in range(N_USERS):
        unobserved = [j for j in range(1, N_ITEMS) if j not in seen[u]]
        for i, rank in zip(items[u].tolist(), got[u].tolist()):
            assert rank == sum(student.score(u, j) > student.score(u, i) for j in unobserved)


def test_rrd_samples_interesting_from_the_pool_in_teacher_order_and_uninteresting_outside(tiny):
    data, teacher, student = tiny
    distiller, seen = _build(tiny, "RRD"), _train_sets(data)
    pool = _naive_topk(teacher, data, TINY["rrd_pool"])
    assert distiller.pool.tolist() == pool
    rank_counts = torch.zeros(TINY["rrd_pool"])
    for epoch in range(60):
        distiller.on_epoch_start(epoch, student)
        for u in range(1, N_USERS):
            ranks = [pool[u].index(i) for i in distiller.interesting[u].tolist()]
            assert ranks == sorted(set(ranks))  # distinct, in teacher order
            rank_counts[ranks] += 1
            bad = seen[u] | set(pool[u]) | {0}
            row = distiller.uninteresting[u].tolist()
            assert len(set(row)) == len(row) == TINY["rrd_uninteresting"] and not set(row) & bad
    assert rank_counts[0] > rank_counts[5] > rank_counts[9]


def test_dcd_sets_follow_the_sign_of_the_rank_gap():
    torch.manual_seed(0)
    # Pool positions 0..9 are the teacher ranks; the student under-ranks 1, 4, 6, 8, 9 and over-ranks 3, 5, 7.
    gap = torch.tensor([0, 5, 0, -2, 9, -4, 3, -3, 40, 7])
    student_rank = (torch.arange(10) + gap).repeat(100, 1)
    under_w, over_w = correction_weights(student_rank, temperature=0.5)
    assert ((under_w[0] > 1e-3) == (gap > 0)).all() and ((over_w[0] > 1e-3) == (gap < 0)).all()
    under, over = dual_correction_sample(student_rank, 3, temperature=0.5)
    assert (gap[under] > 0).all() and (gap[over] < 0).all()
    assert (under.diff(dim=1) > 0).all()  # in teacher order
    # Only 3 items are over-ranked: a set of 5 is filled from the rest, never from the under set.
    under, over = dual_correction_sample(student_rank, 5, temperature=0.5)
    assert not any(set(a) & set(b) for a, b in zip(under.tolist(), over.tolist()))


def test_dcd_uses_the_students_current_ranks_of_the_teacher_pool(tiny):
    data, teacher, student = tiny
    distiller = _build(tiny, "DCD")
    pool = _naive_topk(teacher, data, TINY["dcd_pool"])
    seen = _train_sets(data)
    for u in range(1, N_USERS):
        unobserved = [j for j in range(1, N_ITEMS) if j not in seen[u]]
        gap = {i: sum(student.score(u, j) > student.score(u, i) for j in unobserved) - r for r, i in enumerate(pool[u])}
        under, over = distiller.under[u].tolist(), distiller.over[u].tolist()
        assert [pool[u].index(i) for i in under] == sorted(pool[u].index(i) for i in under)
        assert not set(under) & set(over) and set(under) | set(over) <= set(pool[u])
        assert sum(gap[i] for i in under) > sum(gap[i] for i in over)


@pytest.mark.parametrize("guide", ["student", "teacher", "random"])
def test_cd_samples_come_from_the_guides_ranking_and_skip_training_items(tiny, guide):
    data, teacher, student = tiny
    distiller, seen = _build(tiny, "CD", cd_guide=guide), _train_sets(data)
    ranking = {"student": student, "teacher": teacher}.get(guide)
    pool = _naive_topk(ranking, data, TINY["cd_pool"]) if ranking else None
    for epoch in range(20):
        distiller.on_epoch_start(epoch, student)
        for u in range(1, N_USERS):
            row = distiller.samples[u].tolist()
            assert len(set(row)) == TINY["cd_samples"] and not set(row) & (seen[u] | {0})
            if pool:
                assert set(row) <= set(pool[u])


def test_unkd_groups_have_equal_interaction_totals_and_are_contiguous():
    gen = torch.Generator().manual_seed(0)
    popularity = torch.cat([torch.zeros(1, dtype=torch.long), (1000 / torch.arange(1, 500) ** 0.8).long(),
                            torch.zeros(20, dtype=torch.long)])[torch.randperm(520, generator=gen)]
    for n_groups in (2, 3, 4):
        groups = popularity_groups(popularity, n_groups)
        assert len(groups) == n_groups
        covered = torch.cat(groups)
        assert sorted(covered.tolist()) == (popularity > 0).nonzero().flatten().tolist()  # never padding 0 or unseen
        totals = torch.stack([popularity[g].sum() for g in groups]).double()
        assert (totals - popularity.sum() / n_groups).abs().max() <= popularity.max()
        for hotter, colder in zip(groups, groups[1:]):
            assert popularity[hotter].min() >= popularity[colder].max()


def test_unkd_pair_counts_follow_the_reference_split():
    popularity = torch.tensor([0, 50, 40, 30, 5, 4, 3, 2, 1, 1])
    groups = [torch.tensor([1]), torch.tensor([2, 3]), torch.tensor([4, 5, 6, 7, 8, 9])]
    assert pairs_per_group(groups[:2], popularity, 2, 0.0) == [1, 1]
    assert pairs_per_group(groups, popularity, 30, 0.0) == [10, 10, 10]
    assert pairs_per_group(groups, popularity, 4, 0.0) == [2, 1, 1]  # rounded down, topped up from the first
    hot, _, cold = pairs_per_group(groups, popularity, 30, 1.0)
    assert cold > hot


def test_unkd_pairs_are_ordered_by_the_teacher_within_a_group(tiny):
    data, teacher, student = tiny
    distiller, seen = _build(tiny, "UnKD"), _train_sets(data)
    group_of = {i: g for g, items in enumerate(distiller.groups) for i in items.tolist()}
    assert len(distiller.groups) == TINY["unkd_groups"]
    n_pairs = 0
    for epoch in range(10):
        distiller.on_epoch_start(epoch, student)
        for u in range(1, N_USERS):
            for p, n, ok in zip(distiller.pos[u].tolist(), distiller.neg[u].tolist(), distiller.valid[u].tolist()):
                if ok:
                    n_pairs += 1
                    assert p != n and group_of[p] == group_of[n] and not {p, n} & seen[u]
                    assert teacher.score(u, p) > teacher.score(u, n)
    assert n_pairs > 100


# -- settings ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("settings, key, value, message", [
    (RRDSettings, "rrd_interesting", 600, "rrd_interesting=600 exceeds rrd_pool=500"),
    (RRDSettings, "rrd_temperature", 0, "rrd_temperature=0: Input should be greater than 0"),
    (RRDSettings, "rrd_uninteresting", -1, "rrd_uninteresting=-1: Input should be greater than or equal to 0"),
    (RRDSettings, "rrd_pool", 1.5, "rrd_pool=1.5: Input should be a valid integer"),
    (DCDSettings, "dcd_samples", 300, "dcd_samples=300 needs dcd_pool >= 2·dcd_samples = 600, got dcd_pool=500"),
    (DCDSettings, "dcd_temperature", -1, "dcd_temperature=-1: Input should be greater than 0"),
    (CDSettings, "cd_guide", "both", "cd_guide='both': Input should be 'student', 'teacher' or 'random'"),
    (CDSettings, "cd_t1", 0, "cd_t1=0: Input should be greater than 0"),
    (CDSettings, "cd_samples", 0, "cd_samples=0: Input should be greater than or equal to 1"),
    (CDSettings, "cd_samples", 3001, "cd_samples=3001 exceeds cd_pool=3000"),
    (UnKDSettings, "unkd_groups", 0, "unkd_groups=0: Input should be greater than or equal to 1"),
    (UnKDSettings, "unkd_decay", "fast", "unkd_decay='fast': Input should be a valid number"),
    (KDSettings, "kd_guide", "oracle", "kd_guide='oracle': Input should be 'student' or 'teacher'"),
    (KDSettings, "kd_topk", 1, "kd_topk=1: Input should be greater than or equal to 2"),
    (KDSettings, "kd_smooth_alpha", 1.0, "kd_smooth_alpha=1.0: Input should be less than 1"),
])
def test_bad_settings_are_named(settings, key, value, message):
    with pytest.raises(SettingsError, match=message):
        settings.from_config(_Config({key: value}))


def test_pools_too_large_for_the_data_are_named(tiny):
    with pytest.raises(ValueError, match="rrd_interesting=30 exceeds the usable pool"):
        _build(tiny, "RRD", rrd_pool=50, rrd_interesting=30, rrd_uninteresting=2)
    with pytest.raises(ValueError, match="dcd_samples=13 needs a pool of 26"):
        _build(tiny, "DCD", dcd_pool=30, dcd_samples=13)


def test_sampling_before_the_first_epoch_is_an_error(tiny):
    data, teacher, student = tiny
    distiller = get_distiller("RRD")(_Config(TINY), teacher, student, data)
    with pytest.raises(RuntimeError, match="on_epoch_start"):
        distiller(_batch(BATCH), StepTables.of(student))


# -- end to end on ml-100k --------------------------------------------------------------------------
QUIET = {"show_progress": False, "state": "ERROR", "use_gpu": False}


@pytest.mark.slow
def test_run_distill_rrd_caches_the_teacher_top_n_and_reuses_it(bpr_teacher_32, tmp_path, monkeypatch):
    import pandas as pd

    from freqd.runs import distill

    config = {**QUIET, "epochs": 1, "embedding_size": 8, "rrd_pool": 50, "rrd_interesting": 10,
              "rrd_uninteresting": 20}
    first = distill(bpr_teacher_32, "BPR", "RRD", config_dict=config)
    cached = list((tmp_path / "saved" / "teacher_topk").glob("*.pt"))
    assert len(cached) == 1
    assert torch.load(cached[0], weights_only=True)["topk"].shape[1] == 50
    metrics = pd.read_csv(f"{first['run_dir']}/metrics.csv")
    assert {"rec_loss", "kd_loss", "rrd_interesting_rank"} <= set(metrics.columns)

    def recompute(*args, **kwargs):
        raise AssertionError("the teacher top-N was recomputed instead of read from the cache")

    monkeypatch.setattr(rankings, "topk_unobserved", recompute)
    second = distill(bpr_teacher_32, "BPR", "RRD", config_dict=config)
    assert list((tmp_path / "saved" / "teacher_topk").glob("*.pt")) == cached
    assert second["test_result"] == first["test_result"]  # the cached top-N trains the same student
