"""PNG plots of a run's metrics.csv: training curves and the FreqD residual's spectral energy."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG atomically (a reader never sees a half-written image) and close it."""
    from io import BytesIO

    from freqd.io import atomic_write_bytes

    buffer = BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write ``curves.png`` (losses, validation NDCG@20) and, for FreqD runs, ``spectral.png``.

    The spectral plot shows tr(Rᵀ L^k R)/tr(Rᵀ R) per epoch for k = 1..4: where the residual
    R = P(S) − T sits in the graph spectrum (λ ∈ [0, 2]; smaller = smoother, lower frequency).
    """
    run_dir = Path(run_dir)
    metrics_file = run_dir / "metrics.csv"
    if not metrics_file.is_file():
        raise FileNotFoundError(f"no metrics.csv in {run_dir}")
    metrics = pd.read_csv(metrics_file)
    out = Path(out_dir) if out_dir else run_dir
    out.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    written = []

    fig, (ax_loss, ax_valid) = plt.subplots(1, 2, figsize=(10, 3.6))
    for column in [c for c in ("train_loss", "rec_loss", "kd_loss") if c in metrics]:
        ax_loss.plot(metrics["epoch"], metrics[column], label=column)
    ax_loss.set_xlabel("epoch"), ax_loss.set_ylabel("loss"), ax_loss.legend()
    valid = [c for c in metrics if c.startswith("valid_ndcg@") or c.startswith("valid_recall@")]
    for column in valid:
        rows = metrics[["epoch", column]].dropna()
        ax_valid.plot(rows["epoch"], rows[column], marker=".", label=column.removeprefix("valid_"))
    ax_valid.set_xlabel("epoch"), ax_valid.set_ylabel("validation"), ax_valid.legend(fontsize="small")
    fig.suptitle(run_dir.name, fontsize="small")
    fig.tight_layout()
    written.append(out / "curves.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    spectral = [c for c in metrics if "rayleigh_" in c]
    if spectral:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for column in spectral:
            rows = metrics[["epoch", column]].dropna()
            ax.plot(rows["epoch"], rows[column], label=column.replace("rayleigh_", "k="))
        ax.set_xlabel("epoch")
        ax.set_ylabel("tr(Rᵀ L^k R) / tr(Rᵀ R)")
        ax.set_title("spectral energy of the residual P(S) − T", fontsize="small")
        ax.legend(fontsize="small")
        fig.tight_layout()
        written.append(out / "spectral.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written
