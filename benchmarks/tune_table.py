"""A Markdown table of finished ``freqd tune`` folders: budget, trials, the best validation score and values.

    python benchmarks/tune_table.py benchmarks/results/tune/ml-100k-bpr-bpr-*

One row per folder (its ``tune.json`` and ``trials.csv``, written after every finished trial), so a
comparison's arms can be shown with the budget each received, and a search under way with what it
has spent. Only validation scores exist here: ``freqd tune`` never evaluates the test set.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def _value(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def row(folder: Path) -> str:
    summary = json.loads((folder / "tune.json").read_text(encoding="utf-8"))
    with open(folder / "trials.csv", encoding="utf-8") as handle:
        trials = list(csv.DictReader(handle))
    best = next((t for t in trials if t["trial"] == str(summary.get("best_trial"))), {})
    params = ", ".join(f"{k} {_value(v)}" for k, v in (summary.get("best_params") or {}).items())
    epochs = f"{best.get('best_epoch', '?')} / {best.get('epochs_run', '?')}"
    converged = "" if best.get("converged") == "True" else " (not converged)"
    return (f"| {folder.name} | {summary['budget']} | {summary['complete']} / {summary['pruned']} / {summary['failed']} | "
            f"{summary.get('best_value', float('nan')):.4f} | {epochs}{converged} | {params} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="freqd tune output folders")
    args = parser.parse_args(argv)
    print("| search | budget | complete / pruned / failed | best smoothed valid NDCG@20 | best epoch / epochs | "
          "best values |")
    print("|---|---|---|---|---|---|")
    for folder in args.folders:
        if (folder / "tune.json").is_file():
            print(row(folder))
        elif (folder / "study.journal").is_file() or (folder / "study.db").is_file():
            print(f"| {folder.name} | | no trial finished yet | | | |")  # a search under way
        else:
            raise SystemExit(f"{folder}: neither tune.json nor a study (not a freqd tune folder)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
