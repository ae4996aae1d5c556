"""Spectral identities (spec §4–§6, §16), co-occurrence graphs (§7.2) and α schedules (§12.1), in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from graph_cases import GRAPHS, make_graph, random_pairs

from freqd.graph import (
    PolynomialFilter,
    alpha_schedule,
    cooccurrence_adjacency,
    laplacian_eigh,
    per_frequency_losses,
    rayleigh_quotients,
)
from freqd.graph import cooccurrence as cooc_module
from freqd.testing import (
    dense_normalized_adjacency,
    exact_rayleigh_quotients,
    spectral_filter,
)

F = PolynomialFilter
FILTERS = {
    "fo-0.3": F.first_order(-0.3),
    "fo0": F.first_order(0.0),
    "fo0.2": F.first_order(0.2),
    "fo0.5": F.first_order(0.5),
    "fo0.7": F.first_order(0.7),
    "fo1": F.first_order(1.0),
    "so0.3": F.second_order(0.3),
    "so0.5": F.second_order(0.5),
    "quad": F.quadratic(1.0, -0.8, 0.15),
    "quad-odd": F.quadratic(0.5, 0.3, -0.4),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def residual(n: int, seed: int, d: int = 3) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64)


def rel_close(a: float, b: float, tol: float = 1e-10) -> bool:
    return abs(a - b) <= tol * max(abs(a), abs(b), 1e-300)


@pytest.mark.parametrize("kind, seed", GRAPHS)
def test_parseval_plain_fd_is_equal_weight(kind, seed):
    adj = make_graph(kind, seed)
    r = residual(adj.shape[0], seed)
    lam, losses = per_frequency_losses(adj, r)
    assert lam.shape == losses.shape == (adj.shape[0],)
    assert rel_close(float(losses.sum()), float(r.pow(2).sum()))
    assert torch.equal(F.first_order(0.0).apply(adj, r), r)


@pytest.mark.parametrize("name", FILTERS)
@pytest.mark.parametrize("kind, seed", GRAPHS)
def test_reweighting_identity_and_spectral_form(kind, seed, name):
    filt = FILTERS[name]
    adj = make_graph(kind, seed)
    r = residual(adj.shape[0], seed)
    hr = filt.apply(adj, r)
    lam, losses = per_frequency_losses(adj, r)
    assert rel_close(float(hr.pow(2).sum()), float((filt.weight(lam) * losses).sum()))
    torch.testing.assert_close(hr, spectral_filter(adj, r, filt.response), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(filt.apply(adj, r, symmetric=True), hr)


@pytest.mark.parametrize("name", FILTERS)
def test_adjacency_coefficients_expand_lambda(name):
    filt = FILTERS[name]
    b = filt.adjacency_coefficients()
    lam = np.linspace(0.0, 2.0, 11)
    np.testing.assert_allclose(sum(bk * (1.0 - lam) ** k for k, bk in enumerate(b)), filt.response(lam), atol=1e-14)
    np.testing.assert_allclose(filt.weight(lam), filt.response(lam) ** 2)


def test_named_constructors():
    assert F.first_order(0.3).adjacency_coefficients() == pytest.approx((0.7, 0.3))
    assert F.second_order(0.3).adjacency_coefficients() == pytest.approx((0.49, 0.42, 0.09))
    assert F.first_order(0.3).order == 1 and F.second_order(0.3).order == 2
    assert F.first_order(0.0).order == 0 and F.quadratic(1.0, -0.5, 0.0).order == 1
    assert F.quadratic(1.0, -0.8, 0.15).response(2.0) == pytest.approx(1.0 - 1.6 + 0.6)
    with pytest.raises(ValueError):
        F(())


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    "name, monotone",
    [("fo0.2", True), ("fo0.5", True), ("so0.3", True), ("so0.5", True), ("fo0.7", False), ("fo1", False)],
)
def test_filter_direction_on_bipartite_spectrum(seed, name, monotone):
    lam, _ = laplacian_eigh(make_graph("bipartite", seed))
    assert float(lam.max()) == pytest.approx(2.0, abs=1e-10)
    w = FILTERS[name].weight(lam)
    assert bool((w.diff() <= 1e-12).all()) is monotone


@pytest.mark.parametrize("seed", range(4))
def test_bipartite_spectrum_symmetric_about_one(seed):
    lam, _ = laplacian_eigh(make_graph("bipartite", seed))
    torch.testing.assert_close(lam, (2.0 - lam).flip(0), rtol=0, atol=1e-10)
    assert float(lam.min()) == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("kind, seed", GRAPHS)
@pytest.mark.parametrize("name", ["fo0.7", "so0.5", "quad"])
def test_padding_node_is_isolated(kind, seed, name):
    filt = FILTERS[name]
    adj = make_graph(kind, seed)
    dense = adj.to_dense()
    assert torch.isfinite(dense).all() and dense[0].abs().sum() == 0 and dense[:, 0].abs().sum() == 0
    x = residual(adj.shape[0], seed)
    hx = filt.apply(adj, x)
    torch.testing.assert_close(hx[0], filt.response(1.0) * x[0])  # isolated node: eigenvalue 1
    x2 = x.clone()
    x2[0] = 1e3
    torch.testing.assert_close(filt.apply(adj, x2)[1:], hx[1:], rtol=0, atol=1e-12)
    assert (laplacian_eigh(adj)[0] - 1.0).abs().min() < 1e-12


@pytest.mark.parametrize("kind, seed", GRAPHS)
def test_rayleigh_quotients_match_eigendecomposition(kind, seed):
    adj = make_graph(kind, seed)
    r = residual(adj.shape[0], seed)
    got = rayleigh_quotients(adj, r, powers=(0, 1, 2, 3, 4, 5))
    for p, value in exact_rayleigh_quotients(adj, r, powers=(0, 1, 2, 3, 4, 5)).items():
        assert rel_close(got[p], value, 1e-10)
    assert rayleigh_quotients(adj, torch.zeros_like(r)) == {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0}
    assert rayleigh_quotients(adj.to(torch.float32), r.float(), powers=(2,))[2] == pytest.approx(got[2], rel=1e-5)


# --- co-occurrence graphs -------------------------------------------------------------------------

# u0: {0,1,2}, u1: {2,3}, u2: {0,1}, u3: {3,4}, u4: none. Off-diagonal user counts: C02 = 2, C01 = 1,
# C13 = 1; C22 = 2 ties with C20 = 2 (a self-count is always a row maximum: it must still be excluded).
HAND_USERS = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3]
HAND_ITEMS = [0, 1, 2, 0, 2, 3, 0, 1, 3, 4]  # (0, 0) twice: duplicates count once


def weights(edges: dict[tuple[int, int], float], n: int) -> torch.Tensor:
    a = torch.zeros(n, n, dtype=torch.float64)
    for (i, j), w in edges.items():
        a[i, j] = a[j, i] = w
    return a


def test_cooccurrence_hand_example_k1_tie_and_one_sided_weights():
    # Top-1: u0 → 2 (count 2), u1 → 0 (tie 0/3 at count 1: smaller index), u2 → 0 (not itself), u3 → 1.
    adj = cooccurrence_adjacency(torch.tensor(HAND_USERS), torch.tensor(HAND_ITEMS), 5, 5, k=1, dtype=torch.float64)
    expected = dense_normalized_adjacency(weights({(0, 2): 1.0, (0, 1): 0.5, (1, 3): 0.5}, 5))
    torch.testing.assert_close(adj.to_dense(), expected, rtol=0, atol=1e-15)


def test_cooccurrence_hand_example_k2_mutual_and_short_rows():
    # Top-2: u0 → {2, 1}, u1 → {0, 3}, u2 → {0} only, u3 → {1} only: every pair is mutual (weight 1).
    adj = cooccurrence_adjacency(np.array(HAND_USERS), np.array(HAND_ITEMS), 5, 5, k=2, dtype=torch.float64)
    expected = dense_normalized_adjacency(weights({(0, 2): 1.0, (0, 1): 1.0, (1, 3): 1.0}, 5))
    torch.testing.assert_close(adj.to_dense(), expected, rtol=0, atol=1e-15)


def brute_force_cooccurrence(users, items, n_rows, n_cols, k, side, tie_seed=None) -> torch.Tensor:
    r = torch.zeros(n_rows, n_cols, dtype=torch.float64)
    r[users, items] = 1.0
    c = r @ r.T if side == "user" else r.T @ r
    n = c.shape[0]
    rank = np.arange(n) if tie_seed is None else np.random.default_rng(tie_seed).permutation(n)
    a = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        cands = sorted((-float(c[i, j]), rank[j], j) for j in range(n) if j != i and c[i, j] > 0)
        for _, _, j in cands[:k]:
            a[i, j] = 1.0
    return dense_normalized_adjacency((a + a.T) / 2)


@pytest.mark.parametrize("side", ["user", "item"])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("seed", range(3))
def test_cooccurrence_matches_brute_force_and_chunking(monkeypatch, seed, k, side):
    users, items = random_pairs(seed, 15, 12, 60)
    expected = brute_force_cooccurrence(users, items, 15, 12, k, side)
    got = cooccurrence_adjacency(users, items, 15, 12, k=k, side=side, dtype=torch.float64)
    torch.testing.assert_close(got.to_dense(), expected, rtol=0, atol=1e-14)
    monkeypatch.setattr(cooc_module, "_WORK_BUDGET", 7)  # many chunks, some a single row
    chunked = cooccurrence_adjacency(users, items, 15, 12, k=k, side=side, dtype=torch.float64)
    torch.testing.assert_close(chunked.to_dense(), expected, rtol=0, atol=1e-14)
    other = "item" if side == "user" else "user"
    swapped = cooccurrence_adjacency(items, users, 12, 15, k=k, side=other, dtype=torch.float64)
    torch.testing.assert_close(swapped.to_dense(), expected, rtol=0, atol=1e-14)
    shuffled = cooccurrence_adjacency(users, items, 15, 12, k=k, side=side, dtype=torch.float64, tie_seed=seed)
    expected_shuffled = brute_force_cooccurrence(users, items, 15, 12, k, side, tie_seed=seed)
    torch.testing.assert_close(shuffled.to_dense(), expected_shuffled, rtol=0, atol=1e-14)


def test_cooccurrence_validation_and_empty_graph():
    with pytest.raises(ValueError, match="side"):
        cooccurrence_adjacency([0], [0], 2, 2, side="users")
    with pytest.raises(ValueError, match="k must"):
        cooccurrence_adjacency([0], [0], 2, 2, k=0)
    with pytest.raises(ValueError, match="item ids"):
        cooccurrence_adjacency([0], [2], 2, 2)
    adj = cooccurrence_adjacency([0, 1], [0, 1], 3, 2)  # no co-occurrence at all
    assert adj.shape == (3, 3) and adj.values().numel() == 0 and adj.dtype == torch.float32


# --- curriculum schedules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, values",
    [
        ("const", (0.5, 0.5, 0.5, 0.5)),
        ("cos", (0.5, 0.25, 0.0, 0.0)),
        ("linear", (0.5, 0.25, 0.0, 0.0)),
        ("reverse", (0.0, 0.25, 0.5, 0.5)),
    ],
)
def test_alpha_schedule_values(kind, values):
    got = tuple(alpha_schedule(kind, t, 0.5, length=10) for t in (0, 5, 10, 25))
    assert got == pytest.approx(values, abs=1e-15)


def test_alpha_schedule_shapes_and_errors():
    assert alpha_schedule("cos", 2, 0.5, -0.2, 8) == pytest.approx(-0.2 + 0.7 * (1 + math.cos(math.pi / 4)) / 2)
    assert alpha_schedule("linear", 2, 0.5, -0.2, 8) == pytest.approx(0.5 - 0.7 / 4)
    assert alpha_schedule("reverse", 2, 0.5, length=8) == pytest.approx(0.5 * (1 - math.cos(math.pi / 4)) / 2)
    assert alpha_schedule("const", 3, 0.2) == 0.2
    with pytest.raises(ValueError, match="unknown alpha schedule"):
        alpha_schedule("step", 0, 0.5, length=10)
    with pytest.raises(ValueError, match="length"):
        alpha_schedule("cos", 0, 0.5)
    with pytest.raises(ValueError, match="epoch"):
        alpha_schedule("linear", -1, 0.5, length=10)


# -- bipartite graphs through one SVD --------------------------------------------------------------
@pytest.mark.parametrize("n_users, n_items, n_pairs, seed", [(6, 15, 30, 0), (14, 5, 25, 1), (9, 9, 12, 2), (3, 30, 40, 3)])
def test_bipartite_spectrum_is_the_eigendecomposition(n_users, n_items, n_pairs, seed):
    """Against a dense eigendecomposition of L built from the dense twin of the adjacency: the same
    eigenvalues, and the same energy under every spectral weighting (sums that do not depend on
    how a repeated eigenvalue's eigenvectors are chosen)."""
    from freqd.graph import bipartite_edge_index, bipartite_frequency_energies, bipartite_spectrum, normalized_adjacency
    from freqd.testing import dense_bipartite_adjacency

    users, items = random_pairs(seed, n_users, n_items, n_pairs)
    dense = dense_bipartite_adjacency(users, items, n_users, n_items)
    edge_index = bipartite_edge_index(users, items, n_users)
    sparse = normalized_adjacency(edge_index, n_users + n_items, torch.ones(edge_index.shape[1], dtype=torch.float64))
    spectrum = bipartite_spectrum(sparse, n_users)
    lam_ref, vecs = laplacian_eigh(dense)
    assert torch.allclose(spectrum.eigenvalues, lam_ref, atol=1e-10)

    x = residual(n_users + n_items, seed, d=4)
    lam, energy = bipartite_frequency_energies(spectrum, x[:n_users], x[n_users:])
    ref_energy = (vecs.T @ x).pow(2).sum(1)
    assert lam.shape == energy.shape and bool((energy >= 0).all())
    for weight in (lambda v: torch.ones_like(v), lambda v: v, lambda v: v**2, lambda v: v**3,
                   lambda v: torch.exp(-3 * v), lambda v: (v < 0.6).double()):
        assert rel_close(float((weight(lam) * energy).sum()), float((weight(lam_ref) * ref_energy).sum()), 1e-9)


def test_bipartite_spectrum_refuses_an_edge_inside_one_side():
    from freqd.graph import bipartite_spectrum

    users, items = random_pairs(4, 8, 12, 30)
    user_graph = cooccurrence_adjacency(users, items, 8, 12, k=2, side="user", dtype=torch.float64)
    padded = torch.zeros(20, 20, dtype=torch.float64)
    padded[:8, :8] = user_graph.to_dense()
    with pytest.raises(ValueError, match="bipartite adjacency"):
        bipartite_spectrum(padded, 8)


def _bands_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "freqd_bands.py"
    spec = importlib.util.spec_from_file_location("freqd_bands", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_frequency_bands_of_the_diagnosis_script():
    """Band indices against a brute-force walk over the labels; λ = 1 is a band of its own."""
    bands = _bands_script()
    labels = bands.band_labels()
    assert labels == ["[0, 0.25)", "[0.25, 0.5)", "[0.5, 0.75)", "[0.75, 1)", "1", "(1, 1.25)",
                      "[1.25, 1.5)", "[1.5, 1.75)", "[1.75, 2]"]
    lam = torch.tensor([0.0, 0.1, 0.25, 0.49, 0.5, 0.99, 1.0, 1.0 + 1e-12, 1.01, 1.25, 1.6, 1.75, 2.0],
                       dtype=torch.float64)

    def brute(v: float) -> int:
        if abs(v - 1.0) <= 1e-9:
            return 4
        edges = bands.EDGES
        for b, (a, c) in enumerate(zip(edges, edges[1:])):
            if a <= v < c or (c == edges[-1] and v == c):
                return b if c <= 1.0 else b + 1
        raise AssertionError(v)

    assert bands.band_of(lam).tolist() == [brute(float(v)) for v in lam]


def test_captured_energy_known_answers():
    """A student whose tables are an exact linear image of the teacher's captures every band
    (residual 0); a zero student captures none (residual = teacher)."""
    from freqd.graph import bipartite_edge_index, bipartite_frequency_energies, bipartite_spectrum, normalized_adjacency

    bands = _bands_script()
    n_users, n_items = 7, 11
    users, items = random_pairs(5, n_users, n_items, 30)
    edge_index = bipartite_edge_index(users, items, n_users)
    adj = normalized_adjacency(edge_index, n_users + n_items, torch.ones(edge_index.shape[1], dtype=torch.float64))
    spectrum = bipartite_spectrum(adj, n_users)
    gen = torch.Generator().manual_seed(0)
    t_u, t_i = torch.randn(n_users, 6, generator=gen, dtype=torch.float64), torch.randn(n_items, 6, generator=gen, dtype=torch.float64)
    t_u[0], t_i[0] = 0.0, 0.0
    s_u, s_i = t_u @ torch.randn(6, 3, generator=gen, dtype=torch.float64), t_i @ torch.randn(6, 3, generator=gen, dtype=torch.float64)
    lift = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    t_u, t_i = s_u @ lift, s_i @ lift  # the teacher is a linear image of the student
    lam, t_energy = bipartite_frequency_energies(spectrum, t_u, t_i)
    _, r_energy = bipartite_frequency_energies(spectrum, t_u - bands.read_out(s_u, t_u), t_i - bands.read_out(s_i, t_i))
    assert float(r_energy.sum()) < 1e-20 * float(t_energy.sum())
    zero_u, zero_i = torch.zeros_like(s_u), torch.zeros_like(s_i)
    _, z_energy = bipartite_frequency_energies(spectrum, t_u - bands.read_out(zero_u, t_u), t_i - bands.read_out(zero_i, t_i))
    assert torch.allclose(z_energy, t_energy, rtol=1e-12, atol=1e-14)
