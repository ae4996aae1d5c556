"""``freqd export``: a trained model as a folder that serves without RecBole (:mod:`freqd.serving`).

The checkpoint is loaded safely, its model rebuilt on the data it was trained on (the named or
given dataset, split as the checkpoint's config says; freqd checkpoints' training-data fingerprint
must match) and its final tables written with ``safetensors``, with the items each user has seen
in training and validation (what a full-sort test ranking excludes), the token maps and a card.
``scorer.pt`` is the same top-K as a TorchScript module (:class:`TopKScorer`), for a serving stack
that runs TorchScript without Python packages beyond torch. A code student (``Hash``) is exported
as its bit-packed codes and served by Hamming ranking; it gets no ``scorer.pt``.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


class TopKScorer(torch.nn.Module):
    """The export's top-K as a TorchScript module: ``scorer(users, k, exclude_seen=True) -> (items, scores)``.

    ``users`` is a 1-D integer tensor of user indices (rows of ``tokens.json``'s ``users``, 1 to
    ``n_users``; 0 is RecBole's padding and refused); the result is two ``len(users) × k`` tensors,
    item indices (rows of ``tokens.json``'s ``items``) and float32 inner-product scores, best first.
    The padding item and, with ``exclude_seen``, each user's training and validation items (the
    CSR buffers) are scored ``-inf``; ``k`` is clamped to 1..(number of items) like
    :meth:`freqd.serving.Recommender.top_k`. Ties go to the smaller item index, as there: rows
    whose k-th score is shared beyond k are ranked by a stable full sort. Users are scored
    ``batch_size`` at a time (default :func:`freqd.serving.default_batch_size`) with the same matrix
    product as ``Recommender.top_k``, so a call with the same users in the same order and batch
    size gives its items exactly; another batching of the users can
    change a score in its last bit (BLAS sums in another order), which can swap two items whose
    scores are that close.

    ``torch.jit.load("scorer.pt")`` needs torch only, not freqd. It reads TorchScript's own
    archive: the code is TorchScript compiled by torch, the tables are tensors, and no Python
    object is unpickled or called, so loading runs no Python from the file. Calling the module
    runs the TorchScript program it holds (torch operators only): treat a ``scorer.pt`` you did not
    export yourself, or whose sha256 differs from ``card.json``'s, like code.
    :meth:`freqd.serving.Recommender.load` never reads it.
    """

    if TYPE_CHECKING:  # buffers, for the type checker only (TorchScript reads the class's annotations)
        user_embeddings: torch.Tensor
        item_embeddings: torch.Tensor
        seen_indptr: torch.Tensor
        seen_indices: torch.Tensor

    def __init__(self, user_embeddings: np.ndarray, item_embeddings: np.ndarray, seen_indptr: np.ndarray,
                 seen_indices: np.ndarray, batch_size: int | None = None) -> None:
        from freqd.serving import default_batch_size

        super().__init__()
        self.register_buffer("user_embeddings", torch.tensor(np.asarray(user_embeddings, dtype=np.float32)))
        self.register_buffer("item_embeddings", torch.tensor(np.asarray(item_embeddings, dtype=np.float32)))
        self.register_buffer("seen_indptr", torch.tensor(np.asarray(seen_indptr, dtype=np.int64)))
        self.register_buffer("seen_indices", torch.tensor(np.asarray(seen_indices, dtype=np.int32)))
        self.batch_size = int(batch_size or default_batch_size(self.item_embeddings.shape[1]))

    def forward(self, users: torch.Tensor, k: int = 20, exclude_seen: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        n_users, n_items = self.user_embeddings.size(0), self.item_embeddings.size(0)
        users = users.to(torch.long)
        if users.dim() != 1:
            raise ValueError("users must be a 1-D tensor of user indices")
        if users.numel() > 0 and (int(users.min()) < 1 or int(users.max()) >= n_users):
            raise ValueError("user indices must lie in 1..n_users (0 is the padding user)")
        k = max(1, min(k, n_items - 1))
        out_items = torch.empty((users.size(0), k), dtype=torch.long)
        out_scores = torch.empty((users.size(0), k), dtype=torch.float32)
        items_t = self.item_embeddings.t()
        block = torch.empty((min(self.batch_size, users.size(0)), n_items), dtype=torch.float32)
        for start in range(0, users.size(0), self.batch_size):
            batch = users[start:start + self.batch_size]
            rows_in_batch = batch.size(0)
            scores = block[:rows_in_batch]
            torch.matmul(self.user_embeddings.index_select(0, batch), items_t, out=scores)
            scores[:, 0] = float("-inf")
            if exclude_seen:
                begins = self.seen_indptr.index_select(0, batch)
                counts = self.seen_indptr.index_select(0, batch + 1) - begins
                total = int(counts.sum())
                if total > 0:
                    rows = torch.repeat_interleave(torch.arange(rows_in_batch), counts)
                    offsets = torch.arange(total) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
                    cols = self.seen_indices.index_select(0, torch.repeat_interleave(begins, counts) + offsets).long()
                    scores.index_put_((rows, cols), torch.full([1], float("-inf")))
            values, picked = torch.topk(scores, k + 1, dim=1)
            tied = (values[:, k] == values[:, k - 1]).nonzero().flatten()
            picked, order = torch.sort(picked[:, :k], dim=1)
            values = values[:, :k].gather(1, order)
            values, order = torch.sort(values, dim=1, descending=True, stable=True)
            picked = picked.gather(1, order)
            if tied.numel() > 0:  # more items share the k-th score than fit: the smallest indices win
                tied_values, tied_items = torch.sort(scores.index_select(0, tied), dim=1, descending=True, stable=True)
                values.index_copy_(0, tied, tied_values[:, :k])
                picked.index_copy_(0, tied, tied_items[:, :k])
            out_items[start:start + rows_in_batch] = picked
            out_scores[start:start + rows_in_batch] = values
        return out_items, out_scores


def scorer_bytes(rec) -> bytes:
    """``scorer.pt``'s bytes: :class:`TopKScorer` over a :class:`~freqd.serving.Recommender`'s arrays, scripted."""
    module = TopKScorer(rec.user_embeddings, rec.item_embeddings, rec.seen_indptr, rec.seen_indices)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # torch 2.13 marks TorchScript deprecated; it is still what torch.jit.load reads
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated", category=DeprecationWarning)
        torch.jit.save(torch.jit.script(module), buffer)
    return buffer.getvalue()


def export_model(checkpoint: str | Path, out: str | Path, dataset: str | None = None,
                 config_file_list: list[str] | None = None, config_dict: dict[str, Any] | None = None,
                 latency_users: int = 2048) -> dict[str, Any]:
    """Write ``out``/{model.safetensors, tokens.json, scorer.pt, card.json} for ``checkpoint``; return the card.

    ``scorer.pt`` is built from the written ``model.safetensors`` as read back by
    :meth:`~freqd.serving.Recommender.load`, so both serve the same arrays. ``latency_users``
    users are timed through both (0: no timing).
    """
    from safetensors.numpy import save

    from freqd.checkpoints import load_checkpoint, load_teacher
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
    codes = _code_tensors(model)
    tables = codes or {"user_embeddings": users, "item_embeddings": items}
    payload = save({**tables, "seen_indptr": indptr, "seen_indices": indices})
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
        "seen": "training and validation items per user, excluded by Recommender.recommend/top_k and scorer.pt "
                "(exclude_seen=True)",
        "data_fingerprint": freqd_meta.get("data_fingerprint"),
        "distiller": freqd_meta.get("kd"), "teacher": freqd_meta.get("teacher"),
        "best_valid_score": state.get("best_valid_score"), "epoch": state.get("epoch"),
        "bytes": {"model.safetensors": len(payload), "tables_float32": int(users.nbytes + items.nbytes),
                  "source_checkpoint": path.stat().st_size},
    }
    if codes:
        return _finish_code_export(out, card, model, codes, latency_users)
    atomic_write_json(out / "card.json", to_jsonable(card))
    rec = Recommender.load(out)
    scorer = scorer_bytes(rec)
    atomic_write_bytes(out / "scorer.pt", scorer)
    card["bytes"]["scorer.pt"] = len(scorer)
    card["scorer"] = {
        "file": "scorer.pt", "sha256": hashlib.sha256(scorer).hexdigest(), "format": "TorchScript (torch.jit.load)",
        "call": "scorer(users: 1-D LongTensor of user indices, k: int = 20, exclude_seen: bool = True) -> "
                "(item indices LongTensor, scores FloatTensor), each len(users) x k, best first",
        "indices": "rows of tokens.json: users[i], items[j]; 0 is the padding entry",
        "ties": "the smaller item index first, as Recommender.top_k",
        "safety": "loading runs no Python from the file; calling runs its TorchScript code: check sha256",
    }
    if latency_users:
        card["latency"] = _latency(rec.top_k, len(rec.users), latency_users)
        card["latency_torchscript"] = _latency(_scripted(out / "scorer.pt"), len(rec.users), latency_users)
    atomic_write_json(out / "card.json", to_jsonable(card))
    return card


def _code_tensors(model) -> dict[str, np.ndarray] | None:
    """A code student's packed codes (and, for ties by score, its continuous tables); None for float models."""
    from freqd.codes import pack_codes
    from freqd.models.hash import is_code_student

    if not is_code_student(model):
        return None

    z_users, z_items = (t.detach().float().cpu().numpy().copy()
                        for t in (model.user_embedding.weight, model.item_embedding.weight))
    out = {"user_codes": pack_codes(z_users), "item_codes": pack_codes(z_items)}
    if model.ties == "score":
        out.update(user_z=z_users, item_z=z_items)
    return out


def _finish_code_export(out: Path, card: dict[str, Any], model, codes: dict[str, np.ndarray],
                        latency_users: int) -> dict[str, Any]:
    """The card of a code student's export (no ``scorer.pt``: TorchScript has no popcount), timed."""
    from freqd.serving import Recommender

    stale = out / "scorer.pt"
    if stale.exists():  # a float model exported here before: its scorer would not serve these codes
        stale.unlink()
    card.update(
        embedding_size=model.bits,
        score="Hamming ranking of the packed codes (XOR + popcount), ties broken as 'codes.ties' says; the "
              "reported score is <h_u, h_i> / b = 1 - 2 Hamming / b",
        codes={"bits": model.bits, "ties": model.ties, "tie_seed": model.tie_seed,
               "floats": "user_z/item_z (continuous tables) are stored and used for ties by score"
               if model.ties == "score" else "none: ranking uses integers only"},
        scorer=None)
    card["bytes"]["codes"] = int(codes["user_codes"].nbytes + codes["item_codes"].nbytes)
    card["bytes"].pop("tables_float32", None)
    atomic_write_json(out / "card.json", to_jsonable(card))
    rec = Recommender.load(out)
    if latency_users:
        card["latency"] = _latency(rec.top_k, len(rec.users), latency_users)
    atomic_write_json(out / "card.json", to_jsonable(card))
    return card


def load_scorer(path: str | Path):
    """``torch.jit.load`` of a ``scorer.pt`` (TorchScript's deprecation warning silenced)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated", category=DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu")


def _scripted(path: Path):
    """``scorer.pt`` as a ``top_k(user_ids, k)`` function over NumPy indices."""
    scorer = load_scorer(path)

    def top_k(user_ids: np.ndarray, k: int = 20):
        with torch.no_grad():
            return scorer(torch.from_numpy(np.asarray(user_ids, dtype=np.int64)), k)

    return top_k


def _latency(top_k, n_users: int, n_timed: int, k: int = 20) -> dict[str, Any]:
    """Users per second of ``top_k(user_ids, k)`` (seen items excluded) over the first ``n_timed`` users,
    best of 3; BLAS threads as ``$OMP_NUM_THREADS`` sets them."""
    ids = np.arange(1, n_users)[:n_timed]
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        top_k(ids, k)
        best = min(best, time.perf_counter() - start)
    return {"users": int(len(ids)), "k": k, "seconds": best, "users_per_second": len(ids) / best,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def card_summary(card: dict[str, Any]) -> str:
    """A few lines for the command line."""
    size = card["bytes"]
    width = f"{card['codes']['bits']}-bit codes" if card.get("codes") else f"d={card['embedding_size']}"
    lines = [f"{card['model']} {width} on {card['dataset']}: {card['n_users']} users, "
             f"{card['n_items']} items",
             f"model.safetensors {size['model.safetensors'] / 1e6:.2f} MB "
             f"(checkpoint {size['source_checkpoint'] / 1e6:.2f} MB)"]
    if "latency" in card:
        lines.append(f"top-{card['latency']['k']}: {card['latency']['users_per_second']:,.0f} users/s")
    if "latency_torchscript" in card:
        lines.append(f"scorer.pt (TorchScript): {card['latency_torchscript']['users_per_second']:,.0f} users/s")
    return "\n".join(lines)

