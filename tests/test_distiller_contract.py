"""The contract every registered distiller keeps (FreqD and each baseline), on ml-100k.

Parametrised over ``freqd.distillers.available()``, so a new method is covered by being
defined: finite scalar loss; gradients reach the student (and the distiller's own modules) but
never the teacher; the teacher is unchanged and absent from the distiller's state; a few
optimiser steps on a fixed batch lower the loss.
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
from freqd.distillers import available, get_distiller
from freqd.distillers.teacher import teacher_tables
from freqd.evaluation import build_dataloaders
from freqd.models import BPR
from freqd.runs import train

QUIET = {"show_progress": False, "state": "ERROR", "use_gpu": False}


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
    distiller.on_epoch_start(0)
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
    loss = distiller(_batch(setup[2]), student)
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
        loss = distiller(batch, student)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first, f"{name}: loss {first:.4g} -> {last:.4g}"
