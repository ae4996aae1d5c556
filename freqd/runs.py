"""The run layer: ``train`` (one model, RecBole's pipeline: the ``run_recbole`` twin) and ``distill``
(a frozen teacher into a new student), each writing its ``results.json``; ``setup`` and
``build_model`` are the shared steps the comparison, export and benchmarks reuse.

Never imports ``recbole.quick_start`` (it imports ray, which breaks on setuptools >= 82 and
numpy 2).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from recbole.data import create_dataset
from recbole.utils import init_logger, init_seed

from freqd.config import Config, yaml_settings
from freqd.core_settings import check_consistency
from freqd.datasets.loading import dataset_config, dataset_fingerprint
from freqd.evaluation import build_dataloaders
from freqd.evaluation.protocol import n_real_users
from freqd.io import atomic_write_json, sweep_orphans, to_jsonable
from freqd.models import get_model
from freqd.threads import apply_threads
from freqd.trainers import Trainer
from freqd.version import __version__

logger = logging.getLogger(__name__)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _versions() -> dict[str, str]:
    import recbole
    import torch_geometric

    return {
        "freqd": __version__,
        "recbole": recbole.__version__,
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
        "numpy": np.__version__,
    }


def data_settings(config_file_list) -> dict[str, Any]:
    """The keys of the YAML config files that decide which data to load (later files win)."""
    merged = yaml_settings(config_file_list)
    return {k: merged[k] for k in ("dataset", "data_path", "split_seed") if k in merged}


def setup(model, dataset, config_file_list, config_dict, kd: str | None = None):
    """Config, dataset and loaders, seeded exactly as ``run_recbole`` does.

    The dataset is the explicit argument, else ``dataset`` from config_dict, else from the config
    files, else ml-100k; ``data_path``/``split_seed`` from the files are honoured when preparing it.
    With ``split_seed`` set, RecBole's own random splits (ml-100k's ``RS``) are drawn with it instead
    of ``seed``, so runs with different seeds share one split (the multi-seed comparison needs that).
    The ``threads`` key is resolved and applied before RecBole loads the data; the config then holds
    the count set. ``kd`` layers that distiller's defaults (:class:`freqd.Config`).
    """
    for file in config_file_list or []:
        if not Path(file).is_file():
            raise FileNotFoundError(f"config file not found: {file}")
    config_dict = {**data_settings(config_file_list), **(config_dict or {})}
    dataset = dataset or config_dict.get("dataset") or "ml-100k"
    config_dict = dataset_config(dataset, config_dict)
    config = Config(model=get_model(model), dataset=dataset, config_file_list=config_file_list, config_dict=config_dict,
                    kd=kd)
    check_consistency(config.final_config_dict, "the run's settings")  # valid_metric: before any data
    _check_group(config)
    config["threads"] = apply_threads(config["threads"])
    split_seed = config["split_seed"]
    init_seed(config["seed"] if split_seed is None else int(split_seed), config["reproducibility"])
    # RecBole creates ./log/<model> with a check-then-mkdir that races between ranks started together.
    Path("log", config["model"]).mkdir(parents=True, exist_ok=True)
    init_logger(config)
    for orphan in sweep_orphans(config["checkpoint_dir"], config["results_dir"]):
        logger.info(f"removed {orphan}: a temporary of a write killed mid-way")
    data = create_dataset(config)
    logger.info(data)
    return config, data, build_dataloaders(config, data)


def _check_group(config) -> None:
    """In a process group of several ranks, the settings data-parallel training needs."""
    from freqd.datasets.train_loader import train_sampler_choice
    from freqd.distributed import current_shard

    if current_shard().world > 1 and train_sampler_choice(config) != "fast":
        raise ValueError(f"nproc > 1 needs train_sampler: fast (each rank takes its part of every batch), got "
                         f"train_sampler: {train_sampler_choice(config)}")


def build_model(config, train_data, model: str | type | None = None):
    """The model (``model``, else the config's name) on the training split, seeded like RecBole."""
    init_seed(config["seed"], config["reproducibility"])
    net = get_model(model or config["model"])(config, train_data._dataset).to(config["device"])
    logger.info(f"{config['model']}: {count_parameters(net):,} trainable parameters")
    return net


def model_width(config, net=None) -> int | None:
    """The width of the model's tables: ``embedding_size``, or a code student's bit count; from the
    built ``net`` when given, else from the configured class (a class freqd cannot name: the key)."""
    if net is not None:
        return getattr(net, "embedding_size", config["embedding_size"])
    try:
        table_width = getattr(get_model(config["model"]), "table_width", None)
    except ValueError:  # your own model class, passed as a class: not in freqd's registry
        table_width = None
    return table_width(config) if table_width is not None else config["embedding_size"]


def new_run_dir(config, tag: str = "") -> Path:
    name = f"{config['model']}{tag}-{config['dataset']}-d{model_width(config)}-s{config['seed']}"
    return Path(config["results_dir"]) / f"{name}-{datetime.now():%Y%m%d-%H%M%S-%f}"


def run_metadata(config, net, data, train_data) -> dict[str, Any]:
    return {
        "model": config["model"],
        "dataset": config["dataset"],
        "n_users": net.n_users,
        "n_items": net.n_items,
        "n_real_users": n_real_users(data),
        "embedding_size": model_width(config, net),
        "data_fingerprint": dataset_fingerprint(train_data._dataset),
        "protocol": config["protocol"],
    }


def _fit_and_report(config, trainer, net, loaders, run_dir: Path, saved: bool, resume: str | None,
                    extra: dict[str, Any] | None = None, evaluate_test: bool = True,
                    on_evaluation: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Fit, evaluate the best checkpoint on test (unless ``evaluate_test`` is False: then
    ``test_result`` is None), write results.json; return the result dict."""
    train_data, valid_data, test_data = loaders
    if resume:
        trainer.resume_checkpoint(resume)
    trainer.on_evaluation = on_evaluation
    show_progress = bool(config["show_progress"])
    best_valid_score, best_valid_result = trainer.fit(train_data, valid_data, saved=saved, show_progress=show_progress)
    test_result = None
    if evaluate_test:
        test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=show_progress)
    logger.info(f"best valid: {best_valid_result}")
    logger.info(f"test result: {test_result}")
    history = trainer.history
    train_seconds = [r["train_seconds"] for r in history]
    valid_seconds = [r["valid_seconds"] for r in history if "valid_seconds" in r]
    result = {
        "model": config["model"],
        "dataset": config["dataset"],
        "protocol": config["protocol"],
        "seed": config["seed"],
        "embedding_size": model_width(config, net),
        "n_parameters": count_parameters(net),
        "threads": config["threads"],
        **(extra or {}),
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "epochs_run": len(history),
        "best_epoch": trainer.best_epoch,
        "converged": trainer.converged(),
        "valid_smoothing": trainer.valid_smoothing,
        "train_seconds_per_epoch": float(np.mean(train_seconds)) if train_seconds else None,
        "valid_seconds_per_eval": float(np.mean(valid_seconds)) if valid_seconds else None,
        "checkpoint": trainer.saved_model_file if saved else None,
        "run_dir": str(run_dir),
        "config": {k: config[k] for k in sorted(config.final_config_dict) if k != "device"},
        "versions": _versions(),
    }
    result = to_jsonable(result)
    atomic_write_json(run_dir / "results.json", result)
    trainer.discard_last_checkpoint()
    return result


def train(
    model: str | type,
    dataset: str | None = None,
    config_file_list: list[str] | None = None,
    config_dict: dict[str, Any] | None = None,
    saved: bool = True,
    resume: str | None = None,
    evaluate_test: bool = True,
    on_evaluation: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``dataset`` (default: the config's, else ml-100k), evaluate the best checkpoint on test.

    Returns ``run_recbole``'s dict (best_valid_score, valid_score_bigger, best_valid_result,
    test_result) plus the run's bookkeeping (checkpoint, results files, sizes, timings), and
    writes it to ``<results_dir>/<run name>/results.json`` next to ``metrics.csv``.
    ``evaluate_test=False`` never touches the test set (tuning); ``on_evaluation(epoch, score)``
    is called after every validation (:attr:`Trainer.on_evaluation`).
    """
    several = _several_processes("train", {"model": model, "dataset": dataset, "config_file_list": config_file_list,
                                           "config_dict": config_dict, "saved": saved, "resume": resume,
                                           "evaluate_test": evaluate_test})
    if several is not None:
        return several
    config, data, loaders = setup(model, dataset, config_file_list, config_dict)
    full_train, (loaders, coreset) = loaders[0], _with_coreset(config, loaders)
    net = build_model(config, loaders[0], model)
    fold_in = _coreset_fold_in(config, net, full_train, loaders[0], coreset)
    run_dir = new_run_dir(config)
    metadata = {**run_metadata(config, net, data, full_train), **coreset}
    trainer = Trainer(config, net, metadata=metadata, metrics_path=run_dir / "metrics.csv")
    trainer.fold_in = fold_in
    return _fit_and_report(config, trainer, net, loaders, run_dir, saved, resume, coreset, evaluate_test=evaluate_test,
                           on_evaluation=on_evaluation)


def _several_processes(kind: str, kwargs: dict[str, Any], plain_student: bool = True) -> dict[str, Any] | None:
    """The ``train``/``distill`` run ``kwargs`` on several processes when its settings ask for them
    (:func:`group_settings`) or ``torchrun`` started this process; None for a one-process run."""
    from freqd.distributed import join_launcher_group

    settings = {**yaml_settings(kwargs["config_file_list"]), **(kwargs["config_dict"] or {})}
    group = group_settings(settings)
    joined = group is None and join_launcher_group(group_backend(settings) == "nccl")
    if group is None and not joined:
        return None
    if not plain_student:
        raise ValueError("several processes: the student must be a model name (the ranks are new processes)")
    return launch(kind, group, **kwargs) if group is not None else _rank_run(kind, kwargs) or {}


def group_settings(settings: dict[str, Any]) -> dict[str, Any] | None:
    """RecBole's multi-process keys (``nproc``, ``world_size``, ``ip``, ``port``, ``offset``) of a run's
    merged file and override ``settings``, with the backend; None for one process (``nproc`` 1 and
    no wider ``world_size``) or inside a process group already."""
    from freqd.distributed import current_shard

    nproc = int(settings.get("nproc") or 1)
    world = int(settings.get("world_size") or -1)
    world = nproc if world <= 0 else world
    if current_shard().world > 1 or (nproc == 1 and world == 1):
        return None
    if nproc < 1:
        raise ValueError(f"nproc must be at least 1, got {nproc}")
    # One machine and no address asked for: no port (launch meets in a fresh folder), so groups started
    # together (``freqd compare --jobs 2 --nproc=2``) never share one.
    local = world == nproc and not settings.get("ip") and not settings.get("port")
    return {"nproc": nproc, "world_size": world, "ip": str(settings.get("ip") or "localhost"),
            "port": None if local else int(settings.get("port") or 5678), "offset": int(settings.get("offset") or 0),
            "backend": group_backend(settings)}


def group_backend(settings: dict[str, Any]) -> str:
    """``nccl`` when ``use_gpu`` (default True) and a CUDA device is present, else ``gloo``."""
    wanted = str(settings.get("use_gpu", True)).strip().lower() not in ("false", "0", "no", "none", "")
    return "nccl" if wanted and torch.cuda.is_available() else "gloo"  # ``--use_gpu=False`` is the string "False"


def launch(kind: str, group: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """``train``/``distill`` (``kind``) data-parallel on ``group["nproc"]`` spawned processes; rank 0's result
    (when rank 0 runs on another machine: a note saying so). Processes started by ``torchrun`` join its
    group instead and run the same way; there the ranks other than 0 return an empty dict.

    RecBole 1.2.1's own multi-process path initialises NCCL on CUDA devices only, so freqd starts the
    group itself from the same keys: ``gloo`` on CPUs, ``nccl`` with ``use_gpu`` on CUDA; ranks
    ``offset`` … ``offset + nproc − 1`` of ``world_size`` meet at ``tcp://ip:port`` (default port 5678), or,
    on one machine with neither ``ip`` nor ``port`` set, in a fresh temporary folder. Each rank builds
    the same model from the same seed, takes its part of every batch (the fast loader), averages
    gradients before each step and evaluates its share of the users, so all ranks hold identical
    parameters and metrics. Rank 0 writes the checkpoints, metrics and results as one process would;
    the other ranks write theirs to a temporary folder that is removed afterwards.
    """
    import tempfile

    from freqd.distributed import spawn_group

    def run(init_method: str) -> dict[int, Any]:
        return spawn_group(_rank_run, group["nproc"], (kind, kwargs), init_method=init_method,
                           backend=group["backend"], world_size=group["world_size"], offset=group["offset"])

    if group["port"] is None:
        with tempfile.TemporaryDirectory(prefix="freqd-group-") as folder:
            results = run(f"file://{folder}/rendezvous")
    else:
        results = run(f"tcp://{group['ip']}:{group['port']}")
    if 0 not in results:
        return {"rank": group["offset"], "note": "rank 0 runs on another machine and writes the results"}
    return results[0]


def _rank_run(kind: str, kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """One rank of :func:`launch`: the run itself on rank 0; elsewhere the same run, its files in a temporary
    folder and its log quiet."""
    import shutil
    import tempfile

    from freqd.distributed import current_shard

    rank = current_shard().rank
    run = train if kind == "train" else distill
    if rank == 0:
        return run(**kwargs)
    folder = tempfile.mkdtemp(prefix=f"freqd-rank{rank}-")
    try:
        quiet = {"checkpoint_dir": f"{folder}/saved", "results_dir": f"{folder}/runs", "show_progress": False,
                 "state": "ERROR"}
        run(**{**kwargs, "config_dict": {**(kwargs.get("config_dict") or {}), **quiet}})
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return None


def _with_coreset(config, loaders) -> tuple[tuple, dict[str, Any]]:
    """The loaders with the training split restricted to ``coreset``'s users or replaced by ``train_pairs``
    (if set), and what the run records.

    The model's recorded data fingerprint stays the full split's: a teacher trained on a coreset of
    a split (or on pairs made from it) distils on that split.
    """
    if config["train_pairs"]:
        if config["coreset"]:
            raise ValueError("coreset and train_pairs both replace the training split: set one of them")
        from freqd.datasets.train_pairs import replace_training
        from freqd.io import file_sha256

        train_data, record = replace_training(loaders[0], config, config["train_pairs"])
        logger.info(f"train_pairs {config['train_pairs']}: {record['n_pairs']} training interactions")
        note = {"file": str(config["train_pairs"]), "sha256": file_sha256(Path(config["train_pairs"])),
                "interactions": record["n_pairs"], **({"note": record["note"]} if "note" in record else {})}
        return (train_data, *loaders[1:]), {"train_pairs": note}
    if not config["coreset"]:
        return loaders, {}
    from freqd.coreset.files import coreset_note, restrict_training

    train_data, record = restrict_training(loaders[0], config, config["coreset"])
    n_interactions = len(train_data._dataset.inter_feat)
    logger.info(f"coreset {config['coreset']}: {record['budget']} of {record['n_units']} users, "
                f"{n_interactions} training interactions")
    return (train_data, *loaders[1:]), {"coreset": coreset_note(config["coreset"], record, n_interactions)}


def _coreset_fold_in(config, net, full_train, train_data, coreset: dict[str, Any]):
    """The :class:`~freqd.coreset.fold_in.FoldIn` of a run on a coreset (``coreset_fold_in``), or None;
    the run's coreset note records how many users it folds in."""
    if not config["coreset"]:
        return None
    from freqd.coreset.fold_in import fold_in_for

    kept = torch.unique(train_data._dataset.inter_feat[train_data._dataset.uid_field])
    fold_in = fold_in_for(config["coreset_fold_in"], net, full_train._dataset, kept)
    coreset["coreset"]["folded_in_users"] = fold_in.n_users if fold_in is not None else 0
    if fold_in is not None:
        logger.info(f"coreset: {fold_in.n_users} users outside it folded in (the mean of their training items)")
    return fold_in


def distill(
    teacher: str,
    student: str | type = "BPR",
    kd: str = "FreqD",
    dataset: str | None = None,
    config_file_list: list[str] | None = None,
    config_dict: dict[str, Any] | None = None,
    saved: bool = True,
    resume: str | None = None,
    evaluate_test: bool = True,
    on_evaluation: Callable[[int, float], None] | None = None,
    student_tables: Callable | None = None,
) -> dict[str, Any]:
    """Distil the frozen teacher checkpoint ``teacher`` into a new ``student`` with distiller ``kd``.

    ``student`` is a freqd model name or any RecBole ``GeneralRecommender`` class (stock RecBole
    BPR, your own model), made a student by :func:`freqd.models.adapt` (its ``user_embedding`` /
    ``item_embedding`` tables, or what ``student_tables(model)`` returns). ``evaluate_test`` and
    ``on_evaluation`` as in :func:`train`.

    The dataset defaults to the teacher's. The teacher is checked against the data before any
    training (:func:`freqd.checkpoints.load_teacher`); whether its training split was verified
    exactly (a freqd fingerprint) or only by its settings (a stock RecBole checkpoint) is recorded
    as ``teacher_split_verified`` (and ``teacher_split_note``) in the result and the student's
    checkpoint. The student's checkpoint holds the student alone and serves like any BPR/LightGCN
    checkpoint.
    """
    from freqd.checkpoints import load_checkpoint, load_teacher
    from freqd.distillers import get_distiller
    from freqd.trainers import DistillTrainer

    several = _several_processes("distill", {"teacher": teacher, "student": student, "kd": kd, "dataset": dataset,
                                             "config_file_list": config_file_list, "config_dict": config_dict,
                                             "saved": saved, "resume": resume, "evaluate_test": evaluate_test},
                                 plain_student=isinstance(student, str) and student_tables is None)
    if several is not None:
        return several
    distiller_cls = get_distiller(kd)
    # Read the (possibly large) teacher checkpoint once: for its dataset and to build the teacher.
    checkpoint = load_checkpoint(teacher, map_location="cpu")
    if dataset is None:
        dataset = checkpoint["config"]["dataset"]
    config, data, loaders = setup(student, dataset, config_file_list, config_dict, kd=kd)
    teacher_model = load_teacher(teacher, config, loaders[0]._dataset, checkpoint=checkpoint)
    full_train, (loaders, coreset) = loaders[0], _with_coreset(config, loaders)
    kd_users = None
    if config["kd_coreset"]:
        from freqd.coreset.files import coreset_note, read_selection

        kd_users, record = read_selection(config["kd_coreset"], full_train._dataset, key="kd_coreset")
        coreset["kd_coreset"] = coreset_note(config["kd_coreset"], record)
    from freqd.models import adapt

    net = adapt(build_model(config, loaders[0], student), student_tables)
    fold_in = _coreset_fold_in(config, net, full_train, loaders[0], coreset)
    setup_start = time.perf_counter()
    distiller = distiller_cls(config, teacher_model, net, loaders[0]._dataset)
    setup_seconds = time.perf_counter() - setup_start
    run_dir = new_run_dir(config, tag=f"-{distiller_cls.name}")
    teacher_info = {"teacher": str(teacher), "teacher_model": teacher_model.__class__.__name__,
                    "teacher_embedding_size": teacher_model.embedding_size,
                    "teacher_split_verified": teacher_model.split_verified,
                    "teacher_split_note": teacher_model.split_note}
    metadata = {**run_metadata(config, net, data, full_train), "kd": distiller_cls.name, **teacher_info, **coreset}
    trainer = DistillTrainer(config, net, distiller, metadata=metadata, metrics_path=run_dir / "metrics.csv",
                             kd_users=kd_users)
    trainer.fold_in = fold_in
    extra = {"kd": distiller_cls.name, "kd_weight": config["kd_weight"], "kd_setup_seconds": setup_seconds,
             **teacher_info, **coreset}
    return _fit_and_report(config, trainer, net, loaders, run_dir, saved, resume, extra, evaluate_test=evaluate_test,
                           on_evaluation=on_evaluation)


def select_coreset(
    teacher: str,
    out: str | Path,
    budget: int | float,
    dataset: str | None = None,
    config_file_list: list[str] | None = None,
    config_dict: dict[str, Any] | None = None,
    solver: str = "infomax",
    alpha: float = 1.0,
    importance: str = "difficulty",
    similarity: str = "cosine",
    knn: int = 10,
    student: str | None = None,
    topk: int = 20,
    method: str = "frank_wolfe",
    iters: int = 50,
    partitions: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Choose the users to keep with a trained ``teacher`` and write the selection file ``out``.

    Importance: the teacher's per-user BPR difficulty, (with a ``student`` checkpoint, e.g. an
    early student) the teacher–student top-``topk`` disagreement, or the user's number of training
    items (``activity``), rank-normalised; similarity: kNN
    cosine of the teacher's user tables or Jaccard of histories, ``knn`` neighbours; then
    :func:`freqd.coreset.select`. The file records the dataset, the split fingerprint, the teacher's
    sha256 and every setting; ``freqd train --coreset`` / ``freqd distill --kd_coreset`` read it.
    """
    from freqd.checkpoints import load_checkpoint, load_teacher
    from freqd.coreset import objective, rank_normalise, select
    from freqd.coreset import signals as sig
    from freqd.coreset.files import write_selection
    from freqd.io import file_sha256

    start = time.perf_counter()
    checkpoint = load_checkpoint(teacher, map_location="cpu")
    stored = checkpoint["config"]
    dataset = dataset or stored["dataset"]
    settings = {**{k: stored[k] for k in ("split_seed", "seed") if stored[k] is not None}, **(config_dict or {})}
    config, _, (train_data, _, _) = setup(stored["model"], dataset, config_file_list, settings)
    train = train_data._dataset
    model = load_teacher(teacher, config, train, checkpoint=checkpoint)
    users, items = model.cached_embeddings()
    if importance == "difficulty":
        scores = sig.difficulty(users, items, train, seed=seed)
    elif importance == "disagreement":
        if student is None:
            raise ValueError("importance='disagreement' needs a student checkpoint (--student)")
        early = load_teacher(student, config, train)
        scores = sig.disagreement((users, items), early.cached_embeddings(), train, k=topk)
    elif importance == "activity":
        scores = sig.activity(train)
    else:
        raise ValueError(f"importance must be one of {sig.IMPORTANCES}, got {importance!r}")
    sims = sig.similarity(similarity, users, train, knn)  # type: ignore[arg-type]
    features = users[1:].double().cpu().numpy() if solver == "kcenter" else None
    keep = select(rank_normalise(scores), sims, budget, alpha=alpha, solver=solver, method=method,  # type: ignore[arg-type]
                  iters=iters, partitions=partitions, features=features, seed=seed)
    meta = {"solver": solver, "method": method, "alpha": alpha, "importance": importance, "similarity": similarity,
            "knn": knn, "iters": iters, "partitions": partitions, "seed": seed,
            "objective": objective(keep, rank_normalise(scores), sims, alpha),
            "teacher": str(teacher), "teacher_sha256": file_sha256(Path(teacher)),
            "student_sha256": file_sha256(Path(student)) if student else None,
            "seconds": time.perf_counter() - start, "freqd_version": __version__}
    return write_selection(out, train, keep + 1, meta)
