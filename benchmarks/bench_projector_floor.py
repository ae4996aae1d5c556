"""The arithmetic floor of FreqD's default step: its projector alone, against the scratch step's budget.

FreqD's default projects every distilled row (the batch's unique users, positives and negatives)
through a per-entity MLP d_S → (d_S + d_T) / 2 → r (r = 64, the teacher's principal subspace).
This times that MLP's forward and backward alone, on as many rows as one 2,048-triple batch of each
dataset holds, and reports it with its FLOP count (one MLP of that shape for every row: splitting
the rows between a user and an item MLP changes no FLOP). Whatever else the step does, a FreqD step cannot
cost less than this, so it bounds the epoch ratio from below: compare it with the scratch step of
``bench_kd_cost.py`` (1.1–4.2 ms in ``benchmarks/results/kd-cost-*-2026-12-04.json``).

    OMP_NUM_THREADS=1 python benchmarks/bench_projector_floor.py --out benchmarks/results/projector-floor.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

#: dataset -> (rows of one 2,048-triple batch: unique users + positives + negatives, teacher width d_T)
CASES = {"ml-100k": (2664, 300), "citeulike-t": (5011, 400), "gowalla": (5790, 300)}


def floor(rows: int, d_teacher: int, d_student: int = 20, rank: int = 64, repeats: int = 50) -> dict:
    """Median ms of the MLP's forward + backward over ``rows`` rows, and its FLOPs."""
    hidden = (d_student + d_teacher) // 2
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(d_student, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, rank))
    x = torch.randn(rows, d_student, requires_grad=True)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mlp(x).pow(2).sum().backward()
        times.append(time.perf_counter() - start)
    ms = 1000 * sorted(times)[repeats // 2]
    # forward 2·rows·(d_S·h + h·r); backward (input and weight gradients) twice that
    flops = 3 * 2 * rows * (d_student * hidden + hidden * rank)
    return {"rows": rows, "d_teacher": d_teacher, "hidden": hidden, "rank": rank, "median_ms": ms,
            "mflop": flops / 1e6, "gflop_per_s": flops / ms / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report = {"threads": args.threads, "date": time.strftime("%Y-%m-%d"),
              "cases": {name: floor(rows, d_t) for name, (rows, d_t) in CASES.items()}}
    for name, case in report["cases"].items():
        print(f"{name:12s} {case['rows']:5d} rows, hidden {case['hidden']}: {case['median_ms']:6.2f} ms, "
              f"{case['mflop']:5.0f} MFLOP, {case['gflop_per_s']:5.1f} GFLOP/s")
    if args.out:
        from freqd.io import atomic_write_text

        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
