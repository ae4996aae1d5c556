"""Plot of a KD-on-a-coreset comparison: NDCG@20 against the share of users in the distillation term.

Reads a ``freqd compare`` folder's ``results.csv`` (mean ± std over seeds per arm), one line per
solver through its budgets and the every-user arm (100%), the scratch student as a dashed line;
with ``--cost ARM=JSON`` (``bench_kd_cost.py`` outputs) a second panel puts the same points against
the estimated epoch time ÷ scratch epoch.

    python benchmarks/kd_coreset_plot.py benchmarks/results/compare/citeulike-t-lightgcn-kd-coreset/results.csv \\
        --arm freqd-random-30=random:0.3 freqd-infomax-30=infomax:0.3 freqd-random-10=random:0.1 \\
        freqd-infomax-10=infomax:0.1 --full freqd --scratch scratch \\
        --cost freqd=benchmarks/results/kd-cost-citeulike-t-coreset-none-2026-12-05.json ... \\
        --out benchmarks/results/coreset/citeulike-t-lightgcn-kd-coreset.png
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def read_results(path: Path, metric: str) -> dict[str, tuple[float, float]]:
    """arm -> (mean, std) of ``metric`` from a comparison's results.csv."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or f"{metric}_mean" not in rows[0]:
        raise ValueError(f"{path}: no column {metric}_mean; is it a freqd compare results.csv?")
    return {row["arm"]: (float(row[f"{metric}_mean"]), float(row[f"{metric}_std"] or 0.0)) for row in rows}


def parse_pairs(items: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise SystemExit(f"{flag}: expected NAME=VALUE, got {item!r}")
        pairs[key] = value
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="results.csv of a freqd compare folder")
    parser.add_argument("--arm", nargs="+", required=True, metavar="ARM=SOLVER:BUDGET")
    parser.add_argument("--full", required=True, help="the arm distilling on every user")
    parser.add_argument("--scratch", required=True, help="the arm without distillation")
    parser.add_argument("--cost", nargs="*", default=[], metavar="ARM=JSON", help="bench_kd_cost.py output per arm")
    parser.add_argument("--metric", default="ndcg@20")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    results = read_results(args.results, args.metric)
    arms = parse_pairs(args.arm, "--arm")
    for name in [*arms, args.full, args.scratch]:
        if name not in results:
            raise SystemExit(f"arm {name!r} is not in {args.results} (arms: {', '.join(results)})")
    lines: dict[str, list[tuple[float, str]]] = {}
    for name, spec in arms.items():
        solver, _, budget = spec.partition(":")
        lines.setdefault(solver, []).append((float(budget), name))
    costs = {name: json.loads(Path(path).read_text(encoding="utf-8"))["arms"][0]["ratio_to_scratch"]
             for name, path in parse_pairs(args.cost, "--cost").items()}

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if costs else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.8), squeeze=False)
    for solver, points in lines.items():
        points = sorted(points) + [(1.0, args.full)]
        means = [results[name][0] for _, name in points]
        stds = [results[name][1] for _, name in points]
        axes[0][0].errorbar([100 * b for b, _ in points], means, yerr=stds, marker="o", capsize=3, label=solver)
        if costs:
            have = [(costs[name], results[name]) for _, name in points if name in costs]
            if have:
                axes[0][1].errorbar([c for c, _ in have], [m for _, (m, _) in have], yerr=[s for _, (_, s) in have],
                                    marker="o", capsize=3, label=solver)
    for ax in axes[0]:
        ax.axhline(results[args.scratch][0], color="grey", linestyle="--", label="scratch")
        ax.set_ylabel(f"test {args.metric.upper()} (mean ± std over seeds)")
        ax.legend(fontsize=8)
    axes[0][0].set_xlabel("users in the distillation term (%)")
    if costs:
        axes[0][1].set_xlabel("epoch time ÷ scratch epoch (bench_kd_cost.py)")
    fig.suptitle(f"distillation term on a user coreset ({args.results.parent.name})", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
