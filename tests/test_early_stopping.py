"""Early stopping on smoothed validation scores: known answers on a scripted score sequence."""

from __future__ import annotations

import pytest
from recbole.data import create_dataset
from recbole.trainer import Trainer as RecBoleTrainer
from recbole.utils import init_seed

from freqd.config import Config
from freqd.evaluation import build_dataloaders
from freqd.models import BPR
from freqd.trainers import Trainer

#: A run whose second evaluation is a one-off spike, then a slow climb that never reaches it.
SCORES = [0.10, 0.50, 0.20, 0.25, 0.30, 0.32, 0.31, 0.30, 0.29, 0.28]


@pytest.fixture(scope="module")
def data():
    config = Config(model="BPR", dataset="ml-100k", config_dict={"show_progress": False, "state": "ERROR",
                                                                 "use_gpu": False, "embedding_size": 4})
    init_seed(config["seed"], True)
    return config, build_dataloaders(config, create_dataset(config))


def _fit(data, monkeypatch, smoothing: int, patience: int, epochs: int = 10):
    config, (train, valid, _) = data
    scores = iter(SCORES)
    monkeypatch.setattr(RecBoleTrainer, "_train_epoch", lambda self, *a, **k: 0.0)
    monkeypatch.setattr(RecBoleTrainer, "_valid_epoch", lambda self, *a, **k: (next(scores), {"ndcg@20": 0.0}))
    for key, value in {"valid_smoothing": smoothing, "stopping_step": patience, "eval_step": 1, "epochs": epochs}.items():
        config[key] = value
    trainer = Trainer(config, BPR(config, train._dataset))
    trainer.last_eval_seconds = 0.0
    best_score, _ = trainer.fit(train, valid, saved=False, show_progress=False)
    return trainer, best_score


@pytest.mark.slow
def test_raw_scores_stop_on_the_spike(data, monkeypatch):
    trainer, best = _fit(data, monkeypatch, smoothing=1, patience=2)
    assert trainer.best_epoch == 1 and best == pytest.approx(0.50)
    assert len(trainer.history) == 5  # RecBole stops at the 3rd evaluation (> patience 2) without a better one
    assert trainer.converged() is True


def test_smoothed_scores_ignore_the_spike(data, monkeypatch):
    trainer, best = _fit(data, monkeypatch, smoothing=3, patience=2)
    # Means of the last three: 0.10, 0.30, 0.2667, 0.3167, 0.25, 0.29, 0.31 -> best at the 4th evaluation.
    smoothed = [r["valid_score_smoothed"] for r in trainer.history]
    assert smoothed == pytest.approx([0.10, 0.30, 0.8 / 3, 0.95 / 3, 0.25, 0.29, 0.31])
    assert trainer.best_epoch == 3 and best == pytest.approx(0.95 / 3)
    assert trainer.converged() is True


def test_a_run_that_uses_every_epoch_is_not_converged(data, monkeypatch):
    trainer, _ = _fit(data, monkeypatch, smoothing=1, patience=50, epochs=6)
    assert len(trainer.history) == 6 and trainer.best_epoch == 1
    assert trainer.converged() is False


def test_bad_smoothing_is_refused(data):
    config, (train, _, _) = data
    config["valid_smoothing"] = 0
    with pytest.raises(ValueError, match="valid_smoothing must be >= 1"):
        Trainer(config, BPR(config, train._dataset))


def test_resume_keeps_the_checkpoint_as_the_best_so_far(data, monkeypatch):
    config, (train, _, _) = data
    trainer, best = _fit(data, monkeypatch, smoothing=3, patience=2)
    trainer._save_checkpoint(trainer.best_epoch, verbose=False)
    resumed = Trainer(config, BPR(config, train._dataset))
    resumed.resume_checkpoint(trainer.saved_model_file)
    assert resumed.best_epoch == trainer.best_epoch == 3
    assert resumed._best_smoothed == pytest.approx(best)
