"""``freqd export``: a trained model as a folder that serves without RecBole (:mod:`freqd.serving`).

The checkpoint is loaded safely, its model rebuilt on the data it was trained on (the named or
given dataset, split as the checkpoint's config says; freqd checkpoints' training-data fingerprint
must match) and its final tables written with ``safetensors``, with the items each user has seen
in training and validation (what a full-sort test ranking excludes), the token maps and a card.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from freqd.io import atomic_write_bytes, atomic_write_json, to_jsonable

#: Checkpoint config keys that decide which data (and split) the model was trained on, or how it is built.
DATA_KEYS = ("split_seed", "seed", "eval_args", "load_col", "benchmark_filename", "user_inter_num_interval",
             "item_inter_num_interval", "val_interval", "unused_col", "threshold", "rm_dup_inter",
             "filter_inter_by_user_or_item", "USER_ID_FIELD", "ITEM_ID_FIELD", "RATING_FIELD", "TIME_FIELD",
             "embedding_size", "n_layers", "protocol")


def _seen(n_users: int, *datasets) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr, indices) of the distinct items of each user over ``datasets``."""
    users = np.concatenate([d.inter_feat[d.uid_field].numpy() for d in datasets])
    items = np.concatenate([d.inter_feat[d.iid_field].numpy() for d in datasets])
    pairs = np.unique(users.astype(np.int64) * (1 << 32) + items.astype(np.int64))
    users, items = pairs >> 32, pairs & ((1 << 32) - 1)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.add.at(indptr, users + 1, 1)
    return np.cumsum(indptr).astype(np.int64), items.astype(np.int32)


def export_model(checkpoint: str | Path, out: str | Path, dataset: str | None = None,
                 config_file_list: list[str] | None = None, config_dict: dict[str, Any] | None = None,
                 latency_users: int = 2048) -> dict[str, Any]:
    """Write ``out``/{model.safetensors, tokens.json, card.json} for ``checkpoint``; return the card."""
    from safetensors.numpy import save

    from freqd.checkpoints import load_checkpoint
    from freqd.checkpoints import load_teacher
    from freqd.io import file_sha256
    from freqd.runs import setup
    from freqd.serving import Recommender

    path = Path(checkpoint)
    state = load_checkpoint(path, map_location="cpu")
    stored = state["config"]
    if stored is None or "model" not in stored:
        raise ValueError(f"{path}: no RecBole config in the checkpoint; cannot tell which model it holds")
    data_settings = {key: stored[key] for key in DATA_KEYS if stored[key] is not None}
    settings = {**data_settings, "show_progress": False, "state": "WARNING", **(config_dict or {})}
    dataset = dataset or stored["dataset"]
    config, _, (train, valid, _) = setup(stored["model"], dataset, config_file_list, settings)
    model = load_teacher(path, config, train._dataset, checkpoint=state)  # checks dataset, sizes, fingerprint
    with torch.no_grad():
        users, items = (t.detach().float().cpu().numpy().copy() for t in model.embeddings())
    train_data = train._dataset
    indptr, indices = _seen(train_data.user_num, train_data, valid._dataset)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = save({"user_embeddings": users, "item_embeddings": items, "seen_indptr": indptr,
                    "seen_indices": indices})
    atomic_write_bytes(out / "model.safetensors", payload)
    tokens = {"users": [str(t) for t in train_data.field2id_token[train_data.uid_field]],
              "items": [str(t) for t in train_data.field2id_token[train_data.iid_field]]}
    atomic_write_json(out / "tokens.json", tokens)
    freqd_meta = state.get("freqd") or {}
    card: dict[str, Any] = {
        "format": "freqd-export/1",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source_checkpoint": str(path), "source_sha256": file_sha256(path),
        "model": stored["model"], "dataset": stored["dataset"], "embedding_size": int(users.shape[1]),
        "n_users": int(users.shape[0]) - 1, "n_items": int(items.shape[0]) - 1,
        "score": "inner product of user_embeddings and item_embeddings (final tables)",
        "seen": "training and validation items per user, excluded by recommend(exclude_seen=True)",
        "data_fingerprint": freqd_meta.get("data_fingerprint"),
        "distiller": freqd_meta.get("kd"), "teacher": freqd_meta.get("teacher"),
        "best_valid_score": state.get("best_valid_score"), "epoch": state.get("epoch"),
        "bytes": {"model.safetensors": len(payload), "tables_float32": int(users.nbytes + items.nbytes),
                  "source_checkpoint": path.stat().st_size},
    }
    atomic_write_json(out / "card.json", to_jsonable(card))
    if latency_users:
        card["latency"] = _latency(Recommender.load(out), latency_users)
        atomic_write_json(out / "card.json", to_jsonable(card))
    return card


def _latency(rec, n_users: int, k: int = 20) -> dict[str, Any]:
    """Users per second of :meth:`Recommender.top_k` (seen items excluded), best of 3; BLAS threads as
    ``$OMP_NUM_THREADS`` sets them."""
    ids = np.arange(1, len(rec.users))[:n_users]
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        rec.top_k(ids, k)
        best = min(best, time.perf_counter() - start)
    return {"users": int(len(ids)), "k": k, "seconds": best, "users_per_second": len(ids) / best,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def card_summary(card: dict[str, Any]) -> str:
    """A few lines for the command line."""
    size = card["bytes"]
    lines = [f"{card['model']} d={card['embedding_size']} on {card['dataset']}: {card['n_users']} users, "
             f"{card['n_items']} items",
             f"model.safetensors {size['model.safetensors'] / 1e6:.2f} MB (checkpoint {size['source_checkpoint'] / 1e6:.2f} MB)"]
    if "latency" in card:
        lines.append(f"top-{card['latency']['k']}: {card['latency']['users_per_second']:,.0f} users/s")
    return "\n".join(lines)

