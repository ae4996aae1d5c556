"""Fixed-width neighbour tables: an unbiased sparse estimate of Â with at most m entries per row.

The exact batch-local filter (:mod:`freqd.graph.local`) touches every neighbour of the batch rows;
on dense graphs that is most of the table on every step. A :class:`NeighborTable`, drawn once per
epoch, keeps at most ``m`` neighbours per row: all of them when the row has ≤ m nonzeros (exact
there), otherwise m draws with replacement, neighbour j with probability a_ij / Σ_j a_ij and weight
Σ_j a_ij / m each. Then E[Â_s] = Â entry by entry, rows are independent, and Â has no diagonal, so
E[Â_s^k] = Â^k as well: the filtered rows [H·X]_B are unbiased, and gathering them is one call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from freqd.graph.filters import PolynomialFilter


@dataclass(frozen=True)
class NeighborTable:
    """``index[i, k]``: the k-th kept neighbour of row i (-1 = padding); ``weight[i, k]``: its weight (0 for padding)."""

    index: Tensor
    weight: Tensor

    @property
    def width(self) -> int:
        return self.index.shape[1]

    def to_dense(self, n_cols: int) -> Tensor:
        """The sampled Â_s as a dense (rows × n_cols) matrix (for tests and small graphs)."""
        dense = torch.zeros(self.index.shape[0], n_cols, dtype=self.weight.dtype, device=self.weight.device)
        valid = self.index >= 0
        rows = torch.arange(self.index.shape[0], device=self.index.device).unsqueeze(1).expand_as(self.index)
        return dense.index_put_((rows[valid], self.index[valid]), self.weight[valid], accumulate=True)

    def split(self, start: int, stop: int, offset: int) -> NeighborTable:
        """Rows [start, stop) with column ids shifted by −``offset`` (bipartite graphs: one side's rows)."""
        index = self.index[start:stop]
        return NeighborTable(torch.where(index >= 0, index - offset, index), self.weight[start:stop])


def sample_neighbors(adj: Tensor, width: int, generator: torch.Generator | None = None) -> NeighborTable:
    """Draw a :class:`NeighborTable` of ``width`` columns from the CSR ``adj`` (nonnegative values)."""
    if width < 1:
        raise ValueError(f"neighbour width must be >= 1, got {width}")
    crow, col, val = adj.crow_indices().long(), adj.col_indices().long(), adj.values()
    if val.numel() and bool((val < 0).any()):
        raise ValueError("sample_neighbors needs a nonnegative adjacency")
    device = crow.device
    n_rows = crow.numel() - 1
    starts, degree = crow[:-1], crow.diff()
    slot = torch.arange(width, device=device)
    index = torch.full((n_rows, width), -1, dtype=torch.long, device=device)
    weight = torch.zeros(n_rows, width, dtype=val.dtype, device=device)
    # Rows with at most `width` nonzeros: every neighbour, with its own weight (exact).
    small = (degree > 0) & (degree <= width)
    rows = small.nonzero().squeeze(1)
    if rows.numel():
        present = slot < degree[rows].unsqueeze(1)
        pos = (starts[rows].unsqueeze(1) + slot)[present]
        cells = (rows.unsqueeze(1).expand(-1, width)[present], slot.expand(rows.numel(), -1)[present])
        index[cells] = col[pos]
        weight[cells] = val[pos]
    # Larger rows: `width` draws by inverse CDF on the row's cumulative weights (float64: no drift).
    rows = (degree > width).nonzero().squeeze(1)
    if rows.numel():
        cum = torch.cat([val.new_zeros(1, dtype=torch.float64), val.double().cumsum(0)])
        base, total = cum[starts[rows]], cum[crow[rows + 1]] - cum[starts[rows]]
        u = torch.rand(rows.numel(), width, generator=generator, dtype=torch.float64, device=device)
        pos = torch.searchsorted(cum, base.unsqueeze(1) + u * total.unsqueeze(1), right=True) - 1
        pos = torch.minimum(torch.maximum(pos, starts[rows].unsqueeze(1)), crow[rows + 1].unsqueeze(1) - 1)
        index[rows] = col[pos]
        weight[rows] = (total / width).to(val.dtype).unsqueeze(1).expand(-1, width)
    return NeighborTable(index, weight)


def sampled_filter_rows(filt: PolynomialFilter, rows: Tensor, tables: list[Tensor], neighbors: list[NeighborTable],
                        side: int = 0, flip: bool = False) -> Tensor:
    """[H·X]_rows with Â replaced by the sampled Â_s (Horner over gathers; gradients flow into ``tables``).

    ``tables[side]`` holds the rows' own features and ``neighbors[side]`` their neighbour table.
    ``flip``: the graph is bipartite with two tables, so a row of side s has its neighbours in side
    1 − s (column ids local to that side); otherwise neighbours are in the same table.
    """
    b = filt.adjacency_coefficients()

    def horner(j: int, ids: Tensor, s: int) -> Tensor:
        # index_select: its backward is one index_add (F.embedding's sorts the ids first on CPU).
        x = tables[s].index_select(0, ids)
        if j == len(b) - 1:
            return b[j] * x
        table = neighbors[s]
        other = 1 - s if flip else s
        nbr = table.index.index_select(0, ids)
        w = table.weight.index_select(0, ids).to(x.dtype)
        inner = horner(j + 1, nbr.clamp_min(0).reshape(-1), other).view(ids.numel(), table.width, -1)
        return b[j] * x + (w.unsqueeze(-1) * inner).sum(1)  # bmm of 1×m by m×d blocks is slower on CPU

    return horner(0, rows, side)
