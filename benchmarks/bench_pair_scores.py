"""Pair scores of the ranking distillers, compiled loops against torch's kernels, side by side.

``freqd.distillers.sampling.pair_scores`` scores each batch user against its listed items (RRD on
Gowalla: about 1,800 distinct users per batch of 2,048 triples, 100 interesting and 200
uninteresting items, d = 20). On one CPU thread with Numba installed it runs the compiled loops of
``freqd._pairs``; otherwise a gather, a batched product and, backward, a scatter. This times one
forward and one backward of both paths on random tables of a dataset's size, alternating, under a
run's CPU settings (``freqd.threads.apply_threads``), and checks whether the scores and both
gradients are bit-equal between the paths.

    OMP_NUM_THREADS=1 python benchmarks/bench_pair_scores.py --rounds 5 \\
        --out benchmarks/results/pair-scores-gowalla-<date>.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from freqd.distillers import sampling
from freqd.threads import apply_threads


def one_pass(users: torch.Tensor, table: torch.Tensor, lists: list[torch.Tensor], upstream: list[torch.Tensor],
             compiled: bool) -> tuple[float, float, list[torch.Tensor]]:
    """Forward and backward seconds of the scores of every list, and (scores..., user grad, table grad)."""
    score = sampling.compiled_pair_scores if compiled else sampling.torch_pair_scores
    u, v = users.clone().requires_grad_(), table.clone().requires_grad_()
    start = time.perf_counter()
    scores = [score(u, v, items) for items in lists]
    forward = time.perf_counter() - start
    start = time.perf_counter()
    torch.stack([(s * g).sum() for s, g in zip(scores, upstream)]).sum().backward()
    backward = time.perf_counter() - start
    assert u.grad is not None and v.grad is not None
    return forward, backward, [s.detach() for s in scores] + [u.grad, v.grad]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_800, help="distinct users of a batch")
    parser.add_argument("--items", type=int, default=40_981)
    parser.add_argument("--dim", type=int, default=20)
    parser.add_argument("--lists", type=int, nargs="+", default=[100, 200], help="items per list (RRD: above, below)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    apply_threads(1)
    if not sampling.compiled_pairs(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1, dtype=torch.int64)):
        raise SystemExit("no compiled path here (Numba not installed?): pip install numba")
    gen = torch.Generator().manual_seed(0)
    users = torch.randn(args.users, args.dim, generator=gen) * 0.1
    table = torch.randn(args.items, args.dim, generator=gen) * 0.1
    lists = [torch.randint(1, args.items, (args.users, k), generator=gen) for k in args.lists]
    upstream = [torch.randn(args.users, k, generator=gen) for k in args.lists]
    one_pass(users, table, lists, upstream, True)  # compile (cached on disk afterwards)
    times: dict[str, dict[str, list[float]]] = {p: {"forward": [], "backward": []} for p in ("compiled", "torch")}
    equal = True
    for _ in range(args.rounds):
        results = {}
        for path in ("torch", "compiled"):
            forward, backward, results[path] = one_pass(users, table, lists, upstream, path == "compiled")
            times[path]["forward"].append(forward)
            times[path]["backward"].append(backward)
        equal = equal and all(torch.equal(a, b) for a, b in zip(results["torch"], results["compiled"]))
    medians = {p: {k: statistics.median(v) for k, v in t.items()} for p, t in times.items()}
    total = {p: m["forward"] + m["backward"] for p, m in medians.items()}
    result = {
        "command": "OMP_NUM_THREADS=1 python benchmarks/bench_pair_scores.py " + " ".join(
            f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in vars(args).items() if k != "out"),
        "machine": platform.platform(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
        "seconds": times, "median_seconds": medians, "speedup_forward_backward": total["torch"] / total["compiled"],
        "bit_equal_scores_and_gradients": equal,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({"median_seconds": medians, "speedup": round(total["torch"] / total["compiled"], 2),
                      "bit_equal": equal}))


if __name__ == "__main__":
    main()
