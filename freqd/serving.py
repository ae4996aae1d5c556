"""Serve an exported student (``freqd export``): top-K for user tokens with NumPy and torch, no RecBole.

An export folder holds ``model.safetensors`` (the final user and item tables, float32, and the
items each user has seen as CSR arrays), ``tokens.json`` (the dataset's user and item tokens,
index-aligned with the tables; index 0 is RecBole's padding), ``card.json`` (provenance,
sizes, metrics, latency) and ``scorer.pt``, the same top-K as a TorchScript module for a stack
that runs torch alone (:class:`freqd.export.TopKScorer`; ``torch.jit.load``, no freqd needed).
Scores are inner products, as the exported model's own. A code student's export (``Hash``) holds
packed codes instead of tables (``user_codes``/``item_codes``, and the continuous tables only when
ties are broken by score); it is ranked by Hamming distance with the tie-break its card declares
(:class:`freqd.codes.HammingIndex`) and has no ``scorer.pt``. :meth:`Recommender.load` reads only the
safetensors and JSON files (no code can run from them) and never ``scorer.pt``.

    rec = Recommender.load("exports/student")
    rec.recommend(["196", "186"], k=20)        # [[(item, score), ...], ...], seen items excluded
    rec.score("196", ["242", "302"])           # np.ndarray of two scores

    scorer = torch.jit.load("exports/student/scorer.pt")
    items, scores = scorer(torch.tensor(rec.user_ids(["196"])), 20)  # indices into rec.items, as top_k's
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from freqd.codes import TIES, HammingIndex, unpack_codes

FILES = ("model.safetensors", "tokens.json", "card.json")


@dataclass
class Recommender:
    """Final tables, seen items and token maps of an exported student."""

    user_embeddings: np.ndarray
    item_embeddings: np.ndarray
    seen_indptr: np.ndarray
    seen_indices: np.ndarray
    users: list[str]
    items: list[str]
    card: dict
    codes: HammingIndex | None = None  # a code student's export: Hamming ranking over packed codes

    @classmethod
    def load(cls, folder: str | Path) -> Recommender:
        """Read an export folder; a missing or inconsistent file is a ValueError naming it."""
        from safetensors.numpy import load_file

        folder = Path(folder)
        for name in FILES:
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder} is not a freqd export: {name} is missing")
        tensors = load_file(str(folder / "model.safetensors"))
        tokens = json.loads((folder / "tokens.json").read_text(encoding="utf-8"))
        card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
        coded = "user_codes" in tensors
        tables = ("user_codes", "item_codes") if coded else ("user_embeddings", "item_embeddings")
        missing = [key for key in (*tables, "seen_indptr", "seen_indices") if key not in tensors]
        if coded and (card.get("codes") or {}).get("ties") == "score":
            missing += [key for key in ("user_z", "item_z") if key not in tensors]
        if missing:
            raise ValueError(f"{folder}/model.safetensors lacks {missing}")
        index = None
        if coded:
            index = _code_index(folder, tensors, card)
            users, items = (unpack_codes(tensors[key]) for key in tables)  # ±1 int8, for score()
        else:
            users, items = tensors["user_embeddings"], tensors["item_embeddings"]
        rec = cls(users, items, tensors["seen_indptr"], tensors["seen_indices"], users=list(tokens["users"]),
                  items=list(tokens["items"]), card=card, codes=index)
        n_users, n_items = rec.user_embeddings.shape[0], rec.item_embeddings.shape[0]
        if (len(rec.users), len(rec.items)) != (n_users, n_items) or len(rec.seen_indptr) != n_users + 1:
            raise ValueError(f"{folder}: tokens.json ({len(rec.users)} users, {len(rec.items)} items) does not match "
                             f"model.safetensors ({n_users} users, {n_items} items)")
        return rec

    def __post_init__(self) -> None:
        self._user_index = {token: i for i, token in enumerate(self.users)}
        self._item_index = {token: i for i, token in enumerate(self.items)}

    def user_ids(self, users: list[str]) -> np.ndarray:
        """Internal indices of user tokens; an unknown token (or the padding token) is a KeyError naming it."""
        return _indices(users, self._user_index, "user")

    def item_ids(self, items: list[str]) -> np.ndarray:
        """Internal indices of item tokens, checked like :meth:`user_ids`."""
        return _indices(items, self._item_index, "item")

    def score(self, user: str, items: list[str]) -> np.ndarray:
        """Scores of ``items`` for one user: inner products of the final tables, or ⟨h_u, h_i⟩ / b of codes."""
        u = self.user_embeddings[self.user_ids([user])[0]]
        scores = self.item_embeddings[self.item_ids(items)] @ u
        return scores / u.shape[0] if self.codes is not None else scores

    def top_k(self, user_ids: np.ndarray, k: int = 20, exclude_seen: bool = True,
              batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(item indices, scores), each ``len(user_ids) × k``, best first; ties broken by the smaller index.

        Scores and the top-k candidates come from torch (``topk`` is ~20× faster than NumPy's
        ``argpartition`` here), ``batch_size`` users at a time into one reused score block
        (default :func:`default_batch_size`); rows whose k-th score is tied beyond k (the
        (k+1)-th score equals it) are resolved exactly.
        """
        if self.codes is not None:
            return self._code_top_k(user_ids, k, exclude_seen, batch_size)
        import torch

        items_t = torch.from_numpy(self.item_embeddings)
        n_items = items_t.shape[0]
        k = max(1, min(int(k), n_items - 1))
        batch_size = batch_size or default_batch_size(items_t.shape[1])
        user_ids = np.asarray(user_ids, dtype=np.int64)
        out_items = np.empty((len(user_ids), k), dtype=np.int64)
        out_scores = np.empty((len(user_ids), k), dtype=np.float32)
        block = torch.empty((min(batch_size, len(user_ids)), n_items), dtype=items_t.dtype)
        for start in range(0, len(user_ids), batch_size):
            batch = user_ids[start:start + batch_size]
            scores = block[:len(batch)]
            torch.matmul(torch.from_numpy(self.user_embeddings[batch]), items_t.T, out=scores)
            scores[:, 0] = -torch.inf  # RecBole's padding item
            if exclude_seen:
                begins, ends = self.seen_indptr[batch], self.seen_indptr[batch + 1]
                counts = ends - begins
                rows = np.repeat(np.arange(len(batch)), counts)
                offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
                cols = self.seen_indices[np.repeat(begins, counts) + offsets]
                scores[torch.from_numpy(rows), torch.from_numpy(cols.astype(np.int64))] = -torch.inf
            values, picked = torch.topk(scores, k + 1, dim=1)
            tied = (values[:, k] == values[:, k - 1]).nonzero().flatten().tolist()
            part, part_scores = picked[:, :k].numpy().copy(), values[:, :k].numpy().copy()
            for row in tied:  # more items share the k-th score than fit: take the smallest indices
                row_scores = scores[row].numpy()
                candidates = np.flatnonzero(row_scores >= part_scores[row, -1])
                chosen = candidates[np.lexsort((candidates, -row_scores[candidates]))][:k]
                part[row], part_scores[row] = chosen, row_scores[chosen]
            order = np.lexsort((part, -part_scores), axis=1)
            out_items[start:start + len(batch)] = np.take_along_axis(part, order, axis=1)
            out_scores[start:start + len(batch)] = np.take_along_axis(part_scores, order, axis=1)
        return out_items, out_scores

    def _code_top_k(self, user_ids: np.ndarray, k: int, exclude_seen: bool,
                    batch_size: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Hamming top-k with the export's tie-break; the padding item never ranked (the k + 1 nearest, then dropped)."""
        assert self.codes is not None
        index = self.codes
        index.exclude = (self.seen_indptr, self.seen_indices) if exclude_seen else None
        k = max(1, min(int(k), index.n_items - 1))
        user_ids = np.asarray(user_ids, dtype=np.int64)
        ranked = index.topk(user_ids, k + 1, chunk=batch_size or 16)
        keep = ranked != 0
        keep[keep.sum(1) > k, -1] = False  # item 0 not among the k + 1: the last one goes
        items = ranked[keep].reshape(len(user_ids), k)
        distances = np.take_along_axis(index.distances(user_ids), items, axis=1).astype(np.int64)
        return items, ((index.bits - 2 * distances) / index.bits).astype(np.float32)

    def recommend(self, users: list[str], k: int = 20, exclude_seen: bool = True) -> list[list[tuple[str, float]]]:
        """Top-``k`` (item token, score) pairs per user token, seen items excluded unless asked."""
        items, scores = self.top_k(self.user_ids(users), k, exclude_seen)
        return [[(self.items[i], float(s)) for i, s in zip(row_items, row_scores) if np.isfinite(s)]
                for row_items, row_scores in zip(items, scores)]


def _code_index(folder: Path, tensors: dict[str, np.ndarray], card: dict) -> HammingIndex:
    """The :class:`freqd.codes.HammingIndex` of a code export, with the tie-break its card declares."""
    codes = card.get("codes") or {}
    if codes.get("ties") not in TIES or not isinstance(codes.get("tie_seed"), int):
        raise ValueError(f"{folder}/card.json: 'codes' must give ties (one of {TIES}) and an integer tie_seed, "
                         f"got {codes!r}")
    return HammingIndex(tensors["user_codes"], tensors["item_codes"], ties=codes["ties"], seed=codes["tie_seed"],
                        user_z=tensors.get("user_z"), item_z=tensors.get("item_z"))


def default_batch_size(embedding_size: int) -> int:
    """Users scored per matrix product: 16 below d = 64, else 256.

    Small blocks of scores stay in cache for the top-k that reads them: on Gowalla (41k items,
    one thread) 16-user blocks ranked ~1.4× more users/s than 1024-user ones at d = 20, while at
    d = 300 the product dominates and 256- and 1024-user blocks are within noise of each other
    (``benchmarks/bench_serving.py``; full-sort evaluation chooses its chunks the same way,
    ``benchmarks/bench_eval.py``).
    """
    return 16 if embedding_size < 64 else 256


def _indices(tokens: list[str], index: dict[str, int], kind: str) -> np.ndarray:
    ids = []
    for token in tokens:
        position = index.get(str(token), 0)
        if position == 0:
            raise KeyError(f"unknown {kind} {token!r}: not among the {len(index) - 1} {kind}s of this export")
        ids.append(position)
    return np.asarray(ids, dtype=np.int64)
