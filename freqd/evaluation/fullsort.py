"""Full-sort top-k evaluation at the speed of a plain ``matmul`` + ``torch.topk`` loop.

RecBole 1.2.1's full-sort evaluation spends most of its CPU time outside scoring and ranking: per
batch its ``Collector`` zero-fills a dense ``users × items`` int32 matrix of positives and sums it
over items to count them (profiled on a Gowalla test pass, 41k items, d = 20, 244-user batches:
half the time, more than the matmul and the top-k together), scores land in a freshly allocated
matrix each batch, and the dataloader builds per-user index tensors in Python.

:func:`full_sort_evaluate` ranks the same users against the same masks with one reused score
buffer, derives RecBole's ``rec.topk`` tensor (hits of the top-k, then the number of positives)
from the ``users × k`` top-k indices alone, and hands it to RecBole's ``Evaluator``, so Recall,
NDCG, Hit, MRR, Precision and MAP are computed by RecBole's own code from the same ranked lists.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.evaluator import Register
from recbole.evaluator.collector import DataStruct

from freqd.distributed import Shard, blockwise_topk, current_shard, gather_chunks


def topk_hits(topk_idx: torch.Tensor, positive_u: torch.Tensor, positive_i: torch.Tensor, n_items: int) -> torch.Tensor:
    """RecBole's ``rec.topk`` rows: 1 where a top-k item is a positive of its row, then the row's positives.

    ``topk_idx`` is ``rows × k``; ``positive_u``/``positive_i`` give the row and item of each
    positive pair (a repeated pair counts once, as in RecBole's dense positive matrix).
    """
    rows = topk_idx.shape[0]
    positive_keys = torch.unique(positive_u * n_items + positive_i)
    ranked_keys = torch.arange(rows, device=topk_idx.device).unsqueeze(1) * n_items + topk_idx
    hits = torch.isin(ranked_keys, positive_keys).to(torch.int)
    n_positive = torch.bincount(positive_keys // n_items, minlength=rows).unsqueeze(1)
    return torch.cat((hits, n_positive), dim=1)


def supports(config) -> bool:
    """True when every configured metric needs only RecBole's ``rec.topk`` (Recall, NDCG, Hit, MRR, ...)."""
    register = Register(config)
    needs = {key for key, value in vars(register).items() if value is True}
    return needs == {"rec.topk"} and config["single_spec"]


def chunk_users(config, n_items: int, embedding_size: int) -> int:
    """Users scored per chunk: ``eval_chunk_users`` if set, else 16 below d = 64 and 256 from there.

    On one CPU core with Gowalla's 41k items (``benchmarks/bench_eval.py``), 16-user chunks were
    the fastest at d = 20 (a thin matmul, then a top-k over a buffer still in cache), while at
    d = 300 the matmul dominates and 244-user chunks beat 64-user ones by ~1.2x; a matmul + top-k
    loop breaks even between 16 and 244 users at d = 64. Never more than RecBole's memory cap,
    ``eval_batch_size // n_items`` users.
    """
    chosen = config["eval_chunk_users"]
    if chosen is None:
        chosen = 16 if embedding_size < 64 else 256
    return max(1, min(int(chosen), int(config["eval_batch_size"]) // n_items))


def per_user_csr(per_user, device) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(row of each entry, items, offsets) from a sequence of per-user item tensors."""
    lengths = [len(items) for items in per_user]
    offsets = [0]
    for length in lengths:
        offsets.append(offsets[-1] + length)
    rows = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths, dtype=torch.int64))
    items = torch.cat([torch.as_tensor(items, dtype=torch.int64) for items in per_user]) if lengths else rows
    return rows.to(device), items.to(device), offsets


@torch.no_grad()
def rank_topk(user_all: torch.Tensor, item_all: torch.Tensor, users: torch.Tensor, history, positives,
              k: int, chunk: int, scorer=None, shard: Shard | None = None,
              item_chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` items of each of ``users`` by inner product, and RecBole's ``rec.topk`` tensor for them.

    Item 0 (RecBole's padding) and each user's ``history`` items are excluded from the ranking;
    ``history``/``positives`` hold one item tensor per user, in the order of ``users``. Users are
    scored ``chunk`` at a time into one reused buffer, or by ``scorer(users)`` where the model ranks
    by its own scores (a code student's Hamming ranking with its tie-break). ``item_chunk`` bounds
    the buffer to chunk × item_chunk scores, merging running top-k lists (inner products only).
    With a ``shard`` of several ranks (a collective: every rank calls it alike), each rank ranks
    its share of the user chunks and all ranks get every row back, identical to one process.
    """
    if shard is not None and shard.world > 1:
        owned = shard.rows(len(users), chunk)
        picked = owned.tolist()
        top, hits = rank_topk(user_all, item_all, users[owned.to(users.device)], [history[i] for i in picked],
                              [positives[i] for i in picked], k, chunk, scorer, item_chunk=item_chunk)
        return gather_chunks(top, len(users), chunk, shard), gather_chunks(hits, len(users), chunk, shard)
    if item_chunk is not None and scorer is not None:
        raise ValueError("rank_topk: item_chunk applies to inner-product scores, not to a model's own scorer")
    n_items = item_all.shape[0]
    device = user_all.device
    hist_rows, hist_items, hist_ptr = per_user_csr(history, device)
    pos_rows, pos_items, pos_ptr = per_user_csr(positives, device)
    width = n_items if item_chunk is None else min(item_chunk, n_items)
    buffer = torch.empty(min(chunk, len(users)), width, dtype=user_all.dtype, device=device)
    item_t = item_all.T
    ranked, parts = [], []
    for start in range(0, len(users), chunk):
        stop = min(start + chunk, len(users))
        h0, h1 = hist_ptr[start], hist_ptr[stop]
        rows, cols = hist_rows[h0:h1] - start, hist_items[h0:h1]
        if scorer is not None:
            scores = scorer(users[start:stop])
            scores[:, 0] = -torch.inf
            scores[rows, cols] = -torch.inf
            topk_idx = torch.topk(scores, k, dim=1).indices
        else:
            block = partial(_masked_block, user_all[users[start:stop]], item_t, rows, cols, buffer)
            topk_idx = (torch.topk(block(0, n_items), k, dim=1).indices if item_chunk is None
                        else blockwise_topk(block, n_items, k, width))
        ranked.append(topk_idx)
        p0, p1 = pos_ptr[start], pos_ptr[stop]
        parts.append(topk_hits(topk_idx, pos_rows[p0:p1] - start, pos_items[p0:p1], n_items))
    if not parts:
        return (torch.zeros(0, k, dtype=torch.int64, device=device),
                torch.zeros(0, k + 1, dtype=torch.int64, device=device))
    return torch.cat(ranked), torch.cat(parts)


def _masked_block(user_rows: torch.Tensor, item_t: torch.Tensor, mask_rows: torch.Tensor, mask_cols: torch.Tensor,
                  buffer: torch.Tensor, i0: int, i1: int) -> torch.Tensor:
    """Scores of items ``i0:i1`` in ``buffer``, padding item 0 and the (row, item) ``mask`` entries at −inf."""
    scores = buffer.view(-1)[: user_rows.shape[0] * (i1 - i0)].view(user_rows.shape[0], i1 - i0)  # contiguous
    torch.matmul(user_rows, item_t[:, i0:i1], out=scores)
    if i0 == 0:
        scores[:, 0] = -torch.inf
    inside = (mask_cols >= i0) & (mask_cols < i1)
    scores[mask_rows[inside], mask_cols[inside] - i0] = -torch.inf
    return scores


def full_sort_evaluate(trainer, eval_data) -> OrderedDict | None:
    """``trainer.evaluate``'s metrics for a full-sort loader, or None where this path does not apply.

    Applies to models with ``cached_embeddings`` (freqd's backbones), a RecBole
    ``FullSortEvalDataLoader`` and metrics that need only the top-k; the users, masks (padding
    item and the loader's history items) and positives are the loader's own. In a process group the
    ranks share the users and every rank gets the same metrics.
    """
    model, config = trainer.model, trainer.config
    if not (isinstance(eval_data, FullSortEvalDataLoader) and hasattr(model, "cached_embeddings")
            and not eval_data.is_sequential and supports(config)):
        return None
    model.eval()
    user_all, item_all = model.cached_embeddings()
    users = eval_data.uid_list
    chunk = chunk_users(config, item_all.shape[0], item_all.shape[1])
    scorer = getattr(model, "rank_scores", None)  # a model ranking by its own scores scores whole rows
    _, rec_topk = rank_topk(user_all, item_all, users.to(user_all.device), eval_data.uid2history_item[users.numpy()],
                            eval_data.uid2positive_item[users.numpy()], max(config["topk"]), chunk, scorer=scorer,
                            item_chunk=None if scorer is not None else config["rank_chunk_items"], shard=current_shard())
    struct = DataStruct()
    struct.set("rec.topk", rec_topk.cpu())
    result = trainer.evaluator.evaluate(struct)
    trainer.wandblogger.log_eval_metrics(result, head="eval")
    return result
