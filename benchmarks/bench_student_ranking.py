"""Time of one full student ranking (top-K unobserved items of every user), as KD, CD and FreqD + KD
compute it every epoch: ``topk_unobserved`` against the same computation with a freshly allocated
score block per user chunk (the code before it reused one buffer), side by side, alternating.

Tables and training matrix are random at a dataset's sizes (Gowalla's by default: 29,858 users,
40,981 items, 27 training items per user, d = 20); both paths must return the same lists (checked).

    OMP_NUM_THREADS=1 python benchmarks/bench_student_ranking.py --rounds 3 \\
        --out benchmarks/results/student-ranking-gowalla-<date>.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from freqd.distillers.rankings import mask_training_, topk_unobserved


def fresh_blocks(user_table, item_table, train, n, chunk_size):
    """The per-chunk ranking with a new score block per chunk (the reference being timed against)."""
    out = []
    for start in range(0, user_table.shape[0], chunk_size):
        stop = min(start + chunk_size, user_table.shape[0])
        scores = mask_training_(user_table[start:stop] @ item_table.T, train, start, stop)
        out.append(scores.topk(n, dim=1).indices)
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=29_858)
    parser.add_argument("--items", type=int, default=40_981)
    parser.add_argument("--per-user", type=int, default=27, help="training items per user")
    parser.add_argument("--dim", type=int, default=20)
    parser.add_argument("--topk", type=int, default=50)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    users = torch.randn(args.users, args.dim, generator=gen) * 0.1
    items = torch.randn(args.items, args.dim, generator=gen) * 0.1
    rows = torch.arange(args.users).repeat_interleave(args.per_user)
    cols = torch.randint(1, args.items, (len(rows),), generator=gen)
    train = torch.sparse_coo_tensor(torch.stack([rows, cols]), torch.ones(len(rows)),
                                    (args.users, args.items)).coalesce().to_sparse_csr()

    times: dict[str, list[float]] = {"reused_buffer": [], "fresh_blocks": []}
    same = True
    for _ in range(args.rounds):
        start = time.perf_counter()
        got = topk_unobserved(users, items, train, args.topk, chunk_size=args.chunk_size)
        times["reused_buffer"].append(time.perf_counter() - start)
        start = time.perf_counter()
        ref = fresh_blocks(users, items, train, args.topk, args.chunk_size)
        times["fresh_blocks"].append(time.perf_counter() - start)
        same = same and torch.equal(got, ref)
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "command": "OMP_NUM_THREADS=1 python benchmarks/bench_student_ranking.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__},
        "date": time.strftime("%Y-%m-%d"),
        "sizes": {"users": args.users, "items": args.items, "per_user": args.per_user, "dim": args.dim,
                  "topk": args.topk, "chunk_size": args.chunk_size},
        "seconds": times, "median_seconds": medians,
        "speedup": medians["fresh_blocks"] / medians["reused_buffer"],
        "identical_lists": same,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"median_seconds": medians, "speedup": round(result["speedup"], 3), "identical_lists": same}))
    if not same:
        raise SystemExit("the two paths returned different lists")


if __name__ == "__main__":
    main()
