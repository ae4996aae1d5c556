"""Load a frozen teacher from a freqd or stock-RecBole checkpoint, after checking it fits the data."""

from __future__ import annotations

import hashlib
import os

import torch

from freqd._compat import load_checkpoint
from freqd.models import EmbeddingRecommender, get_model


def load_teacher(path: str | os.PathLike, config, train_dataset, checkpoint: dict | None = None) -> EmbeddingRecommender:
    """The checkpoint's model, rebuilt on ``train_dataset``, in eval mode with gradients off.

    Raises a ValueError naming the file before any training when the checkpoint is not a
    model freqd can distil from, or was trained on other data (dataset name, user/item counts,
    and, for freqd checkpoints, the training-split fingerprint). ``checkpoint`` is the already
    loaded content of ``path``, so a caller that read it need not read it again. The returned
    model carries ``checkpoint_sha256``, the file's hash, for caches keyed by the teacher.
    """
    from freqd.quick_start import dataset_fingerprint

    if checkpoint is None:
        checkpoint = load_checkpoint(path, map_location="cpu")
    teacher_config = checkpoint.get("config")
    if teacher_config is None or "model" not in teacher_config:
        raise ValueError(f"{path}: no RecBole config in the checkpoint; cannot tell which model it holds")
    name = teacher_config["model"]
    try:
        model_cls = get_model(name)
    except ValueError as exc:
        raise ValueError(f"{path}: teacher model class {name!r} is unknown to freqd") from exc
    if not issubclass(model_cls, EmbeddingRecommender):
        raise ValueError(f"{path}: teacher model {name!r} is not a freqd embedding backbone (BPR, LightGCN)")
    if teacher_config["dataset"] != config["dataset"]:
        raise ValueError(
            f"{path} was trained on dataset {teacher_config['dataset']!r}, not {config['dataset']!r}"
        )
    state = checkpoint["state_dict"]
    expected = {"user_embedding.weight": train_dataset.user_num, "item_embedding.weight": train_dataset.item_num}
    for key, rows in expected.items():
        if key not in state:
            raise ValueError(f"{path}: state_dict has no {key!r}")
        if state[key].shape[0] != rows:
            raise ValueError(
                f"{path}: {key} has {state[key].shape[0]} rows but the dataset has {rows} "
                "(another split or filtering?)"
            )
    fingerprint = (checkpoint.get("freqd") or {}).get("data_fingerprint")
    if fingerprint and fingerprint != dataset_fingerprint(train_dataset):
        raise ValueError(
            f"{path} was trained on a different training split of {config['dataset']!r} "
            "(split seed or preprocessing changed)"
        )
    teacher_config["device"] = config["device"]
    teacher = model_cls(teacher_config, train_dataset)
    teacher.load_state_dict(state)
    teacher.to(config["device"]).eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    teacher.checkpoint_sha256 = file_sha256(path)
    return teacher


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes: the key of per-teacher caches (top-N rankings)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@torch.no_grad()
def teacher_tables(teacher: EmbeddingRecommender) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's final user and item tables (propagated for LightGCN), computed once."""
    teacher.eval()
    users, items = teacher.embeddings()
    return users.detach().clone(), items.detach().clone()
