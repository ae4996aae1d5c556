"""``freqd trust``: the trust report of every model of a comparison folder (docs/trust.md).

Each model (the teacher and every (arm, seed) run) is loaded once from its checkpoint and
attacked, perturbed and audited on the comparison's own data and protocol; accuracy and per-user
NDCG are read from the comparison's stored results instead of being recomputed.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
import torch

import freqd.trust.edges as edges
import freqd.trust.fairness as fairness
import freqd.trust.miars as miars
import freqd.trust.poison as poison
import freqd.trust.privacy as privacy
import freqd.trust.robustness as robustness
import freqd.trust.shadows as shadows
from freqd.compare.config import ComparisonConfig, load_comparison_config
from freqd.compare.evaluate import (
    EvalContext,
    aggregate,
    build_eval_context,
    load_model,
    loader_pairs,
    masked_scores,
    per_user_metrics,
    result_checkpoint,
)
from freqd.compare.store import read_results
from freqd.datasets.train_loader import draw_negatives, epoch_generator, pair_keys
from freqd.models.hash import is_code_student

logger = logging.getLogger(__name__)

PARTS = ("privacy", "robustness", "fairness")


class TrustError(ValueError):
    """A trust report cannot be made from these inputs (the message names the file or setting)."""


@dataclass(frozen=True)
class TrustOptions:
    """What the report computes: ``parts`` of :data:`PARTS`, APR budgets ``epsilons`` (× each table's
    mean row norm), list length ``k``, the active-user share, ``seed`` for the membership sample, APR's
    negatives, the shadows' halves and the perturbed edges; which ``arms``/``seeds`` to audit; ``shadows``
    (M, 0 = no shadow attack) and ``shadow_arms``; ``edges`` ((kind, ρ) pairs) retrained for ``edge_seeds``;
    ``jobs`` parallel training processes."""

    parts: tuple[str, ...] = PARTS
    epsilons: tuple[float, ...] = robustness.EPSILONS
    k: int = 20
    active_fraction: float = 0.2
    seed: int = 0
    arms: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None
    plots: bool = True
    progress: bool = True
    shadows: int = 0
    shadow_arms: tuple[str, ...] | None = None
    edges: tuple[tuple[str, float], ...] = ()
    edge_seeds: tuple[int, ...] | None = None
    miars: bool = False
    poison: tuple[tuple[str, float], ...] = ()
    jobs: int = 1

    def __post_init__(self) -> None:
        if self.shadows and (self.shadows < 2 or self.shadows % 2):
            raise TrustError(f"shadows must be 0 (no shadow attack) or an even number >= 2, got {self.shadows}")
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown or not self.parts:
            raise TrustError(f"parts: unknown or empty {unknown or list(self.parts)}; choose from {', '.join(PARTS)}")
        if any(not math.isfinite(e) or e < 0 for e in self.epsilons):
            raise TrustError(f"epsilons must be finite and non-negative, got {list(self.epsilons)}")
        if self.jobs < 1:
            raise TrustError(f"jobs must be a positive integer, got {self.jobs}")
        if self.k < 1:
            raise TrustError(f"k must be a positive integer, got {self.k}")
        if not 0 < self.active_fraction < 1:
            raise TrustError(f"active_fraction must lie in (0, 1), got {self.active_fraction}")


@dataclass
class TrustData:
    """The comparison's pairs, built once: training pairs, test pairs and the attack's balanced sample."""

    ctx: EvalContext
    train_users: np.ndarray
    train_items: np.ndarray
    test_users: np.ndarray
    test_items: np.ndarray
    test_rows: np.ndarray         # each test pair's row in ``ctx.users`` order (the top-k lists' rows)
    item_train_counts: np.ndarray
    sample: privacy.MembershipSample
    triples: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def comparison_of(folder: Path, config: str | Path | None = None,
                  teacher_checkpoint: str | Path | None = None) -> ComparisonConfig:
    """The comparison that made ``folder``: ``config`` when given, else the YAML its ``results.json`` names;
    ``teacher_checkpoint`` replaces the teacher file named there (a path on the machine that ran it)."""
    return _comparison_and_record(folder, config, teacher_checkpoint)[0]


def _comparison_and_record(folder: Path, config: str | Path | None, teacher_checkpoint: str | Path | None = None
                           ) -> tuple[ComparisonConfig, dict[str, Any]]:
    if config is None:
        results = folder / "results.json"
        if not results.is_file():
            raise TrustError(f"{folder} has no results.json: not a finished `freqd compare` folder "
                             "(run the comparison, or pass its YAML with --config)")
        stored = json.loads(results.read_text(encoding="utf-8")).get("config") or {}
        source = stored.get("source")
        if not source or not Path(source).is_file():
            raise TrustError(f"{results}: the comparison's YAML ({source!r}) is not here; pass it with --config")
        overrides = stored.get("command_line_overrides") or {}
        comparison = load_comparison_config(source).with_overrides(
            seeds=stored.get("seeds"), overrides=overrides.get("all") or None,
            teacher_overrides=overrides.get("teacher") or None, student_overrides=overrides.get("student") or None,
            arms=[a["name"] for a in stored.get("arms", [])] or None,
            teacher_checkpoint=teacher_checkpoint or (stored.get("teacher") or {}).get("checkpoint"))
        return comparison, stored
    comparison = load_comparison_config(config)
    if teacher_checkpoint is not None:
        comparison = comparison.with_overrides(teacher_checkpoint=teacher_checkpoint)
    return comparison, {}


def _check_teacher_file(comparison: ComparisonConfig, teacher: dict[str, Any], folder: Path) -> None:
    """A teacher stored by weights digest is audited only from a file with those weights."""
    if teacher.get("source") != "checkpoint":
        return
    try:
        result_checkpoint(folder, teacher, comparison.teacher.checkpoint)
    except FileNotFoundError as exc:
        raise TrustError(str(exc)) from exc
    expected = (teacher.get("spec") or {}).get("weights_digest")
    key, content = comparison.teacher_key()
    if key != teacher.get("key"):
        raise TrustError(f"{comparison.teacher.checkpoint} is not the teacher of {folder}: its weights digest "
                         f"is {content['weights_digest']}, the stored teacher's {expected}")


def build_data(ctx: EvalContext, seed: int) -> TrustData:
    """Training and test pairs of the comparison's split, the balanced membership sample and APR's triples."""
    train = ctx.train_dataset
    train_users = train.inter_feat[train.uid_field].numpy().astype(np.int64)
    train_items = train.inter_feat[train.iid_field].numpy().astype(np.int64)
    test_users, test_items = loader_pairs(ctx.test_data, train.uid_field)
    row_of = {int(u): r for r, u in enumerate(ctx.users)}
    n_items = train.item_num
    sample = privacy.membership_sample(train_users, train_items, test_users, test_items, seed=seed)
    forbidden = torch.sort(pair_keys(torch.from_numpy(train_users), torch.from_numpy(train_items), n_items)).values
    negatives = draw_negatives(torch.from_numpy(train_users), forbidden, n_items, 1, epoch_generator(seed, 0))[0]
    return TrustData(ctx=ctx, train_users=train_users, train_items=train_items, test_users=test_users,
                     test_items=test_items, test_rows=np.array([row_of[int(u)] for u in test_users], dtype=np.int64),
                     item_train_counts=np.bincount(train_items, minlength=n_items),
                     sample=sample, triples=(torch.from_numpy(train_users), torch.from_numpy(train_items), negatives))


@torch.no_grad()
def score_rows(user_table: torch.Tensor, item_table: torch.Tensor, users: np.ndarray) -> np.ndarray:
    """Full score rows (users × items) of the inner-product tables."""
    return (user_table[torch.from_numpy(np.asarray(users))] @ item_table.T).numpy()


def privacy_part(scorer, data: TrustData, chunk: int = 1024) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Threshold-attack metrics for each signal, and each signal's values (for the ROC plot)."""
    sample = data.sample
    values: dict[str, list[np.ndarray]] = {name: [] for name in privacy.SIGNALS}
    unique, inverse = np.unique(sample.users, return_inverse=True)
    for begin in range(0, len(unique), chunk):
        block = unique[begin: begin + chunk]
        rows = np.flatnonzero((inverse >= begin) & (inverse < begin + len(block)))
        signals = privacy.signals_from_user_rows(scorer(block), inverse[rows] - begin, sample.items[rows])
        for name, signal in signals.items():
            values[name].append(signal)
    signals = {name: np.concatenate(parts) for name, parts in values.items()}
    metrics = {}
    for name, signal in signals.items():
        for metric, value in privacy.attack_metrics(signal, sample.member).items():
            metrics[f"mia_{name}_{metric}"] = value
    return metrics, signals


def robustness_part(users: torch.Tensor, items: torch.Tensor, data: TrustData, epsilons: tuple[float, ...],
                    k: int) -> dict[str, float]:
    """NDCG@k on the clean test set with the final tables moved by ε × their mean row norms, and its relative drop."""
    ctx = data.ctx
    grad_users, grad_items = robustness.bpr_table_gradients(users, items, data.triples)
    directions = robustness.unit_rows(grad_users), robustness.unit_rows(grad_items)
    key = f"ndcg@{k}"
    out: dict[str, float] = {"apr_user_norm": robustness.mean_row_norm(users),
                             "apr_item_norm": robustness.mean_row_norm(items)}
    clean = None
    for factor in (0.0, *epsilons):
        perturbed = robustness.perturb(users, items, directions, factor)
        scorer = robustness.TableScorer(*perturbed, ctx.train_dataset.uid_field)
        value = aggregate(per_user_metrics(scorer, ctx, (k,), k), ctx, [key])[key]
        if clean is None:
            clean = value
            out[f"apr_ndcg@{k}_clean"] = value
            continue
        out[f"apr_ndcg@{k}_eps{factor:g}"] = value
        out[f"apr_drop_eps{factor:g}"] = (clean - value) / clean if clean else math.nan
    return out


@torch.no_grad()
def topk_lists(scorer, ctx: EvalContext, k: int) -> np.ndarray:
    """Each test user's top-k items (the protocol's masking; padding item never listed), in ``ctx.users`` order."""
    lists, order = [], []
    for interaction, scores, _, _ in masked_scores(scorer, ctx):
        lists.append(torch.topk(scores, k, dim=1).indices.cpu().numpy())
        order.append(interaction[ctx.train_dataset.uid_field].cpu().numpy())
    if not np.array_equal(np.concatenate(order), ctx.users):
        raise RuntimeError("the test loader's users changed between passes")
    return np.concatenate(lists)


def fairness_part(scorer, ndcg: np.ndarray, data: TrustData, head_fraction: float, active_fraction: float,
                  k: int) -> tuple[dict[str, float], np.ndarray]:
    """User-side gaps from the stored per-user NDCG, item-side metrics from fresh top-k lists; and the exposure."""
    ctx = data.ctx
    topk = topk_lists(scorer, ctx, k)
    counts = data.item_train_counts[1:]
    items = fairness.item_fairness(topk - 1, data.test_rows, data.test_items - 1, counts, head_fraction=head_fraction)
    users = fairness.user_fairness(ndcg, ctx.user_train_counts, active_fraction=active_fraction)
    return {**users, **items}, np.bincount(topk.ravel() - 1, minlength=len(counts))


def _scorer_rows(model, ctx: EvalContext):
    """A function from user ids to full score rows: the final tables' inner products, or the model's own
    ``full_sort_predict`` for a model without float tables (a code student)."""
    if hasattr(model, "cached_embeddings") and not is_code_student(model):
        users, items = model.cached_embeddings()
        return lambda block: score_rows(users.cpu(), items.cpu(), block)
    from recbole.data.interaction import Interaction

    n_items = ctx.train_dataset.item_num

    @torch.no_grad()
    def rows(block: np.ndarray) -> np.ndarray:
        interaction = Interaction({ctx.train_dataset.uid_field: torch.from_numpy(np.asarray(block))})
        return model.full_sort_predict(interaction).view(len(block), n_items).cpu().numpy()
    return rows


def _kd_weight(folder: Path, result: dict[str, Any]) -> Any:
    run = result.get("run") or {}
    path = folder / run["run_dir"] / "results.json" if run.get("run_dir") else None
    if path is None or not path.is_file():
        return None
    stored = json.loads(path.read_text(encoding="utf-8"))
    return stored.get("kd_weight", (stored.get("config") or {}).get("kd_weight"))


def audit_model(model, data: TrustData, ndcg: np.ndarray, options: TrustOptions, head_fraction: float
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every requested part for one loaded model: its row of metrics (with seconds per part) and plot data."""
    row: dict[str, Any] = {}
    plot: dict[str, Any] = {}
    ctx = data.ctx
    model.eval()
    if "privacy" in options.parts:
        start = perf_counter()
        metrics, signals = privacy_part(_scorer_rows(model, ctx), data)
        row.update(metrics, seconds_privacy=perf_counter() - start)
        plot["roc"] = privacy.roc_points(signals["score"], data.sample.member)
    if "robustness" in options.parts:
        start = perf_counter()
        if hasattr(model, "cached_embeddings") and not is_code_student(model):
            users, items = model.cached_embeddings()
            row.update(robustness_part(users.cpu(), items.cpu(), data, options.epsilons, options.k))
        else:
            logger.warning("%s has no float tables: APR is not defined for it", type(model).__name__)
        row["seconds_robustness"] = perf_counter() - start
    if "fairness" in options.parts:
        start = perf_counter()
        metrics, exposure = fairness_part(model, ndcg, data, head_fraction, options.active_fraction, options.k)
        row.update(metrics, seconds_fairness=perf_counter() - start)
        plot["lorenz"] = fairness.lorenz(exposure)
    return row, plot


def _stored_runs(folder: Path, teacher_seed: int | None, arms: list[str], seeds: list[int]
                 ) -> list[tuple[str, int | None, dict[str, Any]]]:
    """(model, seed, stored result) of a retrained comparison folder: its teacher, then each arm at each seed."""
    paths = [("teacher", teacher_seed, folder / "teacher.json")]
    paths += [(arm, seed, folder / "arms" / arm / f"s{seed}.json") for arm in arms for seed in seeds]
    return [(name, seed, json.loads(path.read_text(encoding="utf-8"))) for name, seed, path in paths]


def _shadow_scores(comparison: ComparisonConfig, record: dict[str, Any], data: TrustData, out: Path,
                   options: TrustOptions) -> dict[str, Any]:
    """Train (or reuse) the shadows; each audited model's (shadows × sample pairs) scores and the IN flags."""
    start = perf_counter()
    arms = list(options.shadow_arms) if options.shadow_arms is not None else [a.name for a in comparison.arms]
    unknown = sorted(set(arms) - {a.name for a in comparison.arms})
    if unknown:
        raise TrustError(f"--shadow-arms: {', '.join(unknown)} not in the report's arms")
    arms = [a.name for a in comparison.arms if a.name in {*arms, comparison.control}]  # the control always runs
    folders = shadows.run_shadows(comparison, record, data, out / "shadows", options.shadows, options.seed, arms,
                                  jobs=options.jobs, progress=options.progress)
    scores: dict[str, list[np.ndarray]] = {}
    for m, shadow_folder in enumerate(folders):
        for name, _, result in _stored_runs(shadow_folder, None, arms, [m]):
            model = load_model(result_checkpoint(shadow_folder, result), data.ctx)
            scores.setdefault(name, []).append(shadows.pair_scores(model, data.sample.users, data.sample.items))
    return {"scores": {name: np.stack(rows) for name, rows in scores.items()},
            "flags": shadows.in_flags(data, options.shadows, options.seed), "seconds": perf_counter() - start,
            "train_seconds": sum(_train_seconds(f) for f in folders)}


def _edge_results(comparison: ComparisonConfig, record: dict[str, Any], data: TrustData, out: Path,
                  options: TrustOptions) -> dict[str, Any]:
    """Train (or reuse) the perturbed comparisons; each one's test NDCG@k by (model, seed)."""
    start = perf_counter()
    seeds = list(options.edge_seeds) if options.edge_seeds else list(comparison.seeds[:1])
    arms = [a.name for a in comparison.arms]
    folders = edges.run_edges(comparison, record, data, out / "edges", options.edges, seeds, arms, options.seed,
                              jobs=options.jobs, progress=options.progress)
    key = f"ndcg@{options.k}"
    found: dict[str, dict[tuple[str, int | None], float]] = {}
    for tag, folder in folders.items():
        found[tag] = {(name, seed): float(result["metrics"][key])
                      for name, seed, result in _stored_runs(folder, comparison.teacher.seed, arms, seeds)}
    return {"ndcg": found, "seeds": seeds, "seconds": perf_counter() - start,
            "train_seconds": sum(_train_seconds(f) for f in folders.values())}


def _miars_results(comparison: ComparisonConfig, record: dict[str, Any], data: TrustData, out: Path,
                   options: TrustOptions) -> dict[str, Any]:
    """Train (or reuse) the shadow and target comparisons; the user-level attack's metrics by (model, seed)."""
    start = perf_counter()
    ctx = data.ctx
    n_items = int(ctx.train_dataset.item_num)
    valid_users = edges.valid_keys(data) // n_items
    counts = np.bincount(np.concatenate([data.train_users, data.test_users, valid_users]),
                         minlength=int(ctx.train_dataset.user_num))
    split = miars.user_split(counts, options.seed)
    seeds = list(comparison.seeds[:1])
    arms = [a.name for a in comparison.arms]
    folders = miars.run_sides(comparison, record, data, out / "miars", split, seeds, arms, jobs=options.jobs,
                              progress=options.progress)
    vectors = miars.item_vectors(*miars.member_pairs(data.train_users, data.train_items, split.vector), n_items,
                                 seed=options.seed)
    found: dict[str, dict[tuple[str, int | None], np.ndarray]] = {side: {} for side in miars.SIDES}
    for side, folder in folders.items():
        members, others = split.members(side), split.others(side)
        trained = miars.member_pairs(data.train_users, data.train_items, members)
        stranger = np.tile(miars.popular_list(trained[1], n_items, options.k), (len(others), 1))
        for name, seed, result in _stored_runs(folder, comparison.teacher.seed, arms, seeds):
            model = load_model(result_checkpoint(folder, result), ctx)
            model.eval()
            lists = miars.member_lists(_scorer_rows(model, ctx)(members), members, *trained, options.k)
            found[side][(name, seed)] = np.concatenate([
                miars.features(data.train_users, data.train_items, members, lists, vectors),
                miars.features(data.train_users, data.train_items, others, stranger, vectors)])
    labels = {side: np.repeat([True, False], [len(split.members(side)), len(split.others(side))])
              for side in miars.SIDES}
    metrics = {key: miars.attack(found["shadow"][key], labels["shadow"], found["target"][key], labels["target"],
                                 seed=options.seed) for key in found["target"]}
    return {"metrics": metrics, "seeds": seeds, "seconds": perf_counter() - start,
            "train_seconds": sum(_train_seconds(f) for f in folders.values()),
            "users": {part: len(getattr(split, part)) for part in
                      ("shadow_in", "shadow_out", "target_in", "target_out", "vector")}}


def _poison_results(comparison: ComparisonConfig, record: dict[str, Any], data: TrustData, out: Path,
                    options: TrustOptions) -> dict[str, Any]:
    """Train (or reuse) the poisoned comparisons; the target items' hits among genuine users by (model, seed)."""
    start = perf_counter()
    seeds = list(comparison.seeds[:1])
    arms = [a.name for a in comparison.arms]
    runs = poison.run_poison(comparison, record, data, out / "poison", options.poison, seeds, arms, options.seed,
                             jobs=options.jobs, progress=options.progress)
    hits: dict[str, dict[tuple[str, int | None], dict[str, float]]] = {}
    targets = np.empty(0, np.int64)
    genuine = int(data.ctx.train_dataset.user_num)
    for tag, (folder, poisoned) in runs.items():
        ctx = build_eval_context(poisoned)
        tokens = ctx.train_dataset.field2id_token[ctx.train_dataset.uid_field]
        if any(int(tokens[u]) >= genuine for u in ctx.users):
            raise RuntimeError(f"{folder}: a fake user is among the evaluated users")
        targets = np.asarray(json.loads((folder / "poison.json").read_text(encoding="utf-8"))["targets"], np.int64)
        ids = poison.in_poisoned_ids(ctx.train_dataset, targets)
        hits[tag] = {}
        for name, seed, result in _stored_runs(folder, comparison.teacher.seed, arms, seeds):
            model = load_model(result_checkpoint(folder, result), ctx)
            model.eval()
            hits[tag][(name, seed)] = poison.target_hits(topk_lists(model, ctx, options.k), ids)
    return {"hits": hits, "targets": targets, "seeds": seeds, "seconds": perf_counter() - start,
            "train_seconds": sum(_train_seconds(folder) for folder, _ in runs.values())}


def _train_seconds(folder: Path) -> float:
    """Wall seconds the stored runs of a comparison folder took (teacher and arms), when they were trained."""
    paths = [folder / "teacher.json", *sorted((folder / "arms").glob("*/s*.json"))]
    return float(sum(json.loads(p.read_text(encoding="utf-8")).get("wall_seconds", 0.0) for p in paths if p.is_file()))


def trust_report(folder: str | Path, config: str | Path | None = None, out: str | Path | None = None,
                 options: TrustOptions | None = None, teacher_checkpoint: str | Path | None = None
                 ) -> dict[str, Any]:
    """Audit the teacher and every (arm, seed) model of a finished comparison folder; write the report.

    ``config`` is the comparison's YAML (default: the one its ``results.json`` names); ``out`` the
    report folder (default ``<folder>/trust``); ``teacher_checkpoint`` the teacher's file where the
    comparison was given one (checked against its stored weights digest). Returns what ``trust.json`` holds.
    """
    from freqd.trust.report import write_report

    options = options or TrustOptions()
    folder = Path(folder)
    comparison, record = _comparison_and_record(folder, config, teacher_checkpoint)
    if options.arms is not None or options.seeds is not None:
        missing = sorted(set(options.arms or ()) - {a.name for a in comparison.arms})
        if missing:
            raise TrustError(f"--arms: {', '.join(missing)} not in the comparison (arms: "
                             f"{', '.join(a.name for a in comparison.arms)})")
        comparison = comparison.with_overrides(seeds=list(options.seeds) if options.seeds else None,
                                               arms=list(options.arms) if options.arms else None)
    try:
        stored = read_results(comparison, folder)
    except FileNotFoundError as exc:
        raise TrustError(str(exc)) from exc
    _check_teacher_file(comparison, stored.teacher, folder)
    out = Path(out) if out is not None else folder / "trust"
    start = perf_counter()
    ctx = build_eval_context(comparison)
    data = build_data(ctx, options.seed)
    setup_seconds = perf_counter() - start
    shadow = _shadow_scores(comparison, record, data, out, options) if options.shadows else None
    edge = _edge_results(comparison, record, data, out, options) if options.edges else None
    user_attack = _miars_results(comparison, record, data, out, options) if options.miars else None
    poisoned = _poison_results(comparison, record, data, out, options) if options.poison else None
    key = f"ndcg@{options.k}"
    jobs: list[tuple[str, str, str | None, int | None, dict[str, Any], np.ndarray]] = [
        ("teacher", "teacher", None, comparison.teacher.seed, stored.teacher, stored.teacher_users[key])]
    for arm in comparison.arms:
        for index, seed in enumerate(comparison.seeds):
            jobs.append((arm.name, arm.label, arm.kd, seed, stored.arms[arm.name][index], stored.users[arm.name][seed][key]))
    rows: list[dict[str, Any]] = []
    plots: dict[str, dict[str, Any]] = {}
    from tqdm import tqdm

    for name, label, kd, seed, result, ndcg in tqdm(jobs, desc="trust", disable=not options.progress, unit="model"):
        model = load_model(result_checkpoint(folder, result, comparison.teacher.checkpoint), ctx)
        row: dict[str, Any] = {"model": name, "label": label, "kd": kd, "seed": seed, "dataset": comparison.dataset,
                               "d": result.get("embedding_size"), "kd_weight": _kd_weight(folder, result) if kd else None,
                               key: float(result["metrics"][key])}
        metrics, plot = audit_model(model, data, ndcg, options, comparison.evaluation.head_fraction)
        row.update(metrics)
        for tag, found in (edge or {}).get("ndcg", {}).items():
            if (name, seed) in found:
                row[f"edge_{tag}_ndcg@{options.k}"] = found[(name, seed)]
                row[f"edge_{tag}_drop"] = (row[key] - found[(name, seed)]) / row[key] if row[key] else math.nan
        if poisoned is not None and any((name, seed) in found for found in poisoned["hits"].values()):
            clean = poison.target_hits(topk_lists(model, ctx, options.k), poisoned["targets"])
            for tag, found in poisoned["hits"].items():
                if (name, seed) in found:
                    row.update({f"poison_{tag}_{m}": v for m, v in found[(name, seed)].items()})
                    row.update({f"poison_{tag}_{m}_clean": v for m, v in clean.items()})
        if user_attack is not None and (name, seed) in user_attack["metrics"]:
            row.update({f"miars_{k}": v for k, v in user_attack["metrics"][(name, seed)].items()})
        if shadow is not None and name in shadow["scores"]:
            start = perf_counter()
            ratio = shadows.likelihood_ratio(shadows.pair_scores(model, data.sample.users, data.sample.items),
                                             shadow["scores"][name], shadow["flags"])
            row.update({f"lira_{k}": v for k, v in privacy.attack_metrics(ratio, data.sample.member).items()},
                       seconds_lira=perf_counter() - start)
        rows.append(row)
        plots.setdefault(name, plot)
    report = {
        "title": comparison.title, "dataset": comparison.dataset, "folder": folder.name,
        "options": {"parts": list(options.parts), "epsilons": list(options.epsilons), "k": options.k,
                    "active_fraction": options.active_fraction, "head_fraction": comparison.evaluation.head_fraction,
                    "seed": options.seed, "shadows": options.shadows,
                    "shadow_seconds": shadow["seconds"] if shadow else None,
                    "shadow_train_seconds": shadow["train_seconds"] if shadow else None,
                    "edges": [edges.label(*spec) for spec in options.edges],
                    "edge_seeds": edge["seeds"] if edge else None, "edge_seconds": edge["seconds"] if edge else None,
                    "edge_train_seconds": edge["train_seconds"] if edge else None,
                    "miars": options.miars, "miars_seeds": user_attack["seeds"] if user_attack else None,
                    "miars_users": user_attack["users"] if user_attack else None,
                    "miars_seconds": user_attack["seconds"] if user_attack else None,
                    "miars_train_seconds": user_attack["train_seconds"] if user_attack else None,
                    "poison": [poison.label(*spec) for spec in options.poison],
                    "poison_targets": poisoned["targets"].tolist() if poisoned else None,
                    "poison_seeds": poisoned["seeds"] if poisoned else None,
                    "poison_seconds": poisoned["seconds"] if poisoned else None,
                    "poison_train_seconds": poisoned["train_seconds"] if poisoned else None},
        "sample": {"pairs": len(data.sample), "members": int(data.sample.member.sum()),
                   "users": int(len(np.unique(data.sample.users)))},
        "setup_seconds": setup_seconds, "rows": rows,
    }
    write_report(report, plots, out, plots_enabled=options.plots)
    return report


__all__ = ["PARTS", "TrustData", "TrustError", "TrustOptions", "audit_model", "build_data", "comparison_of",
           "trust_report"]
