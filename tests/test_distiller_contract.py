"""The contract every registered distiller keeps (FreqD and each baseline), on ml-100k.

Parametrised over ``freqd.distillers.available()``, so a new method is covered by being
defined: finite scalar loss; gradients reach the student (and the distiller's own modules) but
never the teacher; the teacher is unchanged and absent from the distiller's state; a few
optimiser steps on a fixed batch lower the loss; ``forward`` reads the step's tables it is given
and never the student (tiny stand-ins).
"""

from __future__ import annotations

import os

import pytest
import torch
from recbole.data import create_dataset
from recbole.data.interaction import Interaction
from recbole.utils import init_seed

from freqd.config import Config
from freqd.checkpoints import load_teacher
from freqd.distillers import StepTables, available, get_distiller
from freqd.distillers.teacher import teacher_tables
from freqd.evaluation import build_dataloaders
from freqd.models import BPR
from freqd.runs import train

QUIET = {"show_progress": False, "state": "ERROR", "use_gpu": False}


# -- forward reads the tables it is given (tiny stand-ins, every distiller) ------------------------------
N_USERS, N_ITEMS = 6, 40
#: Settings that fit the tiny data (pools below the 40 items, a short Gumbel schedule).
TINY = {"epochs": 5, "rrd_pool": 10, "rrd_interesting": 4, "rrd_uninteresting": 6, "dcd_pool": 12, "dcd_samples": 3,
        "cd_pool": 15, "cd_samples": 4, "unkd_groups": 2, "unkd_pool": 8, "kd_topk": 5, "pckd_topk": 8,
        "pckd_samples": 3, "de_experts": 2, "htd_groups": 2, "fitnet_sample": "batch"}


class _Config(dict):
    """RecBole's Config answers None for a missing key."""

    def __missing__(self, key):
        return None


class _Data:
    """A stand-in training dataset with RecBole's attribute names."""

    uid_field, iid_field = "user_id", "item_id"
    user_num, item_num = N_USERS, N_ITEMS

    def __init__(self):
        users = torch.arange(1, N_USERS).repeat_interleave(6)
        items = (torch.arange(len(users)) * 7) % (N_ITEMS - 1) + 1
        self.inter_feat = {"user_id": users, "item_id": items}


class _Student(torch.nn.Module):
    """ID tables whose final tables differ from them (as LightGCN's do); ``embeddings`` can be forbidden."""

    USER_ID, ITEM_ID, NEG_ITEM_ID = "user_id", "item_id", "neg_item_id"

    def __init__(self, dim, seed, frozen=False):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.n_users, self.n_items, self.embedding_size = N_USERS, N_ITEMS, dim
        self.user_embedding = torch.nn.Embedding.from_pretrained(torch.randn(N_USERS, dim, generator=g), freeze=frozen)
        self.item_embedding = torch.nn.Embedding.from_pretrained(torch.randn(N_ITEMS, dim, generator=g), freeze=frozen)
        self.forbidden = False

    def embeddings(self):
        if self.forbidden:
            raise AssertionError("student.embeddings() called inside the distiller's forward")
        users, items = self.user_embedding.weight, self.item_embedding.weight
        return torch.tanh(users) + users, items + 0.5 * items.roll(1, 0)


@pytest.mark.parametrize("name", available())
def test_forward_reads_the_step_tables_and_never_the_student(name):
    teacher, student, data = _Student(6, seed=1, frozen=True), _Student(3, seed=2), _Data()
    torch.manual_seed(0)
    distiller = get_distiller(name)(_Config(TINY), teacher, student, data)
    distiller.train()
    distiller.on_epoch_start(0, student)  # may score the student (its current rankings)
    assert not any(value is student for value in vars(distiller).values()), "the distiller keeps the student"
    batch = {"user_id": torch.tensor([1, 3, 3, 5, 2]), "item_id": torch.tensor([1, 8, 15, 22, 29]),
             "neg_item_id": torch.tensor([4, 11, 18, 25, 32])}
    tables = StepTables.of(student)
    other = StepTables(tables.users + 0.3, tables.items - 0.2, tables.id_users + 0.3, tables.id_items - 0.2)
    student.forbidden = True
    torch.manual_seed(1)
    loss = distiller(batch, tables)
    torch.manual_seed(1)
    moved = distiller(batch, other)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert float(moved.detach()) != pytest.approx(float(loss.detach()), rel=1e-6), "the loss ignores the tables it was given"
    loss.backward()
    assert student.user_embedding.weight.grad.abs().sum() > 0, "no gradient reached the student through the tables"
    student.forbidden = False
    assert isinstance(distiller.epoch_log(student), dict)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("contract")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        teacher = train("BPR", "ml-100k", config_dict={**QUIET, "epochs": 3, "embedding_size": 32,
                                                           "learning_rate": 0.01})
        config = Config(model="BPR", dataset="ml-100k",
                        config_dict={**QUIET, "embedding_size": 8, "checkpoint_dir": str(folder / "saved")})
        init_seed(config["seed"], True)
        loaders = build_dataloaders(config, create_dataset(config))
    finally:
        os.chdir(cwd)
    return str(folder / teacher["checkpoint"]), config, loaders[0]._dataset


def _build(setup, name):
    checkpoint, config, train = setup
    torch.manual_seed(0)
    teacher = load_teacher(checkpoint, config, train)
    student = BPR(config, train)
    distiller = get_distiller(name)(config, teacher, student, train)
    distiller.train()
    distiller.on_epoch_start(0, student)
    return distiller, student, teacher


def _batch(train, n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    users = train.inter_feat[train.uid_field]
    items = train.inter_feat[train.iid_field]
    rows = torch.randint(0, len(users), (n,), generator=g)
    return Interaction({"user_id": users[rows], "item_id": items[rows],
                        "neg_item_id": torch.randint(1, train.item_num, (n,), generator=g)})


@pytest.mark.slow
@pytest.mark.parametrize("name", available())
def test_loss_is_finite_and_only_student_side_learns(setup, name):
    distiller, student, teacher = _build(setup, name)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    loss = distiller(_batch(setup[2]), StepTables.of(student))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in student.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads), "no gradient reached the student"
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    t_users, t_items = teacher_tables(teacher)
    for key, value in distiller.state_dict().items():
        for table in (t_users, t_items):
            assert not (value.shape == table.shape and torch.equal(value, table)), f"teacher table in state: {key}"


@pytest.mark.slow
@pytest.mark.parametrize("name", available())
def test_a_few_steps_lower_the_loss(setup, name):
    distiller, student, _ = _build(setup, name)
    batch = _batch(setup[2], seed=1)
    optimizer = torch.optim.Adam([*student.parameters(), *distiller.parameters()], lr=0.01)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = distiller(batch, StepTables.of(student))
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first, f"{name}: loss {first:.4g} -> {last:.4g}"
