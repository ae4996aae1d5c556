"""Ranking a large generated catalogue on 1 and 2 ranks: throughput and peak memory.

A synthetic problem of ``--users`` × ``--items`` with power-law degrees (each user's history size
and each item's popularity drawn from Zipf-like laws, seeded) and random d-dimensional tables.
``--rank-users`` of the users (a seeded sample) are ranked twice, each on 1 and on 2 ``gloo``
ranks spawned on this machine (``freqd.testing.run_process_group``):

* ``evaluation``: :func:`freqd.evaluation.fullsort.rank_topk` top-``k`` with history masking, as a
  full-sort validation pass does;
* ``top_n``: :func:`freqd.distillers.rankings.topk_unobserved` top-``n``, as the teacher's top-N
  of the ranking distillers is computed.

Both score ``--chunk`` users × ``--item-chunk`` items at a time (``rank_chunk_items``), so the
score buffer is chunk × item_chunk × 4 bytes whatever the catalogue; the item table
(items × d × 4 bytes) is held by every rank. Reported per (task, ranks): wall seconds of the
ranking (the slowest rank, gathering included), users/s, and each rank's peak RSS; the results
of 1 and 2 ranks must be identical. Every rank regenerates the problem from the seed (not timed).

    OMP_NUM_THREADS=1 python benchmarks/bench_scale.py --users 1000000 --items 1000000 --rank-users 4096 \\
        --out benchmarks/results/scale-<date>.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def generate(users: int, items: int, rank_users: int, d: int, mean_degree: float, seed: int):
    """Tables of the ranked users and of all items, and the ranked users' histories (power-law)."""
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(users, size=min(rank_users, users), replace=False))
    degrees = np.minimum(rng.zipf(2.0, size=len(picked)) * mean_degree / 2, items // 10).astype(np.int64)
    popularity = 1.0 / np.arange(1, items) ** 0.8  # item 0 is the padding id
    popularity /= popularity.sum()
    degrees = np.maximum(degrees, 1)
    drawn = rng.choice(np.arange(1, items), size=int(degrees.sum()), p=popularity)  # one draw for all users
    history = [np.unique(part) for part in np.split(drawn, np.cumsum(degrees)[:-1])]
    g = torch.Generator().manual_seed(seed)
    user_table = torch.randn(len(picked), d, generator=g)
    item_table = torch.randn(items, d, generator=g)
    return user_table, item_table, [torch.from_numpy(h) for h in history]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(task: str, args: dict):
    """One rank's share of ``task`` (in a process group, or alone): (seconds, result, peak RSS MB)."""
    import warnings

    from freqd.distillers.rankings import topk_unobserved
    from freqd.distributed import current_shard
    from freqd.evaluation.fullsort import rank_topk

    warnings.filterwarnings("ignore", message="Sparse")
    torch.set_num_threads(1)
    user_table, item_table, history = generate(args["users"], args["items"], args["rank_users"], args["d"],
                                               args["mean_degree"], args["seed"])
    shard = current_shard()
    start = time.perf_counter()
    if task == "evaluation":
        users = torch.arange(len(history))
        positives = [h[:1] for h in history]  # any positives: the hits are not what is measured
        top, _ = rank_topk(user_table, item_table, users, history, positives, args["k"], args["chunk"],
                           shard=shard, item_chunk=args["item_chunk"])
    else:
        lengths = torch.tensor([len(h) for h in history])
        crow = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
        cols = torch.cat(history)
        train = torch.sparse_csr_tensor(crow, cols, torch.ones(len(cols)), (len(history), args["items"]))
        top = topk_unobserved(user_table, item_table, train, args["n"], args["chunk"], shard=shard,
                              item_chunk=args["item_chunk"])
    seconds = time.perf_counter() - start
    return seconds, top, _peak_rss_mb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--rank-users", type=int, default=4096, help="users ranked (a seeded sample)")
    parser.add_argument("--d", type=int, default=20)
    parser.add_argument("--mean-degree", type=float, default=20.0)
    parser.add_argument("--k", type=int, default=20, help="evaluation top-k")
    parser.add_argument("--n", type=int, default=100, help="top-N of the teacher ranking")
    parser.add_argument("--chunk", type=int, default=64, help="users per chunk")
    parser.add_argument("--item-chunk", type=int, default=65536, help="items per block (rank_chunk_items)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from freqd.testing import run_process_group

    setup = {key: getattr(args, key) for key in ("users", "items", "rank_users", "d", "mean_degree", "k", "n",
                                                  "chunk", "item_chunk", "seed")}
    rows, reference = [], {}
    for task in ("evaluation", "top_n"):
        for world in args.ranks:
            results = run_process_group(_run, world=world, args=(task, setup), timeout=3600)
            seconds = max(r[0] for r in results)
            top = results[0][1]
            if task in reference and not torch.equal(reference[task], top):
                raise SystemExit(f"{task}: {world} ranks ranked differently from {args.ranks[0]}")
            reference.setdefault(task, top)
            row = {"task": task, "ranks": world, "seconds": round(seconds, 3),
                   "users_per_s": round(len(top) / seconds, 1),
                   "peak_rss_mb_per_rank": [round(r[2], 1) for r in results]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    report = {
        "benchmark": "bench_scale", "date": time.strftime("%Y-%m-%d"), "setup": setup,
        "score_buffer_mb": round(args.chunk * min(args.item_chunk, args.items) * 4 / 2**20, 1),
        "item_table_mb": round(args.items * args.d * 4 / 2**20, 1),
        "identical_across_ranks": True, "rows": rows,
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "processor": platform.processor() or platform.machine()},
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
