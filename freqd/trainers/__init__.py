"""Trainers: RecBole ``Trainer`` subclasses (checkpoints, protocols, per-epoch records)."""

from freqd.trainers.distill import DistillTrainer
from freqd.trainers.trainer import FreqdTrainer

__all__ = ["DistillTrainer", "FreqdTrainer"]
