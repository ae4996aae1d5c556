"""Vectorised samplers, rankings and top-N pools shared by the ranking-based distillers
(RRD, DCD, CD, UnKD, KD, PCKD).

Everything here works on whole user × pool tensors in torch, on the device of its inputs, with
no per-user Python loop; passes over all items are done ``chunk_size`` users at a time, so memory
is bounded by chunk_size × n_items. Item 0 is RecBole's padding id and is never returned.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from freqd.codes import compiled_available
from freqd.distillers.rankings import mask_training_, teacher_topk, topk_unobserved
from freqd.distillers.teacher import TeacherTables
from freqd.distributed import current_shard

logger = logging.getLogger(__name__)

#: Users per chunk in passes over all items (student scoring, rank counting, uniform sampling).
CHUNK_SIZE = 1024


# -- training matrix ---------------------------------------------------------------------------------
def degrees(train: Tensor) -> Tensor:
    """Training items per user, from the training CSR matrix."""
    crow = train.crow_indices()
    return crow[1:] - crow[:-1]


def training_keys(train: Tensor) -> Tensor:
    """Sorted keys ``user * n_items + item`` of the training pairs, for vectorised membership tests."""
    n_users, n_items = train.shape
    users = torch.repeat_interleave(torch.arange(n_users), degrees(train))
    return (users * n_items + train.col_indices()).sort().values


def is_training(users: Tensor, items: Tensor, keys: Tensor, n_items: int) -> Tensor:
    """Whether each ``items[r, j]`` is a training item of ``users[r]`` (``keys`` from :func:`training_keys`)."""
    query = users.unsqueeze(1) * n_items + items
    if keys.numel() == 0:
        return torch.zeros_like(query, dtype=torch.bool)
    found = torch.searchsorted(keys, query).clamp(max=keys.numel() - 1)
    return keys[found] == query


def in_rows(sorted_rows: Tensor, items: Tensor) -> Tensor:
    """Whether each ``items[r, j]`` occurs in the ascending row ``sorted_rows[r]``."""
    found = torch.searchsorted(sorted_rows, items).clamp(max=sorted_rows.shape[1] - 1)
    return sorted_rows.gather(1, found) == items


# -- top-N pools ----------------------------------------------------------------------------------------
def fit_pool(key: str, requested: int, train: Tensor, reserve: int = 0) -> int:
    """``requested`` pool size, lowered (with a warning) to what the most active user has.

    A per-user top-N of unobserved items needs N ≤ n_items − 1 − max degree; ``reserve`` more
    items are kept free for methods that sample outside the pool (RRD's uninteresting items).
    """
    limit = train.shape[1] - 1 - int(degrees(train).max()) - reserve
    if limit < 1:
        raise ValueError(f"{key}: the most active user has no unobserved item left for a pool "
                         f"({reserve} reserved for sampling outside it)")
    if requested > limit:
        logger.warning(f"{key}={requested} exceeds the {limit} items available to the most active user; using {limit}")
        return limit
    return requested


def teacher_pool(config, teacher, train_dataset, n: int, tables: TeacherTables) -> Tensor:
    """The teacher's top-``n`` unobserved items per user, on its tables' device.

    Scored from ``tables`` (the distiller's copy) and cached under the config's ``checkpoint_dir``
    (:func:`freqd.distillers.rankings.teacher_topk`); ``n`` is already fitted (:func:`fit_pool`).
    """
    return teacher_topk(teacher, train_dataset, n, cache_dir=config["checkpoint_dir"], tables=tables,
                        item_chunk=config["rank_chunk_items"]).to(tables.users.device)


def student_pool(student, train: Tensor, n: int, device) -> Tensor:
    """The student's current top-``n`` unobserved items per user (scored in eval mode), on ``device``; in a
    process group the ranks share the users (every rank gets all rows)."""
    return topk_unobserved(*model_tables(student), train, n, shard=current_shard()).to(device)


# -- scoring -------------------------------------------------------------------------------------------
class _GatherRows(torch.autograd.Function):
    """``table[index]`` for an integer index tensor: forward by ``index_select``, backward by an
    accumulating ``index_put_``. Same values and gradients as advanced indexing, whose forward is about
    twice as slow on CPU, and faster than ``index_select``'s own backward (``index_add_``)."""

    @staticmethod
    def forward(ctx, table: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        ctx.n_rows = table.shape[0]
        return table.index_select(0, index.reshape(-1)).view(*index.shape, *table.shape[1:])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (index,) = ctx.saved_tensors
        row_shape = grad.shape[index.dim():]
        out = grad.new_zeros(ctx.n_rows, *row_shape)
        return out.index_put_((index.reshape(-1),), grad.reshape(index.numel(), *row_shape), accumulate=True), None


def gather_rows(table: Tensor, index: Tensor) -> Tensor:
    """``table[index]`` (rows of a 2-d table for an integer index tensor of any shape), faster on CPU."""
    return _GatherRows.apply(table, index)


class _CompiledPairScores(torch.autograd.Function):
    """:func:`pair_scores` by the compiled loops of ``freqd._pairs`` (CPU, one thread, Numba installed):
    one pass forward and one backward, without the (rows, k, d) block of gathered item rows."""

    @staticmethod
    def forward(ctx, user_rows: Tensor, item_table: Tensor, items: Tensor) -> Tensor:
        from freqd import _pairs

        users_np, table_np, items_np = (t.detach().contiguous().numpy() for t in (user_rows, item_table, items))
        out = torch.empty(items.shape, dtype=user_rows.dtype)
        _pairs.scores(users_np, table_np, items_np, out.numpy())
        ctx.save_for_backward(user_rows, item_table, items)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        from freqd import _pairs

        user_rows, item_table, items = ctx.saved_tensors
        grad_users, grad_items = torch.zeros_like(user_rows), torch.zeros_like(item_table)
        _pairs.scores_backward(user_rows.detach().contiguous().numpy(), item_table.detach().contiguous().numpy(),
                               items.contiguous().numpy(), grad.contiguous().numpy(), grad_users.numpy(),
                               grad_items.numpy())
        return (grad_users if ctx.needs_input_grad[0] else None,
                grad_items if ctx.needs_input_grad[1] else None, None)


def compiled_pairs(user_rows: Tensor, item_table: Tensor, items: Tensor) -> bool:
    """Whether :func:`pair_scores` takes the compiled path: Numba installed, every tensor on the CPU, the
    tables of one float dtype, integer items, and one torch thread (the loops are serial; with more
    threads torch's own kernels are kept)."""
    return (compiled_available() and torch.get_num_threads() == 1
            and all(t.device.type == "cpu" for t in (user_rows, item_table, items))
            and user_rows.dtype == item_table.dtype and user_rows.dtype in (torch.float32, torch.float64)
            and items.dtype in (torch.int32, torch.int64) and items.dim() == 2 and user_rows.dim() == 2 and item_table.dim() == 2)


def pair_scores(user_rows: Tensor, item_table: Tensor, items: Tensor) -> Tensor:
    """Inner products ⟨user_rows[r], item_table[items[r, j]]⟩ as a (rows, k) tensor.

    On one CPU thread with Numba installed (:func:`compiled_pairs`), by compiled loops that sum in the
    same order as the torch path (2.6× faster forward and backward on Gowalla's RRD lists)."""
    if compiled_pairs(user_rows, item_table, items):
        return compiled_pair_scores(user_rows, item_table, items)
    return torch_pair_scores(user_rows, item_table, items)


def compiled_pair_scores(user_rows: Tensor, item_table: Tensor, items: Tensor) -> Tensor:
    """:func:`pair_scores` by the compiled loops (needs Numba; see :func:`compiled_pairs` for where)."""
    return _CompiledPairScores.apply(user_rows, item_table, items)


def torch_pair_scores(user_rows: Tensor, item_table: Tensor, items: Tensor) -> Tensor:
    """:func:`pair_scores` by torch's kernels: a gather of the item rows and a batched product."""
    return torch.bmm(gather_rows(item_table, items), user_rows.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def model_tables(model) -> tuple[Tensor, Tensor]:
    """A backbone's final (user, item) tables without gradients, in eval mode (no dropout)."""
    was_training = model.training
    model.eval()
    users, items = model.embeddings()
    model.train(was_training)
    return users.detach(), items.detach()


@torch.no_grad()
def ranks_among_unobserved(user_table: Tensor, item_table: Tensor, train: Tensor, items: Tensor,
                           chunk_size: int = CHUNK_SIZE) -> Tensor:
    """0-based rank of each ``items[u, j]`` among user u's unobserved items (count scoring strictly higher).

    Scores are inner products of the tables; training items and padding item 0 are not counted.
    Returns a (n_users, n) int64 tensor on the items' device.
    """
    out = torch.empty_like(items)
    n_items = item_table.shape[0]
    for start in range(0, items.shape[0], chunk_size):
        stop = min(start + chunk_size, items.shape[0])
        scores = mask_training_(user_table[start:stop] @ item_table.T, train, start, stop)
        target = scores.gather(1, items[start:stop].to(scores.device))
        ascending = scores.sort(dim=1).values
        higher = n_items - torch.searchsorted(ascending, target, right=True)
        out[start:stop] = higher.to(out.device)
    return out


# -- sampling ------------------------------------------------------------------------------------------
def rank_decay_logits(n: int, temperature: float, device=None) -> Tensor:
    """Log-weights −(r+1)/T of the 0-based ranks r < n: rank-decayed sampling, p ∝ exp(−(r+1)/T)."""
    return -(torch.arange(n, device=device, dtype=torch.float32) + 1) / temperature


def sample_without_replacement(logits: Tensor, k: int, n_rows: int | None = None,
                               chunk_size: int = 4 * CHUNK_SIZE) -> Tensor:
    """Per row, ``k`` distinct positions drawn successively with probability ∝ exp(logits) (Gumbel-top-k).

    ``logits`` is (n_rows, n) or, shared by all rows, (n,) with ``n_rows`` given; −inf never
    drawn. Identical in law to ``torch.multinomial(exp(logits), k, replacement=False)``, in the
    order drawn. Returns (n_rows, k) int64 positions.
    """
    rows = logits.shape[0] if logits.dim() == 2 else n_rows
    if rows is None:
        raise ValueError("sample_without_replacement: 1-D logits need n_rows")
    out = torch.empty(rows, k, dtype=torch.long, device=logits.device)
    for start in range(0, rows, chunk_size):
        stop = min(start + chunk_size, rows)
        chunk = logits[start:stop] if logits.dim() == 2 else logits.expand(stop - start, -1)
        gumbel = -torch.empty(chunk.shape, device=chunk.device).exponential_().log()
        out[start:stop] = (chunk + gumbel).topk(k, dim=1).indices
    return out


def first_occurrences(items: Tensor) -> Tensor:
    """Mask of the entries of each row that do not repeat an earlier entry of that row."""
    ordered, order = items.sort(dim=1, stable=True)
    repeat = torch.zeros_like(items, dtype=torch.bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    return ~torch.zeros_like(repeat).scatter_(1, order, repeat)


def uniform_unobserved(users: Tensor, k: int, n_items: int, keys: Tensor, exclude: Tensor | None = None,
                       chunk_size: int = 4 * CHUNK_SIZE) -> Tensor:
    """Per user, ``k`` distinct items drawn uniformly from the items that may be sampled.

    Allowed items are 1..n_items−1 minus the user's training items (``keys`` from
    :func:`training_keys`) and minus ``exclude[r]`` (ascending rows, e.g. a sorted teacher top-N).
    Vectorised rejection: draw m candidates per row, keep the first k allowed distinct ones,
    redraw rows with fewer (m doubling), which is a uniform k-subset in random order. The
    caller ensures every user has k allowed items. Returns (len(users), k) int64.
    """
    out = torch.empty(len(users), k, dtype=torch.long, device=users.device)
    if k == 0:
        return out
    for start in range(0, len(users), chunk_size):
        pending = torch.arange(start, min(start + chunk_size, len(users)), device=users.device)
        m = 2 * k + 16
        while len(pending):
            if m > 64 * n_items:
                raise ValueError(f"fewer than {k} items can be sampled for some users")
            candidates = torch.randint(1, n_items, (len(pending), m), device=users.device)
            ok = ~is_training(users[pending], candidates, keys, n_items) & first_occurrences(candidates)
            if exclude is not None:
                ok &= ~in_rows(exclude[pending], candidates)
            enough = ok.sum(1) >= k
            first = torch.argsort((~ok).to(torch.int8), dim=1, stable=True)[:, :k]
            out[pending[enough]] = candidates.gather(1, first)[enough]
            pending = pending[~enough]
            m *= 2
    return out


def truncated_geometric(lengths: Tensor, n: int, decay: float) -> Tensor:
    """Per row r, ``n`` iid ranks in [0, lengths[r]) with p(k) ∝ exp(−(k+1)/decay), by inverse CDF.

    Rows with length 0 get rank 0 (the caller masks them). Returns (rows, n) int64.
    """
    log_q = -1.0 / decay
    length = lengths.clamp(min=1).to(torch.float64).unsqueeze(1)
    u = torch.rand(len(lengths), n, dtype=torch.float64, device=lengths.device)
    # F(k) = (1 − q^{k+1}) / (1 − q^L); F⁻¹(u) = floor(log(1 − u (1 − q^L)) / log q).
    ranks = torch.floor(torch.log1p(u * torch.expm1(length * log_q)) / log_q)
    return torch.minimum(ranks, length - 1).long()


def tournament_logits(n: int, temperature: float, device=None) -> Tensor:
    """Log-probabilities of the better of two ranks drawn iid with p(r) ∝ exp(−(r+1)/(n·T)), r < n.

    CD's rank-aware sampling (a two-item tournament on the pool): P(min = r) = S(r)² − S(r+1)²,
    with S(r) = P(rank ≥ r).
    """
    p = torch.softmax(rank_decay_logits(n, n * temperature).double(), 0)
    tail = torch.cat([p.flip(0).cumsum(0).flip(0), p.new_zeros(1)])
    q = (tail[:-1] ** 2 - tail[1:] ** 2).clamp(min=1e-300)
    return q.log().float().to(device)

