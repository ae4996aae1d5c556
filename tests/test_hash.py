"""Hash code student and Hamming retrieval: known answers, brute-force rankings, acceptance checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from scipy.linalg import hadamard

from freqd.codes import HammingIndex, as_words, compiled_available, pack_codes, tie_tables, unpack_codes
from freqd.core_settings import ModelSettings
from freqd.graph import alpha_schedule
from freqd.models import BPR, Hash
from freqd.models.hash import bit_balance_loss, bit_decorrelation_loss, quantization_loss, ste_sign
from freqd.settings import SettingsError
from freqd.testing import FakeDataset, fake_batch, fake_config


def _codes(rng, n, bits):
    return rng.choice(np.array([-1, 1], dtype=np.int8), size=(n, bits))


# -- packing and distances -----------------------------------------------------------------------
@pytest.mark.parametrize("bits", [8, 24, 32, 64, 128, 136])
def test_popcount_distance_is_half_the_code_disagreement(bits):
    rng = np.random.default_rng(bits)
    users, items = _codes(rng, 7, bits), _codes(rng, 11, bits)
    expected = (bits - users.astype(np.int64) @ items.T.astype(np.int64)) // 2
    got = HammingIndex(pack_codes(users), pack_codes(items)).distances(np.arange(7))
    assert np.array_equal(got, expected)
    assert np.array_equal(unpack_codes(pack_codes(users), bits), users)


def test_word_width_and_bad_code_lengths():
    assert as_words(np.zeros((2, 16), np.uint8)).dtype == np.uint64   # 128 bits: two 64-bit words
    assert as_words(np.zeros((2, 3), np.uint8)).dtype == np.uint8     # 24 bits: bytes
    with pytest.raises(ValueError, match="multiple of 8, got 12"):
        pack_codes(np.ones((2, 12)))
    with pytest.raises(ValueError, match="2-d"):
        pack_codes(np.ones(8))


def _brute_force_topk(users, items, ranked_users, k, key_of, exclude=None):
    """Sort every item of each user by an explicit (distance, tie) key in Python: no packing, no popcount."""
    out = []
    for u in ranked_users:
        seen = set() if exclude is None else set(exclude.get(int(u), ()))
        keyed = sorted((int((len(users[u]) - int(users[u].astype(int) @ items[i].astype(int))) // 2), key_of(u, i), i)
                       for i in range(len(items)) if i not in seen)
        out.append([i for _, _, i in keyed[:k]])
    return np.array(out)


BACKENDS = ["numpy", pytest.param("compiled", marks=pytest.mark.skipif(not compiled_available(), reason="no Numba"))]


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_tie_topk_equals_brute_force_with_exclusions(backend):
    rng = np.random.default_rng(0)
    users, items = _codes(rng, 9, 16), _codes(rng, 50, 16)  # 50 items, 17 distances: many ties
    exclude = {1: [3, 4, 5], 4: [0, 49]}
    indptr = np.zeros(10, dtype=np.int64)
    for u, seen in exclude.items():
        indptr[u + 1:] += len(seen)
    indices = np.concatenate([np.array(exclude.get(u, []), dtype=np.int64) for u in range(9)])
    index = HammingIndex(pack_codes(users), pack_codes(items), ties="random", seed=7, exclude=(indptr, indices),
                         backend=backend)
    assert index.backend == backend
    keys, masks, _ = tie_tables(9, 50, 7)
    ranked = np.array([0, 1, 4, 8])
    expected = _brute_force_topk(users, items, ranked, 10, lambda u, i: int(keys[i]) ^ int(masks[u]), exclude)
    assert np.array_equal(index.topk(ranked, 10, chunk=3), expected)
    assert not set(index.topk(np.array([1]), 47)[0]) & {3, 4, 5}


@pytest.mark.skipif(not compiled_available(), reason="no Numba")
@pytest.mark.parametrize(("bits", "n_items"), [(8, 300), (24, 129), (64, 1000), (128, 640), (256, 200)])
def test_compiled_topk_equals_brute_force_on_clustered_codes(bits, n_items):
    """Many items per block, partial last blocks, clustered codes (many ties near the top), repeated
    exclusions, a whole block of nearest items excluded, and k beyond the eligible items (the excluded
    come last, in tie-key order)."""
    rng = np.random.default_rng(bits)
    centres = rng.normal(size=(4, bits))
    users = np.where(centres[rng.integers(0, 4, 6)] + rng.normal(size=(6, bits)) >= 0, 1, -1).astype(np.int8)
    items = np.where(centres[rng.integers(0, 4, n_items)] + rng.normal(size=(n_items, bits)) >= 0, 1, -1).astype(np.int8)
    items[: min(64, n_items // 2)] = users[0]  # user 0's nearest items fill the first block, all excluded for user 0
    exclude = {0: list(range(64)) + [70, 70], 2: [n_items - 1, 5, 5, 9], 5: list(range(0, n_items, 2))}
    lengths = [len(exclude.get(u, [])) for u in range(6)]
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = np.concatenate([np.array(exclude.get(u, []), dtype=np.int64) for u in range(6)])
    index = HammingIndex(pack_codes(users), pack_codes(items), seed=11, exclude=(indptr, indices), backend="compiled")
    keys, masks, _ = tie_tables(6, n_items, 11)
    tie = lambda u, i: int(keys[i]) ^ int(masks[u])  # noqa: E731
    for k in (1, 20, n_items // 2 + 10):
        got = index.topk(np.arange(6), k)
        for u in range(6):
            expected = _brute_force_topk(users, items, [u], k, tie, exclude)[0]
            eligible = len(expected)
            assert np.array_equal(got[u, :eligible], expected)
            after = sorted(set(exclude.get(u, [])), key=lambda i: tie(u, i))  # noqa: B023
            assert list(got[u, eligible:]) == after[: k - eligible]


def test_backend_choices_are_checked():
    rng = np.random.default_rng(3)
    users, items = pack_codes(_codes(rng, 3, 8)), pack_codes(_codes(rng, 20, 8))
    with pytest.raises(ValueError, match="backend must be one of"):
        HammingIndex(users, items, backend="gpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ties='random' only"):
        HammingIndex(users, items, ties="score", user_z=np.ones((3, 8)), item_z=np.ones((20, 8)), backend="compiled")
    assert HammingIndex(users, items, ties="score", user_z=np.ones((3, 8)), item_z=np.ones((20, 8))).backend == "numpy"


def test_score_tie_topk_breaks_ties_by_the_continuous_cosine():
    rng = np.random.default_rng(1)
    z_users, z_items = rng.normal(size=(5, 8)), rng.normal(size=(40, 8))
    users, items = np.where(z_users >= 0, 1, -1), np.where(z_items >= 0, 1, -1)
    cosine = (z_users / np.linalg.norm(z_users, axis=1, keepdims=True)) @ (
        z_items / np.linalg.norm(z_items, axis=1, keepdims=True)).T
    index = HammingIndex(pack_codes(z_users), pack_codes(z_items), ties="score", user_z=z_users, item_z=z_items)
    expected = _brute_force_topk(users, items, np.arange(5), 12, lambda u, i: -cosine[u, i])
    assert np.array_equal(index.topk(np.arange(5), 12), expected)
    with pytest.raises(ValueError, match="needs the continuous tables"):
        HammingIndex(pack_codes(z_users), pack_codes(z_items), ties="score")


def test_random_tie_break_is_seeded_and_integer_only():
    rng = np.random.default_rng(2)
    packed_users, packed_items = pack_codes(_codes(rng, 4, 8)), pack_codes(_codes(rng, 300, 8))
    one = HammingIndex(packed_users, packed_items, seed=3)
    assert np.array_equal(one.topk(np.arange(4), 20), HammingIndex(packed_users, packed_items, seed=3).topk(
        np.arange(4), 20))
    assert not np.array_equal(one.topk(np.arange(4), 20), HammingIndex(packed_users, packed_items, seed=4).topk(
        np.arange(4), 20))
    keys = one.keys(np.arange(4))
    assert keys.dtype.kind == "i"
    assert all(len(np.unique(row)) == len(row) for row in keys)  # every key distinct: the top-k is unique


# -- the model -----------------------------------------------------------------------------------
def _hadamard_codes(n: int, bits: int) -> torch.Tensor:
    return torch.from_numpy(hadamard(n)[:, 1: bits + 1]).double()


def test_regularisers_are_zero_on_hadamard_codes_and_positive_otherwise():
    codes = _hadamard_codes(32, 16)
    assert quantization_loss(codes) == 0 and bit_balance_loss(codes) == 0 and bit_decorrelation_loss(codes) == 0
    ones = torch.ones(32, 16, dtype=torch.float64)
    assert bit_balance_loss(ones) == 1 and bit_decorrelation_loss(ones) > 0
    assert quantization_loss(0.5 * codes) == pytest.approx(0.25)


def test_straight_through_sign_passes_the_gradient_inside_the_unit_interval_only():
    z = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.0, 1.5], requires_grad=True)
    codes = ste_sign(z)
    assert codes.tolist() == [-1, -1, 1, 1, 1, 1]
    codes.backward(torch.arange(6.0))
    assert z.grad.tolist() == [0, 1, 2, 3, 4, 0]


def _pair(mode: str = "identity", bits: int = 8, **settings):
    data = FakeDataset.random(n_users=7, n_items=30, per_user=5)
    config = fake_config({"embedding_size": bits, "hash_bits": bits, "hash_mode": mode, "hash_score_scale": 1.0,
                          **settings})
    torch.manual_seed(0)
    student = Hash(config, data)
    bpr = BPR(fake_config({"embedding_size": bits}), data)
    bpr.load_state_dict(student.state_dict())
    return student, bpr, data


def test_identity_sign_with_b_equal_d_is_the_float_student_scaled_by_one_over_b():
    student, bpr, data = _pair("identity", bits=8)
    batch = fake_batch(data, n=12)
    for model in (student, bpr):
        model.eval()
    assert torch.allclose(student.predict(batch) * 8, bpr.predict(batch), atol=1e-6)
    assert torch.allclose(student.full_sort_predict(batch).float() * 8, bpr.full_sort_predict(batch), atol=1e-5)
    student.train()
    bpr.train()
    u, p, n = batch["user_id"], batch["item_id"], batch["neg_item_id"]
    w_u, w_i = bpr.user_embedding.weight, bpr.item_embedding.weight
    scaled = torch.nn.functional.logsigmoid(((w_u[u] * w_i[p]).sum(1) - (w_u[u] * w_i[n]).sum(1)) / 8)
    assert student.calculate_loss(batch).item() == pytest.approx(-scaled.mean().item(), rel=1e-5)


@pytest.mark.parametrize("ties", ["random", "score"])
def test_evaluation_ranking_is_the_hamming_ranking_with_its_tie_break(ties):
    student, _, data = _pair("ste", bits=16, hash_ties=ties, hash_tie_seed=5)
    student.eval()
    z_users, z_items = (t.detach().double().numpy() for t in (student.user_embedding.weight,
                                                                student.item_embedding.weight))
    if ties == "random":
        keys, masks, _ = tie_tables(data.user_num, data.item_num, 5)

        def key_of(u, i):
            return int(keys[i]) ^ int(masks[u])
    else:
        cosine = (z_users / np.linalg.norm(z_users, axis=1, keepdims=True)) @ (
            z_items / np.linalg.norm(z_items, axis=1, keepdims=True)).T

        def key_of(u, i):
            return -cosine[u, i]
    expected = _brute_force_topk(np.where(z_users >= 0, 1, -1), np.where(z_items >= 0, 1, -1), range(1, 7), 12, key_of)
    evaluated = torch.topk(student.rank_scores(torch.arange(1, 7)), 12, dim=1).indices.numpy()
    assert np.array_equal(evaluated, expected)


def test_training_loss_gathers_rows_as_the_full_relaxed_tables_would():
    student, _, data = _pair("ste", bits=16, hash_score_scale=5.0)
    batch = fake_batch(data, n=20)
    student.train()
    loss = student.calculate_loss(batch)
    users, items = student.embeddings()  # the full relaxed tables, scaled by √(γ/b)
    reference = student.bpr_loss(batch["user_id"], batch["item_id"], batch["neg_item_id"], users, items)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    grads = torch.autograd.grad(loss, student.user_embedding.weight)[0]
    reference_grads = torch.autograd.grad(reference, student.user_embedding.weight)[0]
    assert torch.allclose(grads, reference_grads, atol=1e-7)


def test_training_codes_are_relaxed_and_evaluation_codes_exact():
    student, _, _ = _pair("tanh", bits=8, hash_beta=2.0, hash_beta_end=20.0, hash_beta_schedule="linear",
                          hash_beta_epochs=10)
    z = student.user_embedding.weight
    student.on_epoch_start(5)
    assert student.beta == pytest.approx(alpha_schedule("linear", 5, 2.0, 20.0, 10)) == pytest.approx(11.0)
    student.train()
    users, _ = student.embeddings()
    assert torch.allclose(users * np.sqrt(8), torch.tanh(11.0 * z))
    student.eval()
    users, _ = student.cached_embeddings()
    assert set((users * np.sqrt(8)).round().unique().tolist()) <= {-1.0, 1.0}


def test_regularisers_reach_the_loss_and_their_gradients_the_tables():
    plain, _, data = _pair("ste", bits=16)
    regular, _, _ = _pair("ste", bits=16, hash_quantization_weight=1.0, hash_balance_weight=1.0,
                          hash_decorrelation_weight=1.0)
    batch = fake_batch(data, n=12)
    assert regular.calculate_loss(batch) > plain.calculate_loss(batch)
    regular.calculate_loss(batch).backward()
    assert regular.user_embedding.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("key, value, message", [
    ("hash_bits", 12, "hash_bits=12.*multiple of 8"), ("hash_mode", "sign", "hash_mode='sign'"),
    ("hash_ties", "first", "hash_ties='first'"), ("hash_score_scale", 0, "hash_score_scale=0"),
])
def test_bad_hash_settings_are_named(key, value, message):
    from freqd.core_settings import check_settings

    with pytest.raises(SettingsError, match=message):
        check_settings({key: value}, (ModelSettings,))


# -- end to end on ml-100k ------------------------------------------------------------------------
QUIET = {"show_progress": False, "state": "ERROR", "use_gpu": False, "epochs": 1}


@pytest.mark.slow
@pytest.mark.parametrize("kd", ["FreqD", "RRD"])
def test_distil_into_codes_with_freqd_and_rrd(bpr_teacher_32, kd, one_thread):
    from freqd.runs import distill

    result = distill(bpr_teacher_32, "Hash", kd, config_dict={**QUIET, "hash_bits": 16, "rrd_pool": 50, "rrd_interesting": 10, "rrd_uninteresting": 20})
    assert result["model"] == "Hash" and result["embedding_size"] == 16
    assert 0 < result["test_result"]["ndcg@20"] < 1


@pytest.mark.slow
def test_freqd_distils_the_continuous_tables_of_a_hash_student(bpr_teacher_32):
    from freqd.checkpoints import load_teacher
    from freqd.distillers import FreqD, StepTables
    from freqd.runs import setup

    config, _, (train, _, _) = setup("Hash", "ml-100k", [], {**QUIET, "hash_bits": 16}, kd="FreqD")
    data = train._dataset
    student = Hash(config, data)
    distiller = FreqD(config, load_teacher(bpr_teacher_32, config, data), student, data)
    student.train()
    users, items = distiller._student_tables(StepTables.of(student))
    assert users is student.user_embedding.weight and items is student.item_embedding.weight  # z, not the codes
    first = next(m for m in distiller.projector_of(0).modules() if isinstance(m, torch.nn.Linear))
    assert first.in_features == 16


@pytest.mark.slow
def test_compare_reports_a_hash_arm_with_bits_map_and_hamming_speed(tmp_path, one_thread):
    from freqd.compare import run_comparison

    spec = {
        "title": "hash", "dataset": "ml-100k",
        "overrides": {"epochs": 2, "use_gpu": False, "state": "ERROR"},
        "teacher": {"model": "BPR", "embedding_size": 16, "seed": 0},
        "student": {"model": "BPR", "embedding_size": 4}, "seeds": [0], "control": "scratch",
        "arms": [{"name": "scratch"}, {"name": "hash", "model": "Hash", "overrides": {"hash_bits": 32}}],
        "latency": {"users": 100, "batch_size": 50, "repeats": 1, "warmup": 0},
    }
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(spec))
    report = run_comparison(path, out=tmp_path / "out", progress=False)
    rows = {row["name"]: row for row in report["rows"]}
    assert rows["hash"]["model"] == "Hash" and rows["hash"]["bits_per_entity"] == 32
    assert rows["scratch"]["bits_per_entity"] == 4 * 32
    assert "Hamming" in rows["hash"]["latency"]["ranking"]
    assert "map@20" in rows["hash"]["metrics"]
    stored = json.loads(next((tmp_path / "out" / "arms" / "hash").glob("s0.json")).read_text())
    assert stored["recbole_max_abs_diff"] < 1e-6  # the report's per-user ranking is the trainer's
    assert "Hash 32-bit codes" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.parametrize("model, message", [("Hsah", r"arms\[1\].model: unknown model 'Hsah'.*did you mean 'Hash'"),
                                            (3, r"arms\[1\].model: expected a model name, got 3")])
def test_an_arms_own_model_is_resolved_or_named(tmp_path, model, message):
    from freqd.compare.config import ComparisonConfigError, parse_comparison_config

    spec = {"title": "t", "dataset": "ml-100k", "teacher": {"model": "BPR", "embedding_size": 8},
            "student": {"model": "BPR", "embedding_size": 4}, "seeds": [0, 1, 2], "control": "scratch",
            "arms": [{"name": "scratch"}, {"name": "codes", "model": model}]}
    with pytest.raises(ComparisonConfigError, match=message):
        parse_comparison_config(spec, source=tmp_path / "c.yaml")
    spec["arms"][1]["model"] = "hash"
    assert parse_comparison_config(spec, source=tmp_path / "c.yaml").arms[1].model == "Hash"
