"""FreqDKD: FreqD's feature term plus μ × KD's response term, each part as its own method computes it."""

from __future__ import annotations

import pytest
import torch

from freqd.distillers import get_distiller
from freqd.distillers.base import StepTables
from freqd.testing import FAKE_DATA_SETTINGS, FakeDataset, build_distiller, fake_batch, fake_config, tiny_models

SETTINGS = {**FAKE_DATA_SETTINGS, "kd_topk": 4, "freqd_neighbors": 0, "freqd_teacher_rank": 0}


def _parts(mu: float | None, **more):
    data = FakeDataset.random()
    teacher, student = tiny_models(data)
    extra = {} if mu is None else {"kd_response_weight": mu}
    config = fake_config({**SETTINGS, **extra, **more})
    combined = build_distiller("FreqDKD", config, teacher, student, data)
    freqd = build_distiller("FreqD", config, teacher, student, data)
    kd = build_distiller("KD", config, teacher, student, data)
    # The same projector weights in both FreqD terms (each build draws its own initialisation).
    freqd.load_state_dict(combined.feature.state_dict())
    return combined, freqd, kd, student, fake_batch(data)


@pytest.mark.parametrize("mu", [None, 0.0, 0.7])
def test_loss_is_the_feature_term_plus_mu_times_the_response_term(mu):
    combined, freqd, kd, student, batch = _parts(mu)
    tables = StepTables.of(student)
    expected_mu = 2.0 if mu is None else mu
    expected = freqd(batch, tables) + expected_mu * kd(batch, tables)
    assert torch.allclose(combined(batch, tables), expected, rtol=1e-6, atol=1e-7)


def test_both_parts_follow_the_epoch_hook():
    """KD's candidates are the student's current top-K, redrawn at every epoch start; FreqD's α follows."""
    combined, _, _, student, _ = _parts(None, freqd_schedule="linear", freqd_alpha_end=0.0,
                                        freqd_schedule_epochs=2)
    before = combined.response.candidates.clone()
    with torch.no_grad():
        student.user_embedding.weight.mul_(-1.0)  # reverses every user's ranking
    combined.on_epoch_start(1, student)
    assert not torch.equal(before, combined.response.candidates)
    assert combined.feature.alpha == pytest.approx(0.25) and combined.epoch_log(student)["freqd_alpha"] == 0.25


def test_the_reference_weights_carry_over():
    """kd_weight 0.5 (FreqD's) × μ 2 = 1 (KD's): each term at its own method's reference weight."""
    import yaml

    from freqd.distillers.base import KD_PROPERTIES

    weight = {name: yaml.safe_load((KD_PROPERTIES / f"{name}.yaml").read_text())["kd_weight"]
              for name in ("FreqD", "KD", "FreqDKD")}
    mu = get_distiller("FreqDKD").settings_cls().kd_response_weight
    assert weight["FreqDKD"] == weight["FreqD"] and weight["FreqDKD"] * mu == weight["KD"]
