"""Validation NDCG@20 of every arm of a ``freqd compare`` output folder: the numbers a choice between
configurations may rest on (the report's test metrics may not).

Per arm: the best-epoch validation metric of each stored seed (``run.best_valid_result`` of
``arms/<arm>/s<seed>.json``), their mean ± std, and the test metric beside it for reference.

    python benchmarks/valid_arms.py OUT [--metric ndcg@20]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="a freqd compare output folder")
    parser.add_argument("--metric", default="ndcg@20")
    args = parser.parse_args()
    print(f"| arm | seeds | valid {args.metric} | per seed | test {args.metric} |")
    print("|---|---|---|---|---|")
    for arm in sorted(p.name for p in (args.out / "arms").iterdir() if p.is_dir()):
        valid, test = [], []
        for path in sorted((args.out / "arms" / arm).glob("s*.json")):
            run = json.loads(path.read_text(encoding="utf-8"))["run"]
            valid.append(run["best_valid_result"][args.metric])
            test.append(run["test_result"][args.metric])
        if not valid:
            continue
        spread = f" ± {statistics.stdev(valid):.4f}" if len(valid) > 1 else ""
        print(f"| {arm} | {len(valid)} | {statistics.mean(valid):.4f}{spread} | "
              f"{' '.join(f'{v:.4f}' for v in valid)} | {statistics.mean(test):.4f} |")


if __name__ == "__main__":
    main()
