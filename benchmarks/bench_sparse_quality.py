"""Does lazy row-sparse Adam cost accuracy? BPR-MF, dense vs ``sparse_embeddings: True``, over seeds.

Each run is ``train`` with the dataset YAML's early stopping (ml-100k: validation NDCG@20 every
epoch, patience 30) and the README comparison's teacher settings; runs happen in a temporary folder
(checkpoints and logs are discarded). Prints test NDCG@20/Recall@20 mean ± std per mode.

    python benchmarks/bench_sparse_quality.py --dataset ml-100k --size 300 --seeds 0 1 2 \\
        --out benchmarks/results/sparse-quality-ml-100k.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from freqd.compat import silence_known_warnings
    from freqd.runs import train

    silence_known_warnings()
    files = [str(ROOT / f"configs/dataset/{args.dataset}.yaml")]
    runs = []
    out = Path(args.out).resolve() if args.out else None
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="sparse-quality-") as scratch:
        os.chdir(scratch)
        try:
            for seed in args.seeds:
                for sparse in (False, True):
                    settings = {"embedding_size": args.size, "seed": seed, "split_seed": 2020,
                                "eval_batch_size": 1000000, "sparse_embeddings": sparse,
                                "show_progress": False, "state": "WARNING"}
                    start = time.perf_counter()
                    result = train("BPR", args.dataset, files, settings)
                    runs.append({"seed": seed, "mode": "sparse" if sparse else "dense",
                                 "test_ndcg@20": result["test_result"]["ndcg@20"],
                                 "test_recall@20": result["test_result"]["recall@20"],
                                 "best_valid_ndcg@20": result["best_valid_result"]["ndcg@20"],
                                 "epochs_run": result["epochs_run"],
                                 "train_seconds_per_epoch": result["train_seconds_per_epoch"],
                                 "seconds": time.perf_counter() - start})
                    print(json.dumps(runs[-1]), flush=True)
        finally:
            os.chdir(cwd)
    summary = {}
    for mode in ("dense", "sparse"):
        ndcg = [r["test_ndcg@20"] for r in runs if r["mode"] == mode]
        recall = [r["test_recall@20"] for r in runs if r["mode"] == mode]
        summary[mode] = {"test_ndcg@20_mean": float(np.mean(ndcg)), "test_ndcg@20_std": float(np.std(ndcg, ddof=1)),
                         "test_recall@20_mean": float(np.mean(recall)),
                         "test_recall@20_std": float(np.std(recall, ddof=1))}
        print(f"{mode:6s} NDCG@20 {summary[mode]['test_ndcg@20_mean']:.4f} ± {summary[mode]['test_ndcg@20_std']:.4f}  "
              f"Recall@20 {summary[mode]['test_recall@20_mean']:.4f} ± {summary[mode]['test_recall@20_std']:.4f}")
    if out:
        from freqd.io import atomic_write_text

        report = {"dataset": args.dataset, "embedding_size": args.size, "seeds": args.seeds, "threads": args.threads,
                  "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "summary": summary, "runs": runs}
        atomic_write_text(out, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
