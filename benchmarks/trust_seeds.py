"""Mean ± std over seeds of trust rows spread over several ``freqd trust`` outputs.

A trust report covers the models whose checkpoints were at hand when it ran, so a dataset's seeds
often sit in several reports (one per seed or per arm). This merges their ``trust.json`` rows: one
row per (model, seed), checked to be equal where two reports hold the same one (the teacher, a
shared scratch seed), then mean ± std (ddof 1) per model over its seeds, as a Markdown table and JSON.

    python benchmarks/trust_seeds.py benchmarks/results/trust/citeulike-t/trust.json \\
        benchmarks/results/trust/citeulike-t-seed0/trust.json benchmarks/results/trust/citeulike-t-*-seed*/trust.json \\
        --json benchmarks/results/trust/citeulike-t-seeds.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

#: (column, key in a trust row, scale, format) of the printed table; the JSON keeps every numeric key.
COLUMNS = [
    ("NDCG@20", "ndcg@20", 1, ".4f"), ("MIA AUC", "mia_score_auc", 1, ".3f"), ("TPR@1%", "mia_score_tpr@0.01", 1, ".3f"),
    ("APR drop ε=0.1", "apr_drop_eps0.1", 100, ".1f"), ("APR drop ε=0.5", "apr_drop_eps0.5", 100, ".1f"),
    ("APR drop ε=1", "apr_drop_eps1", 100, ".1f"), ("user gap", "user_gap", 1, ".4f"),
    ("head recall", "head_recall", 1, ".3f"), ("tail recall", "tail_recall", 1, ".3f"), ("APLT@20", "aplt", 1, ".3f"),
    ("Coverage@20", "coverage", 1, ".3f"), ("Gini", "gini", 1, ".3f"),
]
#: Rows of the same (model, seed) from two reports must agree to this relative tolerance: the same
#: checkpoint, scored again (float32 sums in another order move APR drops by a few 1e-6).
TOLERANCE = 1e-4
#: Keys that may differ between two reports of the same checkpoint (timings).
TIMINGS = ("seconds_privacy", "seconds_robustness", "seconds_fairness")


def merged_rows(paths: list[Path]) -> dict[tuple[str, int | None], dict]:
    """One row per (model, seed) over the reports; a disagreement between two copies is an error naming both."""
    rows: dict[tuple[str, int | None], tuple[dict, Path]] = {}
    for path in paths:
        for row in json.loads(path.read_text(encoding="utf-8"))["rows"]:
            key = (row["model"], row.get("seed"))
            if key not in rows:
                rows[key] = (row, path)
                continue
            first, where = rows[key]
            for name, value in row.items():
                if name in TIMINGS or not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue
                other = first.get(name)
                if other is None or not math.isclose(value, other, rel_tol=TOLERANCE, abs_tol=TOLERANCE):
                    raise SystemExit(f"{key[0]} seed {key[1]}: {name} is {other} in {where} but {value} in {path}")
    return {key: row for key, (row, _) in rows.items()}


def table(summary: list[dict], seeds: dict[str, list]) -> str:
    """Markdown: mean ± std per model (``freqd trust``'s summary: sample std over the model's seeds), seeds listed."""
    lines = ["| model | seeds | " + " | ".join(c for c, *_ in COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 2)]
    for entry in summary:
        cells = []
        for _, key, scale, fmt in COLUMNS:
            stat = entry.get(key)
            if stat is None:
                cells.append("–")
                continue
            text = f"{stat['mean'] * scale:{fmt}}"
            if stat["n"] > 1:
                text += f" ± {stat['std'] * scale:{fmt}}"
            cells.append(text + ("%" if scale == 100 else ""))
        listed = ", ".join("–" if s is None else str(s) for s in seeds[entry["model"]])
        lines.append(f"| {entry['model']} | {listed} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", type=Path, nargs="+", help="trust.json files")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()
    from freqd.trust.report import summarise

    rows = merged_rows(args.reports)
    ordered = [row for _, row in sorted(rows.items(), key=lambda kv: (kv[0][1] is None, kv[0][1] or 0))]
    summary = summarise(ordered)
    seeds = {entry["model"]: [row.get("seed") for row in ordered if row["model"] == entry["model"]] for entry in summary}
    print(table(summary, seeds))
    if args.json:
        reports = [p.as_posix() for p in args.reports]
        args.json.write_text(json.dumps({"reports": reports, "seeds": seeds, "summary": summary}, indent=1) + "\n",
                             encoding="utf-8")


if __name__ == "__main__":
    main()
