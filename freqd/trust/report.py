"""The trust report's files: ``trust.md`` (one row per model, mean ± std over seeds), ``trust.csv``
(one row per run, with its sweep coordinates), ``trust.json`` and the plots."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from freqd.io import atomic_write_json, atomic_write_text
from freqd.plots import pyplot, save_figure

COORDINATES = ("model", "label", "kd", "seed", "dataset", "d", "kd_weight")


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model (in first-seen order): its runs, and per numeric column the mean / std (sample std,
    ddof 1, as in the comparison's report; 0 for one run) over the runs that have the column, and
    that count ``n`` (perturbed edges cover chosen seeds only)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["model"], []).append(row)
    out = []
    for name, members in groups.items():
        entry: dict[str, Any] = {"model": name, "label": members[0]["label"], "kd": members[0]["kd"],
                                 "d": members[0]["d"], "runs": len(members)}
        columns = dict.fromkeys(c for m in members for c in m if c not in COORDINATES)
        for column in columns:
            values = [m[column] for m in members if column in m]
            if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                array = np.asarray(values, dtype=np.float64)
                std = float(np.std(array, ddof=1)) if len(values) > 1 else 0.0
                entry[column] = {"mean": float(np.mean(array)), "std": std, "n": len(values)}
        out.append(entry)
    return out


def cell(entry: dict[str, Any], column: str, digits: int = 4, percent: bool = False) -> str:
    stat = entry.get(column)
    if not isinstance(stat, dict) or not math.isfinite(stat["mean"]):
        return "—"
    scale = 100.0 if percent else 1.0
    mean, std = stat["mean"] * scale, stat["std"] * scale
    unit = "%" if percent else ""
    text = f"{mean:.{digits}f}{unit}"
    return text if stat.get("n", entry["runs"]) == 1 else f"{text} ± {std:.{digits}f}{unit}"


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: the main table, the other attack signals, definitions and costs."""
    summary = report["summary"]
    k = report["options"]["k"]
    eps = report["options"]["epsilons"]
    lines = [f"# Trust report: {report['title']}", "",
             f"Dataset {report['dataset']}; mean ± std over each model's seeds; from `freqd trust` on the "
             f"comparison folder `{report['folder']}`.", ""]
    header = ["model", "runs", f"NDCG@{k}", "MIA AUC", "TPR@1% FPR", "TPR@0.1% FPR", "advantage",
              *[f"APR drop ε={e:g}" for e in eps], "user NDCG gap", "quintile std", "head recall", "tail recall",
              f"APLT@{k}", f"Coverage@{k}", "Gini"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in summary:
        name = e["model"] if e["label"] in (None, e["model"]) else f"{e['model']} ({e['label']})"
        cells = [name, str(e["runs"]),
                 cell(e, f"ndcg@{k}"), cell(e, "mia_score_auc"), cell(e, "mia_score_tpr@0.01"),
                 cell(e, "mia_score_tpr@0.001"), cell(e, "mia_score_advantage"),
                 *[cell(e, f"apr_drop_eps{x:g}", 1, percent=True) for x in eps],
                 cell(e, "user_gap"), cell(e, "quintile_std"), cell(e, "head_recall"), cell(e, "tail_recall"),
                 cell(e, "aplt"), cell(e, "coverage"), cell(e, "gini")]
        lines.append("| " + " | ".join(cells) + " |")
    lira = any(isinstance(e.get("lira_auc"), dict) for e in summary)
    lines += ["", "Membership inference with the other signals (AUC / TPR@1% FPR / TPR@0.1% FPR):", "",
              "| model | rank | calibrated score |" + (" shadow likelihood ratio |" if lira else ""),
              "|---|---|---|" + ("---|" if lira else "")]
    for e in summary:
        cells = [" / ".join(cell(e, f"mia_{signal}_{m}") for m in ("auc", "tpr@0.01", "tpr@0.001"))
                 for signal in ("rank", "calibrated")]
        if lira:
            cells.append(" / ".join(cell(e, f"lira_{m}") for m in ("auc", "tpr@0.01", "tpr@0.001")))
        lines.append(f"| {e['model']} | " + " | ".join(cells) + " |")
    if lira:
        lines += ["", f"Shadow attack: {report['options']['shadows']} shadows, each a random half of the training and "
                  "test pairs through the whole pipeline (shadow teacher, then each arm's shadow student); their "
                  f"runs took {report['options']['shadow_train_seconds']:.0f} s to train, this report "
                  f"{report['options']['shadow_seconds']:.0f} s to score them."]
    if report["options"].get("edges"):
        tags = report["options"]["edges"]
        lines += ["", f"Retrained on perturbed training edges (every run of the comparison, seeds "
                  f"{report['options']['edge_seeds']}): relative test NDCG@{k} drop against the clean run "
                  f"(their runs took {report['options']['edge_train_seconds']:.0f} s to train):", "",
                  "| model | " + " | ".join(tags) + " |", "|---|" + "---|" * len(tags)]
        for e in summary:
            lines.append(f"| {e['model']} | " + " | ".join(cell(e, f"edge_{t}_drop", 1, percent=True)
                                                          for t in tags) + " |")
    if report["options"].get("miars"):
        users = report["options"]["miars_users"]
        lines += ["", f"User-level attack from top-{k} lists (MIARS-style; seeds {report['options']['miars_seeds']}): "
                  f"an MLP trained on a shadow pipeline's {users['shadow_in']} member and {users['shadow_out']} "
                  f"non-member users, scored on a target pipeline's {users['target_in']} and {users['target_out']}; "
                  f"item vectors from {users['vector']} other users (their runs took "
                  f"{report['options']['miars_train_seconds']:.0f} s to train; the part took "
                  f"{report['options']['miars_seconds']:.0f} s in this report):", "",
                  "| model | AUC | TPR@1% FPR | advantage |", "|---|---|---|---|"]
        for e in summary:
            lines.append(f"| {e['model']} | " + " | ".join(cell(e, f"miars_{m}") for m in
                                                          ("auc", "tpr@0.01", "advantage")) + " |")
    if report["options"].get("poison"):
        tags = report["options"]["poison"]
        lines += ["", f"Poisoning with fake users (the comparison retrained on the poisoned data, seeds "
                  f"{report['options']['poison_seeds']}; target items {report['options']['poison_targets']}, from "
                  f"the tail): target hit ratio in the top-{k} of genuine test users, clean → poisoned, and the "
                  f"share of them shown any target (their runs took {report['options']['poison_train_seconds']:.0f} s "
                  "to train):", "",
                  "| model | " + " | ".join(f"{t} HR | {t} exposure" for t in tags) + " |",
                  "|---|" + "---|---|" * len(tags)]
        for e in summary:
            cells = []
            for t in tags:
                for m in ("hr", "exposure"):
                    cells.append(f"{cell(e, f'poison_{t}_{m}_clean')} → {cell(e, f'poison_{t}_{m}')}")
            lines.append(f"| {e['model']} | " + " | ".join(cells) + " |")
    costs = "; ".join(f"{e['model']} " + ", ".join(f"{part} {cell(e, 'seconds_' + part, 2)}"
                                                   for part in report["options"]["parts"]
                                                   if isinstance(e.get("seconds_" + part), dict)) for e in summary)
    lines += ["", f"Seconds per model (mean): {costs}; shared set-up {report['setup_seconds']:.1f} s.", "",
              "Definitions (docs/trust.md):",
              f"- MIA: threshold attack on the model score; members are training pairs, non-members test "
              f"positives of the same users, balanced per user ({report['sample']['pairs']} pairs, "
              f"{report['sample']['users']} users). AUC 0.5 = no membership signal.",
              f"- APR drop: relative loss of test NDCG@{k} when every final user and item row moves by ε × its "
              "table's mean row norm along its own normalised BPR-loss gradient.",
              f"- user NDCG gap: NDCG@{k} of the {report['options']['active_fraction']:.0%} most active users "
              "minus the rest; quintile std: std of mean NDCG over activity quintiles.",
              f"- head/tail recall: share of the group's test interactions retrieved in the top-{k}; head = the "
              f"{report['options']['head_fraction']:.0%} most popular items in training. APLT: mean share of tail "
              f"items per list; Coverage: share of items recommended to anyone; Gini of item exposure.", ""]
    return "\n".join(lines)


def to_csv(rows: list[dict[str, Any]]) -> str:
    """One line per run; the sweep coordinates first, then every metric."""
    columns = list(COORDINATES) + sorted({c for row in rows for c in row} - set(COORDINATES))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c) for c in columns})
    return buffer.getvalue()


def plot_roc(plots: dict[str, dict[str, Any]], path: Path) -> Path:
    """ROC curves of the score attack on log-scale FPR (first seed of each model)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, plot in plots.items():
        if "roc" in plot:
            fpr, tpr = plot["roc"]
            keep = fpr > 0
            ax.plot(fpr[keep], tpr[keep], label=name)
    grid = np.logspace(-4, 0, 50)
    ax.plot(grid, grid, "k--", linewidth=0.8, label="chance")
    ax.set(xscale="log", yscale="log", xlabel="false positive rate", ylabel="true positive rate",
           title="membership inference (score threshold)", xlim=(1e-4, 1), ylim=(1e-4, 1))
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_apr(report: dict[str, Any], path: Path) -> Path:
    """Mean relative NDCG drop against ε (× mean row norm), one line per model."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    eps = report["options"]["epsilons"]
    for entry in report["summary"]:
        values = [entry.get(f"apr_drop_eps{e:g}") for e in eps]
        if all(isinstance(v, dict) for v in values):
            ax.plot([0, *eps], [0.0, *[100 * v["mean"] for v in values]], marker="o", label=entry["model"])
    ax.set(xlabel="ε (× each table's mean row norm)", ylabel=f"relative NDCG@{report['options']['k']} drop (%)",
           title="adversarial perturbation of the final tables")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_lorenz(plots: dict[str, dict[str, Any]], path: Path) -> Path:
    """Lorenz curves of item exposure in the top-k lists (first seed of each model)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name, plot in plots.items():
        if "lorenz" in plot:
            ax.plot(*plot["lorenz"], label=name)
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="equal exposure")
    ax.set(xlabel="share of items (least exposed first)", ylabel="share of exposure", title="item exposure")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def write_report(report: dict[str, Any], plots: dict[str, dict[str, Any]], out: Path, plots_enabled: bool = True
                 ) -> None:
    """``trust.json``, ``trust.csv``, ``trust.md`` and (optionally) ``roc.png``, ``apr.png``, ``lorenz.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    report["summary"] = summarise(report["rows"])
    files = ["trust.json", "trust.csv", "trust.md"]
    if plots_enabled:
        if "privacy" in report["options"]["parts"]:
            files.append(plot_roc(plots, out / "roc.png").name)
        if "robustness" in report["options"]["parts"]:
            files.append(plot_apr(report, out / "apr.png").name)
        if "fairness" in report["options"]["parts"]:
            files.append(plot_lorenz(plots, out / "lorenz.png").name)
    report["files"] = files
    atomic_write_text(out / "trust.csv", to_csv(report["rows"]))
    atomic_write_text(out / "trust.md", markdown(report))
    atomic_write_json(out / "trust.json", report)
