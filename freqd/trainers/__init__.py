"""Trainers: RecBole ``Trainer`` subclasses (checkpoints, protocols, per-epoch records)."""

from freqd.trainers.distill import DistillTrainer
from freqd.trainers.trainer import Trainer

__all__ = ["DistillTrainer", "Trainer"]
