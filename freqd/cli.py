"""The ``freqd`` command line: ``freqd <subcommand> [options] [--key=value ...]``.

Any ``--key=value`` not listed in a subcommand's ``--help`` is a RecBole/freqd config override
(``--embedding_size=20 --learning_rate=0.01 --epochs=50``), with RecBole's precedence:
``--key=value`` > ``--config`` files (later beat earlier) > freqd defaults > RecBole defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

from freqd.checkpoints import TRUST_ENV
from freqd.datasets.importer import add_import_parser

EPILOG = """config overrides:
  any further --key=value is a RecBole/freqd config key, e.g. --embedding_size=20
  --epochs=100 --learning_rate=0.005 --seed=1 --protocol=reference --show_progress=False

torch threads:
  --threads N (or auto, the default: the usable CPUs divided by the parallel jobs, at most
  $OMP_NUM_THREADS when set); the count used is recorded in results.json

examples:
  freqd quickstart                                   # teacher, scratch, FD, FreqD on ml-100k
  freqd compare configs/compare/ml-100k.yaml         # the same over 3 seeds, with a full report
  freqd tune configs/tune/ml-100k-freqd.yaml --teacher-checkpoint saved/BPR-X.pth   # FreqD's settings, on validation
  freqd export saved/BPR-X.pth --out exports/bpr     # safetensors + token maps + card
  freqd recommend exports/bpr --user 196 --k 10      # top-10 without RecBole
  freqd distill --teacher saved/BPR-X.pth --student BPR --embedding_size 20 --kd FreqD
  freqd distill --teacher saved/BPR-X.pth --student Hash --hash_bits 64 --kd FreqD   # 64-bit codes
  freqd coreset --teacher saved/BPR-X.pth --budget 0.3 --out keep.json            # users to keep
  freqd train --model BPR --coreset keep.json                                       # train on them
  freqd train --model BPR --dataset ml-100k --embedding_size=300
  freqd train --model LightGCN --dataset gowalla --config configs/dataset/gowalla.yaml
  freqd datasets list
"""

def parse_overrides(extra: Sequence[str]) -> dict[str, Any]:
    """``['--a=1', '--b=x']`` -> ``{'a': '1', 'b': 'x'}``; RecBole's Config evaluates the strings."""
    overrides: dict[str, Any] = {}
    for token in extra:
        if not token.startswith("--") or "=" not in token or token.startswith("--="):
            raise SystemExit(
                f"freqd: unrecognised argument {token!r}; config overrides are written --key=value"
            )
        key, value = token[2:].split("=", 1)
        overrides[key] = value
    return overrides


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = [f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_row(label: str, result: dict[str, Any]) -> dict[str, Any]:
    test = result["test_result"]
    return {
        "model": label,
        "d": result["embedding_size"],
        "params": f"{result['n_parameters']:,}",
        "Recall@20": test["recall@20"],
        "NDCG@20": test["ndcg@20"],
        "Hit@20": test["hit@20"],
        "epochs": result["epochs_run"],
        "s/epoch": result["train_seconds_per_epoch"],
    }


SUMMARY_COLUMNS = ["model", "d", "params", "Recall@20", "NDCG@20", "Hit@20", "epochs", "s/epoch"]


def _thread_option(args, overrides) -> None:
    """``--threads N`` (also spelled ``--threads=N``), checked now, becomes the ``threads`` config key
    (a string, like every command-line override)."""
    from freqd.threads import parse_threads

    if args.threads is not None:
        overrides["threads"] = str(parse_threads(args.threads))


def _config_options(args, overrides, *keys: str) -> None:
    """Subcommand options that are config keys (``--seed``, ``--embedding_size``) become overrides as
    given, so freqd.Config checks their type and range with every other setting."""
    for key in keys:
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)


def cmd_train(args, overrides) -> int:
    from freqd.runs import train

    _thread_option(args, overrides)
    _config_options(args, overrides, "seed", "hash_bits", "coreset", "nproc")
    result = train(
        args.model, args.dataset, config_file_list=args.config, config_dict=overrides, resume=args.resume
    )
    if "model" not in result:  # a rank other than 0 of several processes: rank 0 reports
        return 0
    print(_table([summary_row(result["model"], result)], SUMMARY_COLUMNS))
    print(f"checkpoint: {result['checkpoint']}\nresults:    {result['run_dir']}/results.json")
    return 0


def cmd_distill(args, overrides) -> int:
    from freqd.runs import distill

    _thread_option(args, overrides)
    _config_options(args, overrides, "seed", "embedding_size", "hash_bits", "coreset", "kd_coreset", "nproc")
    result = distill(args.teacher, args.student, args.kd, dataset=args.dataset, config_file_list=args.config,
                     config_dict=overrides, resume=args.resume)
    if "model" not in result:  # a rank other than 0 of several processes: rank 0 reports
        return 0
    print(_table([summary_row(f"{result['model']} <- {result['kd']}", result)], SUMMARY_COLUMNS))
    if result.get("teacher_split_verified") is False:
        print(f"warning:    {result.get('teacher_split_note') or 'the teacher split could not be verified'}")
    print(f"checkpoint: {result['checkpoint']}\nresults:    {result['run_dir']}/results.json")
    return 0


def split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``--key=v`` for every run, ``--teacher.key=v`` for the teacher, ``--student.key=v`` for every arm."""
    from freqd.compare.config import parse_override_value

    shared: dict[str, Any] = {}
    teacher: dict[str, Any] = {}
    student: dict[str, Any] = {}
    for key, value in overrides.items():
        target, name = (teacher, key[8:]) if key.startswith("teacher.") else (
            (student, key[8:]) if key.startswith("student.") else (shared, key))
        target[name] = parse_override_value(value)
    return shared, teacher, student


def _tuple(values: list | None) -> tuple | None:
    return None if values is None else tuple(values)


def parse_arms(text: str | None) -> list[str] | None:
    return None if text is None else [name.strip() for name in text.split(",") if name.strip()]


def parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise SystemExit(f"freqd: --seeds takes comma-separated integers, got {text!r}") from None


def _print_report(report: dict[str, Any]) -> None:
    from freqd.compare.report import accuracy_table, significance_table, size_table

    executed = ", ".join(f"{e['arm']}/s{e['seed']}" for e in report["executed"]) or "none (all reused)"
    print(f"\n{report['title']}: {report['config']['dataset']}, seeds {report['seeds']}, protocol "
          f"{report['protocol']}\n")
    print(accuracy_table(report))
    print()
    print(size_table(report))
    print(f"\npaired tests against {report['control']!r} (per-user {report['test_metric']}, averaged over seeds):\n")
    print(significance_table(report))
    print(f"\nruns trained now: {executed}\nreport: {report['out']}/report.md (also results.csv, results.json, "
          f"{', '.join(report['plots'])})")


def _run_comparison(config, out, args, overrides) -> int:
    """Run ``config`` with the shared comparison options of ``compare`` and ``quickstart``; print the tables.

    Exit status 1 when runs failed (each named; the finished ones are stored), 2 for config errors.
    """
    from freqd.compare import run_comparison
    from freqd.compare.runner import RunFailedError

    if args.jobs < 1:
        raise ValueError(f"--jobs={args.jobs} is invalid: expected a positive integer")
    _thread_option(args, overrides)
    shared, teacher, student = split_overrides(overrides)
    try:
        report = run_comparison(config, out=out, seeds=parse_seeds(args.seeds), overrides=shared,
                                teacher_overrides=teacher, student_overrides=student, rerun_stale=args.rerun_stale,
                                progress=not args.no_progress, arms=parse_arms(args.arms),
                                teacher_checkpoint=args.teacher_checkpoint, jobs=args.jobs,
                                report_only=args.report_only)
    except RunFailedError as exc:
        print(f"freqd: error: {exc}", file=sys.stderr)
        return 1
    _print_report(report)
    return 0


def cmd_compare(args, overrides) -> int:
    return _run_comparison(args.config, args.out, args, overrides)


def cmd_tune(args, overrides) -> int:
    """A validation-only hyperparameter search (Optuna); prints the best values and where they are."""
    from freqd.tune import SearchBusyError, load_tune_config, run_tune

    _thread_option(args, overrides)
    config = load_tune_config(args.config, teacher=args.teacher_checkpoint)
    try:
        summary = run_tune(config, out=args.out, trials=args.trials, overrides=overrides,
                           progress=not args.no_progress)
    except SearchBusyError as exc:
        print(f"freqd tune: {exc}", file=sys.stderr)
        return 2
    out = args.out or f"results/tune/{config.source.stem}"
    cut = f", {summary['cut']} cut by a stop and continued" if summary.get("cut") else ""
    print(f"{summary['finished']} of {summary['budget']} trials finished ({summary['complete']} complete, "
          f"{summary['pruned']} pruned, {summary['failed']} failed{cut})")
    if "best_params" in summary:
        print(f"best: trial {summary['best_trial']}, validation {summary['valid_metric']} {summary['best_value']:.4f}, "
              f"{summary['best_params']}")
        print(f"best configuration: {out}/best.yaml\ntrials:             {out}/trials.csv")
    return 0


def cmd_coreset(args, overrides) -> int:
    """The users to keep, chosen with a trained teacher, as a selection file."""
    from freqd.runs import select_coreset

    _thread_option(args, overrides)
    budget = float(args.budget) if "." in args.budget else int(args.budget)
    record = select_coreset(args.teacher, args.out, budget, dataset=args.dataset, config_file_list=args.config,
                            config_dict=overrides, solver=args.solver, alpha=args.alpha, importance=args.importance,
                            similarity=args.similarity, knn=args.knn, student=args.student, method=args.method,
                            iters=args.iters, partitions=args.partitions, seed=args.seed)
    print(f"kept {record['budget']} of {record['n_units']} users ({record['solver']}, objective "
          f"{record['objective']:.4f}, {record['seconds']:.1f} s): {args.out}")
    return 0


def cmd_trust(args, overrides) -> int:
    """The trust report of a comparison folder's models: membership inference, robustness, fairness."""
    from pathlib import Path

    from freqd.threads import apply_threads
    from freqd.trust.edges import parse_edges
    from freqd.trust.poison import parse_poison
    from freqd.trust.runner import TrustOptions, trust_report

    apply_threads(args.threads if args.threads is not None else "auto")
    show_text = overrides.pop("show_progress", "True")  # RecBole's spelling of --no-progress, as runs take it
    if show_text.strip().lower() not in ("true", "false"):
        raise ValueError(f"--show_progress={show_text!r} is invalid: expected True or False")
    show = show_text.strip().lower() == "true"
    if overrides:
        raise ValueError(f"freqd trust takes no config overrides other than --show_progress, got {sorted(overrides)}")
    options = TrustOptions(parts=tuple(p.strip() for p in args.parts.split(",") if p.strip()),
                           epsilons=tuple(float(e) for e in args.epsilons.split(",") if e.strip()), k=args.k,
                           seed=args.seed, arms=_tuple(parse_arms(args.arms)), seeds=_tuple(parse_seeds(args.seeds)),
                           plots=not args.no_plots, progress=show and not args.no_progress, shadows=args.shadows,
                           shadow_arms=_tuple(parse_arms(args.shadow_arms)), jobs=args.jobs,
                           edges=parse_edges(args.edges), edge_seeds=_tuple(parse_seeds(args.edge_seeds)),
                           miars=args.miars, poison=parse_poison(args.poison))
    out = args.out or f"{args.folder.rstrip('/')}/trust"
    report = trust_report(args.folder, config=args.config, out=out, options=options,
                          teacher_checkpoint=args.teacher_checkpoint)
    print((Path(out) / "trust.md").read_text(encoding="utf-8"))
    print(f"written: {', '.join(f'{out}/{name}' for name in report['files'])}")
    return 0


def cmd_export(args, overrides) -> int:
    """A checkpoint as a folder that serves top-K without RecBole (``freqd recommend``)."""
    from freqd.export import card_summary, export_model
    from freqd.threads import apply_threads

    apply_threads(args.threads if args.threads is not None else "auto")
    card = export_model(args.checkpoint, args.out, dataset=args.dataset, config_file_list=args.config,
                        config_dict=overrides)
    print(card_summary(card))
    scorer = ", scorer.pt (TorchScript top-K)" if card.get("scorer") else ""
    print(f"exported: {args.out}/model.safetensors{scorer}, tokens.json, card.json")
    return 0


def cmd_recommend(args, overrides) -> int:
    """Top-K items for user tokens from an export folder."""
    from freqd.serving import Recommender

    if overrides:
        raise ValueError(f"freqd recommend takes no config overrides, got {sorted(overrides)}")
    rec = Recommender.load(args.folder)
    for user, items in zip(args.user, rec.recommend(args.user, k=args.k, exclude_seen=not args.include_seen)):
        print(f"user {user}:")
        for rank, (item, score) in enumerate(items, start=1):
            print(f"  {rank:>3}  {item}  {score:.4f}")
    return 0


def cmd_quickstart(args, overrides) -> int:
    """The whole story on one dataset, as a comparison: teacher, scratch, plain FD (α = 0), FreqD."""
    from freqd.compare import quickstart_config

    config = quickstart_config(model=args.model, dataset=args.dataset or "ml-100k", teacher_size=args.teacher_size,
                               student_size=args.student_size, alpha=args.alpha, seeds=[0],
                               config_files=args.config)
    return _run_comparison(config, args.out or f"results/compare/quickstart-{config.dataset}", args, overrides)


def cmd_datasets(args, overrides) -> int:
    from freqd.datasets import KNOWN_DATASETS, prepare_dataset

    if args.action == "list":
        for name in KNOWN_DATASETS:
            print(name)
        return 0
    for name in args.names:
        prepared = prepare_dataset(name, out_root=args.out, seed=args.seed if args.seed is not None else 2020)
        print(json.dumps(prepared))
    return 0


def cmd_plot(args, overrides) -> int:
    from freqd.plots import plot_run

    for path in plot_run(args.run_dir, args.out):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="freqd",
        description="Compress recommenders by knowledge distillation, on RecBole 1.2.1.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def threads_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--threads", default=None, metavar="N",
                       help="torch threads per run: a positive integer or auto (default: the usable CPUs divided by "
                            "the parallel jobs, at most $OMP_NUM_THREADS)")
        p.add_argument("--trust-checkpoint", dest="trust_checkpoint", action="store_true",
                       help="DANGEROUS: load checkpoints with plain pickle, which runs any code a file names; only "
                            "for files you made yourself with a tool freqd's safe loader refuses")

    def common(p: argparse.ArgumentParser, model_default: str | None) -> None:
        p.add_argument("--model", default=model_default, required=model_default is None,
                       help="backbone: BPR, LightGCN, Hash (binary codes) or any RecBole general recommender")
        p.add_argument("--dataset", default=None,
                       help="ml-100k (bundled), a named dataset (see 'freqd datasets list') or "
                            "atomic files under <data_path>/<dataset>/; default: the --config files' "
                            "'dataset', else ml-100k")
        p.add_argument("--config", action="append", default=[], metavar="YAML",
                       help="YAML config file; repeatable, later files override earlier ones")
        p.add_argument("--seed", default=None, help="random seed (RecBole's 'seed')")
        threads_option(p)

    train = sub.add_parser("train", help="train and evaluate one model", epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    common(train, None)
    train.add_argument("--resume", metavar="PTH", help="continue from a checkpoint in saved/")
    train.add_argument("--hash_bits", "--hash-bits", default=None, help="bits per code of a Hash model")
    train.add_argument("--coreset", default=None, metavar="JSON",
                       help="train on the users of this selection file (freqd coreset) only")
    train.add_argument("--nproc", default=None, help="data-parallel processes on this machine (RecBole's 'nproc'; "
                                                 "world_size, ip, port, offset as --key=value; gloo on CPUs)")
    train.set_defaults(func=cmd_train)

    distill = sub.add_parser("distill", help="distil a trained teacher checkpoint into a small student",
                             epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    distill.add_argument("--teacher", required=True, metavar="PTH", help="teacher checkpoint (freqd's or RecBole's)")
    distill.add_argument("--student", default="BPR", help="student backbone: BPR, LightGCN or Hash (binary codes)")
    distill.add_argument("--kd", default="FreqD", help="distiller (FreqD)")
    distill.add_argument("--embedding_size", "--embedding-size", default=None, help="student size")
    distill.add_argument("--hash_bits", "--hash-bits", default=None, help="bits per code of a Hash student")
    distill.add_argument("--kd_coreset", "--kd-coreset", default=None, metavar="JSON",
                         help="the distillation term on the users of this selection file only")
    distill.add_argument("--coreset", default=None, metavar="JSON",
                         help="train the student on the users of this selection file only")
    distill.add_argument("--dataset", default=None, help="defaults to the teacher's dataset")
    distill.add_argument("--config", action="append", default=[], metavar="YAML",
                         help="YAML config file (e.g. configs/kd/freqd.yaml); repeatable")
    distill.add_argument("--seed", default=None, help="random seed")
    distill.add_argument("--resume", metavar="PTH", help="continue from a distillation checkpoint")
    distill.add_argument("--nproc", default=None, help="data-parallel processes on this machine (RecBole's 'nproc'; "
                                                 "world_size, ip, port, offset as --key=value; gloo on CPUs)")
    threads_option(distill)
    distill.set_defaults(func=cmd_distill)

    def comparison_options(p: argparse.ArgumentParser, seeds_help: str) -> None:
        p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: results/compare/<name>); "
                       "rerunning into the same folder reuses finished runs")
        p.add_argument("--seeds", default=None, metavar="0,1,2", help=seeds_help)
        p.add_argument("--rerun-stale", dest="rerun_stale", action="store_true",
                       help="recompute stored results whose configuration changed (default: stop with an error)")
        p.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bar")
        p.add_argument("--arms", default=None, metavar="A,B",
                       help="run and report only these arms (and the control); finished runs are reused")
        p.add_argument("--teacher-checkpoint", dest="teacher_checkpoint", default=None, metavar="PTH",
                       help="distil this trained teacher (freqd's or RecBole's checkpoint) instead of training the "
                            "config's teacher")
        p.add_argument("--report-only", dest="report_only", action="store_true",
                       help="train nothing: rebuild the report from the stored results (an error names any "
                            "missing run; select the finished ones with --arms/--seeds)")
        p.add_argument("--jobs", type=int, default=1, metavar="N",
                       help="run the arms in N parallel processes after the teacher (default 1); each gets "
                            "1/N of the CPUs as torch threads")
        threads_option(p)

    compare = sub.add_parser(
        "compare", allow_abbrev=False, help="offline A/B comparison: a teacher, a student size, arms x seeds, one report",
        description="Run every arm of a comparison YAML over its seeds and write report.md, results.csv, "
                    "results.json and PNG plots. --key=value applies to every run (teacher included); "
                    "--teacher.key=value / --student.key=value to the teacher / every arm only.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    compare.add_argument("config", metavar="CONFIG", help="comparison YAML, e.g. configs/compare/ml-100k.yaml")
    comparison_options(compare, "comma-separated seeds, replacing the config's")
    compare.set_defaults(func=cmd_compare)

    tune = sub.add_parser(
        "tune", allow_abbrev=False, help="hyperparameter search on validation only (Optuna TPE, pruning, resumable)",
        description="Search the config keys of a tune YAML's 'space' for one run (a model, or a student distilled "
                    "with --kd from a teacher). Trials are stored in <out>/study.journal: rerunning continues the "
                    "search, here or, with the journal copied, on another machine. The test set is never "
                    "evaluated. --key=value is fixed for every trial.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    tune.add_argument("config", metavar="CONFIG", help="tune YAML, e.g. configs/tune/ml-100k-freqd.yaml")
    tune.add_argument("--out", default=None, metavar="DIR", help="output folder (default: results/tune/<name>)")
    tune.add_argument("--trials", type=int, default=None, metavar="N",
                      help="finished trials to reach, counting those already in the folder (default: the config's)")
    tune.add_argument("--teacher-checkpoint", dest="teacher_checkpoint", default=None, metavar="PTH",
                      help="the teacher to distil (replaces the config's 'teacher')")
    tune.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bar")
    threads_option(tune)
    tune.set_defaults(func=cmd_tune)

    from freqd.coreset import METHODS, SOLVERS
    from freqd.coreset.signals import IMPORTANCES, SIMILARITIES

    coreset = sub.add_parser("coreset", allow_abbrev=False, help="choose the users to keep (InfoMax and baselines) "
                             "with a trained teacher; write a selection file", epilog=EPILOG,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    coreset.add_argument("--teacher", required=True, metavar="PTH", help="trained teacher checkpoint")
    coreset.add_argument("--budget", required=True, help="users to keep: a count (300) or a fraction (0.3)")
    coreset.add_argument("--out", required=True, metavar="JSON", help="selection file to write")
    coreset.add_argument("--solver", default="infomax", choices=SOLVERS)
    coreset.add_argument("--method", default="frank_wolfe", choices=METHODS, help="infomax's relaxation solver")
    coreset.add_argument("--alpha", type=float, default=1.0, help="weight of the redundancy term")
    coreset.add_argument("--importance", default="difficulty", choices=IMPORTANCES)
    coreset.add_argument("--student", default=None, metavar="PTH", help="early student (importance: disagreement)")
    coreset.add_argument("--similarity", default="cosine", choices=SIMILARITIES)
    coreset.add_argument("--knn", type=int, default=10, help="neighbours per user in the similarity")
    coreset.add_argument("--iters", type=int, default=50)
    coreset.add_argument("--partitions", type=int, default=1)
    coreset.add_argument("--seed", type=int, default=0)
    coreset.add_argument("--dataset", default=None, help="default: the teacher's dataset")
    coreset.add_argument("--config", action="append", default=[], metavar="YAML", help="YAML config of the data")
    threads_option(coreset)
    coreset.set_defaults(func=cmd_coreset)

    trust = sub.add_parser(
        "trust", allow_abbrev=False, help="trust report of a comparison's models: membership inference, "
        "adversarial robustness, fairness", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Audit the teacher and every (arm, seed) model of a finished 'freqd compare' folder and write "
                    "trust.md, trust.csv, trust.json and plots (docs/trust.md).")
    trust.add_argument("folder", metavar="DIR", help="a 'freqd compare' output folder")
    trust.add_argument("--config", default=None, metavar="YAML",
                       help="the comparison's YAML (default: the one the folder's results.json names)")
    trust.add_argument("--teacher-checkpoint", dest="teacher_checkpoint", default=None, metavar="PTH",
                       help="the teacher's file, where the comparison was given one (its stored weights digest "
                            "must match; default: the path the folder's results.json names)")
    trust.add_argument("--out", default=None, metavar="DIR", help="report folder (default: DIR/trust)")
    trust.add_argument("--parts", default="privacy,robustness,fairness", help="comma-separated parts to compute")
    trust.add_argument("--epsilons", default="0.1,0.5,1.0", help="APR budgets, multiples of the mean row norm")
    trust.add_argument("--k", type=int, default=20, help="list length of the metrics (default 20)")
    trust.add_argument("--seed", type=int, default=0, help="seed of the membership sample and APR's negatives")
    trust.add_argument("--arms", default=None, metavar="A,B", help="only these arms (the teacher is always audited)")
    trust.add_argument("--seeds", default=None, metavar="0,1,2", help="only these seeds of the arms")
    trust.add_argument("--shadows", type=int, default=0, metavar="M",
                       help="also the shadow-model likelihood-ratio attack with M shadows (even; 8-16), each "
                            "training the teacher and the arms on a random half of the pairs (default 0: off)")
    trust.add_argument("--shadow-arms", dest="shadow_arms", default=None, metavar="A,B",
                       help="arms that get shadows (default: every audited arm; the teacher always)")
    trust.add_argument("--edges", default=None, metavar="KIND:RHO,...",
                       help="also retrain the comparison with a share RHO of the training edges dropped or random "
                            "edges added, e.g. drop:0.1,add:0.1 (default: off)")
    trust.add_argument("--edge-seeds", dest="edge_seeds", default=None, metavar="0,1",
                       help="seeds of the retrained arms (default: the comparison's first seed)")
    trust.add_argument("--miars", action="store_true",
                       help="also the user-level attack from top-k lists: trains a shadow and a target comparison "
                            "on disjoint thirds of the users (the comparison's first seed; default: off)")
    trust.add_argument("--poison", default=None, metavar="KIND:SHARE,...",
                       help="also retrain the comparison with fake users promoting tail items, KIND random or "
                            "bandwagon, SHARE of the genuine users, e.g. random:0.03,bandwagon:0.03 (first seed; "
                            "default: off)")
    trust.add_argument("--jobs", type=int, default=1, metavar="N",
                       help="parallel processes of the shadow, perturbed-edge, MIARS and poisoning training")
    trust.add_argument("--no-plots", dest="no_plots", action="store_true", help="no PNG plots")
    trust.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bar")
    threads_option(trust)
    trust.set_defaults(func=cmd_trust)

    export = sub.add_parser("export", allow_abbrev=False, help="write a checkpoint's model as safetensors + token "
                            "maps + card, servable without RecBole", epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("checkpoint", metavar="PTH", help="a freqd or RecBole BPR/LightGCN checkpoint")
    export.add_argument("--out", required=True, metavar="DIR", help="export folder")
    export.add_argument("--dataset", default=None, help="default: the checkpoint's dataset")
    export.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="YAML config of the data (data_path, split); repeatable")
    threads_option(export)
    export.set_defaults(func=cmd_export)

    recommend = sub.add_parser("recommend", allow_abbrev=False, help="top-K items for users from a 'freqd export' "
                               "folder")
    recommend.add_argument("folder", metavar="DIR", help="a 'freqd export' folder")
    recommend.add_argument("--user", action="append", required=True, metavar="TOKEN",
                           help="a user token of the dataset; repeatable")
    recommend.add_argument("--k", type=int, default=20, help="items per user (default 20)")
    recommend.add_argument("--include-seen", dest="include_seen", action="store_true",
                           help="do not exclude the items the user saw in training and validation")
    recommend.set_defaults(func=cmd_recommend)

    quick = sub.add_parser("quickstart", allow_abbrev=False, help="teacher, scratch student, plain FD and FreqD side by side "
                           "(a one-seed comparison)", epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    quick.add_argument("--model", default="BPR", help="backbone of teacher and students: BPR or LightGCN")
    quick.add_argument("--dataset", default=None, help="default ml-100k")
    quick.add_argument("--config", action="append", default=[], metavar="YAML",
                       help="YAML config file shared by all runs; repeatable")
    quick.add_argument("--teacher-size", dest="teacher_size", type=int, default=300)
    quick.add_argument("--student-size", dest="student_size", type=int, default=20)
    quick.add_argument("--alpha", type=float, default=0.5, help="FreqD filter coefficient α")
    comparison_options(quick, "comma-separated seeds of the students (default 0; the teacher uses seed 0)")
    quick.set_defaults(func=cmd_quickstart)

    plot = sub.add_parser("plot", help="PNG training curves (and FreqD spectral energy) of a results/<run> folder")
    plot.add_argument("run_dir", help="a results/<run> folder with metrics.csv")
    plot.add_argument("--out", default=None, help="output folder (default: the run folder)")
    plot.set_defaults(func=cmd_plot)

    data = sub.add_parser("datasets", help="list or prepare the named datasets (../shared/data), or import your own")
    actions = data.add_subparsers(dest="action", required=True, metavar="{list,prepare,import}")
    actions.add_parser("list", help="the named datasets")
    prepare = actions.add_parser("prepare", help="write named datasets as atomic files")
    prepare.add_argument("names", nargs="*", help="dataset names for 'prepare'")
    prepare.add_argument("--out", default="dataset", help="folder for the atomic files (RecBole's data_path)")
    prepare.add_argument("--seed", type=int, default=None, help="split seed")
    add_import_parser(actions)
    data.set_defaults(func=cmd_datasets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    overrides = parse_overrides(extra)
    from freqd.compat import silence_known_warnings

    silence_known_warnings()

    if getattr(args, "trust_checkpoint", False):
        os.environ[TRUST_ENV] = "1"  # read by every checkpoint load, also in --jobs worker processes
    try:
        return args.func(args, overrides)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"freqd: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("freqd: interrupted; files already written are intact. Rerun the same command to continue "
              "(compare, tune), or pass --resume <checkpoint>-last.pth (train, distill)", file=sys.stderr)
        return 130
    except OSError as exc:  # disk full, read-only output, permissions: the files written so far are intact
        print(f"freqd: error: {exc.strerror or exc} ({exc.filename or 'output'}); files already written are "
              "intact, partial ones were not kept", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
