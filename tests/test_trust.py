"""``freqd trust``: attack, perturbation and fairness metrics against brute-force references, the
specification's acceptance checks, and the report of a finished comparison folder."""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest
import torch
import yaml

from freqd.trust import fairness, privacy, robustness

pytestmark = pytest.mark.usefixtures("one_thread")


# -- fairness ------------------------------------------------------------------------------------
def gini_by_pairs(counts) -> float:
    """Gini as the mean absolute difference over all ordered pairs / (2 · mean): an independent definition."""
    c = np.asarray(counts, dtype=float)
    return float(np.abs(c[:, None] - c[None, :]).sum() / (2 * len(c) ** 2 * c.mean()))


@pytest.mark.parametrize("n", [1, 2, 7, 50])
def test_gini_is_zero_for_uniform_and_n_minus_one_over_n_for_a_single_item(n):
    assert fairness.gini(np.full(n, 3)) == pytest.approx(0.0, abs=1e-12)
    single = np.zeros(n)
    single[n // 2] = 5
    assert fairness.gini(single) == pytest.approx((n - 1) / n, abs=1e-12)


def test_gini_equals_the_mean_absolute_difference_definition():
    rng = np.random.default_rng(0)
    for _ in range(20):
        counts = rng.integers(0, 30, size=rng.integers(2, 40))
        if counts.sum() == 0:
            continue
        assert fairness.gini(counts) == pytest.approx(gini_by_pairs(counts), abs=1e-12)


def test_gini_refuses_negative_or_empty_exposure():
    with pytest.raises(ValueError, match="non-negative"):
        fairness.gini(np.array([1, -1]))
    with pytest.raises(ValueError, match="non-empty"):
        fairness.gini(np.array([]))


def test_lorenz_curve_runs_from_origin_to_one_and_is_the_diagonal_for_uniform_exposure():
    x, y = fairness.lorenz(np.full(4, 2))
    np.testing.assert_allclose(x, y)
    x, y = fairness.lorenz(np.array([0, 0, 0, 9]))
    assert (x[0], y[0], x[-1], y[-1]) == (0, 0, 1, 1) and y[-2] == 0


def test_item_fairness_against_brute_force_loops():
    rng = np.random.default_rng(1)
    n_users, n_items, k = 30, 25, 5
    topk = np.stack([rng.choice(n_items, k, replace=False) for _ in range(n_users)])
    counts = rng.integers(0, 100, n_items)
    rows = rng.integers(0, n_users, 200)
    items = rng.integers(0, n_items, 200)
    got = fairness.item_fairness(topk, rows, items, counts, head_fraction=0.2, deciles=5)
    n_head = math.ceil(0.2 * n_items)
    head = set(sorted(range(n_items), key=lambda i: (-counts[i], i))[:n_head])
    hits = [items[t] in set(topk[rows[t]]) for t in range(len(rows))]
    head_hits = [h for h, i in zip(hits, items) if i in head]
    tail_hits = [h for h, i in zip(hits, items) if i not in head]
    assert got["head_recall"] == pytest.approx(np.mean(head_hits))
    assert got["tail_recall"] == pytest.approx(np.mean(tail_hits))
    assert got["aplt"] == pytest.approx(np.mean([sum(i not in head for i in row) / k for row in topk]))
    assert got["coverage"] == pytest.approx(len(set(topk.ravel())) / n_items)
    exposure = [int((topk == i).sum()) for i in range(n_items)]
    assert got["gini"] == pytest.approx(gini_by_pairs(exposure))
    order = sorted(range(n_items), key=lambda i: (counts[i], i))
    decile_of = {i: d for d, group in enumerate(np.array_split(order, 5)) for i in group}
    per_decile = [np.mean([h for h, i in zip(hits, items) if decile_of[i] == d]) for d in range(5)
                  if any(decile_of[i] == d for i in items)]
    assert got["decile_recall_std"] == pytest.approx(np.std(per_decile))


def test_item_fairness_refuses_item_ids_outside_the_catalogue():
    with pytest.raises(ValueError, match="0..2"):
        fairness.item_fairness(np.array([[0, 3]]), np.array([0]), np.array([1]), np.array([1, 2, 3]))


def test_user_fairness_on_known_groups():
    ndcg = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    counts = np.arange(10)                       # the last two users are the 20% most active
    got = fairness.user_fairness(ndcg, counts, active_fraction=0.2, quantiles=5)
    assert got["ndcg_active"] == pytest.approx(0.95) and got["ndcg_inactive"] == pytest.approx(0.45)
    assert got["user_gap"] == pytest.approx(0.5)
    assert got["quintile_std"] == pytest.approx(np.std([0.15, 0.35, 0.55, 0.75, 0.95]))
    with pytest.raises(ValueError, match="align"):
        fairness.user_fairness(ndcg, counts[:3])


# -- privacy -------------------------------------------------------------------------------------
def auc_by_pairs(signal, member) -> float:
    """P(member's signal > non-member's) + ½ P(tie), over every pair: the Mann–Whitney definition."""
    pos, neg = signal[member], signal[~member]
    return float(((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum())
                 / (len(pos) * len(neg)))


def threshold_sweep(signal, member):
    """(FPR, TPR) of 'member iff signal ≥ t' for every threshold t, by enumeration."""
    points = [(0.0, 0.0)]
    for t in np.unique(signal):
        predicted = signal >= t
        points.append(((predicted & ~member).sum() / (~member).sum(), (predicted & member).sum() / member.sum()))
    return points


def test_attack_metrics_against_pair_counting_and_threshold_enumeration():
    rng = np.random.default_rng(2)
    for trial in range(10):
        n = 400
        member = rng.random(n) < 0.5
        signal = np.round(rng.normal(size=n) + 0.7 * member, 1 if trial % 2 else 6)  # with and without ties
        got = privacy.attack_metrics(signal, member)
        assert got["auc"] == pytest.approx(auc_by_pairs(signal, member), abs=1e-12)
        points = threshold_sweep(signal, member)
        assert got["advantage"] == pytest.approx(max(t - f for f, t in points), abs=1e-12)
        for level in privacy.LOW_FPRS:
            assert got[f"tpr@{level:g}"] == pytest.approx(max(t for f, t in points if f <= level), abs=1e-12)


def test_attack_metrics_need_both_classes():
    with pytest.raises(ValueError, match="both"):
        privacy.attack_metrics(np.arange(3.0), np.ones(3, dtype=bool))


def test_signals_from_scores_rank_and_calibration_by_brute_force():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(6, 9))
    scores[:, 0] = 99.0                       # the padding item: never ranked, never averaged
    items = rng.integers(1, 9, 6)
    got = privacy.signals_from_scores(scores, items)
    for r, item in enumerate(items):
        own = scores[r, item]
        assert got["score"][r] == own
        assert got["rank"][r] == -(1 + sum(scores[r, j] > own for j in range(1, 9)))
        assert got["calibrated"][r] == pytest.approx(own - scores[r, 1:].mean())


def test_signals_from_user_rows_match_brute_force_with_many_pairs_per_user_and_ties():
    rng = np.random.default_rng(4)
    scores = rng.integers(0, 4, size=(5, 12)).astype(np.float32)   # few values: ties everywhere
    scores[:, 0] = 99.0
    rows = np.sort(rng.integers(0, 5, 30))
    rows = rows[rows != 2]                                          # a user without pairs
    items = rng.integers(1, 12, len(rows))
    got = privacy.signals_from_user_rows(scores, rows, items)
    for p, (r, item) in enumerate(zip(rows, items)):
        own = float(scores[r, item])
        assert got["score"][p] == own
        assert got["rank"][p] == -(1 + sum(scores[r, j] > own for j in range(1, 12)))
        assert got["calibrated"][p] == pytest.approx(own - scores[r, 1:].astype(np.float64).mean())
    with pytest.raises(ValueError, match="grouped by user"):
        privacy.signals_from_user_rows(scores, rows[::-1], items)


def test_membership_sample_is_balanced_per_user_drawn_from_the_right_pairs_and_seeded():
    rng = np.random.default_rng(4)
    train = {(u, i) for u in range(20) for i in rng.choice(50, rng.integers(1, 12), replace=False)}
    test = {(u, i) for u in range(25) for i in rng.choice(50, rng.integers(1, 6), replace=False)} - train
    tu, ti = map(np.array, zip(*sorted(train)))
    eu, ei = map(np.array, zip(*sorted(test)))
    sample = privacy.membership_sample(tu, ti, eu, ei, seed=7)
    pairs = list(zip(sample.users.tolist(), sample.items.tolist()))
    assert len(set(pairs)) == len(pairs)
    for (u, i), m in zip(pairs, sample.member):
        assert ((u, i) in train) == bool(m) and ((u, i) in test) == (not m)
    for u in set(sample.users.tolist()):
        mine = sample.member[sample.users == u]
        n_train, n_test = sum(1 for p in train if p[0] == u), sum(1 for p in test if p[0] == u)
        assert mine.sum() == (~mine).sum() == min(n_train, n_test)
    assert set(sample.users.tolist()) == {u for u, _ in train} & {u for u, _ in test}
    again = privacy.membership_sample(tu, ti, eu, ei, seed=7)
    assert np.array_equal(again.items, sample.items)
    assert not np.array_equal(privacy.membership_sample(tu, ti, eu, ei, seed=8).items, sample.items)


def test_membership_sample_refuses_a_pair_in_both_sets():
    with pytest.raises(ValueError, match="both a training and a test pair"):
        privacy.membership_sample(np.array([1, 1]), np.array([2, 3]), np.array([1]), np.array([3]))


def train_mf(n_users, n_items, users, items, dim, steps, seed=0):
    """A BPR matrix factorisation trained directly (no regularisation), for the acceptance checks."""
    generator = torch.Generator().manual_seed(seed)
    u_table = torch.nn.Parameter(0.1 * torch.randn(n_users, dim, generator=generator))
    i_table = torch.nn.Parameter(0.1 * torch.randn(n_items, dim, generator=generator))
    optimiser = torch.optim.Adam([u_table, i_table], lr=0.05)
    u, i = torch.from_numpy(users), torch.from_numpy(items)
    for _ in range(steps):
        j = torch.randint(0, n_items, (len(u),), generator=generator)
        loss = torch.nn.functional.softplus(-(u_table[u] * (i_table[i] - i_table[j])).sum(1)).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return u_table.detach(), i_table.detach()


def random_split(seed, n_users=60, n_items=120, per_user=16):
    """Random interactions (nothing to generalise from), half of each user's for training, half held out."""
    rng = np.random.default_rng(seed)
    tu, ti, eu, ei = [], [], [], []
    for user in range(n_users):
        chosen = rng.choice(np.arange(1, n_items), per_user, replace=False)
        tu += [user] * (per_user // 2)
        ti += list(chosen[: per_user // 2])
        eu += [user] * (per_user // 2)
        ei += list(chosen[per_user // 2:])
    return (np.array(tu), np.array(ti), np.array(eu), np.array(ei)), n_users, n_items


def attack(users_table, items_table, split, seed=0):
    sample = privacy.membership_sample(*split, seed=seed)
    scores = (users_table[torch.from_numpy(sample.users)] @ items_table.T).numpy()
    return privacy.attack_metrics(privacy.signals_from_scores(scores, sample.items)["score"], sample.member)


def test_acceptance_a_model_that_memorises_its_training_set_is_exposed():
    split, n_users, n_items = random_split(0)
    users, items = train_mf(n_users, n_items, split[0], split[1], dim=256, steps=300)
    got = attack(users, items, split)
    assert got["auc"] > 0.95 and got["tpr@0.01"] > 0.3


def test_acceptance_an_untrained_model_leaks_nothing():
    aucs = []
    for seed in range(5):
        split, n_users, n_items = random_split(seed)
        generator = torch.Generator().manual_seed(seed)
        aucs.append(attack(torch.randn(n_users, 64, generator=generator), torch.randn(n_items, 64, generator=generator),
                           split)["auc"])
    assert abs(np.mean(aucs) - 0.5) < 0.03 and max(abs(a - 0.5) for a in aucs) < 0.08


# -- robustness ----------------------------------------------------------------------------------
def test_bpr_table_gradients_equal_the_closed_form():
    rng = np.random.default_rng(5)
    users, items = rng.normal(size=(7, 4)), rng.normal(size=(9, 4))
    u, i, j = rng.integers(0, 7, 50), rng.integers(0, 9, 50), rng.integers(0, 9, 50)
    gu, gi = robustness.bpr_table_gradients(torch.tensor(users), torch.tensor(items),
                                            (torch.tensor(u), torch.tensor(i), torch.tensor(j)), chunk=16)
    want_u, want_i = np.zeros_like(users), np.zeros_like(items)
    for a, b, c in zip(u, i, j):
        d = users[a] @ (items[b] - items[c])
        weight = -1.0 / (1.0 + math.exp(d)) / len(u)   # d/dd of log(1 + e^{-d}) = −σ(−d)
        want_u[a] += weight * (items[b] - items[c])
        want_i[b] += weight * users[a]
        want_i[c] -= weight * users[a]
    np.testing.assert_allclose(gu.numpy(), want_u, atol=1e-12)
    np.testing.assert_allclose(gi.numpy(), want_i, atol=1e-12)


def test_apr_moves_each_row_by_epsilon_raises_the_loss_and_is_the_identity_at_zero():
    rng = np.random.default_rng(6)
    users, items = torch.tensor(rng.normal(size=(7, 4))), torch.tensor(rng.normal(size=(9, 4)))
    triples = tuple(torch.tensor(rng.integers(1, n, 40)) for n in (7, 9, 9))
    grads = robustness.bpr_table_gradients(users, items, triples)
    directions = robustness.unit_rows(grads[0]), robustness.unit_rows(grads[1])
    same = robustness.perturb(users, items, directions, 0.0)
    assert torch.equal(same[0], users) and torch.equal(same[1], items)
    moved = robustness.perturb(users, items, directions, 0.01)
    for table, new, grad in ((users, moved[0], grads[0]), (items, moved[1], grads[1])):
        shifts = (new - table).norm(dim=1)
        touched = grad.norm(dim=1) > 0
        np.testing.assert_allclose(shifts[touched].numpy(), 0.01 * table[1:].norm(dim=1).mean().item(), rtol=1e-9)
        assert (shifts[~touched] == 0).all()

    def loss(tables):
        u, i, j = triples
        return torch.nn.functional.softplus(-(tables[0][u] * (tables[1][i] - tables[1][j])).sum(1)).mean()
    assert loss(moved) > loss((users, items))
    with pytest.raises(ValueError, match="non-negative"):
        robustness.perturb(users, items, directions, -1.0)


def test_apr_is_blind_to_the_scale_split_between_the_tables():
    rng = np.random.default_rng(9)
    users, items = torch.tensor(rng.normal(size=(7, 4))), torch.tensor(rng.normal(size=(9, 4)))
    triples = tuple(torch.tensor(rng.integers(1, n, 40)) for n in (7, 9, 9))

    def attacked_scores(u, i):
        grads = robustness.bpr_table_gradients(u, i, triples)
        moved = robustness.perturb(u, i, (robustness.unit_rows(grads[0]), robustness.unit_rows(grads[1])), 0.5)
        return moved[0] @ moved[1].T
    torch.testing.assert_close(attacked_scores(users * 4.0, items / 4.0), attacked_scores(users, items))


def test_mean_row_norm_skips_the_padding_row():
    assert robustness.mean_row_norm(torch.tensor([[100.0, 0.0], [0.0, 1.0], [0.0, 2.0]])) == pytest.approx(1.5)


def test_summary_averages_each_column_over_the_runs_that_have_it():
    from freqd.trust.report import cell, summarise

    rows = [{"model": "a", "label": "a", "kd": None, "seed": s, "dataset": "x", "d": 4, "kd_weight": None,
             "auc": 0.5 + 0.1 * s, **({"edge": 0.2} if s == 0 else {})} for s in range(3)]
    (entry,) = summarise(rows)
    assert entry["runs"] == 3 and entry["auc"]["n"] == 3 and entry["auc"]["mean"] == pytest.approx(0.6)
    assert entry["auc"]["std"] == pytest.approx(0.1)  # sample std of 0.5, 0.6, 0.7 (ddof 1), as the comparison's
    assert entry["edge"] == {"mean": 0.2, "std": 0.0, "n": 1}
    assert cell(entry, "edge", 2) == "0.20" and "±" in cell(entry, "auc", 2) and cell(entry, "nope") == "—"


# -- the report of a comparison folder -----------------------------------------------------------
@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """A finished tiny comparison (teacher, scratch and a KD arm, one seed) on ml-100k."""
    from freqd.compare import run_comparison

    folder = tmp_path_factory.mktemp("trust")
    config = {
        "title": "tiny trust", "dataset": "ml-100k",
        "overrides": {"epochs": 3, "eval_batch_size": 1_000_000, "use_gpu": False, "state": "ERROR",
                      "train_sampler": "fast"},
        "teacher": {"model": "BPR", "embedding_size": 32, "seed": 0},
        "student": {"model": "BPR", "embedding_size": 4},
        "seeds": [0], "control": "scratch",
        "arms": [{"name": "scratch"}, {"name": "kd", "label": "KD", "kd": "KD"}],
        "latency": {"enabled": False},
    }
    path = folder / "compare.yaml"
    path.write_text(yaml.safe_dump(config))
    cwd, omp = os.getcwd(), os.environ.get("OMP_NUM_THREADS")
    os.chdir(folder)
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        run_comparison(path, out=folder / "out", progress=False)
    finally:
        os.chdir(cwd)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = omp
    return folder


@pytest.mark.slow
def test_trust_report_of_a_comparison_folder(compared, tmp_path):
    from freqd.trust import TrustOptions, trust_report

    report = trust_report(compared / "out", out=tmp_path / "trust",
                          options=TrustOptions(epsilons=(0.0, 0.5), progress=False))
    assert [r["model"] for r in report["rows"]] == ["teacher", "scratch", "kd"]
    for name in ("trust.md", "trust.csv", "trust.json", "roc.png", "apr.png", "lorenz.png"):
        assert (tmp_path / "trust" / name).stat().st_size > 0
    stored = {json.loads((compared / "out" / "teacher.json").read_text())["metrics"]["ndcg@20"]}
    for row in report["rows"]:
        assert row["apr_drop_eps0"] == 0.0                         # acceptance: ε = 0 changes nothing
        assert row["apr_ndcg@20_clean"] == pytest.approx(row["ndcg@20"], abs=1e-6)  # the stored test NDCG
        assert 0 <= row["mia_score_auc"] <= 1 and 0 <= row["gini"] <= 1 and 0 < row["coverage"] <= 1
        assert row["apr_drop_eps0.5"] > 0
    assert report["rows"][0]["ndcg@20"] in stored
    assert report["sample"]["members"] * 2 == report["sample"]["pairs"]
    csv_header = (tmp_path / "trust" / "trust.csv").read_text().splitlines()[0].split(",")
    assert csv_header[:7] == ["model", "label", "kd", "seed", "dataset", "d", "kd_weight"]
    assert "| teacher | 1 |" in (tmp_path / "trust" / "trust.md").read_text()


@pytest.mark.slow
def test_trust_cli_writes_the_report_and_names_a_missing_folder(compared, tmp_path, capsys):
    from freqd.cli import main

    assert main(["trust", str(compared / "out"), "--out", str(tmp_path / "t"), "--parts", "fairness",
                 "--no-plots", "--no-progress"]) == 0
    assert "Gini" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["trust.csv", "trust.json", "trust.md"]
    assert main(["trust", str(tmp_path / "nowhere")]) == 2
    assert "no results.json" in capsys.readouterr().err
    assert main(["trust", str(compared / "out"), "--parts", "privacy,magic"]) == 2
    assert "magic" in capsys.readouterr().err
    assert main(["trust", str(compared / "out"), "--out", str(tmp_path / "u"), "--parts", "fairness", "--no-plots",
                 "--show_progress=False"]) == 0
    assert "trust:" not in capsys.readouterr().err  # RecBole's spelling turns the bar off too
    assert main(["trust", str(compared / "out"), "--show_progress=sometimes"]) == 2
    assert "--show_progress='sometimes' is invalid" in capsys.readouterr().err
    assert main(["trust", str(compared / "out"), "--epochs=3"]) == 2
    assert "no config overrides other than --show_progress, got ['epochs']" in capsys.readouterr().err


@pytest.mark.slow
def test_trust_names_a_missing_run(compared, tmp_path):
    from freqd.trust import TrustError, trust_report

    out = tmp_path / "out"
    shutil.copytree(compared / "out", out)
    (out / "arms" / "kd" / "s0.json").unlink()
    with pytest.raises(TrustError, match="s0.json"):
        trust_report(out, options=None)


@pytest.mark.slow
def test_a_teacher_given_by_checkpoint_is_audited_from_a_file_with_its_weights(compared, tmp_path, monkeypatch):
    """The comparison stores such a teacher by weights digest, not by its machine's path: trust loads the
    file results.json names or the one given, refuses other weights and names the missing file."""
    from freqd.compare import run_comparison
    from freqd.compare.config import ComparisonConfigError
    from freqd.trust import TrustError, TrustOptions, trust_report

    monkeypatch.chdir(tmp_path)
    original = compared / "out" / json.loads((compared / "out" / "teacher.json").read_text())["checkpoint"]
    moved = tmp_path / "elsewhere" / "teacher.pth"
    moved.parent.mkdir()
    shutil.copy(original, moved)
    config = yaml.safe_load((compared / "compare.yaml").read_text())
    config["arms"] = [{"name": "scratch"}]
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    run_comparison(path, out=out, progress=False, teacher_checkpoint=moved)
    assert str(moved.parent) not in (out / "teacher.json").read_text()
    options = TrustOptions(parts=("fairness",), plots=False, progress=False)
    teacher_ndcg = json.loads((out / "teacher.json").read_text())["metrics"]["ndcg@20"]

    report = trust_report(out, options=options)
    assert report["rows"][0]["model"] == "teacher" and report["rows"][0]["ndcg@20"] == teacher_ndcg
    moved.unlink()
    with pytest.raises(ComparisonConfigError, match="not found"):
        trust_report(out, options=options)
    report = trust_report(out, options=options, teacher_checkpoint=original)
    assert report["rows"][0]["ndcg@20"] == teacher_ndcg
    with pytest.raises(TrustError, match="pass that file with --teacher-checkpoint"):
        trust_report(out, config=path, options=options)
    student = next((out / "arms" / "scratch" / "s0" / "saved").glob("*.pth"))
    with pytest.raises(TrustError, match="is not the teacher"):
        trust_report(out, options=options, teacher_checkpoint=student)


# -- the shadow attack ---------------------------------------------------------------------------
def test_shadow_assignments_put_every_pair_in_exactly_half_of_the_shadows_and_are_seeded():
    from freqd.trust import shadows

    flags = shadows.assignments(500, 8, seed=3)
    assert flags.shape == (8, 500) and (flags.sum(axis=0) == 4).all()
    assert 0.4 < flags[0].mean() < 0.6 and not (flags[0] == flags[1]).all()
    assert np.array_equal(flags, shadows.assignments(500, 8, seed=3))
    with pytest.raises(ValueError, match="even"):
        shadows.assignments(10, 3, seed=0)


def test_likelihood_ratio_equals_gaussian_log_densities_with_pooled_variances():
    from scipy.stats import norm

    from freqd.trust import shadows

    rng = np.random.default_rng(7)
    flags = shadows.assignments(30, 6, seed=1)
    scores = rng.normal(size=(6, 30)) + 2.0 * flags
    target = rng.normal(size=30)
    got = shadows.likelihood_ratio(target, scores, flags)
    want = []
    means_in = [scores[flags[:, p], p].mean() for p in range(30)]
    means_out = [scores[~flags[:, p], p].mean() for p in range(30)]
    dev_in = [(scores[m, p] - means_in[p]) ** 2 for p in range(30) for m in range(6) if flags[m, p]]
    dev_out = [(scores[m, p] - means_out[p]) ** 2 for p in range(30) for m in range(6) if not flags[m, p]]
    var_in, var_out = sum(dev_in) / (len(dev_in) - 30), sum(dev_out) / (len(dev_out) - 30)
    for p in range(30):
        want.append(norm.logpdf(target[p], means_in[p], math.sqrt(var_in))
                    - norm.logpdf(target[p], means_out[p], math.sqrt(var_out)))
    np.testing.assert_allclose(got, want, atol=1e-10)
    with pytest.raises(ValueError, match="IN and one OUT"):
        shadows.likelihood_ratio(target, scores, np.ones_like(flags))


# -- training on a pairs file --------------------------------------------------------------------
@pytest.fixture(scope="module")
def ml100k_train():
    from freqd.runs import setup

    config, _, (train, _, _) = setup("BPR", "ml-100k", [], {"train_sampler": "fast", "state": "ERROR"})
    return config, train


def test_pairs_file_round_trips_and_replaces_the_training_split(ml100k_train, tmp_path):
    from freqd.datasets.train_pairs import read_pairs, replace_training, write_pairs

    config, train = ml100k_train
    dataset = train._dataset
    users = dataset.inter_feat[dataset.uid_field].numpy()[:500]
    items = dataset.inter_feat[dataset.iid_field].numpy()[:500]
    extra_user, extra_item = int(users[0]), next(i for i in range(1, dataset.item_num)
                                                 if i not in set(items[users == users[0]].tolist()))
    write_pairs(tmp_path / "p.json", dataset, np.append(users, extra_user), np.append(items, extra_item),
                note={"note": "test"})
    got_u, got_i, record = read_pairs(tmp_path / "p.json", dataset)
    assert got_u.tolist() == [*users.tolist(), extra_user] and got_i.tolist() == [*items.tolist(), extra_item]
    loader, _ = replace_training(train, config, tmp_path / "p.json")
    columns, negatives = loader.draw_epoch(0)
    drawn = set(zip(columns[dataset.uid_field].tolist(), columns[dataset.iid_field].tolist()))
    assert drawn == set(zip(got_u.tolist(), got_i.tolist()))            # exactly the file's pairs, an added one too
    assert not drawn & set(zip(columns[dataset.uid_field].tolist(), negatives[0].tolist()))  # no positive as negative
    assert record["note"] == "test"


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(format="other"), "not a freqd pairs file"),
    (lambda r: r.update(dataset="gowalla"), "dataset 'gowalla'"),
    (lambda r: r.update(data_fingerprint="x"), "another training split"),
    (lambda r: r["users"].__setitem__(0, "no-such-user"), "no-such-user"),
    (lambda r: (r["users"].append(r["users"][0]), r["items"].append(r["items"][0])), "more than once"),
    (lambda r: (r.update(users=[], items=[])), "no pairs"),
])
def test_pairs_file_errors_name_the_file_and_the_problem(ml100k_train, tmp_path, change, message):
    from freqd.datasets.train_pairs import read_pairs, write_pairs

    _, train = ml100k_train
    dataset = train._dataset
    record = write_pairs(tmp_path / "p.json", dataset, dataset.inter_feat[dataset.uid_field].numpy()[:3],
                         dataset.inter_feat[dataset.iid_field].numpy()[:3])
    change(record)
    (tmp_path / "p.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=message) as error:
        read_pairs(tmp_path / "p.json", dataset)
    assert "p.json" in str(error.value)


def test_pairs_need_the_fast_loader_and_exclude_a_coreset(ml100k_train, tmp_path):
    from freqd.datasets.train_pairs import write_pairs
    from freqd.runs import train

    _, loader = ml100k_train
    dataset = loader._dataset
    write_pairs(tmp_path / "p.json", dataset, dataset.inter_feat[dataset.uid_field].numpy()[:3],
                dataset.inter_feat[dataset.iid_field].numpy()[:3])
    with pytest.raises(ValueError, match="train_sampler: fast"):
        train("BPR", "ml-100k", config_dict={"train_pairs": str(tmp_path / "p.json"), "epochs": 1, "state": "ERROR"})
    with pytest.raises(ValueError, match="set one of them"):
        train("BPR", "ml-100k", config_dict={"train_pairs": str(tmp_path / "p.json"), "coreset": "x.json",
                                             "train_sampler": "fast", "epochs": 1, "state": "ERROR"})


@pytest.mark.slow
def test_shadow_attack_of_a_comparison_folder(compared, tmp_path):
    from freqd.trust import TrustOptions, trust_report
    from freqd.trust.shadows import in_flags

    out = tmp_path / "trust"
    options = TrustOptions(parts=("privacy",), shadows=2, shadow_arms=("kd",), progress=False, plots=False)
    report = trust_report(compared / "out", out=out, options=options)
    rows = {r["model"]: r for r in report["rows"]}
    assert {"lira_auc", "lira_tpr@0.01"} <= set(rows["teacher"]) and "lira_auc" in rows["kd"]
    assert "lira_auc" in rows["scratch"]                            # the control always has shadows
    from freqd.compare.evaluate import build_eval_context
    from freqd.trust.runner import build_data, comparison_of

    data = build_data(build_eval_context(comparison_of(compared / "out")), seed=0)
    flags = in_flags(data, 2, seed=0)
    assert (flags.sum(axis=0) == 1).all()                           # each sample pair: IN for one of two shadows
    users = data.ctx.train_dataset.field2id_token["user_id"]
    items = data.ctx.train_dataset.field2id_token["item_id"]
    for m in range(2):
        pairs = json.loads((out / "shadows" / f"m{m}" / "pairs.json").read_text())
        assert pairs["format"] == "freqd-pairs/1"
        assert len(pairs["users"]) == pytest.approx((len(data.train_users) + len(data.test_users)) / 2, rel=0.01)
        trained = set(zip(pairs["users"], pairs["items"]))
        sample = zip(users[data.sample.users], items[data.sample.items])
        assert [(str(u), str(i)) in trained for u, i in sample] == flags[m].tolist()
        run = json.loads((out / "shadows" / f"m{m}" / "arms" / "kd" / f"s{m}.json").read_text())
        assert run["spec"]["overrides"]["train_pairs"].endswith(f"m{m}/pairs.json")
    assert "shadow likelihood ratio" in (out / "trust.md").read_text()
    again = trust_report(compared / "out", out=out, options=options)     # reuses the trained shadows
    assert again["options"]["shadow_seconds"] < report["options"]["shadow_seconds"]
    assert again["options"]["shadow_train_seconds"] == report["options"]["shadow_train_seconds"] > 0
    assert again["rows"][0]["lira_auc"] == rows["teacher"]["lira_auc"]


# -- perturbed edges -----------------------------------------------------------------------------
def test_parse_edges_and_its_errors():
    from freqd.trust.edges import parse_edges

    assert parse_edges("drop:0.1, add:0.05") == (("drop", 0.1), ("add", 0.05))
    assert parse_edges(None) == ()
    for bad in ("drop", "swap:0.1", "add:1.5", "drop:x"):
        with pytest.raises(ValueError, match="KIND:RHO"):
            parse_edges(bad)


def test_dropped_edges_are_a_subset_of_the_right_size_and_added_edges_are_new_and_distinct():
    from freqd.trust.edges import perturbed_pairs

    rng = np.random.default_rng(8)
    n_items = 40
    pairs = {(int(u), int(i)) for u, i in zip(rng.integers(1, 30, 400), rng.integers(1, n_items, 400))}
    users, items = map(np.array, zip(*sorted(pairs)))
    held_out = np.array([7 * n_items + 3, 9 * n_items + 5])         # e.g. validation/test pairs
    taken = np.concatenate([users * n_items + items, held_out])
    du, di = perturbed_pairs(users, items, taken, n_items, "drop", 0.2, seed=0)
    assert len(du) == len(users) - round(0.2 * len(users))
    assert set(zip(du.tolist(), di.tolist())) <= pairs
    au, ai = perturbed_pairs(users, items, taken, n_items, "add", 0.25, seed=0)
    added = list(zip(au.tolist(), ai.tolist()))[len(users):]
    assert len(added) == round(0.25 * len(users)) == len(set(added))
    assert not set(added) & pairs and not {u * n_items + i for u, i in added} & set(held_out.tolist())
    assert {u for u, _ in added} <= set(users.tolist()) and all(1 <= i < n_items for _, i in added)
    again = perturbed_pairs(users, items, taken, n_items, "add", 0.25, seed=0)
    assert np.array_equal(again[1], ai)


@pytest.mark.slow
def test_edge_perturbation_of_a_comparison_folder(compared, tmp_path):
    from freqd.trust import TrustOptions, trust_report

    out = tmp_path / "trust"
    options = TrustOptions(parts=("fairness",), edges=(("drop", 0.5),), progress=False, plots=False)
    report = trust_report(compared / "out", out=out, options=options)
    pairs = json.loads((out / "edges" / "drop-0.5" / "pairs.json").read_text())
    assert pairs["n_pairs"] == 80808 - round(0.5 * 80808)     # ml-100k's training split holds 80,808 pairs
    for row in report["rows"]:
        stored = json.loads((out / "edges" / "drop-0.5" / ("teacher.json" if row["model"] == "teacher" else
                                                          f"arms/{row['model']}/s0.json")).read_text())
        perturbed = stored["metrics"]["ndcg@20"]
        assert row["edge_drop-0.5_ndcg@20"] == perturbed
        assert row["edge_drop-0.5_drop"] == pytest.approx((row["ndcg@20"] - perturbed) / row["ndcg@20"])
    assert "drop-0.5" in (out / "trust.md").read_text()


# -- the user-level attack from top-k lists (MIARS) ----------------------------------------------------
def test_miars_user_split_is_disjoint_covers_the_eligible_users_and_is_seeded():
    from freqd.trust import miars

    counts = np.array([99] + [25] * 40 + [19] * 10 + [20] * 5)   # id 0 is padding; ids 41-50 are below 20
    split = miars.user_split(counts, seed=3)
    parts = [split.shadow_in, split.shadow_out, split.target_in, split.target_out, split.vector]
    joined = np.concatenate(parts)
    assert len(joined) == len(set(joined.tolist()))                    # disjoint
    assert sorted(joined.tolist()) == [*range(1, 41), *range(51, 56)]  # exactly the users with 20+ interactions
    assert [len(p) for p in parts] == [7, 8, 7, 8, 15]                 # thirds, halved; the remainder vectorises
    again = miars.user_split(counts, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, [again.shadow_in, again.shadow_out, again.target_in,
                                                             again.target_out, again.vector]))
    assert not np.array_equal(miars.user_split(counts, seed=4).shadow_in, split.shadow_in)
    with pytest.raises(ValueError, match="at least 12 users with 20"):
        miars.user_split(np.array([0] + [30] * 11), seed=0)


def test_miars_item_vectors_give_the_rank_d_item_gram_matrix_of_an_exact_svd():
    from freqd.trust import miars

    rng = np.random.default_rng(0)
    dense = (rng.random((30, 12)) < 0.3).astype(float)
    dense[:, 0] = 0.0                                                   # the padding item is never interacted with
    users, items = np.nonzero(dense)
    users = users + 5                                                   # user ids need not start at 0
    got = miars.item_vectors(np.concatenate([users, users[:3]]), np.concatenate([items, items[:3]]), 12, dim=4)
    _, s, vt = np.linalg.svd(dense, full_matrices=False)
    expected = vt[:4].T * s[:4] ** 2 @ vt[:4]                           # V_d S_d^2 V_d^T: sign-free
    np.testing.assert_allclose(got @ got.T, expected, atol=1e-6 * s[0] ** 2)


def test_miars_features_lists_and_popularity_against_loops():
    from freqd.trust import miars

    rng = np.random.default_rng(1)
    n_items, k = 15, 4
    vectors = rng.normal(size=(n_items, 3))
    hist_u = rng.integers(0, 6, 60)
    hist_i = rng.integers(1, n_items, 60)
    users = np.array([4, 1, 2])
    lists = rng.integers(1, n_items, (3, k))
    got = miars.features(hist_u, hist_i, users, lists, vectors)
    for row, user in enumerate(users):
        own = [vectors[i] for u, i in zip(hist_u, hist_i) if u == user]
        np.testing.assert_allclose(got[row], np.mean(own, axis=0) - np.mean([vectors[i] for i in lists[row]], axis=0))
    with pytest.raises(ValueError, match=r"users \[9\] have no history"):
        miars.features(hist_u, hist_i, np.array([9]), lists[:1], vectors)

    items = np.array([3, 3, 5, 5, 7, 0, 0, 0, 0, 2])
    assert miars.popular_list(items, 9, 3).tolist() == [3, 5, 2]       # ties to the lower id; never padding 0

    scores = rng.normal(size=(3, n_items))
    got = miars.member_lists(scores, users, hist_u, hist_i, k)
    for row, user in enumerate(users):
        seen = {int(i) for u, i in zip(hist_u, hist_i) if u == user}
        allowed = [i for i in np.argsort(-scores[row], kind="stable") if i != 0 and i not in seen]
        assert got[row].tolist() == allowed[:k]


def _miars_world(seed, personal):
    """Users in four taste clusters; members' lists come from their cluster's items when ``personal``,
    else everyone gets the popular list. Returns (features, labels) of a shadow and a target side."""
    from freqd.trust import miars

    rng = np.random.default_rng(seed)
    n_items, clusters, per_cluster = 81, 4, 20
    cluster_items = [1 + c * per_cluster + np.arange(per_cluster) for c in range(clusters)]
    n_users = 240
    taste = rng.integers(0, clusters, n_users)
    hist_u = np.repeat(np.arange(n_users), 10)
    hist_i = np.concatenate([rng.choice(cluster_items[t], 10, replace=False) for t in taste])
    vec_users = np.arange(80)
    keep = np.isin(hist_u, vec_users)
    vectors = miars.item_vectors(hist_u[keep], hist_i[keep], n_items, dim=8, seed=seed)
    popular = miars.popular_list(hist_i, n_items, 10)
    sides = []
    for users in (np.arange(80, 160), np.arange(160, 240)):
        members, others = users[:40], users[40:]
        lists = np.stack([rng.choice(cluster_items[taste[u]], 10, replace=False) if personal else popular
                          for u in members])
        x = np.concatenate([miars.features(hist_u, hist_i, members, lists, vectors),
                            miars.features(hist_u, hist_i, others, np.tile(popular, (len(others), 1)), vectors)])
        sides.append((x, np.repeat([True, False], [len(members), len(others)])))
    return sides


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_miars_acceptance_personal_lists_expose_members_and_popular_lists_do_not():
    from freqd.trust import miars

    exposed = [miars.attack(*_miars_world(seed, personal=True)[0], *_miars_world(seed, personal=True)[1],
                            seed=seed)["auc"] for seed in range(3)]
    assert min(exposed) > 0.95
    # Members and non-members alike get the popular list: their features have one distribution, and
    # the AUC of 40 against 40 users scatters around 0.5 with a standard error of about 0.065.
    blind = [miars.attack(*_miars_world(seed, personal=False)[0], *_miars_world(seed, personal=False)[1],
                          seed=seed)["auc"] for seed in range(6)]
    assert abs(np.mean(blind) - 0.5) < 0.08 and max(abs(a - 0.5) for a in blind) < 0.2


@pytest.mark.slow
def test_miars_attack_of_a_comparison_folder(compared, tmp_path):
    from freqd.trust import TrustOptions, trust_report

    out = tmp_path / "trust"
    options = TrustOptions(parts=("fairness",), miars=True, progress=False, plots=False)
    report = trust_report(compared / "out", out=out, options=options)
    users = report["options"]["miars_users"]
    assert users == {"shadow_in": 157, "shadow_out": 157, "target_in": 157, "target_out": 157, "vector": 315}
    rows = {r["model"]: r for r in report["rows"]}
    for name in ("teacher", "scratch", "kd"):
        assert 0.0 <= rows[name]["miars_auc"] <= 1.0 and 0.0 <= rows[name]["miars_advantage"] <= 1.0
    from freqd.compare.evaluate import build_eval_context
    from freqd.trust.runner import build_data, comparison_of

    data = build_data(build_eval_context(comparison_of(compared / "out")), seed=0)
    tokens = data.ctx.train_dataset.field2id_token["user_id"]
    member_sets = []
    for side in ("shadow", "target"):
        pairs = json.loads((out / "miars" / side / "pairs.json").read_text())
        members = {str(u) for u in pairs["users"]}
        assert len(members) == 157
        ids = [u for u in range(1, len(tokens)) if str(tokens[u]) in members]
        assert pairs["n_pairs"] == int(np.isin(data.train_users, ids).sum())   # every training pair of the members
        member_sets.append(members)
        run = json.loads((out / "miars" / side / "arms" / "kd" / "s0.json").read_text())
        assert run["spec"]["overrides"]["train_pairs"].endswith(f"{side}/pairs.json")
    assert not member_sets[0] & member_sets[1]
    assert "User-level attack from top-20 lists" in (out / "trust.md").read_text()


# -- poisoning with fake users ---------------------------------------------------------------------------
def test_parse_poison_and_its_errors():
    from freqd.trust.poison import parse_poison

    assert parse_poison("random:0.03, bandwagon:0.05") == (("random", 0.03), ("bandwagon", 0.05))
    assert parse_poison(None) == ()
    for bad in ("random", "average:0.1", "random:0", "bandwagon:1.5", "random:x"):
        with pytest.raises(ValueError, match="KIND:SHARE"):
            parse_poison(bad)


def test_poison_targets_come_from_the_interacted_tail_and_are_seeded():
    from freqd.trust.poison import target_items

    counts = np.array([0, 50, 40, 30, 0, 2, 1, 3, 0, 1])
    head = np.zeros(10, bool)
    head[[1, 2, 3]] = True
    got = target_items(counts, head, 3, seed=0)
    assert set(got.tolist()) <= {5, 6, 7, 9} and len(set(got.tolist())) == 3 and got.tolist() == sorted(got.tolist())
    assert np.array_equal(got, target_items(counts, head, 3, seed=0))
    with pytest.raises(ValueError, match="5 target items asked for, the tail holds 4"):
        target_items(counts, head, 5, seed=0)


@pytest.mark.parametrize("kind", ["random", "bandwagon"])
def test_fake_profiles_hold_every_target_and_the_average_length(kind):
    from freqd.trust.poison import fake_profiles

    rng = np.random.default_rng(0)
    n_users, n_items = 40, 200
    train_users = np.repeat(np.arange(1, n_users + 1), 12)                   # 40 genuine users, 12 pairs each
    train_items = rng.integers(1, n_items, len(train_users))
    head = np.zeros(n_items, bool)
    head[1:41] = True
    targets = np.array([150, 170])
    users, items = fake_profiles(train_users, train_items, n_items, head, targets, kind, 0.1, first_user=41, seed=2)
    assert sorted(set(users.tolist())) == [41, 42, 43, 44]                   # round(0.1 x 40) fake users after the genuine
    for user in range(41, 45):
        profile = items[users == user]
        assert len(profile) == 12 and len(set(profile.tolist())) == 12      # the average length, no pair twice
        assert set(targets.tolist()) <= set(profile.tolist())
        fillers = set(profile.tolist()) - set(targets.tolist())
        assert all(1 <= i < n_items for i in fillers)
        if kind == "bandwagon":
            assert fillers <= set(range(1, 41))                             # popular fillers only
    again = fake_profiles(train_users, train_items, n_items, head, targets, kind, 0.1, first_user=41, seed=2)
    assert np.array_equal(items, again[1])


def test_bandwagon_fillers_top_up_with_random_items_when_the_head_runs_out():
    from freqd.trust.poison import fake_profiles

    head = np.zeros(50, bool)
    head[1:4] = True                                                         # three popular items only
    users, items = fake_profiles(np.repeat([1, 2], 10), np.tile(np.arange(10, 20), 2), 50, head, np.array([30]),
                                 "bandwagon", 0.5, first_user=3, seed=0)
    assert len(items) == 10 and {1, 2, 3, 30} <= set(items.tolist()) and len(set(items.tolist())) == 10


def test_target_hits_against_loops():
    from freqd.trust.poison import target_hits

    rng = np.random.default_rng(3)
    lists = rng.integers(1, 30, (50, 5))
    targets = np.array([3, 7, 11])
    got = target_hits(lists, targets)
    assert got["hr"] == pytest.approx(np.mean([np.mean([t in row for row in lists.tolist()]) for t in targets]))
    assert got["exposure"] == pytest.approx(np.mean([any(t in row for t in targets) for row in lists.tolist()]))


@pytest.mark.slow
def test_acceptance_a_planted_poisoning_attack_raises_the_targets_exposure(compared, tmp_path):
    from freqd.trust import TrustOptions, trust_report

    out = tmp_path / "trust"
    options = TrustOptions(parts=("fairness",), poison=(("bandwagon", 0.2),), progress=False, plots=False)
    report = trust_report(compared / "out", out=out, options=options)
    rows = {r["model"]: r for r in report["rows"]}
    teacher = rows["teacher"]
    assert teacher["poison_bandwagon-0.2_hr"] > teacher["poison_bandwagon-0.2_hr_clean"] + 0.05
    assert teacher["poison_bandwagon-0.2_exposure"] > teacher["poison_bandwagon-0.2_exposure_clean"]
    assert {"poison_bandwagon-0.2_hr", "poison_bandwagon-0.2_hr_clean"} <= set(rows["kd"])
    info = json.loads((out / "poison" / "bandwagon-0.2" / "poison.json").read_text())
    assert info["fake_users"] == round(0.2 * 943) and info["targets"] == report["options"]["poison_targets"]
    name = "ml-100k-poisoned-bandwagon-0.2"
    train = (out / "poison" / "bandwagon-0.2" / "data" / name / f"{name}.train.inter").read_text().splitlines()[1:]
    assert len(train) == 80808 + info["fake_pairs"]                          # every genuine pair, and the fakes
    assert "Poisoning with fake users" in (out / "trust.md").read_text()
