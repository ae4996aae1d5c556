"""Paired per-user tests between any two arms of a ``freqd compare`` output folder.

The comparison report tests every arm against its control only; the FreqD-wins criteria also need
``freqd`` against ``fd`` (the same configuration at α = 0) and configurations against each other.
Per-user NDCG@20 is averaged over the seeds both arms have, then tested with the report's own
statistics (:func:`freqd.compare.stats.paired_tests`), with the per-seed mean differences.

    python benchmarks/paired_arms.py OUT freqd fd [freqd-linear fd-linear ...] --metric ndcg@20
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from freqd.compare.stats import paired_tests


def per_seed(out: Path, arm: str, metric: str) -> dict[int, np.ndarray]:
    values = {}
    for npz in sorted((out / "arms" / arm).glob("s*.npz")):
        seed = int(npz.stem[1:])
        data = np.load(npz)
        values[seed] = (data["users"], data[metric])
    return values


def compare(out: Path, a: str, b: str, metric: str) -> dict:
    first, second = per_seed(out, a, metric), per_seed(out, b, metric)
    seeds = sorted(set(first) & set(second))
    if not seeds:
        raise SystemExit(f"{a} and {b} share no finished seed in {out}")
    for seed in seeds:
        if not np.array_equal(first[seed][0], second[seed][0]):
            raise SystemExit(f"seed {seed}: {a} and {b} were evaluated on different users")
    arm = np.mean([first[s][1] for s in seeds], axis=0)
    control = np.mean([second[s][1] for s in seeds], axis=0)
    result = paired_tests(arm, control)
    result["per_seed_diff"] = [float(first[s][1].mean() - second[s][1].mean()) for s in seeds]
    result.update(arm=a, control=b, seeds=seeds, metric=metric)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a freqd compare output folder")
    parser.add_argument("pairs", nargs="+", help="arm names, two at a time: ARM CONTROL [ARM CONTROL ...]")
    parser.add_argument("--metric", default="ndcg@20")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if len(args.pairs) % 2:
        raise SystemExit("give arm names in pairs: ARM CONTROL")
    rows = [compare(args.out, a, b, args.metric) for a, b in zip(args.pairs[::2], args.pairs[1::2])]
    print(f"| arm | vs | seeds | mean Δ{args.metric} | Δ per seed | wins/ties/losses | t-test p | Wilcoxon p |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        per = " ".join(f"{d:+.4f}" for d in r["per_seed_diff"])
        print(f"| {r['arm']} | {r['control']} | {len(r['seeds'])} | {r['mean_diff']:+.4f} | {per} | "
              f"{r['wins']}/{r['ties']}/{r['losses']} | {r['t_pvalue']:.2g} | {r['wilcoxon_pvalue']:.2g} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
