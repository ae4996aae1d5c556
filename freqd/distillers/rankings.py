"""The teacher's top-N unobserved items per user, computed in chunks and cached on disk.

Ranking-based distillers (RRD, DCD, CD, KD, PCKD) sample from these lists
(:func:`freqd.distillers.sampling.teacher_pool`). The full
teacher score matrix does not fit comfortably in memory (Gowalla: 29,858 × 40,981 floats ≈
4.9 GB), so users are scored ``chunk_size`` at a time on the teacher's device and only the top
N are kept: memory is chunk_size × n_items, not n_users × n_items. The result is cached under
``<checkpoint_dir>/teacher_topk/`` keyed by the teacher checkpoint's sha256, N and the data
sizes, so repeated runs reuse it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import torch
from torch import Tensor

from freqd.distributed import Shard, blockwise_topk, current_shard, everyone, gather_chunks
from freqd.io import atomic_torch_save, state_digest

logger = logging.getLogger(__name__)


def training_csr(train_dataset) -> torch.Tensor:
    """The training user × item 0/1 matrix as a torch CSR tensor (RecBole ids)."""
    inter = train_dataset.inter_feat
    users = inter[train_dataset.uid_field].long()
    items = inter[train_dataset.iid_field].long()
    coo = torch.sparse_coo_tensor(torch.stack([users, items]), torch.ones(len(users)),
                                  (train_dataset.user_num, train_dataset.item_num)).coalesce()
    return coo.to_sparse_csr()


def mask_training_(scores: Tensor, train: Tensor, start: int, stop: int, first_item: int = 0) -> Tensor:
    """Set padding item 0 and users ``start:stop``'s training items to −inf in a score chunk, in place.

    The chunk's columns are items ``first_item`` … ``first_item + scores.shape[1] − 1`` (all items by
    default; a block of them when a ranking scores the items a block at a time)."""
    crow, col = train.crow_indices(), train.col_indices()
    if first_item == 0:
        scores[:, 0] = float("-inf")
    lo, hi = int(crow[start]), int(crow[stop])
    rows = torch.repeat_interleave(torch.arange(stop - start), crow[start + 1:stop + 1] - crow[start:stop])
    cols = col[lo:hi]
    if first_item != 0 or scores.shape[1] != train.shape[1]:
        inside = (cols >= first_item) & (cols < first_item + scores.shape[1])
        rows, cols = rows[inside], cols[inside] - first_item
    scores[rows.to(scores.device), cols.to(scores.device)] = float("-inf")
    return scores


def teacher_key(teacher) -> str:
    """The teacher checkpoint's sha256 (set by ``load_teacher``), else a hash of its state dict."""
    return getattr(teacher, "checkpoint_sha256", None) or state_digest(teacher.state_dict())


@torch.no_grad()
def topk_unobserved(user_table: Tensor, item_table: Tensor, train: torch.Tensor, n: int,
                    chunk_size: int = 1024, shard: Shard | None = None, item_chunk: int | None = None) -> Tensor:
    """Per user, the ``n`` highest-scoring items (inner product) that are not training items.

    Item 0 (RecBole's padding id) is never returned. ``train`` is the training CSR matrix.
    ``item_chunk`` scores that many items at a time (memory chunk_size × item_chunk instead of
    chunk_size × n_items). With a ``shard`` of several ranks (a collective), each rank scores its
    share of the user chunks and every rank gets all rows, identical to one process.
    Returns a (n_users, n) int64 tensor on the CPU, best first.
    """
    n_users, n_items = user_table.shape[0], item_table.shape[0]
    crow = train.crow_indices()
    most_seen = int((crow[1:] - crow[:-1]).max()) if n_users else 0
    if n > n_items - 1 - most_seen:
        raise ValueError(
            f"teacher top-N: N={n} is more than the {n_items - 1 - most_seen} unobserved items of the most "
            f"active user ({most_seen} training items out of {n_items - 1}); choose a smaller N"
        )
    shard = shard or Shard()
    chunks = shard.chunks(n_users, chunk_size)
    out = torch.empty(sum(stop - start for start, stop in chunks), n, dtype=torch.long)
    filled = 0
    for start, stop in chunks:
        if item_chunk is None:
            scores = mask_training_(user_table[start:stop] @ item_table.T, train, start, stop)
            top = scores.topk(n, dim=1).indices
        else:
            user_rows = user_table[start:stop]
            top = blockwise_topk(lambda i0, i1: mask_training_(user_rows @ item_table[i0:i1].T, train, start, stop,
                                                               first_item=i0),
                                 n_items, n, item_chunk)
        out[filled:filled + stop - start] = top.cpu()
        filled += stop - start
    return gather_chunks(out.to(user_table.device), n_users, chunk_size, shard).cpu()


def teacher_topk(teacher, train_dataset, n: int, cache_dir: str | Path | None = None,
                 chunk_size: int = 1024, tables: tuple[Tensor, Tensor] | None = None,
                 item_chunk: int | None = None, shard: Shard | None = None) -> Tensor:
    """The teacher's top-``n`` unobserved items per user, from the on-disk cache when present.

    ``cache_dir`` None disables caching (tests); ``tables``: the teacher's final tables when
    already taken (else they are computed); ``item_chunk``: see :func:`topk_unobserved`. In a
    process group (``shard``, default the current one) the ranks share the user chunks, every rank
    gets the whole result, the cache is reused only when every rank finds it, and rank 0 alone
    writes it. Returns a (n_users, n) int64 CPU tensor.
    """
    from freqd.distillers.teacher import teacher_tables

    shard = shard or current_shard()
    path, cached = None, None
    if cache_dir is not None:
        key = f"{teacher_key(teacher)}-n{n}-u{train_dataset.user_num}-i{train_dataset.item_num}"
        path = Path(cache_dir) / "teacher_topk" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
        if path.is_file():
            stored = torch.load(path, map_location="cpu", weights_only=True)
            cached = stored["topk"] if stored.get("key") == key else None
    if everyone(cached is not None, shard):  # every rank votes once; any miss makes all of them compute
        assert cached is not None  # this rank's vote was among the true ones
        logger.info(f"teacher top-{n}: reusing {path}")
        return cached
    start = time.perf_counter()
    users, items = tables if tables is not None else teacher_tables(teacher)
    topk = topk_unobserved(users, items, training_csr(train_dataset), n, chunk_size, shard=shard,
                           item_chunk=item_chunk)
    logger.info(f"teacher top-{n} for {len(topk):,} users in {time.perf_counter() - start:.1f} s"
                + (f" on {shard.world} ranks" if shard.world > 1 else ""))
    if path is not None and shard.rank == 0:
        atomic_torch_save({"key": key, "topk": topk}, path)
    return topk
