"""Run a comparison: the teacher once, then every (arm, seed), each result stored atomically and reused.

The output folder's layout is :mod:`freqd.compare.store`'s; ``report.md``, ``results.csv``, ...
are rebuilt from the stored results on every call (:func:`freqd.compare.report.build_report`).
Each run's stored result holds its per-user test metrics and, measured right after the run on
its checkpoint, the model's size and (unless ``latency`` is disabled) its top-k scoring speed.

A result is reused only when the hash of its inputs (dataset, backbone, distiller, YAML file
contents, overrides, seed and, for distilled arms, the teacher) matches; otherwise the run stops
with a message naming the changed files and keys, unless ``rerun_stale`` is set. A run that was
interrupted (killed, a failure) continues from its ``-last.pth`` on the next call when its folder
holds the same configuration (:func:`interrupted_run`), so no finished epoch is trained twice.
Each run holds a lock file next to its work folder while it trains (:func:`run_lock`): a second
``freqd compare`` on the same folder (e.g. another ``--arms`` selection, which shares the control)
waits for that run and then reuses its result instead of training it again or deleting it.

With ``jobs`` > 1 the (arm, seed) runs after the teacher go to that many worker processes, each
with its share of the CPUs as torch threads; every result file is still written by the one
worker that ran it, atomically.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import sys
import traceback
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path
from time import perf_counter
from typing import Any

from filelock import FileLock, Timeout

from freqd.compare.config import ComparisonConfig, ComparisonConfigError, load_comparison_config
from freqd.compare.evaluate import (
    EvalContext,
    aggregate,
    build_eval_context,
    eval_data,
    load_model,
    measure_latency,
    model_size,
    per_user_metrics,
    result_checkpoint,
)
from freqd.compare.report import build_report
from freqd.compare.store import arm_paths, check_stale, is_done, load_result, teacher_paths, write_result
from freqd.io import atomic_write_text
from freqd.threads import apply_threads, resolve_threads
from freqd.trainers.trainer import newest_last_checkpoint

logger = logging.getLogger(__name__)

#: Tolerance between the mean of per-user metrics and RecBole's test_result (rounded to 6 places).
RECBOLE_TOLERANCE = 1e-6


class RunFailedError(RuntimeError):
    """Runs of a parallel comparison failed; the message names each (arm, seed). Finished runs are stored."""


def default_out(comparison: ComparisonConfig) -> Path:
    return Path("results") / "compare" / (comparison.source.stem if comparison.source else comparison.title)


def run_comparison(
    config: ComparisonConfig | str | Path,
    out: str | Path | None = None,
    seeds: list[int] | None = None,
    overrides: dict[str, Any] | None = None,
    teacher_overrides: dict[str, Any] | None = None,
    student_overrides: dict[str, Any] | None = None,
    rerun_stale: bool = False,
    progress: bool = True,
    arms: list[str] | None = None,
    teacher_checkpoint: str | Path | None = None,
    jobs: int = 1,
    report_only: bool = False,
) -> dict[str, Any]:
    """Run (or continue) a comparison and write its report; return the report data.

    ``config`` is a :class:`ComparisonConfig` or the path of its YAML. ``seeds`` replaces the
    config's seeds; ``overrides`` are added to every run (teacher and arms),
    ``teacher_overrides``/``student_overrides`` to the teacher's or every arm's; ``arms`` keeps
    only the named arms (and the control), e.g. to report the finished part of a long run;
    ``teacher_checkpoint`` distils that trained checkpoint instead of the config's teacher; ``jobs``
    runs the arms in that many worker processes (the teacher first, alone); ``report_only`` trains
    nothing and rebuilds the report from the stored results (:func:`require_finished`). The returned dict is
    what ``results.json`` holds, plus ``executed``: the (arm, seed) runs trained by this call (the
    others were reused), in run order.
    """
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ComparisonConfigError(f"jobs={jobs!r} is invalid: expected a positive integer")
    comparison = config if isinstance(config, ComparisonConfig) else load_comparison_config(config)
    comparison = comparison.with_overrides(seeds=seeds, overrides=overrides, teacher_overrides=teacher_overrides,
                                           student_overrides=student_overrides, arms=arms,
                                           teacher_checkpoint=teacher_checkpoint)
    out = Path(out) if out is not None else default_out(comparison)
    if report_only and not out.is_dir():
        raise ComparisonConfigError(f"no comparison folder {out} to report (report_only trains nothing)")
    out.mkdir(parents=True, exist_ok=True)
    teacher_key, teacher_content = comparison.teacher_key()
    runs = [(arm, seed) for seed in comparison.seeds for arm in comparison.arms]
    keys = {(arm.name, seed): comparison.arm_key(arm, seed, teacher_key) for arm, seed in runs}
    check_stale(out, teacher_key, teacher_content, keys, rerun_stale and not report_only)
    if report_only:  # before the data is loaded: a missing run fails fast
        require_finished(comparison, out, teacher_key, keys)

    ctx = build_eval_context(comparison)
    executed: list[dict[str, Any]] = []
    if not report_only:
        bar = _progress(len(runs) + 1, progress)
        try:
            bar.set_postfix_str("teacher")
            teacher = _ensure_teacher(comparison, out, ctx, teacher_key, teacher_content, executed, bar)
            bar.update(1)
            if jobs == 1:
                for arm, seed in runs:
                    bar.set_postfix_str(f"{arm.name} seed {seed}")
                    key, content = keys[(arm.name, seed)]
                    _ensure_arm(comparison, out, ctx, arm, seed, key, content, teacher, executed, bar)
                    bar.update(1)
            else:
                _run_parallel(comparison, out, runs, keys, teacher, executed, bar, jobs)
        finally:
            bar.close()
    report = build_report(comparison, out, eval_data(ctx))
    report["executed"] = executed
    return report


def require_finished(comparison: ComparisonConfig, out: Path, teacher_key: str,
                     keys: dict[tuple[str, int], tuple[str, dict[str, Any]]]) -> None:
    """Raise, naming every missing (arm, seed), unless the teacher and every run have a current result.

    The message names the ``--seeds`` / ``--arms`` selections whose runs are all finished.
    """
    missing = [] if is_done(*teacher_paths(out)[:2], teacher_key) else ["teacher"]
    unfinished: dict[str, set[int]] = {}
    for (name, seed), (key, _) in keys.items():
        if not is_done(*arm_paths(out, name, seed)[:2], key):
            missing.append(f"{name} seed {seed}")
            unfinished.setdefault(name, set()).add(seed)
    if not missing:
        return
    hint = []
    if "teacher" not in missing:
        seeds = [s for s in comparison.seeds if not any(s in u for u in unfinished.values())]
        arms = [a.name for a in comparison.arms if a.name not in unfinished and a.name != comparison.control]
        if seeds:
            hint.append(f"--seeds {','.join(map(str, seeds))} reports the seeds every arm has finished")
        if arms and comparison.control not in unfinished:
            hint.append(f"--arms {','.join(arms)} reports the arms that have finished every seed")
    raise ComparisonConfigError(f"{len(missing)} of {len(keys) + 1} results are not stored in {out}: "
                                f"{', '.join(missing)}; the report needs every (arm, seed) of the selection"
                                + ("; " + "; ".join(hint) if hint else ""))


# -- the runs ------------------------------------------------------------------------------------
def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="compare", unit="run", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def _evaluate(checkpoint: Path, ctx: EvalContext, comparison: ComparisonConfig):
    """Per-user test metrics, their protocol means and the model's measurements, from one checkpoint."""
    model = load_model(checkpoint, ctx)
    per_user = per_user_metrics(model, ctx, comparison.evaluation.topk, comparison.evaluation.group_k)
    keys = [f"{m}@{k}" for k in comparison.evaluation.topk for m in ("recall", "ndcg", "map")]
    return per_user, aggregate(per_user, ctx, keys), _measure(model, ctx, comparison)


def _measure(model, ctx: EvalContext, comparison: ComparisonConfig) -> dict[str, Any]:
    """The model's class, width, size and (when enabled) scoring speed, stored with its result.

    Measured once, here, so the report never reloads a checkpoint; not part of the result's key.
    """
    spec = comparison.latency
    return {"model": type(model).__name__, "embedding_size": getattr(model, "embedding_size", None),
            "size": model_size(model), "latency": measure_latency(model, ctx.users, spec) if spec.enabled else None}


def _history(run_dir: Path) -> list[dict[str, Any]]:
    import pandas as pd

    metrics = run_dir / "metrics.csv"
    if not metrics.is_file():
        return []
    frame = pd.read_csv(metrics)
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
            for row in frame.to_dict(orient="records")]


def _run_summary(result: dict[str, Any], out: Path, history: list[dict[str, Any]]) -> dict[str, Any]:
    valid_key = f"valid_{str(result['config'].get('valid_metric', 'NDCG@20')).lower()}"
    scored = [r for r in history if r.get(valid_key) is not None]
    best = (max if result.get("valid_score_bigger", True) else min)(scored, key=lambda r: r[valid_key]) if scored \
        else None
    return {
        "model": result["model"], "embedding_size": result["embedding_size"], "protocol": result["protocol"],
        "n_parameters": result["n_parameters"], "epochs_run": result["epochs_run"],
        "best_epoch": result.get("best_epoch", int(best["epoch"]) if best else None),
        "converged": result.get("converged"),
        "stopping": [result["config"].get("eval_step"), result["config"].get("stopping_step"),
                     result.get("valid_smoothing", 1)],
        "train_seconds_per_epoch": result["train_seconds_per_epoch"],
        "valid_seconds_per_eval": result["valid_seconds_per_eval"], "threads": result.get("threads"),
        "best_valid_result": result["best_valid_result"], "test_result": result["test_result"],
        "checkpoint": str(Path(result["checkpoint"]).resolve().relative_to(out.resolve())),
        "run_dir": str(Path(result["run_dir"]).resolve().relative_to(out.resolve())),
    }


def _check_against_recbole(name: str, metrics: dict[str, float], test_result: dict[str, float]) -> float:
    common = [k for k in metrics if k in test_result]
    worst = max((abs(metrics[k] - float(test_result[k])) for k in common), default=0.0)
    if worst > RECBOLE_TOLERANCE:
        logger.warning(f"{name}: per-user means differ from RecBole's test_result by {worst:.2e}")
    return worst


def _ensure_teacher(comparison, out, ctx, key, content, executed, bar) -> dict[str, Any]:
    with run_lock(teacher_paths(out)[2], "teacher", bar):
        return _teacher_locked(comparison, out, ctx, key, content, executed, bar)


def _teacher_locked(comparison, out, ctx, key, content, executed, bar) -> dict[str, Any]:
    json_path, npz_path, work = teacher_paths(out)
    stored = load_result(json_path, npz_path)
    if stored and stored[0]["key"] == key:
        bar.write(f"teacher: reused ({json_path})", file=sys.stderr)
        return stored[0]
    start = perf_counter()
    result: dict[str, Any]
    if comparison.teacher.checkpoint is not None:
        checkpoint = comparison.teacher.checkpoint
        per_user, metrics, measured = _evaluate(checkpoint, ctx, comparison)
        # Stored without its path, which names one machine: the key holds its weights digest.
        result = {"kind": "teacher", "source": "checkpoint", "checkpoint": None, "checkpoint_name": checkpoint.name,
                  "run": None, "history": []}
    else:
        from freqd.runs import train

        if work.exists():
            shutil.rmtree(work)
        spec = comparison.teacher.spec
        bar.write(f"teacher: training {spec.model} (seed {comparison.teacher.seed})", file=sys.stderr)
        run = train(spec.model, comparison.dataset, config_file_list=[str(f) for f in comparison.teacher_files()],
                        config_dict={**comparison.teacher_overrides(), "checkpoint_dir": str(work / "saved"),
                                     "results_dir": str(work / "runs")})
        _check_protocol("teacher", run, ctx)
        history = _history(Path(run["run_dir"]))
        summary = _run_summary(run, out, history)
        per_user, metrics, measured = _evaluate(out / summary["checkpoint"], ctx, comparison)
        result = {"kind": "teacher", "source": "trained", "checkpoint": summary["checkpoint"], "run": summary,
                  "history": history, "recbole_max_abs_diff": _check_against_recbole("teacher", metrics,
                                                                                    run["test_result"])}
    result.update(key=key, spec=content, name="teacher", label="teacher", metrics=metrics, **measured,
                  wall_seconds=perf_counter() - start)
    write_result(json_path, npz_path, result, per_user)
    executed.append({"arm": "teacher", "seed": comparison.teacher.seed})
    bar.write(f"teacher: {_brief(metrics, comparison)} ({result['wall_seconds']:.0f} s)", file=sys.stderr)
    return json.loads(json_path.read_text(encoding="utf-8"))


def _ensure_arm(comparison, out, ctx, arm, seed, key, content, teacher, executed, bar) -> None:
    with run_lock(arm_paths(out, arm.name, seed)[2], f"{arm.name} seed {seed}", bar):
        _arm_locked(comparison, out, ctx, arm, seed, key, content, teacher, executed, bar)


def _arm_locked(comparison, out, ctx, arm, seed, key, content, teacher, executed, bar) -> None:
    from freqd.runs import distill, train

    json_path, npz_path, work = arm_paths(out, arm.name, seed)
    if is_done(json_path, npz_path, key):
        bar.write(f"{arm.name} seed {seed}: reused", file=sys.stderr)
        return
    resume = interrupted_run(work, key)
    if resume is None:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        atomic_write_text(work / RUN_KEY, key)
    else:
        bar.write(f"{arm.name} seed {seed}: continuing the interrupted run from {resume.name}", file=sys.stderr)
    start = perf_counter()
    files = [str(f) for f in comparison.arm_files(arm)]
    config_dict = {**comparison.arm_overrides(arm, seed), "checkpoint_dir": str(work / "saved"),
                   "results_dir": str(work / "runs")}
    previous = None if resume is None else str(resume)
    if arm.kd is None:
        run = train(comparison.arm_model(arm), comparison.dataset, config_file_list=files, config_dict=config_dict,
                    resume=previous)
    else:
        teacher_checkpoint = result_checkpoint(out, teacher, comparison.teacher.checkpoint)
        run = distill(str(teacher_checkpoint), comparison.arm_model(arm), arm.kd, dataset=comparison.dataset,
                      config_file_list=files, config_dict=config_dict, resume=previous)
    _check_protocol(f"arm {arm.name!r}", run, ctx)
    history = _history(Path(run["run_dir"]))
    summary = _run_summary(run, out, history)
    per_user, metrics, measured = _evaluate(out / summary["checkpoint"], ctx, comparison)
    result = {"kind": "arm", "name": arm.name, "label": arm.label, "kd": arm.kd, "seed": seed, "key": key,
              "spec": content, "checkpoint": summary["checkpoint"], "run": summary, "history": history,
              "metrics": metrics,
              "recbole_max_abs_diff": _check_against_recbole(f"{arm.name} seed {seed}", metrics, run["test_result"]),
              **measured, "wall_seconds": perf_counter() - start}
    write_result(json_path, npz_path, result, per_user)
    executed.append({"arm": arm.name, "seed": seed})
    bar.write(f"{arm.name} seed {seed}: {_brief(metrics, comparison)} ({result['wall_seconds']:.0f} s)",
              file=sys.stderr)


#: In an (arm, seed) work folder: the key of the configuration its runs belong to.
RUN_KEY = "key"


@contextmanager
def run_lock(work: Path, who: str, bar) -> Iterator[None]:
    """Hold ``<work>.lock`` while one run is checked, trained and stored; wait (with a message) while
    another process holds it. The operating system releases the lock of a killed process."""
    work.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(work.with_name(work.name + ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        bar.write(f"{who}: another process is running it in {work.parent}; waiting for it to finish",
                  file=sys.stderr)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def interrupted_run(work: Path, key: str) -> Path | None:
    """The newest ``-last.pth`` of an interrupted run of configuration ``key`` in ``work``, to continue
    from (exact resume: a rerun loses no finished epoch); None when there is none or the folder holds
    another configuration's run (then it is started over)."""
    marker = work / RUN_KEY
    if not marker.is_file() or marker.read_text(encoding="utf-8").strip() != key:
        return None
    return newest_last_checkpoint(work / "saved")


def _check_protocol(who: str, run: dict[str, Any], ctx: EvalContext) -> None:
    if run["protocol"] != ctx.protocol:
        raise ComparisonConfigError(f"{who} ran with protocol={run['protocol']!r} but the comparison evaluates with "
                                    f"{ctx.protocol!r}; set 'protocol' in the shared overrides only")


def _brief(metrics: dict[str, float], comparison: ComparisonConfig) -> str:
    k = comparison.evaluation.group_k
    return f"Recall@{k} {metrics[f'recall@{k}']:.4f}, NDCG@{k} {metrics[f'ndcg@{k}']:.4f}"


# -- parallel runs -------------------------------------------------------------------------------
def _run_parallel(comparison, out, runs, keys, teacher, executed, bar, jobs: int) -> None:
    """The (arm, seed) runs not stored yet, in ``jobs`` spawned worker processes.

    Each worker gets ``auto`` = its share of the CPUs as its thread count (explicit ``threads``
    settings still win). Every run is attempted; failures are raised together afterwards, each
    named by arm and seed, while the runs that finished stay stored.
    """
    pending = []
    for arm, seed in runs:
        json_path, npz_path, _ = arm_paths(out, arm.name, seed)
        if is_done(json_path, npz_path, keys[(arm.name, seed)][0]):
            bar.write(f"{arm.name} seed {seed}: reused", file=sys.stderr)
            bar.update(1)
        else:
            pending.append((arm, seed))
    if not pending:
        return
    threads = resolve_threads("auto", jobs=jobs)
    bar.write(f"running {len(pending)} runs in {min(jobs, len(pending))} processes, {threads} torch thread(s) each",
              file=sys.stderr)
    done, failures = set(), []
    with ProcessPoolExecutor(max_workers=min(jobs, len(pending)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(threads, os.getpid())) as pool:
        futures: dict[Future[bool], tuple[str, int]] = {}
        for arm, seed in pending:
            key, content = keys[(arm.name, seed)]
            futures[pool.submit(_worker_run, comparison, out, arm, seed, key, content, teacher)] = (arm.name, seed)
        for future in as_completed(futures):
            name, seed = futures[future]
            try:
                if future.result():
                    done.add((name, seed))
            except Exception as exc:  # any failure of one run: reported with its arm and seed
                failures.append(f"{name} seed {seed}: {type(exc).__name__}: {exc}")
                logger.error(f"{name} seed {seed} failed:\n" + "".join(traceback.format_exception(exc)))
                bar.write(f"{name} seed {seed}: FAILED ({type(exc).__name__}: {exc})", file=sys.stderr)
            bar.update(1)
    executed += [{"arm": arm.name, "seed": seed} for arm, seed in pending if (arm.name, seed) in done]
    if failures:
        raise RunFailedError(f"{len(failures)} of {len(pending)} runs failed:\n  " + "\n  ".join(failures)
                             + f"\nthe finished runs are stored in {out}; rerun the command to retry the rest")


#: A worker's evaluation context, built on its first run and reused for the next ones.
_WORKER_CONTEXT: dict[str, EvalContext] = {}
#: The comparison process that started this worker (None outside workers).
_PARENT_PID: list[int] = []


def _init_worker(threads: int, parent_pid: int | None = None) -> None:
    """Make ``threads`` this worker's ``auto`` thread count (``OMP_NUM_THREADS`` caps ``auto``) and set it."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    apply_threads(threads)
    if parent_pid is not None:
        _PARENT_PID[:] = [parent_pid]


def _parent_gone() -> bool:
    """True in a worker whose comparison process has exited (killed): its queued runs are dropped."""
    return bool(_PARENT_PID) and os.getppid() != _PARENT_PID[0]


class _Echo:
    """Stands in for the progress bar in a worker: its messages go straight to stderr."""

    @staticmethod
    def write(text: str, file=None) -> None:
        print(text, file=file or sys.stderr, flush=True)


def _worker_run(comparison, out, arm, seed, key, content, teacher) -> bool:
    """One (arm, seed) run in a worker process; True when it trained (False: stored already, or orphaned)."""
    if _parent_gone():
        return False
    if "ctx" not in _WORKER_CONTEXT:
        _WORKER_CONTEXT["ctx"] = build_eval_context(comparison)
    executed: list[dict[str, Any]] = []
    _ensure_arm(comparison, out, _WORKER_CONTEXT["ctx"], arm, seed, key, content, teacher, executed, _Echo())
    return bool(executed)
