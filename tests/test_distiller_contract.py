"""The contract every registered distiller keeps (FreqD and each baseline): ``freqd.testing``'s checks.

Parametrised over ``freqd.distillers.available()``, so a new method is covered by being defined:
on the fake backbones (fast), and on ml-100k with the shared trained teacher and a BPR student (slow).
"""

from __future__ import annotations

import pytest
import torch
from recbole.data import create_dataset
from recbole.utils import init_seed

from freqd.checkpoints import load_teacher
from freqd.config import Config
from freqd.distillers import available
from freqd.evaluation import build_dataloaders
from freqd.models import BPR
from freqd.testing import (
    build_distiller,
    check_forward_reads_only_its_tables,
    check_loss_and_gradients,
    check_loss_decreases,
    contract_setup,
    fake_batch,
)

QUIET = {"show_progress": False, "state": "ERROR", "use_gpu": False}


# -- fake backbones --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", available())
def test_loss_is_finite_and_only_the_student_side_learns(name):
    s = contract_setup(name)
    check_loss_and_gradients(s.distiller, s.teacher, s.student, s.batch)


@pytest.mark.parametrize("name", available())
def test_a_few_steps_lower_the_loss(name):
    s = contract_setup(name)
    check_loss_decreases(s.distiller, s.student, s.batch)


@pytest.mark.parametrize("name", available())
def test_forward_reads_the_step_tables_and_never_the_student(name):
    s = contract_setup(name)
    check_forward_reads_only_its_tables(s.distiller, s.student, s.batch)


# -- ml-100k: the shared trained teacher, a BPR student ----------------------------------------------
@pytest.fixture(scope="module")
def ml100k(bpr_teacher_32):
    config = Config(model="BPR", dataset="ml-100k", config_dict={**QUIET, "embedding_size": 8})
    init_seed(config["seed"], True)
    train = build_dataloaders(config, create_dataset(config))[0]._dataset
    return bpr_teacher_32, config, train


def _ml100k_setup(ml100k, name):
    checkpoint, config, train = ml100k
    teacher = load_teacher(checkpoint, config, train)
    torch.manual_seed(0)
    student = BPR(config, train)
    return build_distiller(name, config, teacher, student, train), teacher, student, train


@pytest.mark.slow
@pytest.mark.parametrize("name", available())
def test_ml100k_loss_is_finite_and_only_the_student_side_learns(ml100k, name):
    distiller, teacher, student, train = _ml100k_setup(ml100k, name)
    check_loss_and_gradients(distiller, teacher, student, fake_batch(train, n=256))
    assert all(not p.requires_grad for p in teacher.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name", available())
def test_ml100k_a_few_steps_lower_the_loss(ml100k, name):
    distiller, _, student, train = _ml100k_setup(ml100k, name)
    check_loss_decreases(distiller, student, fake_batch(train, n=256, seed=1))
