"""Trainers: RecBole ``Trainer`` subclasses (checkpoints, protocols, per-epoch records)."""

from freqd.trainers.trainer import FreqdTrainer

__all__ = ["FreqdTrainer"]
