"""The comparison's plots draw the report's numbers: bars, validation curves, spectral energy (a synthetic report)."""

from __future__ import annotations

import pytest
from matplotlib.container import ErrorbarContainer

from freqd.compare.plots import plot_bars, plot_curves, plot_spectral


def _row(name, label, ndcg, recall, teacher=False):
    def summary(values):
        mean = sum(values) / len(values)
        std = None if len(values) < 2 else (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
        return {"mean": mean, "std": std, "values": values}

    return {"name": name, "label": label, "is_teacher": teacher,
            "metrics": {"ndcg@20": summary(ndcg), "recall@20": summary(recall)}}


REPORT = {"title": "synthetic", "seeds": [0, 1], "groups": {"k": 20},
          "rows": [_row("teacher", "teacher", [0.30], [0.40], teacher=True),
                   _row("scratch", "scratch", [0.20, 0.24], [0.30, 0.30]),
                   _row("freqd", "FreqD", [0.26, 0.28], [0.35, 0.39])]}


def _history(ndcg, rayleigh=None):
    rows = [{"epoch": e, "valid_ndcg@20": v} for e, v in enumerate(ndcg)]
    for row, r in zip(rows, rayleigh or []):
        row.update({"rayleigh_1": r, "rayleigh_2": 2 * r})
    return {"history": rows}


PER_SEED = {"scratch": [_history([0.1, 0.2]), _history([0.1, 0.25])],
            "freqd": [_history([0.15, 0.3], [1.0, 0.8]), _history([0.2, 0.28], [1.2, 1.0])]}


def test_bars_are_each_arms_mean_with_its_std_and_seeds(tmp_path, saved_figures):
    plot_bars(REPORT, tmp_path / "bars.png")
    (figure,) = saved_figures
    for ax, metric, teacher in zip(figure.axes, ("ndcg@20", "recall@20"), (0.30, 0.40)):
        arms = REPORT["rows"][1:]
        assert [p.get_height() for p in ax.patches] == pytest.approx([r["metrics"][metric]["mean"] for r in arms])
        (errors,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        spans = [value for segment in errors.lines[2][0].get_segments() for value in segment[:, 1].tolist()]
        expected = [r["metrics"][metric]["mean"] + sign * r["metrics"][metric]["std"] for r in arms for sign in (-1, 1)]
        assert spans == pytest.approx(expected)
        dots = [line.get_ydata().tolist() for line in ax.get_lines() if line.get_marker() == "."]
        assert dots == [r["metrics"][metric]["values"] for r in arms]
        (dashed,) = [line for line in ax.get_lines() if line.get_label() == "teacher"]
        assert list(dashed.get_ydata()) == [teacher, teacher]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["scratch", "FreqD"]
    assert (tmp_path / "bars.png").stat().st_size > 0


def test_curves_are_one_line_per_seed_and_the_teacher(tmp_path, saved_figures):
    plot_curves(REPORT, _history([0.2, 0.3, 0.31]), PER_SEED, tmp_path / "curves.png")
    (figure,) = saved_figures
    lines = figure.axes[0].get_lines()
    assert [line.get_ydata().tolist() for line in lines] == [[0.1, 0.2], [0.1, 0.25], [0.15, 0.3], [0.2, 0.28],
                                                              [0.2, 0.3, 0.31]]
    assert [line.get_label() for line in lines][::2] == ["scratch", "FreqD", "teacher"]
    assert lines[-1].get_linestyle() == "--"


def test_spectral_is_the_mean_over_seeds_of_freqd_arms_only(tmp_path, saved_figures):
    plot_spectral(REPORT, PER_SEED, tmp_path / "spectral.png")
    (figure,) = saved_figures
    (ax,) = figure.axes
    assert ax.get_title() == "FreqD"
    drawn = {line.get_label(): line.get_ydata().tolist() for line in ax.get_lines()}
    assert drawn == {"k=1": pytest.approx([1.1, 0.9]), "k=2": pytest.approx([2.2, 1.8])}
    assert plot_spectral(REPORT, {"scratch": PER_SEED["scratch"]}, tmp_path / "none.png") is None
