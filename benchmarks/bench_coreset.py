"""Teachers trained on user coresets (any dataset), and selection time at Gowalla's size.

1. A selection teacher (BPR, ``--select-dim``, ``--select-epochs``, seed 0) supplies importance
   (per-user BPR difficulty, or the user's number of training items) and similarity (10-NN cosine
   of its user tables, or with ``--similarity jaccard`` the 10-NN Jaccard of training histories).
2. For each selection (``solver``, ``solver:importance`` or ``solver:importance:alpha``, e.g.
   ``topk:activity`` or ``infomax:activity:0.03``; α defaults to ``--alpha``) and budget,
   ``freqd coreset``'s function writes a selection file (timed), and a BPR teacher (``--dim``) is
   trained on the kept users' interactions with each seed, early stopping on validation as any
   run; the other users are folded in (``coreset_fold_in``, ``--fold-in``). Full-data teachers are
   the reference.
3. Per-user test NDCG@20 (RecBole's metric on the trainer's own ranking, all test users) of every
   selection is compared with random selection at its budget, paired over users (mean over seeds;
   Wilcoxon). Each row also keeps the run's best smoothed validation NDCG@20, so α can be chosen on
   validation (``--seeds 0`` over several α, then the chosen one over every seed).
4. Selection time of each solver on random tables of Gowalla's size (29,858 users, d = 300,
   importance uniform): the solver's cost, not a quality figure.

    OMP_NUM_THREADS=1 python benchmarks/bench_coreset.py --fold-in none \
        --out benchmarks/results/coreset/ml-100k-2026-12-02.json
    OMP_NUM_THREADS=1 python benchmarks/bench_coreset.py --dataset citeulike-t --fold-in none \
        --config configs/dataset/citeulike-t.yaml --no-size-timing --out benchmarks/results/coreset/citeulike-t-2026-12-04.json
    OMP_NUM_THREADS=1 python benchmarks/bench_coreset.py --dataset citeulike-t --config configs/dataset/citeulike-t.yaml \
        --solvers random infomax topk:activity infomax:activity --extra-solvers --no-size-timing \
        --out benchmarks/results/coreset/citeulike-t-fold-in-2026-12-04.json
    OMP_NUM_THREADS=1 python benchmarks/bench_coreset.py --dataset citeulike-t --config configs/dataset/citeulike-t.yaml \
        --solvers random infomax:activity:0 infomax:activity:0.01 infomax:activity:0.03 infomax:activity:0.1 \
        infomax:activity:1 --extra-solvers --seeds 0 --no-size-timing \
        --out benchmarks/results/coreset/citeulike-t-alpha-cosine-seed0-2026-12-07.json
    OMP_NUM_THREADS=1 python benchmarks/bench_coreset.py --dataset citeulike-t --config configs/dataset/citeulike-t.yaml \
        --similarity jaccard --solvers infomax:activity:0.1 infomax:activity:0.3 infomax:activity:1 --extra-solvers \
        --seeds 0 --no-size-timing --out benchmarks/results/coreset/citeulike-t-alpha-jaccard-seed0-2026-12-07.json
    OMP_NUM_THREADS=1 python benchmarks/bench_coreset.py --dataset citeulike-t --config configs/dataset/citeulike-t.yaml \
        --solvers random infomax:activity:0.01 topk:activity --budgets 0.3 --extra-solvers --no-size-timing \
        --full-from benchmarks/results/coreset/citeulike-t-fold-in-2026-12-04.json \
        --out benchmarks/results/coreset/citeulike-t-infomax-alpha0.01-30-2026-12-07.json
    OMP_NUM_THREADS=1 python benchmarks/bench_coreset.py --dataset citeulike-t --config configs/dataset/citeulike-t.yaml \
        --config configs/model/bpr-teacher-citeulike.yaml --solvers random infomax:activity:0.01 topk:activity \
        --budgets 0.3 --extra-solvers --seeds 0 1 2 --no-size-timing --work <folder> \
        --out benchmarks/results/coreset/citeulike-t-teacher-wd-30-2026-12-08.json
    OMP_NUM_THREADS=1 python benchmarks/bench_coreset.py --dataset gowalla --config configs/dataset/gowalla.yaml \
        --solvers random infomax:activity:0.01 topk:activity --budgets 0.3 --extra-solvers --eval-step 5 \
        --stopping-step 6 --no-size-timing --work <folder kept between sessions> \
        --out benchmarks/results/coreset/gowalla-30-<date>.json

writes that JSON and a plot beside it (``.png``). Each teacher's row is also kept in ``<work>/rows/``
with the settings that made it, and the selection teacher in ``<work>/selector.json``: the same command
run again (after an interruption, or with more seeds or selections) reuses every finished row whose
settings are unchanged and trains only the others.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch


def reading_setup(dataset: str, config_files: list[str], dim: int):
    """Config and loaders to read a work folder's saved BPR teachers (of size ``dim``) with."""
    from freqd.runs import setup

    config, _, loaders = setup("BPR", dataset, config_files,
                               {"state": "ERROR", "train_sampler": "fast", "split_seed": 2020, "embedding_size": dim})
    return config, loaders


def table_ndcg(users, items, config, loader) -> tuple[np.ndarray, np.ndarray]:
    """The loader's users (loader order) and the NDCG@20 of each, ranking by the given user and item tables."""
    from recbole.evaluator.metrics import NDCG

    from freqd.evaluation.fullsort import rank_topk

    uids = loader.uid_list
    _, rec = rank_topk(users, items, uids, loader.uid2history_item[uids.numpy()],
                       loader.uid2positive_item[uids.numpy()], 20, 256)
    hits, n_pos = rec[:, :-1].numpy().astype(bool), rec[:, -1].numpy()
    return uids.numpy(), NDCG(config).metric_info(hits, n_pos)[:, 19]


def per_user_ndcg(checkpoint: str, config, loaders) -> np.ndarray:
    """NDCG@20 of every test user (loader order) from the checkpoint's model."""
    from freqd.checkpoints import load_teacher

    train, _, test = loaders
    model = load_teacher(checkpoint, config, train._dataset)
    return table_ndcg(*model.cached_embeddings(), config, test)[1]


def settings_key(args, files: list[str]) -> dict:
    """What every cached row (and the selection teacher) depends on: the dataset, its config files' contents
    and the training settings; each record adds its own parts, and is reused only when its key is equal."""
    contents = [hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files]
    return {"dataset": args.dataset, "configs": contents, "dim": args.dim, "select_dim": args.select_dim,
            "select_epochs": args.select_epochs, "similarity": args.similarity, "fold_in": args.fold_in,
            "eval_step": args.eval_step, "stopping_step": args.stopping_step}


def kept_digest(selection: Path) -> str:
    """sha256 of a selection file's kept indices (the file's other fields hold timings and paths)."""
    keep = json.loads(selection.read_text(encoding="utf-8"))["keep"]
    return hashlib.sha256(json.dumps(keep).encode()).hexdigest()


def cached(path: Path, key: dict) -> dict | None:
    """The record stored at ``path`` if it was made with ``key``, else None."""
    if not path.exists():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    return record if record.get("key") == key else None


def store(path: Path, record: dict) -> None:
    """Write ``record`` atomically (a half-written row is never read back as finished)."""
    from freqd.io import atomic_write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record)


def parse_selection(spec: str, default_alpha: float) -> tuple[str, str, float]:
    """``solver[:importance[:alpha]]`` -> (solver, importance, alpha); a bad α is refused, naming the spec."""
    name, _, rest = spec.partition(":")
    importance, _, alpha = rest.partition(":")
    try:
        value = float(alpha) if alpha else default_alpha
    except ValueError:
        raise SystemExit(f"--solvers {spec!r}: alpha {alpha!r} is not a number") from None
    return name, importance or "difficulty", value


def plot(result: dict, path: Path) -> None:
    """NDCG@20 (mean ± std over seeds, all test users) against the share of users kept, one line per solver."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    full = next(e for e in result["summary"] if e["solver"] == "full")
    for solver in dict.fromkeys(e["solver"] for e in result["summary"] if e["solver"] != "full"):
        points = sorted(((e["budget"], e["ndcg@20_mean"], e["ndcg@20_std"] or 0.0)
                         for e in result["summary"] if e["solver"] == solver), key=lambda t: t[0])
        budgets, means, stds = zip(*points)
        ax.errorbar([100 * b for b in budgets], means, yerr=stds, marker="o", capsize=3, label=solver,
                    linestyle="-" if len(points) > 1 else "none")
    ax.axhline(full["ndcg@20_mean"], color="grey", linestyle="--", label="all users")
    ax.set_xlabel("users kept for training (%)")
    ax.set_ylabel("test NDCG@20 (all test users)")
    ax.set_title(f"BPR teacher on a user coreset, {result['dataset']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--config", action="append", default=[],
                        help="a dataset config file (repeatable), e.g. configs/dataset/citeulike-t.yaml")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--select-dim", dest="select_dim", type=int, default=64)
    parser.add_argument("--select-epochs", dest="select_epochs", type=int, default=20)
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.1, 0.3, 0.5])
    parser.add_argument("--solvers", nargs="+", default=["infomax", "random"],
                        help="solver, solver:importance (difficulty, the default, or activity) or solver:importance:alpha")
    parser.add_argument("--alpha", type=float, default=1.0, help="weight of the redundancy term where a selection names none")
    parser.add_argument("--similarity", choices=["cosine", "jaccard"], default="cosine",
                        help="redundancy between users: 10-NN cosine of the selection teacher's user rows, or Jaccard of histories")
    parser.add_argument("--extra-solvers", dest="extra_solvers", nargs="*", default=["greedy", "topk", "kcenter"],
                        help="also run at the middle budget")
    parser.add_argument("--fold-in", dest="fold_in", choices=["auto", "none"], default="auto",
                        help="coreset_fold_in of the teachers trained on a coreset (none: the results before it)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-step", dest="eval_step", type=int, default=1,
                        help="validate every N epochs (a large catalogue: validation costs as much as an epoch)")
    parser.add_argument("--stopping-step", dest="stopping_step", type=int, default=10,
                        help="patience in validations without improvement of the mean of the last 3")
    parser.add_argument("--work", type=Path, default=Path("bench-coreset"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--no-size-timing", dest="size_timing", action="store_false",
                        help="skip step 4 (selection time on random Gowalla-sized tables)")
    parser.add_argument("--full-from", dest="full_from", type=Path,
                        help="take the full-data teachers' rows from this earlier output (same dataset, settings and seeds) "
                             "instead of training them again")
    parser.add_argument("--plot-only", dest="plot_only", action="store_true",
                        help="only redraw <out>.png from an existing --out file")
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads(args.out.read_text()), args.out.with_suffix(".png"))
        return
    torch.set_num_threads(1)
    from freqd.compare.stats import paired_tests
    from freqd.coreset import select
    from freqd.runs import select_coreset, setup, train

    args.work.mkdir(parents=True, exist_ok=True)
    base = {"show_progress": False, "state": "ERROR", "train_sampler": "fast", "split_seed": 2020, "epochs": 500,
            "eval_step": args.eval_step, "stopping_step": args.stopping_step, "valid_smoothing": 3,
            "checkpoint_dir": str(args.work / "saved"), "results_dir": str(args.work / "runs")}
    files = args.config  # freqd.runs.setup refuses a missing file, naming it
    shared_key = settings_key(args, files)
    selector_key = {**shared_key, "role": "selection teacher"}
    selector = cached(args.work / "selector.json", selector_key)
    if selector is None or not Path(selector["checkpoint"]).exists():
        run = train("BPR", args.dataset, files, config_dict={**base, "embedding_size": args.select_dim, "seed": 0,
                                                            "epochs": args.select_epochs})
        selector = {"key": selector_key, "checkpoint": run["checkpoint"]}
        store(args.work / "selector.json", selector)
    config, _, loaders = setup("BPR", args.dataset, files, {**base, "embedding_size": args.dim})
    jobs = [("full", 1.0)] + [(s, b) for s in args.solvers for b in args.budgets]
    middle = sorted(args.budgets)[len(args.budgets) // 2]
    jobs += [(s, middle) for s in args.extra_solvers]
    rows = []
    if args.full_from:
        rows = [dict(r, reused_from=str(args.full_from)) for r in json.loads(args.full_from.read_text())["rows"]
                if r["solver"] == "full" and r["seed"] in args.seeds]
        if sorted(r["seed"] for r in rows) != sorted(args.seeds):
            raise SystemExit(f"--full-from {args.full_from}: no full-data rows for every seed of {args.seeds}")
    for solver, budget in jobs:
        if solver == "full" and args.full_from:
            continue
        selection = None
        select_seconds = None
        if solver != "full":
            name, importance, alpha = parse_selection(solver, args.alpha)
            selection = args.work / f"{name}-{importance}-{alpha:g}-{budget}.json"
            record = select_coreset(selector["checkpoint"], selection, budget, args.dataset, files,
                                    config_dict={"state": "ERROR"}, solver=name, importance=importance,
                                    alpha=alpha, similarity=args.similarity, seed=0)
            select_seconds = record["seconds"]
        for seed in args.seeds:
            key = {**shared_key, "solver": solver, "budget": budget, "seed": seed,
                   "kept": None if selection is None else kept_digest(selection)}
            row_file = args.work / "rows" / f"{solver.replace(':', '-')}-{budget:g}-s{seed}.json"
            row = cached(row_file, key)
            if row is not None:
                rows.append(row["row"])
                print(f"{solver:>8} {budget:4.2f} seed {seed}: reused {row_file.name}", flush=True)
                continue
            extra = {"coreset": str(selection), "coreset_fold_in": args.fold_in} if selection else {}
            run = train("BPR", args.dataset, files, config_dict={**base, "embedding_size": args.dim, "seed": seed, **extra})
            ndcg = per_user_ndcg(run["checkpoint"], config, loaders)
            rows.append({"solver": solver, "budget": budget, "seed": seed, "ndcg@20": float(ndcg.mean()),
                         "valid_ndcg@20": float(run["best_valid_score"]),
                         "test_ndcg@20": run["test_result"]["ndcg@20"], "epochs": run["epochs_run"],
                         "best_epoch": run.get("best_epoch"), "converged": run.get("converged"),
                         "train_seconds": float(run["train_seconds_per_epoch"]) * run["epochs_run"],
                         "select_seconds": select_seconds,
                         "kept_interactions": (run.get("coreset") or {}).get("interactions"),
                         "folded_in_users": (run.get("coreset") or {}).get("folded_in_users"),
                         "per_user": ndcg.tolist()})
            store(row_file, {"key": key, "row": rows[-1]})
            print(f"{solver:>8} {budget:4.2f} seed {seed}: NDCG@20 {ndcg.mean():.4f} "
                  f"({run['epochs_run']} epochs, best {run.get('best_epoch')})", flush=True)
    summary = []
    full = np.mean([r["ndcg@20"] for r in rows if r["solver"] == "full"])
    for solver, budget in jobs:
        mine = [r for r in rows if r["solver"] == solver and r["budget"] == budget]
        entry = {"solver": solver, "budget": budget, "ndcg@20_mean": float(np.mean([r["ndcg@20"] for r in mine])),
                 "ndcg@20_std": float(np.std([r["ndcg@20"] for r in mine], ddof=1)) if len(mine) > 1 else None,
                 "share_of_full": float(np.mean([r["ndcg@20"] for r in mine]) / full),
                 "valid_ndcg@20_mean": (float(np.mean([r["valid_ndcg@20"] for r in mine]))
                                        if all("valid_ndcg@20" in r for r in mine) else None),
                 "not_converged": sum(r["converged"] is False for r in mine),
                 "train_seconds_mean": float(np.mean([r["train_seconds"] for r in mine])),
                 "select_seconds": mine[0]["select_seconds"], "kept_interactions": mine[0]["kept_interactions"]}
        if solver not in ("full", "random"):
            other = [r for r in rows if r["solver"] == "random" and r["budget"] == budget]
            if other:
                a = np.mean([r["per_user"] for r in mine], axis=0)
                b = np.mean([r["per_user"] for r in other], axis=0)
                tests = paired_tests(a, b)
                entry["vs_random_mean_delta"] = tests["mean_diff"]
                entry["vs_random_wilcoxon_p"] = tests["wilcoxon_pvalue"]
        summary.append(entry)
        print(json.dumps({k: v for k, v in entry.items()}), flush=True)
    timing: list[dict] = []
    knn_seconds = None
    rng = np.random.default_rng(0)
    if args.size_timing:
        features = rng.normal(size=(29858, 300))
        from freqd.coreset import knn_similarity

        start = time.perf_counter()
        sims = knn_similarity(features, 10)
        knn_seconds = time.perf_counter() - start
        uniform = rng.random(29858)
        for name in ("infomax", "greedy", "random", "topk", "kcenter"):
            start = time.perf_counter()
            select(uniform, sims, 0.3, solver=name, features=features)  # type: ignore[arg-type]
            timing.append({"solver": name, "seconds": time.perf_counter() - start})
            print(f"gowalla-sized selection, {name}: {timing[-1]['seconds']:.1f} s", flush=True)
    for row in rows:
        row.pop("per_user", None)
    recorded = {**{k: str(v) for k, v in vars(args).items()}, "work": "<work folder>", "out": args.out.name}  # no machine paths
    result = {"command": "python benchmarks/bench_coreset.py", "args": recorded,
              "dataset": args.dataset, "rows": rows, "summary": summary,
              "gowalla_sized_timing": {"knn_seconds": knn_seconds, "solvers": timing},
              "machine": platform.platform(), "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    plot(result, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
