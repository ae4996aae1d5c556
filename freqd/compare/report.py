"""The comparison report, rebuilt from the stored results: Markdown, CSV, JSON and PNG plots."""

from __future__ import annotations

import csv
import io
import math
import os
import platform
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from freqd.compare.config import ComparisonConfig
from freqd.compare.evaluate import EvalContext, load_model, measure_latency, model_size
from freqd.compare.runner import arm_paths, load_result, teacher_paths
from freqd.compare.stats import mean_std, paired_tests
from freqd.io import atomic_write_json, atomic_write_text

DEFINITIONS = """\
- **Metrics**: full ranking over all items, RecBole's Recall@k and NDCG@k (binary gains), on the test split; protocol `{protocol}` ({protocol_text}). Each arm: mean ± sample std over seeds {seeds}; the teacher was trained once ({teacher_text}).
- **% of teacher**: arm mean ÷ teacher. **Gap recovered**: (arm − {gap_ref}) ÷ (teacher − {gap_ref}) on the same metric, from the means ({gap_ref} = 0%, teacher = 100%).
- **Size**: trainable parameters and bytes of the checkpoint's state dict (float32 tables). **Speed**: users per second of full-catalogue top-{k_lat} scoring (all {n_items} items scored, then top-{k_lat}) for {lat_users} user requests (the test users, cycled) in batches of {lat_batch}, {lat_threads} CPU thread(s), the fastest of {lat_repeats} timed repeats after {lat_warmup} warm-up; the models are timed in turn within each repeat, each arm on its first seed's checkpoint, with the final tables precomputed (LightGCN's propagation is not timed). Speed depends on the machine and its load: compare rows of one report only.
- **Significance**: {metric} per test user, averaged over the {n_seeds} seeds, paired with the control `{control}` averaged the same way ({n_users} users = pairs; the teacher's single run stands for every seed). Averaging first keeps a user's runs under different seeds from counting as independent observations. Paired t-test and Wilcoxon signed-rank test (scipy, two-sided, zero differences dropped); the mean difference with its 95% t-interval and Cohen's d_z = mean ÷ sd of the differences; wins/ties/losses count users. **Δ per seed**: arm mean − control mean in each seed, so a sign that does not hold in every seed is visible next to the p-value. Not corrected for multiple comparisons.
- **Epochs**: epochs run (mean best epoch); early stopping and the best checkpoint follow {stopping_rule}. A run that used all its epochs without early-stopping is counted as "not converged": its number is a lower bound.
- **User activity groups**: the {n_users} test users sorted by their number of training interactions (ties by user id) and cut into {n_groups} groups of equal size, Q1 the least active; a group's value is the mean per-user {metric} over its users.
- **Item popularity groups**: head = the {head_pct:.0f}% of items with the most training interactions ({n_head} items, {head_share:.0%} of the training interactions; ties by item id), tail = the rest. The ranking is unchanged (over all items); for each user only their test items of the group count as targets: Recall@{k} = group items in the top {k} ÷ the user's group test items, NDCG@{k} likewise with the ideal DCG over min(group test items, {k}) positions; averaged over the users with at least one test item in the group (head: {n_head_users} users, tail: {n_tail_users} users).
"""

PROTOCOL_TEXT = {
    "recbole": "training and validation items masked, means over users with test items",
    "reference": "training items masked, means over all users with 0 for users without test items",
}


def build_report(comparison: ComparisonConfig, out: Path, ctx: EvalContext, latency: bool = True) -> dict[str, Any]:
    """Read every stored result, compute the summaries and tests, write the report files; return the data."""
    out = Path(out)
    ev = comparison.evaluation
    keys = [f"{m}@{k}" for k in ev.topk for m in ("recall", "ndcg")]
    teacher_result, teacher_users = _require(*teacher_paths(out)[:2])
    per_seed: dict[str, list[dict[str, Any]]] = {}
    users: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    for arm in comparison.arms:
        per_seed[arm.name], users[arm.name] = [], {}
        for seed in comparison.seeds:
            result, arrays = _require(*arm_paths(out, arm.name, seed)[:2])
            per_seed[arm.name].append(result)
            users[arm.name][seed] = arrays

    gap_ref = _gap_reference(comparison)
    rows = [_teacher_row(teacher_result, keys)]
    for arm in comparison.arms:
        rows.append(_arm_row(arm, per_seed[arm.name], keys))
    teacher_metrics = rows[0]["metrics"]
    for row in rows:
        row["relative_to_teacher"] = {key: _ratio(row["metrics"][key]["mean"], teacher_metrics[key]["mean"])
                                      for key in keys}
        if gap_ref is not None:
            ref = rows[1 + [a.name for a in comparison.arms].index(gap_ref)]["metrics"]
            row["gap_recovered"] = {key: _ratio(row["metrics"][key]["mean"] - ref[key]["mean"],
                                                teacher_metrics[key]["mean"] - ref[key]["mean"]) for key in keys}
        else:
            row["gap_recovered"] = None

    _size_and_speed(comparison, out, ctx, rows, teacher_result, per_seed, latency)
    _significance(comparison, rows, teacher_users, users)
    groups = _groups(comparison, ctx, rows, teacher_users, users)

    report = {
        "title": comparison.title,
        "date": date.today().isoformat(),
        "config": comparison.to_dict(),
        "protocol": ctx.protocol,
        "control": comparison.control,
        "gap_reference": gap_ref,
        "seeds": list(comparison.seeds),
        "metrics": keys,
        "test_metric": ev.test_metric,
        "n_test_users": int(len(ctx.users)),
        "n_users": ctx.n_real_users,
        "n_items": int(ctx.train_dataset.item_num - 1),
        "rows": rows,
        "groups": groups,
        "environment": {**_environment(), "device": str(ctx.config["device"])},
    }
    report["definitions"] = _definitions(report, comparison, ctx, groups)
    from freqd.compare.plots import plot_bars, plot_curves, plot_spectral

    plots = [plot_bars(report, out / "bars.png"), plot_curves(report, teacher_result, per_seed, out / "curves.png"),
             plot_spectral(report, per_seed, out / "spectral.png")]
    report["plots"] = [p.name for p in plots if p is not None]
    if "spectral.png" not in report["plots"] and (out / "spectral.png").exists():
        (out / "spectral.png").unlink()
    report["markdown"] = render_markdown(report)
    atomic_write_text(out / "report.md", report["markdown"])
    atomic_write_text(out / "results.csv", _csv(_results_table(report)))
    atomic_write_text(out / "runs.csv", _csv(_runs_table(report, teacher_result, per_seed)))
    atomic_write_text(out / "groups.csv", _csv(_groups_table(report)))
    atomic_write_json(out / "results.json", {k: v for k, v in report.items() if k != "markdown"})
    report["out"] = str(out)
    return report


# -- rows ----------------------------------------------------------------------------------------
def _require(json_path: Path, npz_path: Path):
    loaded = load_result(json_path, npz_path)
    if loaded is None:
        raise FileNotFoundError(f"missing or incomplete result {json_path} (rerun the comparison to produce it)")
    return loaded


def _gap_reference(comparison: ComparisonConfig) -> str | None:
    """The scratch arm the gap is measured from: the control if it is undistilled, else the first undistilled arm."""
    if comparison.control != "teacher" and comparison.arm(comparison.control).kd is None:
        return comparison.control
    return next((arm.name for arm in comparison.arms if arm.kd is None), None)


def _teacher_row(result: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    run = result.get("run") or {}
    return {
        "name": "teacher", "label": "teacher", "kd": None, "is_teacher": True,
        "model": run.get("model"), "embedding_size": run.get("embedding_size"),
        "metrics": {key: mean_std([result["metrics"][key]]) for key in keys},
        "epochs_run": mean_std([run["epochs_run"]]) if run else None,
        "best_epoch": mean_std([run["best_epoch"]]) if run.get("best_epoch") is not None else None,
        "not_converged": int(run.get("converged") is False),
        "train_seconds_per_epoch": mean_std([run["train_seconds_per_epoch"]]) if run else None,
        "source": result["source"],
    }


def _arm_row(arm, results: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    runs = [r["run"] for r in results]
    best = [r["best_epoch"] for r in runs if r.get("best_epoch") is not None]
    return {
        "name": arm.name, "label": arm.label, "kd": arm.kd, "is_teacher": False,
        "model": runs[0]["model"], "embedding_size": runs[0]["embedding_size"],
        "metrics": {key: mean_std([r["metrics"][key] for r in results]) for key in keys},
        "epochs_run": mean_std([r["epochs_run"] for r in runs]),
        "best_epoch": mean_std(best) if best else None,
        "not_converged": sum(r.get("converged") is False for r in runs),
        "stopping": runs[0].get("stopping"),
        "train_seconds_per_epoch": mean_std([r["train_seconds_per_epoch"] for r in runs]),
    }


def _ratio(a: float, b: float) -> float | None:
    return a / b if b and not math.isclose(b, 0.0, abs_tol=1e-12) else None


def _checkpoint(out: Path, result: dict[str, Any]) -> Path:
    path = Path(result["checkpoint"])
    return path if path.is_absolute() else out / path


def _size_and_speed(comparison, out, ctx, rows, teacher_result, per_seed, latency: bool) -> None:
    models = {"teacher": load_model(_checkpoint(out, teacher_result), ctx)}
    for arm in comparison.arms:
        models[arm.name] = load_model(_checkpoint(out, per_seed[arm.name][0]), ctx)
    timings = (measure_latency(models, ctx.users, comparison.latency)
               if latency and comparison.latency.enabled else {})
    teacher = rows[0]
    for row in rows:
        model = models[row["name"]]
        row.update(model_size(model))
        row["model"] = row["model"] or type(model).__name__
        row["embedding_size"] = row["embedding_size"] or model.embedding_size
        row["latency"] = timings.get(row["name"])
    for row in rows:
        row["compression"] = teacher["n_parameters"] / row["n_parameters"]
        row["speedup"] = (row["latency"]["users_per_s"] / teacher["latency"]["users_per_s"]
                          if row["latency"] and teacher["latency"] else None)


def _per_seed(name: str, seeds, teacher_users, users, metric: str) -> list[np.ndarray]:
    """Per-user values of one arm, one array per seed (the teacher's single run stands for every seed)."""
    if name == "teacher":
        return [teacher_users[metric] for _ in seeds]
    return [users[name][seed][metric] for seed in seeds]


def _significance(comparison, rows, teacher_users, users) -> None:
    """Paired tests on per-user values averaged over seeds (one pair per user), with per-seed deltas.

    A user's runs under different seeds are not independent observations, so they are averaged
    before testing; the per-seed differences of the means show whether the sign holds in every seed.
    """
    metric = comparison.evaluation.test_metric
    control = _per_seed(comparison.control, comparison.seeds, teacher_users, users, metric)
    for row in rows:
        if row["name"] == comparison.control:
            row["significance"] = None
            continue
        arm = _per_seed(row["name"], comparison.seeds, teacher_users, users, metric)
        test = paired_tests(np.mean(arm, axis=0), np.mean(control, axis=0))
        test["per_seed_delta"] = [float(a.mean() - c.mean()) for a, c in zip(arm, control)]
        row["significance"] = test


def _groups(comparison, ctx: EvalContext, rows, teacher_users, users) -> dict[str, Any]:
    ev = comparison.evaluation
    k = ev.group_k
    activity = []
    for index, positions in enumerate(ctx.activity_groups):
        counts = ctx.user_train_counts[positions]
        activity.append({"group": f"Q{index + 1}", "n_users": int(len(positions)),
                         "min_train": int(counts.min()) if len(counts) else None,
                         "max_train": int(counts.max()) if len(counts) else None})
    items = []
    for group in ("head", "tail"):
        has = ~np.isnan(teacher_users[f"{group}_recall@{k}"])
        items.append({"group": group, "n_users": int(has.sum())})

    for row in rows:
        seeds = [None] if row["is_teacher"] else list(comparison.seeds)
        arrays = [teacher_users] if row["is_teacher"] else [users[row["name"]][s] for s in seeds]
        row["activity"] = {}
        for group in activity:
            positions = ctx.activity_groups[int(group["group"][1:]) - 1]
            row["activity"][group["group"]] = {
                metric: mean_std([float(a[metric][positions].mean()) for a in arrays])
                for metric in (f"recall@{k}", f"ndcg@{k}")}
        row["items"] = {group: {metric: mean_std([float(np.nanmean(a[f"{group}_{metric}"])) for a in arrays])
                                for metric in (f"recall@{k}", f"ndcg@{k}")}
                        for group in ("head", "tail")}
    return {"k": k, "activity": activity, "items": items, "head_fraction": ev.head_fraction,
            "n_head_items": int(ctx.head_items.sum()), "head_share": ctx.head_share}


def _environment() -> dict[str, Any]:
    import recbole
    import torch

    import freqd

    return {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "freqd": freqd.__version__, "torch": torch.__version__, "recbole": recbole.__version__}


def _definitions(report, comparison, ctx, groups) -> str:
    latency = comparison.latency
    teacher = comparison.teacher
    teacher_text = (f"checkpoint {teacher.checkpoint.name}" if teacher.checkpoint is not None
                    else f"seed {teacher.seed}")
    first_latency = report["rows"][0].get("latency") or {}
    return DEFINITIONS.format(
        protocol=ctx.protocol, protocol_text=PROTOCOL_TEXT[ctx.protocol], seeds=list(comparison.seeds),
        teacher_text=teacher_text, gap_ref=report["gap_reference"] or "scratch", k_lat=latency.k,
        n_items=report["n_items"], lat_users=latency.users,
        lat_batch=latency.batch_size, lat_threads=first_latency.get("threads", latency.threads or "all"),
        lat_repeats=latency.repeats, lat_warmup=latency.warmup, metric=_name(comparison.evaluation.test_metric), control=comparison.control,
        n_users=len(ctx.users), n_seeds=len(comparison.seeds), stopping_rule=_stopping_rule(report),
        n_groups=comparison.evaluation.activity_groups, head_pct=100 * groups["head_fraction"],
        n_head=groups["n_head_items"], head_share=groups["head_share"], k=groups["k"],
        n_head_users=groups["items"][0]["n_users"], n_tail_users=groups["items"][1]["n_users"])


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
    return f"{'Recall' if metric == 'recall' else 'NDCG'}@{k}"


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


def _bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


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
        lines.append([row["label"], row["kd"] or "—", str(row["embedding_size"])]
                     + [_ms(row["metrics"][k]) for k in keys]
                     + ["" if row["is_teacher"] else _pct(row["relative_to_teacher"][test]), gap, epochs])
    return _table(header, lines)


def size_table(report: dict[str, Any]) -> str:
    header = ["arm", "model", "params", "size", "× smaller", "users/s (top-20)", "× teacher speed", "s/epoch"]
    lines = []
    for row in report["rows"]:
        latency = row.get("latency")
        lines.append([row["label"], f"{row['model']} d={row['embedding_size']}", f"{row['n_parameters']:,}",
                      _bytes(row["bytes"]), f"{row['compression']:.1f}",
                      f"{latency['users_per_s']:,.0f}" if latency else "—",
                      f"{row['speedup']:.1f}" if row.get("speedup") else "—",
                      _ms(row["train_seconds_per_epoch"], 2)])
    header[5] = f"users/s (top-{report['rows'][0]['latency']['k']})" if report["rows"][0].get("latency") else \
        "users/s"
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
    teacher_text = f"{rows[0]['model']} d={rows[0]['embedding_size']} " + (
        f"(checkpoint `{Path(teacher['checkpoint']).name}`)" if "checkpoint" in teacher else f"(seed {teacher['seed']})")
    arms = ", ".join(f"`{a['name']}`" for a in config["arms"])
    parts = [
        f"# Comparison: {report['title']}",
        "",
        f"{config['dataset']}, teacher {teacher_text} → student {rows[1]['model']} d={rows[1]['embedding_size']}; "
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
                    users_per_s=latency.get("users_per_s"), speedup_vs_teacher=row.get("speedup"),
                    train_seconds_per_epoch=(row["train_seconds_per_epoch"] or {}).get("mean"),
                    epochs_run=(row["epochs_run"] or {}).get("mean"))
        test = row.get("significance") or {}
        for field in ("n_pairs", "mean_diff", "d_z", "t_pvalue", "wilcoxon_pvalue", "wins", "ties", "losses"):
            line[f"vs_control_{field}"] = test.get(field)
        table.append(line)
    return table


def _runs_table(report, teacher_result, per_seed) -> list[dict[str, Any]]:
    table = []
    for result in [teacher_result] + [r for results in per_seed.values() for r in results]:
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
