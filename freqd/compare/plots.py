"""The comparison's PNG plots (matplotlib, Agg backend): bars, validation curves, spectral energy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from freqd.plots import pyplot, save_figure


def _label(key: str) -> str:
    metric, k = key.split("@")
    return f"{'Recall' if metric == 'recall' else 'NDCG'}@{k}"


def plot_bars(report: dict[str, Any], path: Path) -> Path:
    """Test NDCG@k and Recall@k per arm: mean ± std over seeds, the seeds as dots, the teacher dashed."""
    plt = pyplot()
    k = report["groups"]["k"]
    metrics = [f"ndcg@{k}", f"recall@{k}"]
    arms = [row for row in report["rows"] if not row["is_teacher"]]
    teacher = report["rows"][0]
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.1 * len(arms), 3.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes, metrics):
        x = np.arange(len(arms))
        means = [row["metrics"][metric]["mean"] for row in arms]
        stds = [row["metrics"][metric]["std"] or 0.0 for row in arms]
        ax.bar(x, means, yerr=stds, capsize=4, color=[colours[i % len(colours)] for i in range(len(arms))],
               alpha=0.85)
        for i, row in enumerate(arms):
            values = row["metrics"][metric]["values"]
            ax.plot(np.full(len(values), i), values, "k.", markersize=4)
        ax.axhline(teacher["metrics"][metric]["mean"], color="k", linestyle="--", linewidth=1, label="teacher")
        low = min(min(m - s for m, s in zip(means, stds)), teacher["metrics"][metric]["mean"])
        high = max(max(m + s for m, s in zip(means, stds)), teacher["metrics"][metric]["mean"])
        pad = 0.15 * (high - low) or 0.01
        ax.set_ylim(max(0.0, low - 2 * pad), high + pad)
        ax.set_xticks(x, [row["label"] for row in arms], rotation=20, ha="right", fontsize="small")
        ax.set_ylabel(f"test {_label(metric)}")
        ax.legend(fontsize="small", loc="lower right")
    fig.suptitle(f"{report['title']}: mean ± std over seeds {report['seeds']}", fontsize="small")
    return save_figure(fig, path)


def plot_curves(report: dict[str, Any], teacher: dict[str, Any], per_seed: dict[str, list], path: Path) -> Path:
    """Validation NDCG@k per epoch: one colour per arm, one line per seed; the teacher dashed."""
    plt = pyplot()
    column = f"valid_ndcg@{report['groups']['k']}"
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels = {row["name"]: row["label"] for row in report["rows"]}
    for index, (name, results) in enumerate(per_seed.items()):
        for j, result in enumerate(results):
            epochs, values = _series(result["history"], column)
            ax.plot(epochs, values, color=colours[index % len(colours)], linewidth=1, alpha=0.8,
                    label=labels[name] if j == 0 else None)
    epochs, values = _series(teacher.get("history") or [], column)
    if len(epochs):
        ax.plot(epochs, values, color="k", linestyle="--", linewidth=1, label="teacher")
    ax.set_xlabel("epoch")
    ax.set_ylabel(column.replace("valid_ndcg", "validation NDCG"))
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_spectral(report: dict[str, Any], per_seed: dict[str, list], path: Path) -> Path | None:
    """FreqD arms' Rayleigh quotients tr(Rᵀ L^k R)/tr(Rᵀ R) per epoch (mean over seeds); None without any."""
    arms = {name: results for name, results in per_seed.items()
            if any(any("rayleigh_" in key for key in row) for r in results for row in r["history"])}
    if not arms:
        return None
    plt = pyplot()
    labels = {row["name"]: row["label"] for row in report["rows"]}
    fig, axes = plt.subplots(1, len(arms), figsize=(4.2 * len(arms), 3.4), squeeze=False, sharey=True)
    for ax, (name, results) in zip(axes[0], arms.items()):
        columns = sorted({key for r in results for row in r["history"] for key in row if "rayleigh_" in key})
        for column in columns:
            series = [_series(r["history"], column) for r in results]
            length = min(len(s[0]) for s in series)
            if length == 0:
                continue
            mean = np.mean([s[1][:length] for s in series], axis=0)
            ax.plot(series[0][0][:length], mean, label=column.replace("rayleigh_", "k="))
        ax.set_title(labels[name], fontsize="small")
        ax.set_xlabel("epoch")
        ax.legend(fontsize="x-small")
    axes[0][0].set_ylabel("tr(Rᵀ L^k R) / tr(Rᵀ R)")
    fig.suptitle("spectral energy of the residual P(S) − T (mean over seeds)", fontsize="small")
    return save_figure(fig, path)


def _series(history: list[dict[str, Any]], column: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [(row["epoch"], row[column]) for row in history if row.get(column) is not None]
    if not rows:
        return np.array([]), np.array([])
    epochs, values = zip(*rows)
    return np.asarray(epochs), np.asarray(values, dtype=float)
