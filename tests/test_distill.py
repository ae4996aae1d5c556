"""FreqD distiller and DistillTrainer on ml-100k: exact batch-local loss, frozen teacher, checkpoints."""

from __future__ import annotations

import pytest
import torch
from recbole.data import create_dataset
from recbole.data.interaction import Interaction
from recbole.model.general_recommender import BPR as RecBoleBPR
from recbole.utils import init_seed

from freqd import load_checkpoint
from freqd.checkpoints import load_teacher
from freqd.config import Config
from freqd.distillers import FreqD, FreqDSettings, StepTables
from freqd.evaluation import build_dataloaders
from freqd.models import BPR
from freqd.runs import distill
from freqd.settings import SettingsError

QUIET = {"show_progress": False, "state": "ERROR", "use_gpu": False}


@pytest.fixture(scope="module")
def setup(bpr_teacher_32):
    """The shared 32-d BPR teacher's checkpoint, and student-side config/loaders."""
    checkpoint = bpr_teacher_32
    config = Config(model="BPR", dataset="ml-100k", config_dict={**QUIET, "embedding_size": 8})
    init_seed(config["seed"], True)
    data = create_dataset(config)
    loaders = build_dataloaders(config, data)
    return checkpoint, config, loaders


def _distiller(setup, **settings):
    checkpoint, config, (train, _, _) = setup
    for key in FreqDSettings.keys():
        config[key] = None
    config["freqd_neighbors"] = 0  # the exact loss (the sampled one has its own tests)
    # The shared bias-free linear projector unless a test asks for another (its references assume it).
    config["projector"], config["projector_per_entity"], config["freqd_filter_first"] = "linear", False, False
    for key, value in settings.items():
        config[key] = value
    torch.manual_seed(0)
    teacher = load_teacher(checkpoint, config, train._dataset)
    student = BPR(config, train._dataset)
    return FreqD(config, teacher, student, train._dataset), student, teacher


def _batch(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Interaction({"user_id": torch.randint(1, 944, (n,), generator=g),
                        "item_id": torch.randint(1, 1683, (n,), generator=g),
                        "neg_item_id": torch.randint(1, 1683, (n,), generator=g)})


def _dense_reference(distiller, student, batch, order_alpha):
    """The loss from the full dense filter H = h(I − Â) applied to whole tables."""
    adj = distiller.adj.to_dense().double()
    n = adj.shape[0]
    lap = torch.eye(n, dtype=torch.float64) - adj
    coeffs = distiller.filter.coefficients
    h = sum(c * torch.linalg.matrix_power(lap, k) for k, c in enumerate(coeffs))
    s_all = torch.cat([student.user_embedding.weight, student.item_embedding.weight]).double()
    t_all = torch.cat([distiller.t_users, distiller.t_items]).double()
    with torch.no_grad():
        p = distiller.projector.double()(s_all)
        distiller.projector.float()
    hs, ht = h @ p, h @ t_all
    nu = student.n_users
    groups = [(torch.unique(batch["user_id"]), 1.0), (torch.unique(batch["item_id"]) + nu, 0.5),
              (torch.unique(batch["neg_item_id"]) + nu, 0.5)]
    total = sum(w * ((hs[rows] - ht[rows]) ** 2).sum() for rows, w in groups)
    return float(total / len(batch["user_id"]))


@pytest.mark.parametrize("settings", [
    {"freqd_alpha": 0.5, "freqd_order": 1, "projector": "linear"},
    {"freqd_alpha": 0.3, "freqd_order": 2, "projector": "linear"},
    {"freqd_alpha": 0.7, "freqd_order": 1, "projector": "mlp", "projector_hidden": 16},
    {"freqd_coefficients": [1.0, -0.4, 0.05], "projector": "linear", "projector_bias": True},
])
@pytest.mark.slow
def test_batch_local_loss_equals_dense_full_table_computation(setup, settings):
    distiller, student, _ = _distiller(setup, freqd_graph="bipartite", freqd_distance="mse", **settings)
    distiller.eval()
    batch = _batch()
    loss = distiller(batch, StepTables.of(student))
    assert float(loss) == pytest.approx(_dense_reference(distiller, student, batch, settings), rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("graph", ["cooccurrence", "bipartite"])
@pytest.mark.parametrize("distance", ["mse", "cosine"])
@pytest.mark.parametrize("keep_prob", [1.0, 0.5])
def test_implicit_projection_equals_projecting_rows(setup, graph, distance, keep_prob):
    """Bias-free linear P: the WᵀW / zW form gives the loss and gradients of P(H·S) − H·T."""
    distiller, student, _ = _distiller(setup, freqd_graph=graph, freqd_distance=distance, freqd_keep_prob=keep_prob)
    assert distiller.filter_first and distiller.implicit_linear
    batch = _batch(seed=1)
    results = []
    for implicit in (True, False):  # False: project every K-hop row, then filter in d_T
        distiller.filter_first = distiller.implicit_linear = implicit
        student.zero_grad()
        distiller.zero_grad()
        torch.manual_seed(5)  # the same edge-dropout draw for both forms
        loss = distiller(batch, StepTables.of(student))
        loss.backward()
        results.append((float(loss), student.user_embedding.weight.grad.clone(),
                        distiller.projector.linear.weight.grad.clone()))
    (fast, *fast_grads), (slow, *slow_grads) = results
    assert fast == pytest.approx(slow, rel=1e-5)
    for a, b in zip(fast_grads, slow_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_alpha_zero_mse_is_plain_feature_distillation(setup):
    distiller, student, _ = _distiller(setup, freqd_alpha=0.0, freqd_distance="mse")
    batch = _batch(seed=2)
    nu = student.n_users
    s_all = torch.cat([student.user_embedding.weight, student.item_embedding.weight])
    t_all = torch.cat([distiller.t_users, distiller.t_items])
    r = distiller.projector(s_all) - t_all
    expected = ((r[torch.unique(batch["user_id"])] ** 2).sum()
                + 0.5 * (r[torch.unique(batch["item_id"]) + nu] ** 2).sum()
                + 0.5 * (r[torch.unique(batch["neg_item_id"]) + nu] ** 2).sum()) / 64
    assert float(distiller(batch, StepTables.of(student))) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("graph", ["cooccurrence", "bipartite"])
def test_gradients_reach_student_and_projector_only(setup, graph):
    distiller, student, teacher = _distiller(setup, freqd_graph=graph, projector="experts",
                                             projector_experts=2, projector_dropout=0.2, freqd_keep_prob=0.5)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    loss = distiller(_batch(seed=3), StepTables.of(student))
    loss.backward()
    assert student.user_embedding.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in distiller.projector.parameters())
    assert all(not p.requires_grad for p in teacher.parameters())
    assert not any(k.startswith("t_") or "adj" in k for k in distiller.state_dict())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


@pytest.mark.slow
def test_training_decreases_kd_loss_and_student_checkpoint_serves_alone(setup):
    checkpoint, _, _ = setup
    result = distill(checkpoint, "BPR", "FreqD", config_dict={**QUIET, "epochs": 3, "embedding_size": 8,
                                                                 "learning_rate": 0.01})
    import pandas as pd

    metrics = pd.read_csv(f"{result['run_dir']}/metrics.csv")
    assert metrics["kd_loss"].iloc[-1] < metrics["kd_loss"].iloc[0]
    assert {"rec_loss", "freqd_alpha", "rayleigh_1", "rayleigh_4"} <= set(metrics.columns)
    saved = load_checkpoint(result["checkpoint"])
    assert set(saved["state_dict"]) == {"user_embedding.weight", "item_embedding.weight"}
    assert saved["freqd"]["kd"] == "FreqD" and saved["freqd"]["teacher"] == checkpoint
    assert result["test_result"]["ndcg@20"] > 0


def test_teacher_must_match_the_data(setup, tmp_path):
    checkpoint, config, (train, _, _) = setup
    state = load_checkpoint(checkpoint)
    wrong_dataset = dict(state)
    wrong_dataset["config"] = state["config"]
    other = Config(model="BPR", dataset="ml-100k", config_dict={**QUIET, "embedding_size": 32})
    other.final_config_dict["dataset"] = "gowalla"
    torch.save({**state, "config": other}, tmp_path / "other.pth", pickle_protocol=4)
    with pytest.raises(ValueError, match="trained on dataset 'gowalla', not 'ml-100k'"):
        load_teacher(tmp_path / "other.pth", config, train._dataset)
    shrunk = {**state, "state_dict": {k: v[:10] for k, v in state["state_dict"].items()}}
    torch.save(shrunk, tmp_path / "shrunk.pth", pickle_protocol=4)
    with pytest.raises(ValueError, match="has 10 rows but the dataset has 944"):
        load_teacher(tmp_path / "shrunk.pth", config, train._dataset)
    meta = {**state, "freqd": {**state["freqd"], "data_fingerprint": "0" * 40}}
    torch.save(meta, tmp_path / "split.pth", pickle_protocol=4)
    with pytest.raises(ValueError, match="different training split"):
        load_teacher(tmp_path / "split.pth", config, train._dataset)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_teacher(tmp_path / "missing.pth", config, train._dataset)


def test_unknown_teacher_class_is_named(setup, tmp_path):
    checkpoint, config, (train, _, _) = setup
    state = load_checkpoint(checkpoint)
    from recbole.config import Config as RecBoleConfig

    stock = RecBoleConfig(model="ItemKNN", dataset="ml-100k", config_dict={"use_gpu": False})
    torch.save({**state, "config": stock}, tmp_path / "knn.pth", pickle_protocol=4)
    with pytest.raises(ValueError, match="'ItemKNN' is not a freqd embedding backbone"):
        load_teacher(tmp_path / "knn.pth", config, train._dataset)


def test_stock_recbole_bpr_checkpoint_is_a_valid_teacher(setup, tmp_path):
    from recbole.config import Config as RecBoleConfig
    from recbole.model.general_recommender import BPR as RecBoleBPR

    _, config, (train, _, _) = setup
    stock_config = RecBoleConfig(model="BPR", dataset="ml-100k", config_dict={"use_gpu": False, "embedding_size": 16})
    model = RecBoleBPR(stock_config, train._dataset)
    torch.save({"config": stock_config, "state_dict": model.state_dict(), "epoch": 0}, tmp_path / "stock.pth",
               pickle_protocol=4)
    teacher = load_teacher(tmp_path / "stock.pth", config, train._dataset)
    assert isinstance(teacher, BPR) and teacher.embedding_size == 16
    assert torch.equal(teacher.item_embedding.weight, model.item_embedding.weight)


@pytest.mark.slow
def test_lightgcn_student_distils_from_bpr_teacher(setup):
    checkpoint, _, _ = setup
    result = distill(checkpoint, "LightGCN", "FreqD", config_dict={
        **QUIET, "epochs": 1, "embedding_size": 8, "n_layers": 2, "freqd_graph": "cooccurrence"})
    assert result["model"] == "LightGCN" and result["teacher_model"] == "BPR"


@pytest.mark.parametrize("key, value, message", [
    ("freqd_graph", "knn", "freqd_graph='knn'"), ("freqd_keep_prob", 0.0, "freqd_keep_prob=0.0: .*greater than 0"),
    ("projector", "conv", "projector='conv'"), ("freqd_schedule", "step", "freqd_schedule='step'"),
])
def test_bad_settings_are_named(key, value, message):
    with pytest.raises(SettingsError, match=message):
        FreqDSettings.validate_values({key: value})


def test_default_yaml_matches_the_built_in_defaults():
    """``configs/kd/freqd.yaml`` documents the defaults: FreqD without it trains the same loss."""
    from pathlib import Path

    import yaml

    shipped = yaml.safe_load((Path(__file__).parents[1] / "configs" / "kd" / "freqd.yaml").read_text())
    defaults = FreqDSettings().model_dump()
    kd = yaml.safe_load((Path(__file__).parents[1] / "freqd" / "properties" / "kd" / "FreqD.yaml").read_text())
    assert shipped.pop("kd_weight") == kd["kd_weight"]
    assert shipped and {key: defaults[key] for key in shipped} == shipped
    assert defaults["freqd_distance"] == "cosine"


def test_each_distiller_brings_its_reference_kd_weight():
    """``--kd DE`` without a config file trains at DE's reference λ; a file or override still wins."""
    from freqd.distillers import DISTILLERS

    weights = {}
    for cls in DISTILLERS.values():
        config = Config(model="BPR", dataset="ml-100k", config_dict=QUIET, kd=cls.name)
        weights[cls.name] = config["kd_weight"]
    assert all(isinstance(w, (int, float)) and w > 0 for w in weights.values())
    assert (weights["DE"], weights["RRD"], weights["FreqD"], weights["KD"]) == (0.005, 0.1, 0.5, 1)
    assert Config(model="BPR", dataset="ml-100k", config_dict=QUIET)["kd_weight"] is None
    assert Config(model="BPR", dataset="ml-100k", config_dict={**QUIET, "kd_weight": 0.3}, kd="DE")["kd_weight"] == 0.3
    with pytest.raises(ValueError, match="unknown distiller 'Nope'"):
        Config(model="BPR", dataset="ml-100k", config_dict=QUIET, kd="Nope")


def test_a_lightgcn_student_step_propagates_once(setup):
    """The rec loss and the distiller share one propagation per step, and the loss is unchanged by it."""
    from freqd.checkpoints import load_teacher
    from freqd.models import LightGCN
    from freqd.trainers import DistillTrainer

    checkpoint, _, (train, _, _) = setup
    config = Config(model="LightGCN", dataset="ml-100k",
                    config_dict={**QUIET, "embedding_size": 8, "n_layers": 2, "freqd_neighbors": 0}, kd="FreqD")
    teacher = load_teacher(checkpoint, config, train._dataset)
    torch.manual_seed(0)
    student = LightGCN(config, train._dataset)
    trainer = DistillTrainer(config, student, FreqD(config, teacher, student, train._dataset))
    calls = []
    compute = student.compute_embeddings
    student.compute_embeddings = lambda: calls.append(1) or compute()
    batch = _batch(seed=4)
    rec, kd = trainer._losses(batch)
    assert len(calls) == 1
    separate_rec = student.calculate_loss(batch)
    separate_kd = trainer.kd_weight * trainer.distiller(batch, StepTables.of(student))
    assert len(calls) == 3  # outside a step every caller propagates
    torch.testing.assert_close(rec, separate_rec)
    torch.testing.assert_close(kd, separate_kd)
    (rec + kd).backward()
    assert student.user_embedding.weight.grad.abs().sum() > 0


@pytest.mark.slow
def test_stock_recbole_bpr_is_a_student_through_the_adapter(setup):
    """freqd.distill with RecBole's own BPR class: trained with FreqD, evaluated, saved."""
    from recbole.model.general_recommender import BPR as RecBoleBPR

    import freqd

    checkpoint, _, _ = setup
    result = freqd.distill(checkpoint, RecBoleBPR, "FreqD", config_dict={**QUIET, "epochs": 2, "embedding_size": 8,
                                                                        "freqd_spectral_log_every": 1})
    assert result["model"] == "BPR" and result["kd"] == "FreqD"
    metrics = __import__("pandas").read_csv(f"{result['run_dir']}/metrics.csv")
    assert metrics["kd_loss"].notna().all() and "rayleigh_1" in metrics.columns
    state = load_checkpoint(result["checkpoint"])["state_dict"]
    stock = RecBoleBPR(Config(model=RecBoleBPR, dataset="ml-100k", config_dict={**QUIET, "embedding_size": 8}),
                       setup[2][0]._dataset)
    stock.load_state_dict(state)  # the student is RecBole's class, state dict and all
    assert result["test_result"]["ndcg@20"] > 0


class OwnStudent(RecBoleBPR):
    """A user's own model class, outside freqd's and RecBole's packages (its module is this test file)."""


@pytest.mark.slow
def test_a_student_of_your_own_class_finishes_and_its_checkpoint_stays_refused_elsewhere(setup):
    """The run reloads its best checkpoint knowing its own class; any other loader still refuses the
    unknown class (or would run its module), naming it."""
    from freqd.checkpoints import UnsafeCheckpointError

    checkpoint = setup[0]
    result = distill(checkpoint, OwnStudent, "KD", config_dict={**QUIET, "epochs": 1, "embedding_size": 8})
    assert result["test_result"]["ndcg@20"] > 0
    with pytest.raises(UnsafeCheckpointError, match="OwnStudent"):
        load_checkpoint(result["checkpoint"])
    state = load_checkpoint(result["checkpoint"], known_classes=(OwnStudent,))["state_dict"]
    assert state["user_embedding.weight"].shape[1] == 8


def test_adapter_needs_tables():
    from freqd.models import adapt

    with pytest.raises(ValueError, match="has no user_embedding / item_embedding table"):
        adapt(torch.nn.Linear(2, 2))
    module = adapt(torch.nn.Linear(3, 2), tables=lambda m: (m.weight, m.weight))
    assert module.embedding_size == 3 and module.embeddings()[0].shape == (2, 3)



def test_run_width_of_models_freqd_cannot_name_and_of_code_students():
    """A run names its width from the built model, else from the configured class; a class outside
    freqd's registry (your own, passed as a class) falls back to embedding_size instead of failing."""
    from freqd.runs import model_width
    from freqd.testing import fake_config

    assert model_width(fake_config(model="MyOwnRecommender", embedding_size=8)) == 8
    assert model_width(fake_config(model="Hash", embedding_size=20, hash_bits=64)) == 64
    assert model_width(fake_config(model="BPR", embedding_size=20)) == 20


def test_kd_term_on_a_coreset_weighs_the_selected_triples_by_their_share():
    """kd_coreset: the distiller sees the selected users' triples only, scaled by their share; none gives 0."""
    from freqd.trainers.distill import kd_term

    class MeanUser:  # a distiller whose loss is the mean user id of the triples it is given
        USER_ID = "user_id"

        def __call__(self, interaction, tables):
            return interaction["user_id"].double().mean()

    batch = Interaction({"user_id": torch.tensor([1, 2, 3, 4, 3, 9]), "item_id": torch.arange(6)})
    tables = StepTables(torch.zeros(10, 2), torch.zeros(6, 2))
    assert float(kd_term(MeanUser(), batch, tables, 0.5)) == pytest.approx(0.5 * 22 / 6)
    # users 3 and 9: triples (3, 3, 9), 3 of 6 -> 0.5 × (3/6) × mean(3, 3, 9)
    assert float(kd_term(MeanUser(), batch, tables, 0.5, torch.tensor([3, 9]))) == pytest.approx(0.5 * 0.5 * 5.0)
    assert float(kd_term(MeanUser(), batch, tables, 0.5, torch.tensor([7]))) == 0.0
