"""Work split over ``torch.distributed`` ranks and into bounded pieces.

* **Rankings.** Full-sort evaluation and the teacher's top-N rank users chunk by chunk. On R ranks,
  rank r takes chunks r, r + R, r + 2R, … of the same chunking one process would use, and every
  rank receives all rows back in the single-process order (:class:`Shard`, :func:`gather_chunks`).
  Each chunk holds the same users as in one process, so every row comes from the same kernel calls
  on the same operands and the gathered result equals the single-process one bit for bit.
  :func:`blockwise_topk` bounds a top-k's score memory by ranking the items a block at a time.
* **Data-parallel training.** Each rank takes its part of every batch (:func:`batch_part`) and
  averages gradients before each step (:class:`AveragedGradients`); :func:`spawn_group` starts the
  ranks (``freqd.runs.launch``, ``freqd.testing.run_process_group``). State derived once per run
  with floating-point results that may differ between machines (FreqD's teacher eigenbasis) is
  computed on rank 0 and broadcast (:func:`computed_once`).

Without an initialised process group everything here is the one-process identity
(``tests/test_distributed.py`` checks the rest with two ``gloo`` processes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class Shard:
    """This process's place among ``world`` ranks (``rank`` 0 of 1 in a single process)."""

    rank: int = 0
    world: int = 1

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"shard: rank {self.rank} of world size {self.world} does not exist")

    def chunks(self, n: int, chunk: int) -> list[tuple[int, int]]:
        """The (start, stop) row ranges this rank owns when ``n`` rows are cut into ``chunk``-row chunks."""
        if chunk < 1:
            raise ValueError(f"shard: chunk must be at least 1 row, got {chunk}")
        starts = range(self.rank * chunk, n, self.world * chunk)
        return [(start, min(start + chunk, n)) for start in starts]

    def rows(self, n: int, chunk: int) -> Tensor:
        """The indices of the rows this rank owns, ascending (its chunks concatenated)."""
        ranges = [torch.arange(start, stop) for start, stop in self.chunks(n, chunk)]
        return torch.cat(ranges) if ranges else torch.zeros(0, dtype=torch.int64)


def current_shard() -> Shard:
    """The shard of this process in the initialised default process group, else ``Shard()``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size())
    return Shard()


def everyone(flag: bool, shard: Shard) -> bool:
    """True when ``flag`` is true on every rank (a collective); ``flag`` itself in one process."""
    if shard.world == 1:
        return flag
    import torch.distributed as dist

    vote = torch.tensor([int(flag)])
    if dist.get_backend() == "nccl":
        vote = vote.cuda()
    dist.all_reduce(vote, op=dist.ReduceOp.MIN)
    return bool(vote.item())


def gather_chunks(local: Tensor, n: int, chunk: int, shard: Shard) -> Tensor:
    """Every rank's owned rows (``local``: this rank's rows in :meth:`Shard.rows` order) as one n-row tensor.

    A collective: every rank of the group must call it with the same ``n``, ``chunk`` and trailing
    shape. Rows are padded to the largest share for one ``all_gather``; memory is world × that share.
    """
    if shard.world == 1:
        return local
    import torch.distributed as dist

    counts = [len(Shard(r, shard.world).rows(n, chunk)) for r in range(shard.world)]
    if local.shape[0] != counts[shard.rank]:
        raise ValueError(f"gather_chunks: rank {shard.rank} holds {local.shape[0]} rows, its share is "
                         f"{counts[shard.rank]}")
    padded = local.new_zeros((max(counts), *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(shard.world)]
    dist.all_gather(parts, padded)
    out = local.new_empty((n, *local.shape[1:]))
    for r, part in enumerate(parts):
        out[Shard(r, shard.world).rows(n, chunk).to(out.device)] = part[: counts[r]]
    return out


def computed_once(make: Callable[[], Tensor], like: Tensor, shape: tuple[int, ...], shard: Shard) -> Tensor:
    """``make()`` run on rank 0 only and broadcast, so every rank holds rank 0's bits; ``make()`` in one process.

    For derived state whose floating-point result may differ between machines (an eigenbasis: its
    signs and near-ties depend on the linear-algebra library) and that every rank must share. A
    collective: every rank calls it with the same ``shape``; the result has ``like``'s dtype and device.
    """
    if shard.world == 1:
        return make()
    import torch.distributed as dist

    value = make().to(like).contiguous() if shard.rank == 0 else like.new_empty(shape)
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"computed_once: rank 0 made shape {tuple(value.shape)}, the ranks expect {tuple(shape)}")
    dist.broadcast(value, src=0)
    return value


def blockwise_topk(score_block: Callable[[int, int], Tensor], n_items: int, k: int, width: int) -> Tensor:
    """Each row's top-``k`` item ids, best first, from ``score_block(i0, i1)`` (rows × (i1 − i0) scores,
    exclusions already at −inf) called for blocks of ``width`` items; memory rows × (width + 2k).

    The running lists are merged after every block, so the result is the top-k of the whole row;
    which of several equal scores is kept may differ from one ``torch.topk`` over the row.
    """
    best_val: Tensor | None = None
    best_idx: Tensor | None = None
    for i0 in range(0, n_items, width):
        i1 = min(i0 + width, n_items)
        top = torch.topk(score_block(i0, i1), min(k, i1 - i0), dim=1)
        values, indices = top.values, top.indices + i0
        if best_val is not None and best_idx is not None:
            values, indices = torch.cat([best_val, values], dim=1), torch.cat([best_idx, indices], dim=1)
        if values.shape[1] > k:
            keep = torch.topk(values, k, dim=1).indices
            values, indices = values.gather(1, keep), indices.gather(1, keep)
        best_val, best_idx = values, indices
    if best_val is None or best_idx is None:
        raise ValueError("blockwise_topk: no items to rank")
    order = torch.sort(best_val, dim=1, descending=True, stable=True).indices
    return best_idx.gather(1, order)


# -- data-parallel training ------------------------------------------------------------------------------
def batch_part(start: int, stop: int, shard: Shard) -> tuple[int, int]:
    """This rank's contiguous part of the rows ``start:stop`` of one global batch.

    The parts differ in size by at most one row; a batch of fewer rows than ranks is taken whole by
    every rank (the mean of identical means is the batch mean), so no rank ever gets an empty batch.
    """
    n = stop - start
    if shard.world == 1 or n < shard.world:
        return start, stop
    base, extra = divmod(n, shard.world)
    lo = start + shard.rank * base + min(shard.rank, extra)
    return lo, lo + base + (shard.rank < extra)


class AveragedGradients:
    """An optimiser whose ``step`` first replaces every gradient by its mean over the ranks.

    One ``all_reduce`` per step over all parameters flattened together, with a presence flag per
    parameter, so a parameter without a gradient on any rank keeps none (torch's optimisers skip
    it) and the ranks' parameters stay identical. As with ``DistributedDataParallel``, each rank's
    loss is the mean over its part of the batch and the ranks' gradients are averaged. The state
    is the wrapped optimiser's, so a checkpoint resumes in one process or in several.
    """

    def __init__(self, optimizer, shard: Shard) -> None:
        self.optimizer, self.shard = optimizer, shard
        self.params = [p for group in optimizer.param_groups for p in group["params"]]

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def average(self) -> None:
        """Every parameter's gradient replaced by the mean over the ranks (a collective)."""
        import torch.distributed as dist

        if not self.params:
            return
        device = self.params[0].device
        for p in self.params:
            if p.grad is not None and p.grad.is_sparse:
                raise ValueError("data-parallel training averages dense gradients only (sparse_embeddings: False)")
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in self.params]
                         + [torch.tensor([float(p.grad is not None) for p in self.params], device=device)])
        dist.all_reduce(flat)
        flat /= self.shard.world
        present = flat[-len(self.params):]
        offset = 0
        for index, p in enumerate(self.params):
            size = p.numel()
            if present[index] > 0:
                p.grad = flat[offset:offset + size].view_as(p).clone()
            offset += size

    def step(self, closure=None):
        if closure is not None:
            raise ValueError("AveragedGradients.step takes no closure")
        self.average()
        return self.optimizer.step()

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict) -> None:
        self.optimizer.load_state_dict(state_dict)


def join_launcher_group(use_nccl: bool) -> bool:
    """Inside a process started by ``torchrun`` (``RANK`` and ``WORLD_SIZE`` > 1 set) with no process
    group yet: join torchrun's group (``env://``; ``nccl`` when asked and CUDA is present, else
    ``gloo``). True when this call joined it."""
    import os

    import torch.distributed as dist

    if not dist.is_available() or dist.is_initialized():
        return False
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if use_nccl and torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, init_method="env://")
    return True


def _rank_main(rank: int, local_rank: int, world: int, init_method: str, backend: str, fn: Callable[..., Any],
               args: tuple, results, collected) -> None:
    """One rank of :func:`spawn_group`: joins the group, runs ``fn(*args)``, reports back and stays alive
    until the parent has read the report (tensors travel as shared memory owned by this process)."""
    import torch.distributed as dist

    try:
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world)
        try:
            results.put((rank, "ok", fn(*args)))
        finally:
            dist.destroy_process_group()
    except BaseException as exc:  # reported to the parent, which raises it
        import traceback

        results.put((rank, "error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"))
    collected.wait(timeout=600)


def spawn_group(fn: Callable[..., Any], nproc: int, args: tuple = (), *, init_method: str, backend: str = "gloo",
                world_size: int | None = None, offset: int = 0, timeout: float | None = None) -> dict[int, Any]:
    """``fn(*args)`` on ``nproc`` spawned processes, ranks ``offset`` … ``offset + nproc − 1`` of a group of
    ``world_size`` (default ``nproc``; more when other machines run the other ranks); the local
    ranks' results by rank.

    ``fn`` must be importable and its result picklable. A failing rank, or ranks still running after
    ``timeout`` seconds (then killed), raise RuntimeError naming them.
    """
    import queue
    import time

    import torch.multiprocessing as mp

    world = world_size or nproc
    if nproc < 1 or offset < 0 or offset + nproc > world:
        raise ValueError(f"distributed: ranks {offset}..{offset + nproc - 1} do not fit a world of {world}")
    context = mp.get_context("spawn")
    results, collected = context.Queue(), context.Event()
    processes = [context.Process(target=_rank_main, args=(offset + local, local, world, init_method, backend, fn,
                                                          args, results, collected))
                 for local in range(nproc)]
    for process in processes:
        process.start()
    outcome: dict[int, tuple[str, Any]] = {}
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while len(outcome) < nproc:
            wait = 5.0 if deadline is None else max(0.1, min(5.0, deadline - time.monotonic()))
            try:
                rank, status, value = results.get(timeout=wait)
                outcome[rank] = (status, value)
                if status != "ok":  # the other ranks may wait on it in a collective: stop them
                    break
                continue
            except queue.Empty:
                pass
            dead = [offset + i for i, p in enumerate(processes) if not p.is_alive() and offset + i not in outcome]
            if dead:
                try:  # a rank that reported just before exiting
                    rank, status, value = results.get(timeout=2.0)
                    outcome[rank] = (status, value)
                    continue
                except queue.Empty:
                    raise RuntimeError(f"distributed: rank(s) {dead} exited without a result") from None
            if deadline is not None and time.monotonic() >= deadline:
                missing = sorted(set(range(offset, offset + nproc)) - set(outcome))
                raise RuntimeError(f"distributed: ranks {missing} still running after {timeout:g} s")
    finally:
        collected.set()
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
    failed = {rank: value for rank, (status, value) in outcome.items() if status != "ok"}
    if failed:
        raise RuntimeError("distributed: " + "; ".join(f"rank {r}: {v}" for r, v in sorted(failed.items())))
    return {rank: value for rank, (_, value) in outcome.items()}
