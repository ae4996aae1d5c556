"""The comparison's numbers from its stored results: pure functions, no files, no models, no torch.

:func:`summarise` turns the teacher's and every (arm, seed) stored result and per-user arrays into
one :class:`Row` per model (means and sample stds over seeds, % of the teacher, gap recovered,
size and speed as measured at run time, paired tests against the control, user and item groups);
:mod:`freqd.compare.report` renders them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from freqd.compare.stats import Stat, mean_std, paired_tests

if TYPE_CHECKING:
    from freqd.compare.config import ArmSpec, ComparisonConfig
    from freqd.compare.store import StoredResults


class Latency(TypedDict):
    """Users/s of full-catalogue top-k scoring: mean over the timed runs, each run's value, the settings."""

    users_per_s: float
    values: list[float]
    users: int
    batch_size: int
    threads: int
    k: int
    ranking: str  # inner product (float32), or Hamming over packed codes


class ActivityGroup(TypedDict):
    group: str
    n_users: int
    min_train: int | None
    max_train: int | None


class ItemGroup(TypedDict):
    group: str
    n_users: int


@dataclass(frozen=True)
class EvalData:
    """What the summary needs of the comparison's test data; arrays follow the stored per-user order."""

    protocol: str
    n_users: int                        # real users of the dataset
    n_items: int                        # real items: the catalogue every model ranks
    users: np.ndarray                   # test users (internal ids), the order of the per-user arrays
    user_train_counts: np.ndarray       # training interactions of each test user
    activity_groups: list[np.ndarray]   # positions into ``users``, least to most active
    n_head_items: int
    head_share: float                   # share of training interactions on head items
    device: str = "cpu"


@dataclass
class Groups:
    """User-activity and item-popularity groups (the per-row values are in each :class:`Row`)."""

    k: int
    activity: list[ActivityGroup]
    items: list[ItemGroup]
    head_fraction: float
    n_head_items: int
    head_share: float


@dataclass
class Row:
    """One model of the report: the teacher (its one run) or an arm (over its seeds)."""

    name: str
    label: str
    kd: str | None
    is_teacher: bool
    model: str | None
    embedding_size: int | None
    metrics: dict[str, Stat]
    epochs_run: Stat | None
    best_epoch: Stat | None
    not_converged: int
    stopping: list | None
    train_seconds_per_epoch: Stat | None
    n_parameters: int | None
    bytes: int | None
    latency: Latency | None
    source: str | None = None
    bits_per_entity: int | None = None  # what serving stores per user and item: 32·d floats, or b code bits
    serving_bytes: int | None = None
    relative_to_teacher: dict[str, float | None] = field(default_factory=dict)
    gap_recovered: dict[str, float | None] | None = None
    compression: float | None = None
    speedup: float | None = None
    significance: dict[str, Any] | None = None
    activity: dict[str, dict[str, Stat]] = field(default_factory=dict)
    items: dict[str, dict[str, Stat]] = field(default_factory=dict)


@dataclass
class Summary:
    """Everything the report shows, computed from the stored results."""

    title: str
    protocol: str
    control: str
    gap_reference: str | None
    seeds: list[int]
    metrics: list[str]
    test_metric: str
    n_test_users: int
    n_users: int
    n_items: int
    rows: list[Row]
    groups: Groups


def summarise(comparison: ComparisonConfig, stored: StoredResults, data: EvalData) -> Summary:
    """The report's rows and groups from the stored results (teacher first, then the arms in config order)."""
    ev = comparison.evaluation
    keys = [f"{m}@{k}" for k in ev.topk for m in ("recall", "ndcg")]
    maps = [f"map@{k}" for k in ev.topk]
    results = [stored.teacher, *(r for arm in comparison.arms for r in stored.arms[arm.name])]
    if all(key in r["metrics"] for r in results for key in maps):  # results stored before mAP have none
        keys += maps
    _check_users(stored, data)
    rows = [_teacher_row(stored.teacher, keys)]
    rows += [_arm_row(arm, stored.arms[arm.name], keys) for arm in comparison.arms]
    gap_ref = gap_reference(comparison)
    _relative(rows, keys, gap_ref)
    _size_and_speed(rows)
    _significance(comparison, rows, stored)
    groups = _groups(comparison, data, rows, stored)
    return Summary(title=comparison.title, protocol=data.protocol, control=comparison.control, gap_reference=gap_ref,
                   seeds=list(comparison.seeds), metrics=keys, test_metric=ev.test_metric,
                   n_test_users=int(len(data.users)), n_users=int(data.n_users), n_items=int(data.n_items),
                   rows=rows, groups=groups)


def gap_reference(comparison: ComparisonConfig) -> str | None:
    """The scratch arm the gap is measured from: the control if it is undistilled, else the first undistilled arm."""
    if comparison.control != "teacher" and comparison.arm(comparison.control).kd is None:
        return comparison.control
    return next((arm.name for arm in comparison.arms if arm.kd is None), None)


def ratio(a: float | None, b: float | None) -> float | None:
    """a ÷ b, or None when either is missing or b is 0."""
    if a is None or b is None or math.isclose(b, 0.0, abs_tol=1e-12):
        return None
    return a / b


# -- rows ----------------------------------------------------------------------------------------
def _check_users(stored: StoredResults, data: EvalData) -> None:
    """Every per-user array must follow the test users of ``data``: groups and pairs are by position."""
    expected = np.asarray(data.users)
    found = [("teacher", stored.teacher_users)]
    found += [(f"{name} seed {seed}", arrays) for name, by_seed in stored.users.items()
              for seed, arrays in by_seed.items()]
    for who, arrays in found:
        if "users" in arrays and not np.array_equal(arrays["users"], expected):
            raise ValueError(f"{who}: the stored per-user metrics are for other test users than the comparison's data")


def _teacher_row(result: dict[str, Any], keys: list[str]) -> Row:
    run = result.get("run") or {}
    size = result.get("size") or {}
    return Row(
        name="teacher", label="teacher", kd=None, is_teacher=True,
        model=run.get("model") or result.get("model"),
        embedding_size=run.get("embedding_size") or result.get("embedding_size"),
        metrics={key: mean_std([result["metrics"][key]]) for key in keys},
        epochs_run=mean_std([run["epochs_run"]]) if run else None,
        best_epoch=mean_std([run["best_epoch"]]) if run.get("best_epoch") is not None else None,
        not_converged=int(run.get("converged") is False), stopping=None,
        train_seconds_per_epoch=mean_std([run["train_seconds_per_epoch"]]) if run else None,
        n_parameters=size.get("n_parameters"), bytes=size.get("bytes"), latency=_latency([result]),
        source=result.get("source"), bits_per_entity=size.get("bits_per_entity"),
        serving_bytes=size.get("serving_bytes"),
    )


def _arm_row(arm: ArmSpec, results: list[dict[str, Any]], keys: list[str]) -> Row:
    runs = [r["run"] for r in results]
    best = [r["best_epoch"] for r in runs if r.get("best_epoch") is not None]
    size: dict[str, Any] = next((r["size"] for r in results if r.get("size")), {})
    return Row(
        name=arm.name, label=arm.label, kd=arm.kd, is_teacher=False,
        model=runs[0]["model"], embedding_size=runs[0]["embedding_size"],
        metrics={key: mean_std([r["metrics"][key] for r in results]) for key in keys},
        epochs_run=mean_std([r["epochs_run"] for r in runs]),
        best_epoch=mean_std(best) if best else None,
        not_converged=sum(r.get("converged") is False for r in runs), stopping=runs[0].get("stopping"),
        train_seconds_per_epoch=mean_std([r["train_seconds_per_epoch"] for r in runs]),
        n_parameters=size.get("n_parameters"), bytes=size.get("bytes"), latency=_latency(results),
        bits_per_entity=size.get("bits_per_entity"), serving_bytes=size.get("serving_bytes"),
    )


def _latency(results: list[dict[str, Any]]) -> Latency | None:
    """The mean users/s of the runs timed at run time (None when none was: results stored without timings)."""
    timed = [r["latency"] for r in results if r.get("latency")]
    if not timed:
        return None
    values = [float(t["users_per_s"]) for t in timed]
    first = timed[0]
    return Latency(users_per_s=float(np.mean(values)), values=values, users=first["users"],
                   batch_size=first["batch_size"], threads=first["threads"], k=first["k"],
                   ranking=first.get("ranking", "inner product (float32)"))


def _relative(rows: list[Row], keys: list[str], gap_ref: str | None) -> None:
    """% of the teacher and the share of the teacher–reference gap recovered, on the means."""
    teacher = rows[0].metrics
    ref = next((row.metrics for row in rows[1:] if row.name == gap_ref), None)
    for row in rows:
        row.relative_to_teacher = {key: ratio(row.metrics[key]["mean"], teacher[key]["mean"]) for key in keys}
        row.gap_recovered = None if ref is None else {
            key: ratio(row.metrics[key]["mean"] - ref[key]["mean"], teacher[key]["mean"] - ref[key]["mean"])
            for key in keys}


def _size_and_speed(rows: list[Row]) -> None:
    """× smaller (teacher parameters ÷ row parameters) and × teacher speed (row users/s ÷ teacher users/s)."""
    teacher = rows[0]
    teacher_speed = teacher.latency["users_per_s"] if teacher.latency else None
    for row in rows:
        row.compression = ratio(teacher.n_parameters, row.n_parameters)
        row.speedup = ratio(row.latency["users_per_s"] if row.latency else None, teacher_speed)


def per_seed_values(name: str, seeds, stored: StoredResults, metric: str) -> list[np.ndarray]:
    """Per-user values of one arm, one array per seed (the teacher's single run stands for every seed)."""
    if name == "teacher":
        return [stored.teacher_users[metric] for _ in seeds]
    return [stored.users[name][seed][metric] for seed in seeds]


def _significance(comparison: ComparisonConfig, rows: list[Row], stored: StoredResults) -> None:
    """Paired tests on per-user values averaged over seeds (one pair per user), with per-seed deltas.

    A user's runs under different seeds are not independent observations, so they are averaged
    before testing; the per-seed differences of the means show whether the sign holds in every seed.
    """
    metric = comparison.evaluation.test_metric
    control = per_seed_values(comparison.control, comparison.seeds, stored, metric)
    for row in rows:
        if row.name == comparison.control:
            row.significance = None
            continue
        arm = per_seed_values(row.name, comparison.seeds, stored, metric)
        test = paired_tests(np.mean(arm, axis=0), np.mean(control, axis=0))
        test["per_seed_delta"] = [float(a.mean() - c.mean()) for a, c in zip(arm, control)]
        row.significance = test


def _groups(comparison: ComparisonConfig, data: EvalData, rows: list[Row], stored: StoredResults) -> Groups:
    """Mean per-user metrics by user-activity group and by item-popularity group, over seeds."""
    ev = comparison.evaluation
    k = ev.group_k
    counts = np.asarray(data.user_train_counts)
    activity = []
    for index, positions in enumerate(data.activity_groups):
        group = counts[positions]
        activity.append(ActivityGroup(group=f"Q{index + 1}", n_users=int(len(positions)),
                                      min_train=int(group.min()) if len(group) else None,
                                      max_train=int(group.max()) if len(group) else None))
    items = [ItemGroup(group=group, n_users=int((~np.isnan(stored.teacher_users[f"{group}_recall@{k}"])).sum()))
             for group in ("head", "tail")]
    metrics = (f"recall@{k}", f"ndcg@{k}")
    for row in rows:
        arrays = [stored.teacher_users] if row.is_teacher else [stored.users[row.name][s] for s in comparison.seeds]
        row.activity = {
            group["group"]: {metric: mean_std([float(a[metric][positions].mean()) for a in arrays])
                             for metric in metrics}
            for group, positions in zip(activity, data.activity_groups)}
        row.items = {group: {metric: mean_std([float(np.nanmean(a[f"{group}_{metric}"])) for a in arrays])
                             for metric in metrics}
                     for group in ("head", "tail")}
    return Groups(k=k, activity=activity, items=items, head_fraction=ev.head_fraction,
                  n_head_items=int(data.n_head_items), head_share=float(data.head_share))
