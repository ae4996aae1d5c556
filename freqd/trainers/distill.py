"""``DistillTrainer``: trains a student with recommendation loss + kd_weight · distiller loss."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from freqd.distillers.base import StepTables
from freqd.trainers.trainer import Trainer


def kd_term(distiller, interaction, tables: StepTables, kd_weight: float, kd_users=None):
    """kd_weight × the distiller's loss on a batch; with ``kd_users`` (``kd_coreset``), on their triples only.

    The selected users' triples are scaled by their share of the batch, so each weighs what it
    weighs in a full batch; a batch without any gives zero.
    """
    if kd_users is None:
        return kd_weight * distiller(interaction, tables)
    chosen = torch.isin(interaction[distiller.USER_ID], kd_users)
    n_chosen = int(chosen.sum())
    if n_chosen == 0:
        return tables.users.new_zeros(())
    return kd_weight * (n_chosen / len(chosen)) * distiller(interaction[chosen], tables)


class DistillTrainer(Trainer):
    """A :class:`Trainer` whose model is the student and which also owns a distiller.

    * The optimiser covers the student and the distiller's modules (projectors), never the
      teacher (the distiller keeps only the teacher's tables, as non-persistent buffers).
    * Losses are logged as two parts, ``rec_loss`` and ``kd_loss`` (already weighted).
    * The student's tables are computed once per step (:class:`StepTables`) and read by both the
      recommendation loss and the distiller: one LightGCN propagation per step.
    * ``kd_weight`` is the distiller's (:attr:`Distiller.kd_weight`: validated, and unset in the
      config its reference value, ``freqd/properties/kd/<Name>.yaml``).
    * Checkpoints hold the student alone in ``state_dict`` (it serves on its own, like any
      BPR/LightGCN checkpoint) and the distiller's modules in ``distiller_state`` for resuming.
    """

    def __init__(self, config, student, distiller, metadata=None, metrics_path=None, kd_users=None):
        self.distiller = distiller.to(config["device"])
        self.kd_weight = distiller.kd_weight
        if config["kd_weight"] is None:  # a config built without ``kd``: record the reference value used
            config["kd_weight"] = self.kd_weight
        super().__init__(config, student, metadata=metadata, metrics_path=metrics_path)
        self.loss_names = ["rec_loss", "kd_loss"]
        # ``kd_coreset``: the users whose triples the distillation term sees (None: every user).
        self.kd_users = None if kd_users is None else kd_users.to(self.device)

    def _build_optimizer(self, **kwargs):
        kwargs.setdefault("params", [*self.model.parameters(), *self.distiller.parameters()])
        return super()._build_optimizer(**kwargs)

    def _losses(self, interaction):
        step = getattr(self.model, "one_step", None)
        with step() if step is not None else nullcontext():
            # Inside ``one_step`` the recommendation loss reads these same tables (no second propagation).
            tables = StepTables.of(self.model)
            rec = self.model.calculate_loss(interaction)
            return rec, kd_term(self.distiller, interaction, tables, self.kd_weight, self.kd_users)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self.distiller.train()
        self.distiller.on_epoch_start(epoch_idx, self.model)
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=self._losses, show_progress=show_progress)
        self.history[-1].update(self.distiller.epoch_log(self.model))
        self._write_metrics()
        return loss

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        self.metadata["distiller_state"] = self.distiller.state_dict()
        super()._save_checkpoint(epoch, verbose=verbose, **kwargs)

    def _restore(self, checkpoint, resume_file) -> None:
        super()._restore(checkpoint, resume_file)
        state = (checkpoint.get("freqd") or {}).get("distiller_state")
        if state is None:
            raise ValueError(f"{resume_file} holds no distiller state; it is not a distillation checkpoint")
        self.distiller.load_state_dict(state)
