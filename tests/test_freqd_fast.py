"""FreqD's fast options against independent references: sampled neighbour tables and the ranked teacher.

References are dense: a matrix polynomial in the (sampled) adjacency, the method's cosine/MSE
written out row by row, NumPy's SVD for the teacher's principal subspace.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from recbole.data import create_dataset
from recbole.data.interaction import Interaction
from recbole.utils import init_seed

from freqd.checkpoints import load_teacher
from freqd.config import Config
from freqd.distillers import FreqD, FreqDSettings, StepTables
from freqd.evaluation import build_dataloaders
from freqd.graph import PolynomialFilter, sample_neighbors, sampled_filter_rows
from freqd.models import BPR

QUIET = {"show_progress": False, "state": "ERROR", "use_gpu": False}


def _csr(dense: np.ndarray) -> torch.Tensor:
    return torch.tensor(dense, dtype=torch.float32).to_sparse_csr()


def _star_and_path() -> np.ndarray:
    """Node 0 joined to 1..6 (degree 6), a path 6-7-8, weights 1..9: known degrees 6, 1, 2, 1."""
    a = np.zeros((9, 9))
    edges = [(0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (0, 6), (6, 7), (7, 8)]
    for w, (i, j) in enumerate(edges, start=1):
        a[i, j] = a[j, i] = w
    return a


def test_wide_table_is_the_adjacency_itself():
    a = _star_and_path()
    table = sample_neighbors(_csr(a), width=6)
    np.testing.assert_allclose(table.to_dense(9).numpy(), a)
    assert (table.index[1] == torch.tensor([0, -1, -1, -1, -1, -1])).all()
    assert float(table.weight[1, 1:].abs().sum()) == 0.0


@pytest.mark.slow
def test_narrow_table_is_unbiased_and_keeps_width_entries():
    a = _star_and_path()
    generator = torch.Generator().manual_seed(0)
    draws = [sample_neighbors(_csr(a), width=2, generator=generator) for _ in range(4000)]
    # Node 0 (degree 6) keeps exactly 2 draws, each weighted by its row sum / 2.
    assert all(int((d.index[0] >= 0).sum()) == 2 for d in draws[:50])
    np.testing.assert_allclose(draws[0].weight[0].numpy(), [a[0].sum() / 2] * 2)
    # Low-degree rows are exact in every draw; node 0's row is right only on average.
    np.testing.assert_allclose(draws[7].to_dense(9).numpy()[1:], a[1:])
    mean = np.mean([d.to_dense(9).numpy() for d in draws], axis=0)
    p = a[0] / a[0].sum()
    tolerance = 4 * a[0].sum() * np.sqrt(p * (1 - p) / (2 * len(draws)))  # 4 standard errors per entry
    assert np.all(np.abs(mean[0] - a[0]) <= tolerance + 1e-9)
    assert len({tuple(d.index[0].tolist()) for d in draws[:50]}) > 1


def test_negative_weights_and_bad_width_are_refused():
    with pytest.raises(ValueError, match="nonnegative"):
        sample_neighbors(_csr(-_star_and_path()), width=2)
    with pytest.raises(ValueError, match="width must be >= 1"):
        sample_neighbors(_csr(_star_and_path()), width=0)


@pytest.mark.parametrize("coefficients", [(1.0, -0.5), (1.0, -0.6, 0.09)])
def test_sampled_filter_equals_dense_polynomial_of_the_sampled_matrix(coefficients):
    """Same graph as one table (same side) and as a bipartite pair of tables (flip)."""
    rng = np.random.default_rng(0)
    n_u, n_i = 7, 5
    r = (rng.random((n_u, n_i)) < 0.5).astype(float)
    r[0, 0] = 1.0
    a = np.block([[np.zeros((n_u, n_u)), r], [r.T, np.zeros((n_i, n_i))]])
    deg = a.sum(1)
    inv = (deg > 0) / np.sqrt(np.maximum(deg, 1.0))
    a_hat = inv[:, None] * a * inv[None, :]
    table = sample_neighbors(_csr(a_hat), width=2, generator=torch.Generator().manual_seed(3))
    a_s = table.to_dense(n_u + n_i).double().numpy()
    filt = PolynomialFilter(coefficients)
    lap = np.eye(n_u + n_i) - a_s
    h = sum(c * np.linalg.matrix_power(lap, k) for k, c in enumerate(coefficients))
    x = rng.standard_normal((n_u + n_i, 3))
    expected = h @ x
    rows = torch.tensor([0, 3, 9, 11, 3])
    x_t = torch.tensor(x, dtype=torch.float64)
    one_table = sampled_filter_rows(filt, rows, [x_t], [table])
    np.testing.assert_allclose(one_table.numpy(), expected[rows.numpy()], atol=1e-10)
    tables = [x_t[:n_u], x_t[n_u:]]
    sides = [table.split(0, n_u, n_u), table.split(n_u, n_u + n_i, 0)]
    users = sampled_filter_rows(filt, torch.tensor([0, 3, 6]), tables, sides, side=0, flip=True)
    items = sampled_filter_rows(filt, torch.tensor([2, 4]), tables, sides, side=1, flip=True)
    np.testing.assert_allclose(users.numpy(), expected[[0, 3, 6]], atol=1e-10)
    np.testing.assert_allclose(items.numpy(), expected[[n_u + 2, n_u + 4]], atol=1e-10)


# -- FreqD on ml-100k ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def setup(bpr_teacher_32):
    """The shared 32-d BPR teacher and an 8-d student's config and loaders."""
    config = Config(model="BPR", dataset="ml-100k", config_dict={**QUIET, "embedding_size": 8})
    init_seed(config["seed"], True)
    train = build_dataloaders(config, create_dataset(config))[0]
    return bpr_teacher_32, config, train


def _distiller(setup, **settings):
    checkpoint, config, train = setup
    for key in FreqDSettings.keys():
        config[key] = None
    config["freqd_neighbors"] = 0  # exact unless a test asks for sampling
    # The shared bias-free linear projector unless a test asks for another (its references assume it).
    config["projector"], config["projector_per_entity"], config["freqd_filter_first"] = "linear", False, False
    for key, value in settings.items():
        config[key] = value
    torch.manual_seed(0)
    teacher = load_teacher(checkpoint, config, train._dataset)
    student = BPR(config, train._dataset)
    with torch.no_grad():  # a trained-looking student, not N(0, small) noise
        student.user_embedding.weight.normal_()
        student.item_embedding.weight.normal_()
    return FreqD(config, teacher, student, train._dataset), student, train._dataset


def _batch(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Interaction({"user_id": torch.randint(1, 944, (n,), generator=g),
                        "item_id": torch.randint(1, 1683, (n,), generator=g),
                        "neg_item_id": torch.randint(1, 1683, (n,), generator=g)})


def _dense_loss(dataset, student, teacher_users, teacher_items, weight, alpha, batch, distance, adjacency=None,
                project=None):
    """The FreqD batch loss from dense H = I − αL on the bipartite graph, built from the interactions.

    ``weight`` maps the student's d_S to the projector's output; ``adjacency``: replaces Â (a sample);
    ``project(x, side)``: instead of ``weight``, any projector of users (side 0) and items (side 1),
    applied after filtering.
    """
    inter = dataset.inter_feat
    users, items = inter["user_id"].numpy(), inter["item_id"].numpy()
    n_u, n_i = student.n_users, student.n_items
    a = np.zeros((n_u + n_i, n_u + n_i))
    np.add.at(a, (users, items + n_u), 1.0)
    np.add.at(a, (items + n_u, users), 1.0)
    deg = a.sum(1)
    inv = (deg > 0) / np.sqrt(np.maximum(deg, 1.0))
    a_hat = inv[:, None] * a * inv[None, :]
    eye = np.eye(n_u + n_i)
    h_t = torch.tensor(eye - alpha * (eye - a_hat))
    h_s = h_t if adjacency is None else torch.tensor(eye - alpha * (eye - adjacency))
    s_all = torch.cat([student.user_embedding.weight, student.item_embedding.weight]).double()
    t_all = torch.cat([teacher_users, teacher_items]).double()
    if project is None:
        hs = h_s @ s_all @ weight.double().T
    else:
        filtered = h_s @ s_all
        hs = torch.cat([project(filtered[:n_u], 0), project(filtered[n_u:], 1)])
    ht = h_t @ t_all
    groups = [(torch.unique(batch["user_id"]), 1.0), (torch.unique(batch["item_id"]) + n_u, 0.5),
              (torch.unique(batch["neg_item_id"]) + n_u, 0.5)]
    total = 0.0
    for rows, w in groups:
        p, z = hs[rows], ht[rows]
        d = ((p - z) ** 2).sum(1) if distance == "mse" else 1 - (p * z).sum(1) / (p.norm(dim=1) * z.norm(dim=1))
        total = total + w * d.sum()
    return total / len(batch["user_id"])


@pytest.mark.slow
@pytest.mark.parametrize("distance", ["cosine", "mse"])
def test_wide_neighbour_table_gives_the_exact_loss_and_gradient(setup, distance):
    distiller, student, dataset = _distiller(setup, freqd_neighbors=800, freqd_distance=distance)
    distiller.on_epoch_start(0, student)
    batch = _batch()
    loss = distiller(batch, StepTables.of(student))
    loss.backward()
    weight = distiller.projector.linear.weight
    grad = student.user_embedding.weight.grad.clone()
    student.zero_grad()
    reference = _dense_loss(dataset, student, distiller.t_users, distiller.t_items, weight, 0.5, batch, distance)
    reference.backward()
    assert float(loss.detach()) == pytest.approx(float(reference), rel=1e-5)
    torch.testing.assert_close(grad, student.user_embedding.weight.grad.float(), rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_narrow_table_is_the_loss_of_its_own_sampled_graph(setup):
    distiller, student, dataset = _distiller(setup, freqd_neighbors=4)
    distiller.on_epoch_start(3, student)
    batch = _batch(seed=1)
    n_u = student.n_users
    users, items = distiller._neighbors[0]
    # Rebuild the sampled Â_s as one dense matrix from the two sides' tables.
    n = n_u + student.n_items
    a_s = np.zeros((n, n))
    for table, offset, col_offset in ((users, 0, n_u), (items, n_u, 0)):
        rows = np.repeat(np.arange(table.index.shape[0]) + offset, table.width)
        cols, w = table.index.reshape(-1).numpy(), table.weight.reshape(-1).double().numpy()
        keep = cols >= 0
        np.add.at(a_s, (rows[keep], cols[keep] + col_offset), w[keep])
    assert (a_s > 0).sum(1).max() <= 4
    reference = _dense_loss(dataset, student, distiller.t_users, distiller.t_items,
                            distiller.projector.linear.weight, 0.5, batch, "cosine", adjacency=a_s)
    assert float(distiller(batch, StepTables.of(student)).detach()) == pytest.approx(float(reference), rel=1e-5)
    # Same (seed, epoch) → same draw; another epoch → another draw.
    again, _, _ = _distiller(setup, freqd_neighbors=4)
    again.on_epoch_start(3, student)
    assert torch.equal(again._neighbors[0][1].index, items.index)
    again.on_epoch_start(4, student)
    assert not torch.equal(again._neighbors[0][1].index, items.index)


@pytest.mark.slow
def test_ranked_teacher_is_the_top_principal_subspace_and_the_loss_is_exact(setup):
    rank = 12
    distiller, student, dataset = _distiller(setup, freqd_teacher_rank=rank)
    basis = distiller.teacher_basis.double()
    torch.testing.assert_close(basis.T @ basis, torch.eye(rank, dtype=torch.float64), atol=1e-5, rtol=0)
    # NumPy's SVD of the filtered teacher [H·T] (dense H from the interactions) spans the same subspace.
    eye_users = torch.eye(student.n_users + student.n_items, dtype=torch.float64)
    inter = dataset.inter_feat
    n_u = student.n_users
    a = np.zeros((len(eye_users), len(eye_users)))
    np.add.at(a, (inter["user_id"].numpy(), inter["item_id"].numpy() + n_u), 1.0)
    a = a + a.T
    deg = a.sum(1)
    inv = (deg > 0) / np.sqrt(np.maximum(deg, 1.0))
    h = 0.5 * np.eye(len(a)) + 0.5 * inv[:, None] * a * inv[None, :]
    z = h @ torch.cat([distiller.t_users, distiller.t_items]).double().numpy()
    v = np.linalg.svd(z, full_matrices=False)[2][:rank].T
    np.testing.assert_allclose(basis.numpy() @ basis.numpy().T, v @ v.T, atol=1e-4)
    # The loss is the dense cosine with the projector W = V·M into the teacher space.
    batch = _batch(seed=2)
    full_weight = basis @ distiller.projector.linear.weight.double()
    reference = _dense_loss(dataset, student, distiller.t_users, distiller.t_items, full_weight, 0.5, batch, "cosine")
    assert float(distiller(batch, StepTables.of(student)).detach()) == pytest.approx(float(reference), rel=1e-5)
    assert "rayleigh_1" in distiller.spectral_energy(student)


def _projector_fn(distiller, basis=None):
    """The distiller's per-entity projectors as a function of (rows, side), in float64 (then mapped by V)."""
    def project(x, side):
        module = distiller.projector_of(side)
        out = module.double()(x)
        module.float()
        return out if basis is None else out @ basis.T
    return project


@pytest.mark.slow
@pytest.mark.parametrize("distance", ["cosine", "mse"])
def test_filter_first_mlp_with_wide_neighbour_table_is_the_exact_per_entity_loss(setup, distance):
    """freqd_filter_first + MLP per entity + m ≥ max degree: the dense P_side(H·S) loss, value and gradient."""
    distiller, student, dataset = _distiller(setup, freqd_neighbors=800, freqd_distance=distance,
                                             projector="mlp", projector_hidden=16, projector_per_entity=True,
                                             freqd_filter_first=True)
    assert distiller.n_neighbors == 800 and distiller.item_projector is not None
    distiller.on_epoch_start(0, student)
    batch = _batch(seed=4)
    loss = distiller(batch, StepTables.of(student))
    loss.backward()
    grad = student.item_embedding.weight.grad.clone()
    student.zero_grad()
    reference = _dense_loss(dataset, student, distiller.t_users, distiller.t_items, None, 0.5, batch, distance,
                            project=_projector_fn(distiller))
    reference.backward()
    assert float(loss.detach()) == pytest.approx(float(reference), rel=1e-5)
    torch.testing.assert_close(grad, student.item_embedding.weight.grad.float(), rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_ranked_teacher_with_an_mlp_projector_is_exact_for_the_constrained_projector(setup):
    """P = V·M with M an MLP into r coordinates: the loss equals the dense cosine in the full teacher space."""
    distiller, student, dataset = _distiller(setup, freqd_teacher_rank=10, projector="mlp", projector_hidden=16,
                                             projector_per_entity=True, freqd_filter_first=True)
    # The fast defaults apply once the student is filtered first (here pinned to exact neighbourhoods).
    settings = FreqDSettings(projector="mlp", freqd_filter_first=True)
    assert (settings.neighbors(), settings.teacher_rank(400)) == (4, 64)
    assert FreqDSettings(projector="mlp", freqd_filter_first=False).neighbors() == 0
    assert distiller.projector.net[-1].out_features == 10
    batch = _batch(seed=5)
    reference = _dense_loss(dataset, student, distiller.t_users, distiller.t_items, None, 0.5, batch, "cosine",
                            project=_projector_fn(distiller, distiller.teacher_basis.double()))
    assert float(distiller(batch, StepTables.of(student)).detach()) == pytest.approx(float(reference), rel=1e-5)


@pytest.mark.parametrize("settings, message", [
    ({"freqd_teacher_rank": 33}, "exceeds the teacher's size 32"),
    ({"freqd_neighbors": 4, "projector": "mlp"}, "freqd_filter_first: True"),
    ({"freqd_teacher_rank": 4, "freqd_keep_prob": 0.5}, "no edge dropout"),
    ({"freqd_neighbors": 4, "freqd_keep_prob": 0.5}, "no edge dropout"),
    ({"freqd_neighbors": -1}, "freqd_neighbors=-1: Input should be greater than or equal to 0"),
])
def test_bad_fast_settings_are_refused(setup, settings, message):
    with pytest.raises(ValueError, match=message):
        _distiller(setup, **settings)


@pytest.mark.slow
def test_row_budget_is_an_unbiased_subsample_of_the_full_loss(setup):
    """Mean over many draws of the budgeted loss → the full loss; each draw distils ≤ budget rows."""
    full, student, _ = _distiller(setup, freqd_teacher_rank=8)
    budgeted, _, _ = _distiller(setup, freqd_teacher_rank=8, freqd_kd_rows=20)
    batch = _batch(n=40, seed=3)
    with torch.no_grad():
        exact = float(full(batch, StepTables.of(student)))
        torch.manual_seed(0)
        draws = torch.tensor([float(budgeted(batch, StepTables.of(student))) for _ in range(3000)])
    groups = [torch.unique(batch[k]) for k in ("user_id", "item_id", "neg_item_id")]
    kept, weights = budgeted._row_budget(groups, [1.0, 0.5, 0.5])
    assert sum(len(g) for g in kept) <= 21 and sum(len(g) for g in groups) > 100
    assert [w / base * len(k) for w, base, k in zip(weights, (1.0, 0.5, 0.5), kept)] == pytest.approx(
        [len(g) for g in groups])
    assert float(draws.std()) > 0
    assert float(draws.mean()) == pytest.approx(exact, abs=4 * float(draws.std()) / 3000 ** 0.5)


def test_defaults_sample_four_neighbours_and_rank_64_only_where_they_apply():
    s = FreqDSettings()
    assert (s.neighbors(), s.teacher_rank(300), s.teacher_rank(64)) == (4, 64, 0)
    linear = {"projector": "linear", "freqd_filter_first": False}
    assert (FreqDSettings(**linear).neighbors(), FreqDSettings(**linear).teacher_rank(300)) == (4, 64)
    for other in ({"freqd_filter_first": False}, {**linear, "projector_bias": True}, {"freqd_keep_prob": 0.5}):
        assert (FreqDSettings(**other).neighbors(), FreqDSettings(**other).teacher_rank(300)) == (0, 0)
    assert (FreqDSettings(freqd_neighbors=0, freqd_teacher_rank=0).neighbors(),
            FreqDSettings(freqd_neighbors=0, freqd_teacher_rank=0).teacher_rank(300)) == (0, 0)


@pytest.mark.slow
def test_filtered_teacher_is_recomputed_only_when_the_filter_changes(setup):
    const, student, _ = _distiller(setup)
    const.on_epoch_start(0, student)
    first = const._teacher_filtered()
    const.on_epoch_start(1, student)
    assert const._teacher_filtered() is first
    scheduled, student, _ = _distiller(setup, freqd_schedule="cos", freqd_alpha_end=0.0, freqd_schedule_epochs=4)
    scheduled.on_epoch_start(0, student)
    first = scheduled._teacher_filtered()
    scheduled.on_epoch_start(1, student)
    again = scheduled._teacher_filtered()
    assert again is not first and not torch.allclose(again[0][0], first[0][0])
