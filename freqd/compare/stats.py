"""Summaries over seeds and paired per-user significance tests (scipy.stats)."""

from __future__ import annotations

import math
from typing import Any, TypedDict

import numpy as np
from scipy import stats


class Stat(TypedDict):
    """A number over seeds: mean, sample std (ddof 1; None for one value) and the per-seed values."""

    mean: float
    std: float | None
    values: list[float]


def mean_std(values) -> Stat:
    """Mean and sample standard deviation (ddof 1; None for one value) of per-seed numbers."""
    values = [float(v) for v in values]
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            "values": values}


def paired_tests(arm: np.ndarray, control: np.ndarray) -> dict[str, Any]:
    """Paired t-test and Wilcoxon signed-rank test of ``arm`` against ``control``, with effect sizes.

    ``arm`` and ``control`` hold one value per pair (here a (user, seed) pair). Effect sizes:
    the mean paired difference with its 95% t-interval, and Cohen's d_z = mean / sd of the
    differences. Wilcoxon uses scipy's defaults (zero differences dropped, two-sided); when all
    differences are zero both p-values are 1.
    """
    arm, control = np.asarray(arm, dtype=np.float64), np.asarray(control, dtype=np.float64)
    if arm.shape != control.shape:
        raise ValueError(f"paired samples differ in length: {arm.shape} vs {control.shape}")
    diff = arm - control
    n = len(diff)
    mean = float(diff.mean()) if n else math.nan
    sd = float(diff.std(ddof=1)) if n > 1 else math.nan
    out: dict[str, Any] = {
        "n_pairs": n, "mean_arm": float(arm.mean()), "mean_control": float(control.mean()),
        "mean_diff": mean, "sd_diff": sd,
        "wins": int((diff > 0).sum()), "ties": int((diff == 0).sum()), "losses": int((diff < 0).sum()),
    }
    if n < 2 or not np.any(diff):
        out.update(ci95=[mean, mean], d_z=0.0 if n and not np.any(diff) else math.nan,
                   t_statistic=math.nan, t_pvalue=1.0 if n else math.nan,
                   wilcoxon_statistic=math.nan, wilcoxon_pvalue=1.0 if n else math.nan)
        return out
    half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
    t = stats.ttest_rel(arm, control)
    w = stats.wilcoxon(arm, control)
    out.update(ci95=[mean - half, mean + half], d_z=mean / sd if sd > 0 else math.inf * np.sign(mean),
               t_statistic=float(t.statistic), t_pvalue=float(t.pvalue),
               wilcoxon_statistic=float(w.statistic), wilcoxon_pvalue=float(w.pvalue))
    return out
