"""Top-20 throughput of code students (Hamming) against a float student (inner product), one run.

Every checkpoint of a ``freqd compare`` folder's arms (``--arms``, one seed) is loaded on the
comparison's data. The same ``--users`` test users (cycled) are ranked against the whole catalogue
(padding item left out, nothing else masked), top-``--k``, in ``--batch`` users per call, one thread:

* a float model (BPR): ``users @ items.T`` then ``torch.topk``, as ``freqd compare`` times it;
* a Hash model: :class:`freqd.codes.HammingIndex` (XOR + popcount over packed codes, integer keys
  with the seeded random tie-break), once per ``--backends`` entry: ``compiled`` (the one-pass Numba
  kernel) and/or ``numpy`` (NumPy distances and keys, ``torch.topk``); rows are named ``arm[backend]``.

Repeats are interleaved across arms in a fresh random order; the median is reported. Each row
also gives the bits and bytes served per entity, and its throughput over the float reference arm's.

    OMP_NUM_THREADS=1 python benchmarks/bench_hash.py <compare folder> --config configs/compare/citeulike-t-hash.yaml \\
        --arms scratch hash32 hash64 hash128@<another folder> \\
        --out benchmarks/results/hash/throughput-citeulike-t-2026-12-02.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a freqd compare output folder")
    parser.add_argument("--config", required=True, help="the comparison YAML of that folder")
    parser.add_argument("--arms", nargs="+", required=True,
                        help="arms to time, the first (its first backend) is the reference; ARM@FOLDER takes the arm from another "
                             "comparison folder of the same config; NAME=CHECKPOINT times a checkpoint trained on the "
                             "comparison's data outside a comparison (folder then unused)")
    parser.add_argument("--seed", type=int, default=0, help="which seed's checkpoint of each arm")
    parser.add_argument("--users", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=16, help="users per call")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", nargs="+", default=["compiled", "numpy"], choices=["compiled", "numpy"],
                        help="HammingIndex backends to time for each Hash arm")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from freqd.compare.config import load_comparison_config
    from freqd.compare.evaluate import build_eval_context, load_model, model_size

    comparison = load_comparison_config(args.config)
    ctx = build_eval_context(comparison)
    users = np.asarray(ctx.users)[np.arange(args.users) % len(ctx.users)]
    from freqd.models.hash import is_code_student

    rankers, sizes, names = {}, {}, []
    for arm in args.arms:
        if "=" in arm:
            name, _, checkpoint = arm.partition("=")
            arm = name
            model = load_model(checkpoint, ctx)
        else:
            name, _, other = arm.partition("@")
            folder = Path(other) if other else args.folder
            stored = json.loads((folder / "arms" / name / f"s{args.seed}.json").read_text())
            model = load_model(folder / stored["checkpoint"], ctx)
        for backend in args.backends if is_code_student(model) else [None]:
            row = arm if backend is None else f"{name}[{backend}]"
            names.append(row)
            sizes[row] = {**model_size(model), "model": type(model).__name__, "backend": backend or "torch"}
            rankers[row] = _ranker(model, args.k, args.batch, backend)
            rankers[row](users[: args.batch])  # warm-up (and the kernel's compilation)
    seconds: dict[str, list[float]] = {row: [] for row in names}
    order = list(names)
    for _ in range(args.repeats):
        random.shuffle(order)
        for arm in order:
            start = time.perf_counter()
            rankers[arm](users)
            seconds[arm].append(time.perf_counter() - start)
    reference = len(users) / statistics.median(seconds[names[0]])
    rows = []
    for arm in names:
        rate = len(users) / statistics.median(seconds[arm])
        rows.append({"arm": arm.partition("@")[0], **sizes[arm], "users_per_s": rate, "vs_reference": rate / reference,
                     "seconds": seconds[arm]})
        print(f"{arm:>18} {sizes[arm]['model']:>5} {sizes[arm]['bits_per_entity']:>4} bits/entity "
              f"{sizes[arm]['serving_bytes'] / 1e6:7.2f} MB served  {rate:9,.0f} users/s  {rate / reference:5.2f}×")
    result = {"command": "python benchmarks/bench_hash.py " + " ".join(_argv()), "dataset": comparison.dataset,
              "n_items": int(ctx.train_dataset.item_num - 1), "users": len(users), "batch": args.batch, "k": args.k,
              "threads": 1, "reference": names[0], "rows": rows, "machine": platform.platform(),
              "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "numpy": np.__version__}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


def _ranker(model, k: int, batch: int, backend: str | None):
    """A function ranking a user array top-``k`` over the real items, ``batch`` users per call."""
    if backend is not None:
        index = model.hamming_index(first_item=1, backend=backend)
        return lambda users: index.topk(users, k, chunk=batch)
    user_all, item_all = (t.detach().cpu() for t in model.cached_embeddings())
    item_t = item_all[1:].T.contiguous()

    @torch.no_grad()
    def rank(users):
        table = user_all[torch.from_numpy(users)]
        return [torch.topk(table[s: s + batch] @ item_t, k, dim=1).indices for s in range(0, len(users), batch)]
    return rank


def _argv() -> list[str]:
    """The command line with absolute paths cut to their file names: no machine paths in the results."""
    import re
    import sys

    return [re.sub(r"(^|[=@])/[^\s=@]*/([^/\s=@]+)", r"\1<...>/\2", arg) for arg in sys.argv[1:]]


if __name__ == "__main__":
    main()
