"""The comparison report: the stored results, summarised, rendered as Markdown, CSV, JSON and PNG plots.

:func:`build_report` reads the store (:mod:`freqd.compare.store`), summarises it
(:mod:`freqd.compare.summary`, pure) and writes the files; it loads no model and times nothing:
size and speed were measured when each run finished and stored with its result.
"""

from __future__ import annotations

import csv
import io
import math
import os
import platform
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

from freqd.compare.config import ComparisonConfig
from freqd.compare.store import StoredResults, read_results
from freqd.compare.summary import EvalData, Summary, summarise
from freqd.io import atomic_write_json, atomic_write_text

DEFINITIONS = """\
- **Metrics**: full ranking over all items, RecBole's Recall@k and NDCG@k (binary gains), on the test split; protocol `{protocol}` ({protocol_text}). Each arm: mean ± sample std over seeds {seeds}; the teacher was trained once ({teacher_text}).
- **% of teacher**: arm mean ÷ teacher. **Gap recovered**: (arm − {gap_ref}) ÷ (teacher − {gap_ref}) on the same metric, from the means ({gap_ref} = 0%, teacher = 100%).
- **Size**: trainable parameters and bytes of the model's state dict (float32 tables); bits per user and item as served (32·d for float tables, b for a Hash code student) and the bytes of the served tables. A Hash student's speed is its Hamming ranking (XOR + popcount over packed codes, integers only with the random tie-break; the compiled one-pass kernel where Numba is installed, else NumPy; each run's stored latency names which). **Speed**: users per second of full-catalogue top-{k_lat} scoring (all {n_items} items scored, then top-{k_lat}) for {lat_users} user requests (the test users, cycled) in batches of {lat_batch}, {lat_threads} CPU thread(s), the fastest of {lat_repeats} timed repeats after {lat_warmup} warm-up, with the final tables precomputed (LightGCN's propagation is not timed). Size and speed are measured per model, right after its run, on the machine that ran it (the teacher once; each arm in every seed, its users/s the mean over the seeds); "—" marks results stored without these measurements. Speed depends on the machine and its load at that moment (with several jobs, the runs alongside): compare rows of one report, made on one machine, only.
- **Significance**: {metric} per test user, averaged over the {n_seeds} seeds, paired with the control `{control}` averaged the same way ({n_users} users = pairs; the teacher's single run stands for every seed). Averaging first keeps a user's runs under different seeds from counting as independent observations. Paired t-test and Wilcoxon signed-rank test (scipy, two-sided, zero differences dropped); the mean difference with its 95% t-interval and Cohen's d_z = mean ÷ sd of the differences; wins/ties/losses count users. **Δ per seed**: arm mean − control mean in each seed, so a sign that does not hold in every seed is visible next to the p-value. Not corrected for multiple comparisons.
- **Epochs**: epochs run (mean best epoch); early stopping and the best checkpoint follow {stopping_rule}. A run that used all its epochs without early-stopping is counted as "not converged": its number is a lower bound.
- **User activity groups**: the {n_users} test users sorted by their number of training interactions (ties by user id) and cut into {n_groups} groups of equal size, Q1 the least active; a group's value is the mean per-user {metric} over its users.
- **Item popularity groups**: head = the {head_pct:.0f}% of items with the most training interactions ({n_head} items, {head_share:.0%} of the training interactions; ties by item id), tail = the rest. The ranking is unchanged (over all items); for each user only their test items of the group count as targets: Recall@{k} = group items in the top {k} ÷ the user's group test items, NDCG@{k} likewise with the ideal DCG over min(group test items, {k}) positions; averaged over the users with at least one test item in the group (head: {n_head_users} users, tail: {n_tail_users} users).
"""

PROTOCOL_TEXT = {
    "recbole": "training and validation items masked, means over users with test items",
    "reference": "training items masked, means over all users with 0 for users without test items",
}


def build_report(comparison: ComparisonConfig, out: Path, data: EvalData) -> dict[str, Any]:
    """Read every stored result, summarise, write the report files; return the report data.

    ``data`` describes the comparison's test data (:func:`freqd.compare.evaluate.eval_data`).
    """
    out = Path(out)
    stored = read_results(comparison, out)
    report = report_data(summarise(comparison, stored, data), comparison,
                         environment={**_environment(), "device": data.device})
    from freqd.compare.plots import plot_bars, plot_curves, plot_spectral

    plots = [plot_bars(report, out / "bars.png"), plot_curves(report, stored.teacher, stored.arms, out / "curves.png"),
             plot_spectral(report, stored.arms, out / "spectral.png")]
    report["plots"] = [p.name for p in plots if p is not None]
    if "spectral.png" not in report["plots"] and (out / "spectral.png").exists():
        (out / "spectral.png").unlink()
    report["markdown"] = render_markdown(report)
    atomic_write_text(out / "report.md", report["markdown"])
    atomic_write_text(out / "results.csv", _csv(_results_table(report)))
    atomic_write_text(out / "runs.csv", _csv(_runs_table(stored)))
    atomic_write_text(out / "groups.csv", _csv(_groups_table(report)))
    atomic_write_json(out / "results.json", {k: v for k, v in report.items() if k != "markdown"})
    report["out"] = str(out)
    return report


def report_data(summary: Summary, comparison: ComparisonConfig, environment: dict[str, Any]) -> dict[str, Any]:
    """The report as plain data (what ``results.json`` holds, less the plots): the summary and its definitions."""
    report = {
        "title": summary.title,
        "date": date.today().isoformat(),
        "config": comparison.to_dict(),
        "protocol": summary.protocol,
        "control": summary.control,
        "gap_reference": summary.gap_reference,
        "seeds": summary.seeds,
        "metrics": summary.metrics,
        "test_metric": summary.test_metric,
        "n_test_users": summary.n_test_users,
        "n_users": summary.n_users,
        "n_items": summary.n_items,
        "rows": [asdict(row) for row in summary.rows],
        "groups": asdict(summary.groups),
        "environment": environment,
    }
    report["definitions"] = _definitions(report, comparison)
    return report


def _environment() -> dict[str, Any]:
    import recbole
    import torch

    from freqd.version import __version__

    return {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "freqd": __version__, "torch": torch.__version__, "recbole": recbole.__version__}


def _definitions(report: dict[str, Any], comparison: ComparisonConfig) -> str:
    spec = comparison.latency
    teacher = comparison.teacher
    teacher_text = (f"checkpoint {teacher.checkpoint.name}" if teacher.checkpoint is not None
                    else f"seed {teacher.seed}")
    timed = _first_latency(report) or {}
    groups = report["groups"]
    return DEFINITIONS.format(
        protocol=report["protocol"], protocol_text=PROTOCOL_TEXT[report["protocol"]], seeds=report["seeds"],
        teacher_text=teacher_text, gap_ref=report["gap_reference"] or "scratch", k_lat=timed.get("k", spec.k),
        n_items=report["n_items"], lat_users=timed.get("users", spec.users),
        lat_batch=timed.get("batch_size", spec.batch_size),
        lat_threads=timed.get("threads", spec.threads or "all"), lat_repeats=timed.get("repeats", spec.repeats),
        lat_warmup=timed.get("warmup", spec.warmup), metric=_name(report["test_metric"]), control=report["control"],
        n_users=report["n_test_users"], n_seeds=len(report["seeds"]), stopping_rule=_stopping_rule(report),
        n_groups=len(groups["activity"]), head_pct=100 * groups["head_fraction"],
        n_head=groups["n_head_items"], head_share=groups["head_share"], k=groups["k"],
        n_head_users=groups["items"][0]["n_users"], n_tail_users=groups["items"][1]["n_users"])


def _first_latency(report: dict[str, Any]) -> dict[str, Any] | None:
    """The timing settings of the first row that was timed (None when no stored result was)."""
    return next((row["latency"] for row in report["rows"] if row.get("latency")), None)


def _stopping_rule(report) -> str:
    """The early-stopping rule(s) of the stored runs, in words."""
    rules = sorted({tuple(row["stopping"]) for row in report["rows"] if row.get("stopping")})
    if not rules:
        return "RecBole's rule (validation every `eval_step` epochs, patience `stopping_step` evaluations)"
    return "; ".join(f"validation every {e} epoch(s), patience {p} evaluations, on the mean of the last {w} "
                     f"validation score(s)" for e, p, w in rules)


# -- Markdown ------------------------------------------------------------------------------------
def _name(key: str) -> str:
    metric, k = key.split("@")
    return f"{ {'recall': 'Recall', 'ndcg': 'NDCG', 'map': 'mAP'}.get(metric, metric)}@{k}"


def _ms(stat: dict[str, Any] | None, digits: int = 4) -> str:
    if stat is None:
        return ""
    if stat["std"] is None:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.0f}%"


def _p(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def _bytes(n: int | None) -> str:
    if n is None:
        return "—"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _model(row: dict[str, Any]) -> str:
    """``BPR d=20``; empty when the stored result does not say (a checkpoint teacher stored without it)."""
    if not row["model"]:
        return ""
    if row["model"] == "Hash" and row.get("bits_per_entity"):
        return f"Hash {row['bits_per_entity']}-bit codes"
    return f"{row['model']} d={row['embedding_size']}" if row["embedding_size"] else row["model"]


def _table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


def accuracy_table(report: dict[str, Any]) -> str:
    """The main table: metrics, % of teacher and gap recovered on the test metric, epochs."""
    keys, test = report["metrics"], report["test_metric"]
    header = ["arm", "kd", "d"] + [_name(k) for k in keys] + [f"% teacher {_name(test)}", "gap recovered",
                                                               "epochs (best)"]
    lines = []
    for row in report["rows"]:
        gap = "" if row["is_teacher"] or row["gap_recovered"] is None else _pct(row["gap_recovered"][test])
        epochs = ""
        if row["epochs_run"]:
            epochs = f"{row['epochs_run']['mean']:.0f}"
            if row["best_epoch"]:
                epochs += f" ({row['best_epoch']['mean']:.0f})"
            if row.get("not_converged"):
                epochs += f", {row['not_converged']} not converged"
        lines.append([row["label"], row["kd"] or "—", str(row["embedding_size"] or "—")]
                     + [_ms(row["metrics"][k]) for k in keys]
                     + ["" if row["is_teacher"] else _pct(row["relative_to_teacher"][test]), gap, epochs])
    return _table(header, lines)


def size_table(report: dict[str, Any]) -> str:
    header = ["arm", "model", "params", "size", "× smaller", "bits/entity", "served", "users/s (top-20)",
              "× teacher speed", "s/epoch"]
    lines = []
    for row in report["rows"]:
        latency = row.get("latency")
        bits = row.get("bits_per_entity")
        lines.append([row["label"], _model(row) or "—",
                      "—" if row["n_parameters"] is None else f"{row['n_parameters']:,}",
                      _bytes(row["bytes"]), "—" if row["compression"] is None else f"{row['compression']:.1f}",
                      "—" if bits is None else str(bits), _bytes(row.get("serving_bytes")),
                      f"{latency['users_per_s']:,.0f}" + (" (Hamming)" if "Hamming" in latency["ranking"] else "")
                      if latency else "—",
                      f"{row['speedup']:.1f}" if row.get("speedup") else "—",
                      _ms(row["train_seconds_per_epoch"], 2)])
    timed = _first_latency(report)
    header[7] = f"users/s (top-{timed['k']})" if timed else "users/s"
    return _table(header, lines)


def significance_table(report: dict[str, Any]) -> str:
    name = _name(report["test_metric"])
    header = ["arm", "users", f"mean Δ{name}", "95% CI", "Δ per seed", "d_z", "wins/ties/losses", "t-test p",
              "Wilcoxon p"]
    lines = []
    for row in report["rows"]:
        test = row.get("significance")
        if test is None:
            continue
        ci = test["ci95"]
        lines.append([row["label"], f"{test['n_pairs']:,}", f"{test['mean_diff']:+.4f}",
                      f"[{ci[0]:+.4f}, {ci[1]:+.4f}]",
                      " ".join(f"{d:+.4f}" for d in test.get("per_seed_delta", [])), f"{test['d_z']:+.3f}",
                      f"{test['wins']}/{test['ties']}/{test['losses']}", _p(test["t_pvalue"]),
                      _p(test["wilcoxon_pvalue"])])
    return _table(header, lines)


def groups_tables(report: dict[str, Any]) -> str:
    groups = report["groups"]
    k = groups["k"]
    metric = report["test_metric"]
    header = ["arm"] + [f"{g['group']} ({g['min_train']}–{g['max_train']})" for g in groups["activity"]]
    lines = [[row["label"]] + [_ms(row["activity"][g["group"]][metric], 4) for g in groups["activity"]]
             for row in report["rows"]]
    activity = _table(header, lines)
    header = ["arm", f"head Recall@{k}", f"head NDCG@{k}", f"tail Recall@{k}", f"tail NDCG@{k}"]
    lines = [[row["label"]] + [_ms(row["items"][g][m], 4) for g in ("head", "tail")
                               for m in (f"recall@{k}", f"ndcg@{k}")] for row in report["rows"]]
    items = _table(header, lines)
    sizes = ", ".join(f"{g['group']}: {g['n_users']} users" for g in groups["activity"])
    return (f"**Users by activity** ({_name(metric)}; training interactions per group in brackets; {sizes})\n\n"
            f"{activity}\n\n**Items by popularity** (head = top {100 * groups['head_fraction']:.0f}% of items, "
            f"{groups['head_share']:.0%} of training interactions)\n\n{items}")


def render_markdown(report: dict[str, Any]) -> str:
    config = report["config"]
    env = report["environment"]
    teacher = config["teacher"]
    rows = report["rows"]
    origin = (f"(checkpoint `{Path(teacher['checkpoint']).name}`)" if "checkpoint" in teacher
              else f"(seed {teacher['seed']})")
    teacher_text = f"{_model(rows[0])} {origin}".strip()
    arms = ", ".join(f"`{a['name']}`" for a in config["arms"])
    parts = [
        f"# Comparison: {report['title']}",
        "",
        f"{config['dataset']}, teacher {teacher_text} → student {_model(rows[1]) or '—'}; "
        f"arms {arms}; "
        f"seeds {report['seeds']}; protocol `{report['protocol']}`; control `{report['control']}`; "
        f"{report['n_test_users']} test users, {report['n_items']} items. {report['date']}, "
        f"{env['cpu_count']} CPU cores, freqd {env['freqd']}, torch {env['torch']}, recbole {env['recbole']}.",
        "",
        "## Accuracy (test, mean ± std over seeds)",
        "",
        accuracy_table(report),
        "",
        "## Size and speed",
        "",
        size_table(report),
        "",
        f"## Paired tests against `{report['control']}` ({_name(report['test_metric'])} per user, averaged over seeds)",
        "",
        significance_table(report),
        "",
        "## Groups",
        "",
        groups_tables(report),
        "",
        "## Plots",
        "",
        *[f"![{name}]({name})" for name in report["plots"]],
        "",
        "## Definitions",
        "",
        report["definitions"],
    ]
    return "\n".join(parts)


# -- CSV / JSON ----------------------------------------------------------------------------------
def _csv(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _results_table(report: dict[str, Any]) -> list[dict[str, Any]]:
    table = []
    for row in report["rows"]:
        line: dict[str, Any] = {"arm": row["name"], "label": row["label"], "kd": row["kd"] or "",
                                "model": row["model"], "embedding_size": row["embedding_size"],
                                "n_seeds": 1 if row["is_teacher"] else len(report["seeds"])}
        for key in report["metrics"]:
            stat = row["metrics"][key]
            line[f"{key}_mean"], line[f"{key}_std"] = stat["mean"], stat["std"]
            line[f"{key}_rel_teacher"] = row["relative_to_teacher"][key]
            line[f"{key}_gap_recovered"] = None if row["is_teacher"] or not row["gap_recovered"] else \
                row["gap_recovered"][key]
        latency = row.get("latency") or {}
        line.update(n_parameters=row["n_parameters"], bytes=row["bytes"], compression=row["compression"],
                    bits_per_entity=row.get("bits_per_entity"), serving_bytes=row.get("serving_bytes"),
                    ranking=latency.get("ranking"), users_per_s=latency.get("users_per_s"), speedup_vs_teacher=row.get("speedup"),
                    train_seconds_per_epoch=(row["train_seconds_per_epoch"] or {}).get("mean"),
                    epochs_run=(row["epochs_run"] or {}).get("mean"))
        test = row.get("significance") or {}
        for field in ("n_pairs", "mean_diff", "d_z", "t_pvalue", "wilcoxon_pvalue", "wins", "ties", "losses"):
            line[f"vs_control_{field}"] = test.get(field)
        table.append(line)
    return table


def _runs_table(stored: StoredResults) -> list[dict[str, Any]]:
    table = []
    for result in [stored.teacher] + [r for results in stored.arms.values() for r in results]:
        run = result.get("run") or {}
        table.append({"arm": result["name"], "seed": result.get("seed", ""), **result["metrics"],
                      "epochs_run": run.get("epochs_run"), "best_epoch": run.get("best_epoch"),
                      "converged": run.get("converged"),
                      "train_seconds_per_epoch": run.get("train_seconds_per_epoch"), "threads": run.get("threads"),
                      "wall_seconds": result.get("wall_seconds")})
    return table


def _groups_table(report) -> list[dict[str, Any]]:
    table = []
    groups = report["groups"]
    for row in report["rows"]:
        for group in groups["activity"]:
            for metric, stat in row["activity"][group["group"]].items():
                table.append({"arm": row["name"], "kind": "user_activity", "group": group["group"],
                              "n_users": group["n_users"], "metric": metric, "mean": stat["mean"], "std": stat["std"]})
        for group in groups["items"]:
            for metric, stat in row["items"][group["group"]].items():
                table.append({"arm": row["name"], "kind": "item_popularity", "group": group["group"],
                              "n_users": group["n_users"], "metric": metric, "mean": stat["mean"],
                              "std": stat["std"]})
    return table
