"""FreqD against references written independently here, from the raw interaction list.

Nothing below calls freqd's graph builders or filters to build an expected value: adjacencies,
degrees, the normalised Laplacian L = I − D^{-1/2} A D^{-1/2}, the filter H = h(L) (as a dense
matrix polynomial in L), the top-k co-occurrence graphs and the batch loss

    [ Σ_{u∈B_U} dist_u + ½ Σ_{i∈B_+} dist_i + ½ Σ_{i∈B_−} dist_i ] / B,
    dist_e = dist([H·P(S)]_e, [H·T]_e)   (squared L2, or 1 − cosine after filtering)

are rebuilt with NumPy and a dense torch re-implementation (for autograd). FreqD itself is
driven through ``FreqD(config, teacher, student, train_dataset)`` and ``forward`` with tiny
stand-ins for RecBole's config, dataset and models; edge dropout through ``filter_rows``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from freqd.distillers import FreqD, StepTables
from freqd.graph import (
    PolynomialFilter,
    bipartite_edge_index,
    cooccurrence_adjacency,
    filter_rows,
    normalized_adjacency,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# --- a hand-made training set ---------------------------------------------------------------------
# user 0 and item 0 are padding (no interactions); item 6 is cold (no interactions, used as a negative).
# users: u1 {1,2,3}  u2 {2,3}  u3 {1,4}  u4 {4,5}  u5 {1,2,5}
N_USERS, N_ITEMS = 6, 7
PAIRS = [(1, 1), (1, 2), (1, 3), (2, 2), (2, 3), (3, 1), (3, 4), (4, 4), (4, 5), (5, 5), (5, 1), (5, 2)]
D_S, D_T = 3, 5
TOPK = 2

# A batch of B = 5 triples with repeated users/positives, an item that is both positive and
# negative (1), the cold item 6 and the padding item 0 among the negatives.
BATCH = {"user_id": [1, 2, 2, 5, 3], "item_id": [1, 3, 2, 1, 4], "neg_item_id": [6, 1, 0, 6, 5]}
# Every user as a user, every item as a positive and as a negative (B = 7 triples):
# the loss is then ‖H(P(S) − T)‖²_F / B over all rows of every graph.
COVERING = {"user_id": [0, 1, 2, 3, 4, 5, 1], "item_id": [3, 0, 6, 1, 5, 2, 4], "neg_item_id": [6, 5, 4, 3, 2, 1, 0]}

# filter name -> (FreqD settings, reference spec)
FILTERS = {
    "first0.5": ({"freqd_alpha": 0.5, "freqd_order": 1}, ("first", 0.5)),
    "second0.3": ({"freqd_alpha": 0.3, "freqd_order": 2}, ("second", 0.3)),
    "coef": ({"freqd_coefficients": [1.0, -0.4, 0.05]}, ("coef", (1.0, -0.4, 0.05))),
}
PROJECTORS = {
    "linear": {"projector": "linear"},
    "linear_bias": {"projector": "linear", "projector_bias": True},
    "mlp": {"projector": "mlp", "projector_hidden": 4},
}


# --- dense references (NumPy) --------------------------------------------------------------------


def interaction_matrix(pairs, n_users=N_USERS, n_items=N_ITEMS) -> np.ndarray:
    """Binary R: a repeated pair is one interaction."""
    r = np.zeros((n_users, n_items))
    for u, i in pairs:
        r[u, i] = 1.0
    return r


def bipartite_dense(r: np.ndarray) -> np.ndarray:
    """A = [[0, R], [Rᵀ, 0]] on [users; items]."""
    n_u, n_i = r.shape
    a = np.zeros((n_u + n_i, n_u + n_i))
    a[:n_u, n_u:] = r
    a[n_u:, :n_u] = r.T
    return a


def cooccurrence_dense(r: np.ndarray, k: int, side: str) -> np.ndarray:
    """Top-k co-occurrence graph by brute force, as the method defines it.

    C = R Rᵀ (users) or Rᵀ R (items); each node keeps its k largest off-diagonal positive counts
    as weight-1 edges (ties: smaller neighbour index; fewer than k candidates: all of them);
    then A = (A + Aᵀ)/2.
    """
    m = r if side == "user" else r.T
    c = m @ m.T
    n = c.shape[0]
    a = np.zeros((n, n))
    for i in range(n):
        candidates = sorted((-c[i, j], j) for j in range(n) if j != i and c[i, j] > 0)
        for _, j in candidates[:k]:
            a[i, j] = 1.0
    return (a + a.T) / 2


def normalise(a: np.ndarray) -> np.ndarray:
    """D^{-1/2} A D^{-1/2}; a zero-degree node gets a zero row and column."""
    deg = a.sum(1)
    inv = np.zeros_like(deg)
    inv[deg > 0] = deg[deg > 0] ** -0.5
    return inv[:, None] * a * inv[None, :]


def laplacian(a: np.ndarray) -> np.ndarray:
    return np.eye(a.shape[0]) - normalise(a)


def filter_matrix(lap: np.ndarray, spec) -> np.ndarray:
    """H = h(L) as a dense matrix: I − αL, (I − αL)², or Σ_k a_k L^k."""
    kind, value = spec
    eye = np.eye(lap.shape[0])
    if kind == "first":
        return eye - value * lap
    if kind == "second":
        g = eye - value * lap
        return g @ g
    return sum(c * np.linalg.matrix_power(lap, k) for k, c in enumerate(value))


def response(lam: np.ndarray, spec) -> np.ndarray:
    kind, value = spec
    if kind == "first":
        return 1.0 - value * lam
    if kind == "second":
        return (1.0 - value * lam) ** 2
    return sum(c * lam**k for k, c in enumerate(value))


def reference_graphs(graph: str, pairs=PAIRS, k: int = TOPK) -> list[np.ndarray]:
    r = interaction_matrix(pairs)
    if graph == "bipartite":
        return [bipartite_dense(r)]
    return [cooccurrence_dense(r, k, "user"), cooccurrence_dense(r, k, "item")]


# --- tiny stand-ins for RecBole's config, dataset and models ---------------------------------------


class Config(dict):
    """RecBole-style config: a missing key reads as None."""

    def __missing__(self, key):
        return None


class TrainData:
    uid_field, iid_field = "user_id", "item_id"

    def __init__(self, pairs) -> None:
        users, items = zip(*pairs)
        self.inter_feat = {"user_id": torch.tensor(users), "item_id": torch.tensor(items)}


class Teacher(nn.Module):
    def __init__(self, users: torch.Tensor, items: torch.Tensor) -> None:
        super().__init__()
        self.users, self.items = users, items

    def embeddings(self):
        return self.users, self.items


def final_tables(users: torch.Tensor, items: torch.Tensor):
    """The stand-in student's scoring tables: differ from the raw ID tables and mix rows."""
    return torch.tanh(users) + 0.5 * users, items + 0.3 * items.roll(1, 0)


class Student(nn.Module):
    USER_ID, ITEM_ID, NEG_ITEM_ID = "user_id", "item_id", "neg_item_id"

    def __init__(self, users: torch.Tensor, items: torch.Tensor) -> None:
        super().__init__()
        self.n_users, self.embedding_size = users.shape
        self.n_items = items.shape[0]
        self.user_embedding = nn.Embedding.from_pretrained(users.clone(), freeze=False)
        self.item_embedding = nn.Embedding.from_pretrained(items.clone(), freeze=False)

    def embeddings(self):
        return final_tables(self.user_embedding.weight, self.item_embedding.weight)


def tables(seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(N_USERS, D_S, generator=g, dtype=dtype), torch.randn(N_ITEMS, D_S, generator=g, dtype=dtype),
            torch.randn(N_USERS, D_T, generator=g, dtype=dtype), torch.randn(N_ITEMS, D_T, generator=g, dtype=dtype))


def make_freqd(settings: dict, s_users, s_items, t_users, t_items, pairs=PAIRS, dtype=torch.float64):
    torch.manual_seed(11)  # projector initialisation
    # One shared projector applied before the filter unless a test asks otherwise (the dense references' form).
    config = Config({"freqd_topk": TOPK, "freqd_spectral_log_every": 0, "freqd_neighbors": 0, "projector": "linear",
                     "projector_per_entity": False, "freqd_filter_first": False, **settings})
    student = Student(s_users, s_items)
    distiller = FreqD(config, Teacher(t_users, t_items), student, TrainData(pairs)).to(dtype)
    return distiller, student


def batch_of(spec: dict) -> dict:
    return {key: torch.tensor(value) for key, value in spec.items()}


# --- the dense loss (torch, for autograd; uses no freqd code) --------------------------------------


def projector_fn(kind: str, params: dict):
    if kind == "mlp":
        return lambda x: torch.relu(x @ params["net.1.weight"].T + params["net.1.bias"]) @ params["net.4.weight"].T \
            + params["net.4.bias"]
    bias = params.get("linear.bias")
    return lambda x: x @ params["linear.weight"].T + (0.0 if bias is None else bias)


def distance(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "mse":
        return ((a - b) ** 2).sum(1)
    return 1.0 - (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def dense_loss(graph, spec, dist_kind, project, s_users, s_items, t_users, t_items, batch, pairs=PAIRS, k=TOPK,
               project_items=None, filter_first=False):
    """The method's batch loss from whole-table dense products: H·P(S) (or P(H·S)) against H·T.

    ``project`` maps users (and items unless ``project_items`` is given).
    """
    project_items = project_items or project
    hs = [torch.from_numpy(filter_matrix(laplacian(a), spec)) for a in reference_graphs(graph, pairs, k)]
    users = torch.unique(batch["user_id"])
    pos, neg = torch.unique(batch["item_id"]), torch.unique(batch["neg_item_id"])
    if graph == "bipartite":
        (h,) = hs
        ft = h @ torch.cat([t_users, t_items])
        if filter_first:
            hs_all = h @ torch.cat([s_users, s_items])
            user_s, item_s = project(hs_all[:N_USERS]), project_items(hs_all[N_USERS:])
        else:
            fs = h @ torch.cat([project(s_users), project_items(s_items)])
            user_s, item_s = fs[:N_USERS], fs[N_USERS:]
        user_t, item_t = ft[:N_USERS], ft[N_USERS:]
    else:
        hu, hi = hs
        user_t, item_t = hu @ t_users, hi @ t_items
        if filter_first:
            user_s, item_s = project(hu @ s_users), project_items(hi @ s_items)
        else:
            user_s, item_s = hu @ project(s_users), hi @ project_items(s_items)
    total = (distance(user_s[users], user_t[users], dist_kind).sum()
             + 0.5 * distance(item_s[pos], item_t[pos], dist_kind).sum()
             + 0.5 * distance(item_s[neg], item_t[neg], dist_kind).sum())
    return total / batch["user_id"].numel()


def freqd_value_and_grads(distiller, student, batch):
    """FreqD's loss and its gradients w.r.t. the student's ID tables and the projector's parameters."""
    student.zero_grad(set_to_none=True)
    distiller.zero_grad(set_to_none=True)
    loss = distiller(batch, StepTables.of(student))
    loss.backward()
    grads = {"users": student.user_embedding.weight.grad, "items": student.item_embedding.weight.grad}
    grads.update({name: p.grad for name, p in distiller.projector.named_parameters()})
    if distiller.item_projector is not None:
        grads.update({f"item.{name}": p.grad for name, p in distiller.item_projector.named_parameters()})
    return float(loss.detach()), grads


def reference_value_and_grads(distiller, student, teacher, graph, spec, dist_kind, signal, proj_kind, batch,
                              per_entity=False, filter_first=False):
    """The dense loss and its autograd gradients, from copies of the same parameter values."""
    leaves = {"users": student.user_embedding.weight.detach().clone().requires_grad_(),
              "items": student.item_embedding.weight.detach().clone().requires_grad_()}
    leaves.update({name: p.detach().clone().requires_grad_() for name, p in distiller.projector.named_parameters()})
    item_leaves = {}
    if per_entity:
        item_leaves = {name: p.detach().clone().requires_grad_()
                       for name, p in distiller.item_projector.named_parameters()}
        leaves.update({f"item.{name}": p for name, p in item_leaves.items()})
    s_users, s_items = leaves["users"], leaves["items"]
    if signal == "final":
        s_users, s_items = final_tables(s_users, s_items)
    t_users, t_items = teacher
    project_items = projector_fn(proj_kind, item_leaves) if per_entity else None
    loss = dense_loss(graph, spec, dist_kind, projector_fn(proj_kind, leaves), s_users, s_items, t_users, t_items,
                      batch, project_items=project_items, filter_first=filter_first)
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return float(loss.detach()), dict(zip(leaves, grads))


def build(settings, seed=0, dtype=torch.float64):
    """FreqD, its student and the teacher's (users, items) tables, from random tables."""
    s_users, s_items, t_users, t_items = tables(seed, dtype)
    distiller, student = make_freqd(settings, s_users, s_items, t_users, t_items, dtype=dtype)
    return distiller, student, (t_users, t_items)


# --- dense reference: value and gradients ------------------------------------------------------------


@pytest.mark.parametrize("signal", ["final", "raw"])
@pytest.mark.parametrize("proj", PROJECTORS)
@pytest.mark.parametrize("filt", FILTERS)
@pytest.mark.parametrize("dist_kind", ["cosine", "mse"])
@pytest.mark.parametrize("graph", ["bipartite", "cooccurrence"])
def test_loss_and_gradients_match_dense_reference(graph, dist_kind, filt, proj, signal):
    settings, spec = FILTERS[filt]
    distiller, student, teacher = build({"freqd_graph": graph, "freqd_distance": dist_kind,
                                         "freqd_student_signal": signal, **settings, **PROJECTORS[proj]})
    batch = batch_of(BATCH)
    value, grads = freqd_value_and_grads(distiller, student, batch)
    ref_value, ref_grads = reference_value_and_grads(distiller, student, teacher, graph, spec, dist_kind, signal,
                                                     PROJECTORS[proj]["projector"], batch)
    # FreqD builds Â in float32 (then casts it): ~1e-7 relative is the floor of the comparison.
    assert value == pytest.approx(ref_value, rel=1e-6, abs=1e-9)
    assert set(grads) == set(ref_grads)
    for name, ref in ref_grads.items():
        assert ref.abs().max() > 0, name  # every checked gradient is informative
        torch.testing.assert_close(grads[name], ref, rtol=1e-6, atol=1e-6 * float(ref.abs().max()),
                                   msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("dist_kind", ["cosine", "mse"])
@pytest.mark.parametrize("graph", ["bipartite", "cooccurrence"])
def test_float32_loss_and_gradients_match_dense_reference(graph, dist_kind):
    """The dtype FreqD trains in: the float64 dense reference to ~1e-5."""
    settings, spec = FILTERS["first0.5"]
    distiller, student, teacher = build({"freqd_graph": graph, "freqd_distance": dist_kind, **settings}, seed=3,
                                        dtype=torch.float32)
    assert student.user_embedding.weight.dtype == torch.float32
    batch = batch_of(BATCH)
    value, grads = freqd_value_and_grads(distiller, student, batch)
    distiller.double(), student.double()  # the reference reads the same values, in float64
    ref_value, ref_grads = reference_value_and_grads(distiller, student, tuple(t.double() for t in teacher), graph,
                                                     spec, dist_kind, "final", "linear", batch)
    assert value == pytest.approx(ref_value, rel=1e-5)
    for name, ref in ref_grads.items():
        torch.testing.assert_close(grads[name].double(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("filter_first", [False, True])
@pytest.mark.parametrize("per_entity", [False, True])
@pytest.mark.parametrize("proj", ["linear_bias", "mlp"])
@pytest.mark.parametrize("dist_kind", ["cosine", "mse"])
@pytest.mark.parametrize("graph", ["bipartite", "cooccurrence"])
def test_projector_per_entity_and_order_match_dense_reference(graph, dist_kind, proj, per_entity, filter_first):
    """One projector per entity type and P(H·S) (paper-era order) against the dense loss of that version."""
    settings, spec = FILTERS["first0.5"]
    distiller, student, teacher = build({"freqd_graph": graph, "freqd_distance": dist_kind, **settings,
                                         **PROJECTORS[proj], "projector_per_entity": per_entity,
                                         "freqd_filter_first": filter_first}, seed=4)
    assert (distiller.item_projector is not None) == per_entity
    batch = batch_of(BATCH)
    value, grads = freqd_value_and_grads(distiller, student, batch)
    ref_value, ref_grads = reference_value_and_grads(distiller, student, teacher, graph, spec, dist_kind, "final",
                                                     PROJECTORS[proj]["projector"], batch, per_entity, filter_first)
    assert value == pytest.approx(ref_value, rel=1e-6, abs=1e-9)
    assert set(grads) == set(ref_grads)
    for name, ref in ref_grads.items():
        assert ref.abs().max() > 0, name
        torch.testing.assert_close(grads[name], ref, rtol=1e-6, atol=1e-6 * float(ref.abs().max()),
                                   msg=lambda m, n=name: f"{n}: {m}")
    # The orders differ for a biased or nonlinear projector: the check above could tell them apart.
    other, _ = reference_value_and_grads(distiller, student, teacher, graph, spec, dist_kind, "final",
                                         PROJECTORS[proj]["projector"], batch, per_entity, not filter_first)
    assert abs(other - ref_value) > 1e-4 * abs(ref_value)


@pytest.mark.parametrize("filt", FILTERS)
@pytest.mark.parametrize("graph", ["bipartite", "cooccurrence"])
def test_mse_over_all_rows_is_the_spectral_sum(graph, filt):
    """Σ_k h(λ_k)² ‖u_kᵀ R‖² (numpy.linalg.eigh of L) over every graph equals B × FreqD's loss."""
    settings, spec = FILTERS[filt]
    distiller, student, (t_users, t_items) = build({"freqd_graph": graph, "freqd_distance": "mse", **settings,
                                                    **PROJECTORS["mlp"]}, seed=1)
    batch = batch_of(COVERING)
    with torch.no_grad():
        loss = float(distiller(batch, StepTables.of(student))) * len(COVERING["user_id"])
        project = distiller.projector
        s_users, s_items = student.embeddings()
        res_users = (project(s_users) - t_users).numpy()
        res_items = (project(s_items) - t_items).numpy()
    residuals = [np.vstack([res_users, res_items])] if graph == "bipartite" else [res_users, res_items]
    spectral = 0.0
    for a, res in zip(reference_graphs(graph), residuals):
        lam, vecs = np.linalg.eigh(laplacian(a))
        spectral += float((response(lam, spec) ** 2 * ((vecs.T @ res) ** 2).sum(1)).sum())
    assert loss == pytest.approx(spectral, rel=1e-6)  # Â is built in float32 by FreqD
    assert spectral != pytest.approx(sum(float((r**2).sum()) for r in residuals), rel=1e-3)  # not all-pass


def test_cosine_distance_is_taken_after_filtering():
    """Cosine compares [H·P(S)]_e with [H·T]_e, not H applied to normalised rows (which would differ)."""
    settings, spec = FILTERS["first0.5"]
    distiller, student, (t_users, t_items) = build({"freqd_graph": "bipartite", "freqd_distance": "cosine",
                                                    **settings}, seed=2)
    batch = batch_of(BATCH)
    with torch.no_grad():
        value = float(distiller(batch, StepTables.of(student)))
        weight = distiller.projector.linear.weight
        s_users, s_items = student.embeddings()
        unit = lambda x: x / x.norm(dim=1, keepdim=True)  # noqa: E731
        after = float(dense_loss("bipartite", spec, "cosine", lambda x: x @ weight.T, s_users, s_items, t_users,
                                 t_items, batch))
        before = float(dense_loss("bipartite", spec, "cosine", lambda x: unit(x @ weight.T), s_users, s_items,
                                  unit(t_users), unit(t_items), batch))
    assert value == pytest.approx(after, rel=1e-6)
    assert abs(after - before) > 1e-3


# --- graphs: freqd's builders against the brute-force references ------------------------------------


def test_bipartite_adjacency_matches_dense_reference():
    users, items = (torch.tensor(c) for c in zip(*PAIRS))
    got = normalized_adjacency(bipartite_edge_index(users, items, N_USERS), N_USERS + N_ITEMS,
                               torch.ones(2 * len(PAIRS), dtype=torch.float64))
    expected = normalise(bipartite_dense(interaction_matrix(PAIRS)))
    np.testing.assert_allclose(got.to_dense().numpy(), expected, rtol=0, atol=1e-15)


def test_reference_cooccurrence_hand_example():
    """The brute force itself, against counts worked out by hand (k = 2, users).

    Off-diagonal counts: C12 = C15 = 2, C13 = C25 = C34 = C35 = C45 = 1 (C22 = 2 ties C21 = 2: the
    self-count must not take a slot). Top-2: u1 → {2, 5}, u2 → {1, 5}, u3 → {1, 4} (tie 1/4/5 at 1),
    u4 → {3, 5}, u5 → {1, 2} (tie 2/3/4 at 1). Mutual: 1–2, 1–5, 2–5, 3–4; one-sided: 1–3, 4–5.
    """
    expected = np.zeros((N_USERS, N_USERS))
    for (i, j), w in {(1, 2): 1.0, (1, 5): 1.0, (2, 5): 1.0, (3, 4): 1.0, (1, 3): 0.5, (4, 5): 0.5}.items():
        expected[i, j] = expected[j, i] = w
    np.testing.assert_array_equal(cooccurrence_dense(interaction_matrix(PAIRS), 2, "user"), expected)


def random_pairs(seed: int, n_users: int, n_items: int, n: int):
    rng = np.random.default_rng(seed)
    return list(zip(rng.integers(0, n_users, n).tolist(), rng.integers(0, n_items, n).tolist()))


CASES = [("hand", PAIRS, N_USERS, N_ITEMS)] + [
    (f"random{s}", random_pairs(s, 11, 9, 30), 11, 9) for s in range(2)]


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("side", ["user", "item"])
@pytest.mark.parametrize("name, pairs, n_users, n_items", CASES, ids=[c[0] for c in CASES])
def test_cooccurrence_adjacency_matches_brute_force(name, pairs, n_users, n_items, side, k):
    users, items = (torch.tensor(c) for c in zip(*pairs))
    got = cooccurrence_adjacency(users, items, n_users, n_items, k=k, side=side, dtype=torch.float64)
    expected = normalise(cooccurrence_dense(interaction_matrix(pairs, n_users, n_items), k, side))
    assert np.count_nonzero(expected) > 0
    np.testing.assert_allclose(got.to_dense().numpy(), expected, rtol=0, atol=1e-15)


def test_cooccurrence_graph_in_freqd_is_the_top_k_graph():
    """On the co-occurrence branch the loss depends on freqd_topk exactly as the references do."""
    settings, spec = FILTERS["first0.5"]
    batch = batch_of(BATCH)
    values = {}
    for k in (1, 2, 3):
        distiller, student, (t_users, t_items) = build({"freqd_graph": "cooccurrence", "freqd_distance": "cosine",
                                                        "freqd_topk": k, **settings}, seed=4)
        with torch.no_grad():
            weight = distiller.projector.linear.weight
            s_users, s_items = student.embeddings()
            expected = dense_loss("cooccurrence", spec, "cosine", lambda x, w=weight: x @ w.T, s_users, s_items,
                                  t_users, t_items, batch, k=k)
            values[k] = float(distiller(batch, StepTables.of(student)))
        assert values[k] == pytest.approx(float(expected), rel=1e-6)
    assert len({round(v, 8) for v in values.values()}) == 3  # k changes the graph, hence the loss


# --- duplicates in the training pairs -----------------------------------------------------------------


def test_bipartite_graph_ignores_repeated_training_pairs():
    settings, spec = FILTERS["first0.5"]
    repeated = PAIRS + [(1, 1), (4, 5), (4, 5)]
    s_users, s_items, t_users, t_items = tables(5)
    distiller, student = make_freqd({"freqd_graph": "bipartite", "freqd_distance": "mse", **settings},
                                    s_users, s_items, t_users, t_items, pairs=repeated)
    batch = batch_of(BATCH)
    with torch.no_grad():
        weight = distiller.projector.linear.weight
        s_users, s_items = student.embeddings()
        expected = dense_loss("bipartite", spec, "mse", lambda x: x @ weight.T, s_users, s_items, t_users, t_items,
                              batch, pairs=repeated)  # binary R: same graph as PAIRS
        assert float(distiller(batch, StepTables.of(student))) == pytest.approx(float(expected), rel=1e-6)


# --- edge dropout in filter_rows: Monte Carlo against the exact dense H·X -----------------------------

DROP_ROWS = torch.tensor([1, 8, 3, 1, 12, 9])  # users 1, 3; items 2, 3 (nodes 8, 9); cold item 6 (node 12)


def _dense_csr(a_hat: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a_hat).to_sparse_csr()


@pytest.mark.parametrize("keep_prob", [0.5, 0.8])
def test_dropout_first_order_is_unbiased_with_the_bernoulli_variance(keep_prob):
    """X = I: each draw returns rows of H_drop = (1 − α)I + α Â_drop itself, entry by entry.

    Checks against the exact Â (not against anything filter_rows reports): survivors are α·Â_ij/p
    (no renormalisation), the kept fraction is p, the mean over draws is H and the per-entry
    variance is α² Â_ij² (1 − p)/p. An implementation that never drops fails all but the first.
    """
    alpha, draws = 0.5, 1000
    a_hat = normalise(bipartite_dense(interaction_matrix(PAIRS)))
    csr = _dense_csr(a_hat)
    h = np.eye(len(a_hat)) - alpha * (np.eye(len(a_hat)) - a_hat)
    rows = DROP_ROWS.numpy()
    ident = torch.eye(len(a_hat), dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    filt = PolynomialFilter.first_order(alpha)
    samples = np.stack([filter_rows(csr, filt, DROP_ROWS, ident, keep_prob=keep_prob,
                                    generator=g).numpy() for _ in range(draws)])
    edge = a_hat[rows] != 0
    assert edge.sum() > 10
    diag = np.zeros_like(edge)
    diag[np.arange(len(rows)), rows] = True
    # exact values per draw: diagonal (1 − α), survivors α Â_ij / p, everything else 0
    np.testing.assert_allclose(samples[:, diag], 1.0 - alpha, rtol=0, atol=1e-15)
    kept = samples[:, edge] != 0
    np.testing.assert_allclose(samples[:, edge][kept], np.broadcast_to(alpha * a_hat[rows][edge] / keep_prob,
                                                                        kept.shape)[kept], rtol=1e-14)
    assert not samples[:, ~(edge | diag)].any()
    # duplicated rows (node 1 twice) see the same draw
    np.testing.assert_array_equal(samples[:, 0], samples[:, 3])
    # kept fraction ≈ p (binomial tolerance); mean ≈ H (5 σ/√n with the exact σ); variance ≈ exact
    distinct = np.unique(rows, return_index=True)[1]
    kept_distinct = samples[:, distinct][:, edge[distinct]] != 0
    frac = kept_distinct.mean()
    assert abs(frac - keep_prob) < 5 * math.sqrt(keep_prob * (1 - keep_prob) / kept_distinct.size)
    sigma = alpha * np.abs(a_hat[rows]) * math.sqrt((1 - keep_prob) / keep_prob)
    mean = samples.mean(0)
    assert (np.abs(mean - h[rows]) <= 5 * sigma / math.sqrt(draws) + 1e-14).all()
    np.testing.assert_allclose(samples.std(0)[edge], sigma[edge], rtol=0.15)


@pytest.mark.slow
@pytest.mark.parametrize("graph", ["bipartite", "user"])
def test_dropout_second_order_mean_is_exact_h_x(graph):
    """Mean over draws of [H_drop X]_rows → [H X]_rows for H = ((1 − α)I + αÂ)², with per-draw spread.

    Unbiased only if every stored nonzero is kept independently: a draw shared by (i, j) and (j, i)
    would bias the 2-hop returns i → j → i (E[b²] = p ≠ p²), i.e. the diagonal of Â_drop².
    """
    alpha, keep_prob, draws = 0.5, 0.5, 1000
    r = interaction_matrix(PAIRS)
    a = bipartite_dense(r) if graph == "bipartite" else cooccurrence_dense(r, TOPK, "user")
    a_hat = normalise(a)
    rows = DROP_ROWS if graph == "bipartite" else torch.tensor([1, 3, 1, 5])
    x = np.random.default_rng(1).normal(size=(len(a), 4))
    exact = filter_matrix(np.eye(len(a)) - a_hat, ("second", alpha)) @ x
    g = torch.Generator().manual_seed(1)
    filt = PolynomialFilter.second_order(alpha)
    csr, table = _dense_csr(a_hat), torch.from_numpy(x)
    samples = np.stack([filter_rows(csr, filt, rows, table, keep_prob=keep_prob, generator=g).numpy()
                        for _ in range(draws)])
    spread = samples.std(0)
    isolated = a[rows.numpy()].sum(1) == 0  # the cold item: no edge to drop, h(1)·x exactly
    assert (spread[~isolated] > 1e-3).all() and (spread[isolated] < 1e-12).all()
    assert (np.abs(samples.mean(0) - exact[rows.numpy()]) <= 5 * spread / math.sqrt(draws) + 1e-12).all()


# --- edge dropout in FreqD: one draw shared by teacher and student ------------------------------------


def _matched_tables(seed: int, noise: float = 0.0):
    """Student tables S and weight W with T = S Wᵀ (+ noise on the student side)."""
    g = torch.Generator().manual_seed(seed)
    s_users = torch.randn(N_USERS, D_S, generator=g, dtype=torch.float64)
    s_items = torch.randn(N_ITEMS, D_S, generator=g, dtype=torch.float64)
    weight = torch.randn(D_T, D_S, generator=g, dtype=torch.float64)
    t_users, t_items = s_users @ weight.T, s_items @ weight.T
    s_users = s_users + noise * torch.randn(N_USERS, D_S, generator=g, dtype=torch.float64)
    s_items = s_items + noise * torch.randn(N_ITEMS, D_S, generator=g, dtype=torch.float64)
    return s_users, s_items, t_users, t_items, weight


def _freqd_with_weight(settings, s_users, s_items, t_users, t_items, weight):
    distiller, student = make_freqd({"freqd_student_signal": "raw", **settings}, s_users, s_items, t_users, t_items)
    with torch.no_grad():
        distiller.projector.linear.weight.copy_(weight)
        if distiller.projector.linear.bias is not None:
            distiller.projector.linear.bias.zero_()
    return distiller, student


def _independent_draws_loss(graph, s_users, s_items, t_users, t_items, weight, batch, seed):
    """What the loss would be if teacher and student drew their edges independently (test power)."""
    filt = PolynomialFilter.first_order(0.5)
    gen = [torch.Generator().manual_seed(seed + j) for j in range(2)]
    total = 0.0
    for a, s, t, rows in _graph_rows(graph, s_users @ weight.T, s_items @ weight.T, t_users, t_items, batch):
        csr = _dense_csr(normalise(a))
        fs = filter_rows(csr, filt, rows, s, keep_prob=0.5, generator=gen[0])
        ft = filter_rows(csr, filt, rows, t, keep_prob=0.5, generator=gen[1])
        total += float(((fs - ft) ** 2).sum())
    return total


def _graph_rows(graph, p_users, p_items, t_users, t_items, batch):
    users = torch.unique(batch["user_id"])
    items = torch.cat([torch.unique(batch["item_id"]), torch.unique(batch["neg_item_id"])])
    graphs = reference_graphs(graph)
    if graph == "bipartite":
        return [(graphs[0], torch.cat([p_users, p_items]), torch.cat([t_users, t_items]),
                 torch.cat([users, items + N_USERS]))]
    return [(graphs[0], p_users, t_users, users), (graphs[1], p_items, t_items, items)]


@pytest.mark.parametrize("proj", ["linear", "linear_bias"])
@pytest.mark.parametrize("dist_kind", ["mse", "cosine"])
@pytest.mark.parametrize("graph", ["bipartite", "cooccurrence"])
def test_dropout_draw_is_shared_by_teacher_and_student(graph, dist_kind, proj):
    """P(S) = T exactly: every dropout step gives loss 0 (independent draws would not)."""
    s_users, s_items, t_users, t_items, weight = _matched_tables(6)
    settings = {"freqd_graph": graph, "freqd_distance": dist_kind, "freqd_keep_prob": 0.5,
                **FILTERS["first0.5"][0], **PROJECTORS[proj]}
    distiller, student = _freqd_with_weight(settings, s_users, s_items, t_users, t_items, weight)
    batch = batch_of(BATCH)
    with torch.no_grad():
        for seed in range(15):
            torch.manual_seed(seed)
            assert abs(float(distiller(batch, StepTables.of(student)))) < 1e-12
    assert min(_independent_draws_loss(graph, s_users, s_items, t_users, t_items, weight, batch, 100 * s)
               for s in range(5)) > 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("graph", ["bipartite", "cooccurrence"])
def test_dropout_loss_mean_matches_the_shared_draw_expectation(graph):
    """Mean over steps of FreqD's MSE loss under dropout vs the exact expectation of a shared draw.

    First order, row e, R = P(S) − T:
    E‖[H_drop R]_e‖² = ‖[H R]_e‖² + α²(1 − p)/p Σ_j Â_ej² ‖r_j‖².
    Independent teacher/student draws would add α²(1 − p)/p Σ_j Â_ej² (‖P(S)_j‖² + ‖T_j‖²) instead,
    far away here because the residual is small next to the tables.
    """
    alpha, keep_prob, steps = 0.5, 0.7, 200
    s_users, s_items, t_users, t_items, weight = _matched_tables(7, noise=0.2)
    settings = {"freqd_graph": graph, "freqd_distance": "mse", "freqd_keep_prob": keep_prob,
                **FILTERS["first0.5"][0], **PROJECTORS["linear"]}
    distiller, student = _freqd_with_weight(settings, s_users, s_items, t_users, t_items, weight)
    batch = batch_of(BATCH)
    n_triples = len(BATCH["user_id"])
    with torch.no_grad():
        losses = []
        for seed in range(steps):
            torch.manual_seed(1000 + seed)
            losses.append(float(distiller(batch, StepTables.of(student))))
    losses = np.array(losses)
    assert losses.std() > 0  # the draw changes from step to step

    users = torch.unique(batch["user_id"]).numpy()
    pos, neg = (torch.unique(batch[key]).numpy() for key in ("item_id", "neg_item_id"))
    p_users, p_items = (s_users @ weight.T).numpy(), (s_items @ weight.T).numpy()
    t_u, t_i = t_users.numpy(), t_items.numpy()
    var = alpha**2 * (1 - keep_prob) / keep_prob

    def expectations(a, p_tab, t_tab, rows):
        a_hat = normalise(a)
        h = np.eye(len(a)) - alpha * (np.eye(len(a)) - a_hat)
        res = p_tab - t_tab
        base = ((h @ res)[rows] ** 2).sum(1)
        shared = base + var * (a_hat[rows] ** 2) @ (res**2).sum(1)
        independent = base + var * (a_hat[rows] ** 2) @ ((p_tab**2).sum(1) + (t_tab**2).sum(1))
        return shared, independent

    graphs = reference_graphs(graph)
    if graph == "bipartite":
        p_all, t_all = np.vstack([p_users, p_items]), np.vstack([t_u, t_i])
        parts = [(expectations(graphs[0], p_all, t_all, users), 1.0),
                 (expectations(graphs[0], p_all, t_all, pos + N_USERS), 0.5),
                 (expectations(graphs[0], p_all, t_all, neg + N_USERS), 0.5)]
    else:
        parts = [(expectations(graphs[0], p_users, t_u, users), 1.0),
                 (expectations(graphs[1], p_items, t_i, pos), 0.5), (expectations(graphs[1], p_items, t_i, neg), 0.5)]
    shared = sum(w * e[0].sum() for e, w in parts) / n_triples
    independent = sum(w * e[1].sum() for e, w in parts) / n_triples
    tolerance = 5 * losses.std(ddof=1) / math.sqrt(steps)
    assert abs(losses.mean() - shared) < tolerance
    assert abs(independent - shared) > 10 * tolerance  # the test tells the two apart
