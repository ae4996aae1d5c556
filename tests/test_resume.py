"""Exact resume: a run killed mid-training and resumed from its ``-last.pth`` ends bit-identical."""

from __future__ import annotations

import glob

import pytest
import torch

from freqd import load_checkpoint
from freqd.runs import distill, train
from freqd.trainers import Trainer

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]
RUN = {"show_progress": False, "state": "ERROR", "use_gpu": False, "epochs": 6, "embedding_size": 8,
       "stopping_step": 50, "eval_step": 2}


class Killed(Exception):
    """Stands in for kill -9 between two epochs."""


def _kill_at(monkeypatch, epoch: int) -> None:
    train_epoch = Trainer._train_epoch

    def killing(self, train_data, epoch_idx, *args, **kwargs):
        if epoch_idx == epoch:
            raise Killed
        return train_epoch(self, train_data, epoch_idx, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_train_epoch", killing)


def _same(a: dict, b: dict) -> None:
    assert a["test_result"] == b["test_result"]
    assert (a["best_epoch"], a["epochs_run"], a["best_valid_score"]) == (b["best_epoch"], b["epochs_run"],
                                                                       b["best_valid_score"])
    first, second = load_checkpoint(a["checkpoint"]), load_checkpoint(b["checkpoint"])
    for key, value in first["state_dict"].items():
        assert torch.equal(value, second["state_dict"][key]), key


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["recbole", "fast"])
def test_killed_training_resumes_bit_identical(monkeypatch, sampler):
    settings = {**RUN, "train_sampler": sampler}
    whole = train("BPR", "ml-100k", config_dict=settings)
    assert not glob.glob("saved/*-last.pth")  # removed once training ended normally
    with monkeypatch.context() as patch:
        _kill_at(patch, 5)
        with pytest.raises(Killed):
            train("BPR", "ml-100k", config_dict=settings)
    (last,) = glob.glob("saved/*-last.pth")
    assert load_checkpoint(last)["epoch"] == 3  # written after the last validation (epoch 3)
    resumed = train("BPR", "ml-100k", config_dict=settings, resume=last)
    _same(whole, resumed)


@pytest.mark.slow
def test_killed_during_the_test_evaluation_resumes_straight_to_it(monkeypatch):
    """Training done, killed before results.json: the finished -last resumes without training again."""
    settings = {**RUN, "train_sampler": "fast"}
    whole = train("BPR", "ml-100k", config_dict=settings)
    evaluate = Trainer.evaluate

    def killed_at_test(self, eval_data, load_best_model=True, *args, **kwargs):
        if load_best_model:  # the test evaluation (validation passes False)
            raise Killed
        return evaluate(self, eval_data, load_best_model, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "evaluate", killed_at_test)
        with pytest.raises(Killed):
            train("BPR", "ml-100k", config_dict=settings)
    (last,) = glob.glob("saved/*-last.pth")
    assert load_checkpoint(last)["resume"]["finished"] is not None
    trained = []
    train_epoch = Trainer._train_epoch
    monkeypatch.setattr(Trainer, "_train_epoch", lambda self, *a, **k: trained.append(1) or train_epoch(self, *a, **k))
    resumed = train("BPR", "ml-100k", config_dict=settings, resume=last)
    assert trained == []  # no epoch trained again
    _same(whole, resumed)
    assert glob.glob("saved/*-last.pth") == [last]  # the input is kept; the resumed run's own -last was deleted


@pytest.mark.slow
def test_killed_distillation_resumes_bit_identical(monkeypatch, bpr_teacher_32):
    settings = {**RUN, "train_sampler": "fast", "freqd_spectral_log_every": 0, "freqd_neighbors": 2,
                "projector": "mlp", "projector_per_entity": True, "freqd_filter_first": True, "projector_hidden": 8}
    whole = distill(bpr_teacher_32, "BPR", "FreqD", config_dict=settings)
    with monkeypatch.context() as patch:
        _kill_at(patch, 3)
        with pytest.raises(Killed):
            distill(bpr_teacher_32, "BPR", "FreqD", config_dict=settings)
    (last,) = glob.glob("saved/*-last.pth")
    resumed = distill(bpr_teacher_32, "BPR", "FreqD", config_dict=settings, resume=last)
    _same(whole, resumed)
    assert load_checkpoint(resumed["checkpoint"])["freqd"]["distiller_state"].keys() == \
        load_checkpoint(whole["checkpoint"])["freqd"]["distiller_state"].keys()


@pytest.mark.slow
def test_resume_needs_the_interrupted_runs_best_checkpoint(monkeypatch):
    with monkeypatch.context() as patch:
        _kill_at(patch, 4)
        with pytest.raises(Killed):
            train("BPR", "ml-100k", config_dict=RUN)
    (last,) = glob.glob("saved/*-last.pth")
    best = load_checkpoint(last)["resume"]["best_file"]
    import os

    os.remove(best)
    with pytest.raises(FileNotFoundError, match="best checkpoint .* is gone"):
        train("BPR", "ml-100k", config_dict=RUN, resume=last)
