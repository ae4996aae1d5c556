"""Per-user test metrics of a stored ``freqd compare`` run: the report's sparse path against a dense one.

``freqd compare`` (and ``freqd trust``'s robustness part, four rankings per model) computes each
test user's Recall/NDCG/MAP@k and head/tail recall with
:func:`freqd.compare.evaluate.per_user_metrics`, which finds the hits of each top-k list among the
user's positive pairs by key lookup (``group_hits``, timed here as the report runs it). The
``dense`` arm is the way it was computed before: one users × items positives matrix per batch, and
one more per item group. Both rank the same scores; the script checks that the top-k hit tensors they produce are identical and times them
interleaved (median of ``--repeats``).

    OMP_NUM_THREADS=1 python benchmarks/bench_report_eval.py <compare folder> --config configs/compare/gowalla-bpr-bpr.yaml \\
        --arm scratch --seed 0 --out benchmarks/results/report-eval-gowalla.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's freqd, not another installed one

from freqd.compare import evaluate, load_comparison_config  # noqa: E402


def hit_tensors(model, ctx, k: int, dense: bool) -> list[torch.Tensor]:
    """Per batch and item group (all, head, tail): the top-k hits followed by the positives count."""
    head, out = ctx.head_items, []
    for _, scores, positive_u, positive_i in evaluate.masked_scores(model, ctx):
        _, top = torch.topk(scores, k, dim=-1)
        if dense:
            matrix = torch.zeros_like(scores, dtype=torch.int)
            matrix[positive_u, positive_i] = 1
            for group in (matrix, matrix * head, matrix * ~head):
                out.append(torch.cat((torch.gather(group, 1, top), group.sum(dim=1, keepdim=True)), dim=1))
        else:
            out.extend(evaluate.group_hits(top, positive_u, positive_i, head, scores.shape[1]).values())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a finished 'freqd compare' output folder")
    parser.add_argument("--config", required=True, help="the comparison's YAML")
    parser.add_argument("--arm", default="scratch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    ctx = evaluate.build_eval_context(load_comparison_config(args.config))
    stored = json.loads((args.folder / "arms" / args.arm / f"s{args.seed}.json").read_text(encoding="utf-8"))
    model = evaluate.load_model(args.folder / stored["checkpoint"], ctx)
    seconds: dict[str, list[float]] = {"sparse": [], "dense": []}
    results = {}
    for _ in range(args.repeats):
        for arm in ("sparse", "dense"):
            start = time.perf_counter()
            results[arm] = hit_tensors(model, ctx, args.k, dense=arm == "dense")
            seconds[arm].append(time.perf_counter() - start)
    identical = all(torch.equal(a, b) for a, b in zip(results["sparse"], results["dense"]))
    median = {arm: statistics.median(values) for arm, values in seconds.items()}
    report = {"dataset": ctx.train_dataset.dataset_name, "arm": args.arm, "seed": args.seed, "k": args.k,
              "test_users": len(ctx.users), "items": int(ctx.train_dataset.item_num), "threads": 1,
              "seconds": seconds, "median_seconds": median, "dense_over_sparse": median["dense"] / median["sparse"],
              "identical": identical, "machine": f"{platform.machine()}, {platform.python_version()}",
              "torch": torch.__version__}
    print(json.dumps({key: report[key] for key in ("median_seconds", "dense_over_sparse", "identical")}))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
