"""How much of a teacher's feature energy a d-dimensional student can reach at best.

For each embedding table T (users, items, both stacked) prints the share of ‖T‖²_F held by the
top-d singular directions: the best rank-d linear fit (Eckart–Young), hence the most a bias-free
linear projection of a d-dimensional student can match under squared-L2 feature distillation.

    python benchmarks/teacher_energy.py saved/BPR-teacher.pth --dims 20 50 100
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def energy_shares(table: torch.Tensor, dims: list[int]) -> dict[int, float]:
    """Share of the squared Frobenius norm in the top-d singular values, per d."""
    energy = torch.linalg.svdvals(table.double()).pow(2)
    cumulative = energy.cumsum(0) / energy.sum()
    return {d: float(cumulative[min(d, cumulative.numel()) - 1]) for d in dims}


def main(argv: list[str] | None = None) -> int:
    from freqd import load_checkpoint

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a freqd or RecBole BPR checkpoint")
    parser.add_argument("--dims", type=int, nargs="+", default=[20, 50, 100])
    args = parser.parse_args(argv)
    state = load_checkpoint(args.checkpoint)["state_dict"]
    tables = {name: state[f"{name}_embedding.weight"] for name in ("user", "item") if f"{name}_embedding.weight" in state}
    if not tables:
        raise SystemExit(f"{args.checkpoint}: no user_embedding/item_embedding tables in its state_dict")
    if len(tables) == 2:
        tables["both"] = torch.cat(list(tables.values()))
    print(f"{args.checkpoint}: share of ‖T‖² in the top-d singular directions")
    for name, table in tables.items():
        shares = energy_shares(table, args.dims)
        cells = ", ".join(f"d={d}: {share:.3f}" for d, share in shares.items())
        print(f"  {name:5s} {tuple(table.shape)}  mean ‖row‖² {table.double().pow(2).sum(1).mean():.2f}  {cells}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
