"""Paired test between two selections of a ``bench_coreset.py`` work folder, from the saved teachers.

``bench_coreset.py`` pairs every selection with random selection only. This script pairs any two
selections of the same work folder (``--work``): it finds each run by the selection file and seed
its ``results.json`` records, recomputes every test user's NDCG@20 from the run's checkpoint (with
the fold-in the checkpoint holds; the mean must equal the run's own test NDCG@20), averages over the
seeds both selections have, and reports the difference per seed and the package's paired tests
(``freqd.compare.stats.paired_tests``: mean difference, t-test, Wilcoxon) over users.

    OMP_NUM_THREADS=1 python benchmarks/coreset_paired.py --work <bench work folder> --dataset citeulike-t \\
        --config configs/dataset/citeulike-t.yaml infomax-activity-0.01-0.3 topk-activity-1-0.3 \\
        --json benchmarks/results/coreset/citeulike-t-infomax-alpha0.01-vs-topk-30-2026-12-07.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_coreset import per_user_ndcg, reading_setup  # noqa: E402


def runs_of(work: Path, selection: str) -> dict[int, dict]:
    """Seed -> results.json of every run in ``work`` trained on the selection file named ``selection``."""
    found: dict[int, dict] = {}
    for path in sorted((work / "runs").glob("*/results.json")):
        result = json.loads(path.read_text())
        coreset = result["config"].get("coreset")
        if coreset and Path(coreset).stem == selection:
            found[int(result["seed"])] = result
    if not found:
        raise SystemExit(f"{work}: no run trained on a selection named {selection!r}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="selection file stem, e.g. infomax-activity-0.01-0.3")
    parser.add_argument("b", help="the selection it is compared with")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--config", action="append", default=[])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from freqd.compare.stats import paired_tests

    config, loaders = reading_setup(args.dataset, args.config, args.dim)
    a_runs, b_runs = runs_of(args.work, args.a), runs_of(args.work, args.b)
    seeds = sorted(set(a_runs) & set(b_runs))
    per_user = {}
    for name, runs in ((args.a, a_runs), (args.b, b_runs)):
        rows = []
        for seed in seeds:
            ndcg = per_user_ndcg(runs[seed]["checkpoint"], config, loaders)
            stored = runs[seed]["test_result"]["ndcg@20"]
            if abs(float(ndcg.mean()) - stored) > 1e-5:
                raise SystemExit(f"{name} seed {seed}: recomputed NDCG@20 {ndcg.mean():.6f} != the run's {stored}")
            rows.append(ndcg)
        per_user[name] = np.stack(rows)
    a, b = per_user[args.a], per_user[args.b]
    result = {"a": args.a, "b": args.b, "seeds": seeds, "users": int(a.shape[1]),
              "a_ndcg@20": a.mean(axis=1).tolist(), "b_ndcg@20": b.mean(axis=1).tolist(),
              "delta_per_seed": (a - b).mean(axis=1).tolist(),
              "seed_mean_per_user": paired_tests(a.mean(axis=0), b.mean(axis=0)),
              "command": " ".join(["python benchmarks/coreset_paired.py --work <work folder>",  # no machine paths
                                   f"--dataset {args.dataset}", *(f"--config {c}" for c in args.config),
                                   f"--dim {args.dim}", args.a, args.b])}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
