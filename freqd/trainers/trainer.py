"""``Trainer``: RecBole's Trainer with safe checkpoint I/O, named protocols and run records."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from time import perf_counter
from typing import Any

import torch
from recbole.trainer import Trainer as RecBoleTrainer
from recbole.utils import set_color

from freqd.checkpoints import load_checkpoint
from freqd.distributed import AveragedGradients, current_shard
from freqd.evaluation.fullsort import full_sort_evaluate
from freqd.evaluation.protocol import rescale_to_all_users
from freqd.io import atomic_torch_save, atomic_write_text
from freqd.trainers.optim import OptimizerGroup, RowAdam


class _NoEvents:
    """A TensorBoard writer that writes nothing (the ranks other than 0 of a data-parallel run)."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def unique_checkpoint_name(folder: str, model: str) -> str:
    """``<folder>/<model>-<local time to the microsecond>.pth``, with ``-2``, ``-3``, … if taken.

    RecBole names checkpoints to the second, so two runs started in the same second in one folder
    wrote the same file: the later run overwrote the earlier one's best model.
    """
    stem = Path(folder) / f"{model}-{datetime.now():%b-%d-%Y_%H-%M-%S-%f}"
    path, n = stem.with_suffix(".pth"), 1
    while path.exists() or Path(f"{path.with_suffix('')}-last.pth").exists():
        n += 1
        path = Path(f"{stem}-{n}.pth")
    return str(path)


def newest_last_checkpoint(folder: str | Path) -> Path | None:
    """The newest resume checkpoint (``<best>-last.pth``, :attr:`Trainer.last_file`) in ``folder``, or None."""
    folder = Path(folder)
    lasts = sorted(folder.glob("*-last.pth"), key=lambda path: path.stat().st_mtime_ns) if folder.is_dir() else []
    return lasts[-1] if lasts else None


class Trainer(RecBoleTrainer):
    """RecBole's ``Trainer``, changed where RecBole 1.2.1 breaks or loses information.

    * Checkpoints are RecBole's dict (so RecBole tools read them) plus a ``freqd`` metadata entry
      (model, dataset, sizes, training-data fingerprint), written atomically; reloads use
      :func:`freqd.load_checkpoint` (torch >= 2.6 cannot weights-only-load RecBole's pickles).
    * ``protocol: reference`` rescales metrics to an average over all users.
    * Full-sort evaluation ranks in chunks with RecBole's metrics on the top-k
      (:mod:`freqd.evaluation.fullsort`); other metrics and loaders use RecBole's path.
    * Every epoch's losses, timings and validation metrics are kept in :attr:`history` and, with
      ``metrics_path`` set, rewritten to a CSV after each epoch.
    * Early stopping and the best checkpoint use the mean of the last ``valid_smoothing``
      validation scores (1 = RecBole's rule); :meth:`converged` tells a capped run from a stopped one.
    * :attr:`on_evaluation`, when set, is called as ``f(epoch, smoothed_score)`` after every
      validation (``freqd tune`` prunes trials from it by raising).
    """

    def __init__(self, config, model, metadata: dict[str, Any] | None = None, metrics_path: str | Path | None = None):
        super().__init__(config, model)
        if current_shard().rank != 0:
            self._drop_tensorboard()
        self.saved_model_file = unique_checkpoint_name(self.checkpoint_dir, config["model"])
        self.metadata = dict(metadata or {})
        self.metrics_path = Path(metrics_path) if metrics_path else None
        self.history: list[dict[str, Any]] = []
        self.loss_names: list[str] | None = None
        self.n_all_users: int | None = self.metadata.get("n_real_users")
        smoothing = 1 if config["valid_smoothing"] is None else config["valid_smoothing"]
        if isinstance(smoothing, bool) or not isinstance(smoothing, int) or smoothing < 1:
            raise ValueError(f"valid_smoothing must be >= 1 evaluations (an integer), got {smoothing!r}")
        self.valid_smoothing = smoothing
        self._recent_scores: list[float] = []
        self._best_smoothed: float | None = None
        self.best_epoch: int | None = None
        self.on_evaluation: Callable[[int, float], None] | None = None
        # A run on a coreset: recomputes the outside users' rows before every evaluation (freqd.coreset.fold_in).
        self.fold_in: Callable[[Any], None] | None = None

    def _drop_tensorboard(self) -> None:
        """On a rank other than 0: no TensorBoard events (rank 0 writes the run's); the event file RecBole's
        writer opened in the shared folder (its name ends in this process id) is removed."""
        import os

        writer: Any = getattr(self, "tensorboard")
        folder = Path(writer.get_logdir())
        writer.close()
        for event_file in folder.glob(f"events.out.tfevents.*.{os.getpid()}.*"):
            event_file.unlink(missing_ok=True)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        self.tensorboard = _NoEvents()

    # -- optimiser ---------------------------------------------------------------------------
    def _build_optimizer(self, **kwargs):
        """RecBole's optimiser, or with ``sparse_embeddings`` a :class:`RowAdam` for the model's tables.

        The row-sparse tables (:meth:`EmbeddingRecommender.sparse_tables`) get the lazy row-wise
        Adam; every other parameter (a distiller's projector) gets the usual optimiser, and the
        two are stepped and checkpointed together (:class:`OptimizerGroup`).
        """
        shard = current_shard()
        if shard.world > 1:
            return self._data_parallel_optimizer(shard, **kwargs)
        tables = {id(p) for p in getattr(self.model, "sparse_tables", list)()}
        if not tables:
            if self.config["sparse_embeddings"]:
                raise ValueError(f"sparse_embeddings: True is not supported by {type(self.model).__name__}")
            return self._dense_optimizer(**kwargs)
        learner = kwargs.get("learner", self.learner)
        if learner.lower() != "adam":
            raise ValueError(
                f"sparse_embeddings: True needs learner: adam (row-wise lazy Adam), got learner: {learner}"
            )
        if self.clip_grad_norm:
            raise ValueError(
                f"sparse_embeddings: True cannot be combined with clip_grad_norm: {self.clip_grad_norm} "
                "(torch's clip_grad_norm_ rejects sparse gradients)"
            )
        params = list(kwargs.pop("params", self.model.parameters()))
        row_params = [p for p in params if id(p) in tables]
        others = [p for p in params if id(p) not in tables]
        row_adam = RowAdam(
            row_params,
            lr=kwargs.get("learning_rate", self.learning_rate),
            weight_decay=kwargs.get("weight_decay", self.weight_decay) or 0.0,
        )
        if not others:
            return OptimizerGroup([row_adam])
        return OptimizerGroup([row_adam, self._dense_optimizer(params=others, **kwargs)])

    def _data_parallel_optimizer(self, shard, **kwargs):
        """In a process group of several ranks: the dense optimiser, its gradients averaged over the ranks."""
        if self.config["sparse_embeddings"]:
            raise ValueError("sparse_embeddings: True is not supported in data-parallel training (dense gradients "
                             "are averaged over the ranks)")
        if self.clip_grad_norm:
            raise ValueError(f"clip_grad_norm: {self.clip_grad_norm} is not supported in data-parallel training "
                             "(it would clip each rank's gradient before the average)")
        return AveragedGradients(self._dense_optimizer(**kwargs), shard)

    def _dense_optimizer(self, **kwargs):
        """RecBole's optimiser; Adam/AdamW use torch's fused kernel unless ``fused_optimizer: False``.

        Same update rule (coupled L2 for ``adam``), about 3x faster per step on CPU for large
        embedding tables (the step touches every row: dense embedding gradients).
        """
        learner = kwargs.get("learner", self.learner)
        if learner.lower() not in ("adam", "adamw") or self.config["fused_optimizer"] is False:
            return super()._build_optimizer(**kwargs)
        params = list(kwargs.get("params", self.model.parameters()))
        cls = torch.optim.Adam if learner.lower() == "adam" else torch.optim.AdamW
        return cls(
            params,
            lr=kwargs.get("learning_rate", self.learning_rate),
            weight_decay=kwargs.get("weight_decay", self.weight_decay),
            fused=True,
        )

    # -- checkpoints -------------------------------------------------------------------------
    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        if self.fold_in is not None:  # also a run without validation saves the folded-in rows
            self.fold_in(self.model)
        state = {
            "config": self.config,
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": self.best_valid_score,
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
            "freqd": self.metadata,
        }
        if "resume_state" in kwargs:
            state["resume"] = kwargs.pop("resume_state")
        atomic_torch_save(state, saved_model_file, pickle_protocol=4)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    @property
    def last_file(self) -> str:
        """The crash-recovery checkpoint next to the best one: ``<best>-last.pth``."""
        return str(Path(self.saved_model_file).with_suffix("")) + "-last.pth"

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        """RecBole's ``fit``; with ``saved``, also writes :attr:`last_file` after every validation
        (model, optimiser, every RNG and loader-generator state, early-stopping counters, history),
        from which ``--resume`` continues exactly, and once more, marked finished, when training
        ends: a run killed during its test evaluation resumes straight to it. The run layer deletes
        it (:meth:`discard_last_checkpoint`) once the run's results are written;
        ``keep_last_checkpoint: False`` skips it (one model-sized write per validation)."""
        finished = getattr(self, "_finished_fit", None)
        if finished is not None:
            self.logger.info("the resumed run had finished training: straight to its evaluation")
            return finished
        pending = getattr(self, "_pending_loader_state", None)
        generator = getattr(train_data, "generator", None)
        if pending is not None and isinstance(generator, torch.Generator):
            generator.set_state(pending)
        self._pending_loader_state = None

        keep_last = self.config["keep_last_checkpoint"] is not False

        def after_validation(epoch, score):
            if saved and keep_last:
                self._save_checkpoint(epoch, verbose=False, saved_model_file=self.last_file,
                                      resume_state=self._resume_state(train_data))
            if callback_fn is not None:
                callback_fn(epoch, score)

        result = super().fit(train_data, valid_data, verbose=verbose, saved=saved, show_progress=show_progress,
                             callback_fn=after_validation)
        if saved and keep_last:
            epoch = int(self.history[-1]["epoch"]) if self.history else self.start_epoch
            self._save_checkpoint(epoch, verbose=False, saved_model_file=self.last_file,
                                  resume_state={**self._resume_state(train_data), "finished": list(result)})
        return result

    def discard_last_checkpoint(self) -> None:
        """Delete :attr:`last_file`: the run it would resume has written its results."""
        Path(self.last_file).unlink(missing_ok=True)

    def _resume_state(self, train_data) -> dict[str, Any]:
        """What an exact resume needs besides the model and optimiser."""
        import random

        import numpy as np

        generator = getattr(train_data, "generator", None)
        return {
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate(),
            "loader_generator": generator.get_state() if isinstance(generator, torch.Generator) else None,
            "recent_scores": list(self._recent_scores),
            "best_smoothed": self._best_smoothed,
            "best_epoch": self.best_epoch,
            "best_valid_result": self.best_valid_result,
            "best_file": str(self.saved_model_file),
            "history": self.history,
        }

    def resume_checkpoint(self, resume_file):
        """Continue training from a checkpoint written by this trainer (or RecBole's).

        From a ``-last.pth`` file (:meth:`fit`) the run continues exactly where it stopped: RNG and
        loader states, early-stopping counters, history, and the best model so far (copied from the
        interrupted run's best checkpoint). From a best checkpoint it continues from that model.
        The checkpoint must hold the same model and, when it carries freqd's training-data
        fingerprint, the same training split (else a ValueError naming the file: resuming on
        another split trains on its test pairs). The input file is never written: the resumed
        state is copied at once to this run's own checkpoint, which later improvements replace.
        """
        checkpoint = load_checkpoint(resume_file, map_location=self.device, known_classes=(type(self.model),))
        if checkpoint["config"]["model"].lower() != self.config["model"].lower():
            raise ValueError(
                f"{resume_file} holds a {checkpoint['config']['model']} model, not {self.config['model']}"
            )
        stored = (checkpoint.get("freqd") or {}).get("data_fingerprint")
        current = self.metadata.get("data_fingerprint")
        if stored and current and stored != current:
            raise ValueError(
                f"{resume_file} was trained on another training split of {self.config['dataset']!r} (its data "
                "fingerprint differs: split_seed, preprocessing or data files changed); resuming would train on "
                "this split's test pairs"
            )
        if not stored:
            self.logger.warning(f"{resume_file} carries no training-data fingerprint: its split cannot be verified")
        self._restore(checkpoint, resume_file)
        taken = {Path(resume_file).resolve()}
        resume = checkpoint.get("resume")
        if resume is not None:
            taken.add(Path(resume["best_file"]).resolve())
        while Path(self.saved_model_file).resolve() in taken or Path(self.last_file).resolve() in taken:
            self.saved_model_file = str(Path(self.saved_model_file).with_suffix("")) + "-resumed.pth"
        if resume is None:
            self._save_checkpoint(int(checkpoint["epoch"]), verbose=False)
        else:
            self._restore_exact(resume, resume_file)
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def _restore_exact(self, resume: dict[str, Any], resume_file) -> None:
        """The rest of a ``-last.pth`` state; the best model so far is copied to this run's checkpoint."""
        import random

        import numpy as np

        from freqd.io import atomic_write_bytes

        best = Path(resume["best_file"])
        if not best.is_file():
            raise FileNotFoundError(f"{resume_file} continues a run whose best checkpoint {best} is gone; "
                                    "resume from that best checkpoint's copy, or keep it next to the -last file")
        atomic_write_bytes(self.saved_model_file, best.read_bytes())
        torch.set_rng_state(resume["torch_rng"])
        if resume["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(resume["cuda_rng"])
        np.random.set_state(resume["numpy_rng"])
        random.setstate(resume["python_rng"])
        self._pending_loader_state = resume["loader_generator"]
        self._recent_scores = list(resume["recent_scores"])
        self._best_smoothed, self.best_epoch = resume["best_smoothed"], resume["best_epoch"]
        self.best_valid_result = resume["best_valid_result"]
        self.history = list(resume["history"])
        finished = resume.get("finished")
        self._finished_fit = None if finished is None else tuple(finished)

    def _restore(self, checkpoint: dict[str, Any], resume_file) -> None:
        """Model, optimiser and early-stopping state from a loaded checkpoint."""
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        saved_sparse = "optimizers" in checkpoint["optimizer"]
        if saved_sparse != isinstance(self.optimizer, OptimizerGroup):
            raise ValueError(
                f"{resume_file} was trained with sparse_embeddings: {saved_sparse}; resume it with the same setting"
            )
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        # The checkpoint is the best so far: later evaluations must beat its (smoothed) score.
        self._best_smoothed, self.best_epoch = float(self.best_valid_score), int(checkpoint["epoch"])

    # -- evaluation --------------------------------------------------------------------------
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return None
        if load_best_model:
            checkpoint_file = model_file or self.saved_model_file
            checkpoint = load_checkpoint(checkpoint_file, map_location=self.device, known_classes=(type(self.model),))
            self.model.load_state_dict(checkpoint["state_dict"])
            self.model.load_other_parameter(checkpoint.get("other_parameter"))
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        if self.fold_in is not None:
            self.fold_in(self.model)
        start = perf_counter()
        result = full_sort_evaluate(self, eval_data)  # RecBole's metrics on the top-k, without its dense collector
        if result is None:
            result = super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
        self.last_eval_seconds = perf_counter() - start
        if self.config["protocol"] == "reference":
            n_users = self.n_all_users or eval_data._dataset.user_num - 1
            result = rescale_to_all_users(result, eval_data, n_users)
        return result

    # -- per-epoch records -------------------------------------------------------------------
    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        start = perf_counter()
        if hasattr(train_data, "set_epoch"):  # a loader whose draw depends on the epoch (resumable)
            train_data.set_epoch(epoch_idx)
        if hasattr(self.model, "on_epoch_start"):  # a model with a schedule over epochs (Hash's tanh β)
            self.model.on_epoch_start(epoch_idx)
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        record = {"epoch": epoch_idx, "train_seconds": perf_counter() - start}
        parts = loss if isinstance(loss, tuple) else (loss,)
        record["train_loss"] = float(sum(parts))
        if isinstance(loss, tuple):
            names = self.loss_names or [f"train_loss_{i}" for i in range(len(parts))]
            record.update({name: float(p) for name, p in zip(names, parts)})
        self.history.append(record)
        self._write_metrics()
        return loss

    def _valid_epoch(self, valid_data, show_progress=False):
        """RecBole's validation, returning the mean of the last ``valid_smoothing`` scores.

        RecBole's early stopping and best-checkpoint choice then run on that mean, so one lucky
        evaluation neither stops a run that is still improving nor becomes its "best" model.
        """
        valid_score, valid_result = super()._valid_epoch(valid_data, show_progress=show_progress)
        self._recent_scores = (self._recent_scores + [float(valid_score)])[-self.valid_smoothing:]
        smoothed = sum(self._recent_scores) / len(self._recent_scores)
        best = self._best_smoothed
        if best is None or (smoothed >= best if self.valid_metric_bigger else smoothed <= best):
            self._best_smoothed = smoothed
            self.best_epoch = self.history[-1]["epoch"] if self.history else None
        if self.history:
            record = self.history[-1]
            record["valid_seconds"] = self.last_eval_seconds
            record.update({f"valid_{k}": float(v) for k, v in valid_result.items()})
            record["valid_score_smoothed"] = smoothed
            for key, value in valid_result.items():
                self.tensorboard.add_scalar(f"Valid/{key}", value, record["epoch"])
            self._write_metrics()
        if self.on_evaluation is not None:
            self.on_evaluation(self.history[-1]["epoch"] if self.history else 0, smoothed)
        return smoothed, valid_result

    def converged(self) -> bool | None:
        """False when training ran out of epochs instead of early-stopping (a capped run); None without validation."""
        if self.best_epoch is None or not self.history:
            return None
        return self.history[-1]["epoch"] + 1 < self.epochs

    def _write_metrics(self) -> None:
        if self.metrics_path is None or not self.history:
            return
        columns: list[str] = []
        for record in self.history:
            columns += [key for key in record if key not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.history)
        atomic_write_text(self.metrics_path, buffer.getvalue())
