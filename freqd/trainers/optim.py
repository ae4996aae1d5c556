"""Row-wise lazy Adam for embedding tables, and a wrapper that steps several optimisers as one.

A BPR batch touches a few thousand rows of tables with tens of thousands; dense Adam still
rewrites every row's moments and value each step. :class:`RowAdam` updates only the touched rows.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import Tensor


def touched_rows(grad: Tensor) -> tuple[Tensor, Tensor]:
    """(row ids, their gradient rows) of a table's gradient, sparse or dense.

    A sparse gradient is coalesced (repeated rows summed) and every row it lists is touched; a
    dense one (a distiller reading the whole table adds one, and autograd then densifies the
    sum) touches the rows with any nonzero entry.
    """
    if grad.is_sparse:
        grad = grad.coalesce()
        if grad.sparse_dim() != 1:
            raise ValueError(f"RowAdam needs row-sparse gradients (sparse_dim 1), got sparse_dim {grad.sparse_dim()}")
        return grad.indices()[0], grad.values()
    rows = grad.ne(0).any(dim=1).nonzero().squeeze(1)
    return rows, grad.index_select(0, rows)


class RowAdam(torch.optim.Optimizer):
    """Lazy Adam over the rows of 2-D tables, with RecBole's coupled L2 ``weight_decay``.

    Only the rows in a step's gradient (see :func:`touched_rows`) get their moments and values
    updated, by torch.optim.Adam's formula; other rows are left bit-unchanged. Written here
    because torch.optim.SparseAdam has no weight decay and rejects dense gradients.

    * ``weight_decay`` is added to the touched rows' gradients only (``g + wd·w``, as Adam does),
      so it is lazy too: a row no batch touches is not decayed.
    * ``step`` counts the optimiser steps in which the table had a gradient and is shared by all
      its rows (torch.optim.SparseAdam's convention): bias correction uses that global count, not
      how often the row itself was touched. When every row is touched every step, the update
      equals dense Adam's.
    """

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"RowAdam: lr, eps and weight_decay must be >= 0, got {lr}, {eps}, {weight_decay}")
        if not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"RowAdam: betas must be in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        for group in self.param_groups:
            for param in group["params"]:
                if param.dim() != 2:
                    raise ValueError(
                        f"RowAdam updates rows of 2-D tables, got a parameter of shape {tuple(param.shape)}"
                    )

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._step_table(param, group)
        return loss

    def _step_table(self, param: Tensor, group: dict[str, Any]) -> None:
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        state = self.state[param]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["step"] = step = int(state["step"]) + 1
        assert param.grad is not None  # step() calls this only for parameters with a gradient
        rows, grad = touched_rows(param.grad)
        if rows.numel() == 0:
            return
        # Gathered rows live in reused buffers (fresh multi-MB tensors each step cost page faults);
        # moments move by delta = (1 - beta)(target - old), scattered with index_add_ (faster than
        # index_copy_ on CPU), and old + delta is then the new value, as in torch.optim.SparseAdam.
        exp_avg, exp_avg_sq, delta, decayed = self._buffers(4, grad)
        if weight_decay:
            torch.index_select(param, 0, rows, out=decayed)
            grad = decayed.mul_(weight_decay).add_(grad)
        torch.index_select(state["exp_avg"], 0, rows, out=exp_avg)
        torch.mul(exp_avg, -(1 - beta1), out=delta).add_(grad, alpha=1 - beta1)
        state["exp_avg"].index_add_(0, rows, delta)
        exp_avg.add_(delta)
        torch.index_select(state["exp_avg_sq"], 0, rows, out=exp_avg_sq)
        torch.mul(exp_avg_sq, -(1 - beta2), out=delta).addcmul_(grad, grad, value=1 - beta2)
        state["exp_avg_sq"].index_add_(0, rows, delta)
        denom = exp_avg_sq.add_(delta).sqrt_().div_(math.sqrt(1 - beta2**step)).add_(eps)
        param.index_add_(0, rows, exp_avg.div_(denom).mul_(-lr / (1 - beta1**step)))

    def _buffers(self, count: int, like: Tensor) -> list[Tensor]:
        """``count`` scratch tensors shaped like ``like``, views of one buffer kept between steps."""
        size = count * like.numel()
        buffer = getattr(self, "_workspace", None)
        if buffer is None or buffer.numel() < size or buffer.dtype != like.dtype or buffer.device != like.device:
            # A quarter to spare: the next batch touches a few more rows without a new allocation.
            buffer = self._workspace = torch.empty(size + size // 4, dtype=like.dtype, device=like.device)
        return list(buffer[:size].view(count, *like.shape).unbind(0))


class OptimizerGroup:
    """Several optimisers over disjoint parameters, driven as one (``step``, ``zero_grad``, state).

    The trainer calls only these methods, so the row-wise tables and every other parameter (a
    distiller's projector) can each keep their own update rule.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        if not optimizers:
            raise ValueError("OptimizerGroup needs at least one optimiser")
        self.optimizers = list(optimizers)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for optimizer in self.optimizers:
            optimizer.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers],
                "classes": [type(optimizer).__name__ for optimizer in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        classes = [type(optimizer).__name__ for optimizer in self.optimizers]
        saved = state_dict.get("classes") if isinstance(state_dict, dict) else None
        if saved != classes:
            raise ValueError(
                f"optimizer state holds {saved or 'a single optimiser'}, this run uses {classes}: the checkpoint "
                "was written with another sparse_embeddings or learner setting"
            )
        for optimizer, state in zip(self.optimizers, state_dict["optimizers"]):
            optimizer.load_state_dict(state)
