"""Full-sort top-20 evaluation throughput (users/s) at d = 20 and d = 300, against a student epoch.

On a random sample of test users (``--users``), for each embedding size and each chunk size (users
scored at once; RecBole's is ``eval_batch_size // n_items``, the dataset YAML's value is always
included), times:

* ``recbole``: ``Trainer.evaluate`` on a RecBole ``FullSortEvalDataLoader`` (Recall/NDCG@20),
  the path freqd runs today; only evaluation is timed;
* ``fullsort``: :func:`freqd.evaluation.fullsort.full_sort_evaluate`, the same metrics from the
  same loader with one reused score buffer and no dense positive matrix;
* ``plain``: ``scores = U[chunk] @ I.T``, padding and history items set to -inf, ``torch.topk(scores, 20)``,
  with the masks' indices prepared beforehand: the floor for ranking in torch.

Also measured, in the same interleaved repeats: memory bandwidth, as ``2 × bytes / seconds`` for
``dst.copy_(src)`` of two 256 MiB float32 tensors (read + write), giving the bound
``bandwidth / (n_items × d × 4 B)`` users/s of streaming the item table once per user; and one
BPR d = 20 training epoch (``Trainer._train_epoch`` over RecBole's training loader), so that
a validation pass over all validation users can be set against ``eval_step`` epochs of training.
Every repeat runs all arms in a fresh random order; medians are reported. The recbole and fullsort
arms must give identical metrics, and plain and fullsort identical top-20 lists.

    OMP_NUM_THREADS=1 python benchmarks/bench_eval.py --teacher saved/BPR-teacher-d300.pth \\
        --out benchmarks/results/eval-gowalla.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's freqd, not another installed one

from freqd.checkpoints import load_checkpoint  # noqa: E402
from freqd.compat import silence_known_warnings  # noqa: E402
from freqd.evaluation.fullsort import chunk_users, full_sort_evaluate, per_user_csr, rank_topk  # noqa: E402
from freqd.models import get_model  # noqa: E402
from freqd.runs import setup  # noqa: E402
from freqd.trainers import Trainer  # noqa: E402

K = 20


@contextmanager
def settings(config, **values):
    """Temporarily override config entries."""
    saved = {key: config[key] for key in values}
    for key, value in values.items():
        config[key] = value
    try:
        yield
    finally:
        for key, value in saved.items():
            config[key] = value


def sample_loader(config, test, n_users: int, chunk: int, seed: int = 0):
    """A full-sort loader over ``n_users`` random test users, ``chunk`` users per batch, the test masks."""
    from recbole.data.dataloader import FullSortEvalDataLoader

    dataset = test._dataset
    chosen = np.random.default_rng(seed).choice(test.uid_list.numpy(), min(n_users, len(test.uid_list)), replace=False)
    keep = torch.from_numpy(np.isin(dataset.inter_feat[dataset.uid_field].numpy(), chosen))
    with settings(config, eval_batch_size=chunk * dataset.item_num):
        return FullSortEvalDataLoader(config, dataset.copy(dataset.inter_feat[keep]), test._sampler)


def plain_topk(user_all, item_all, users, mask_rows, mask_items, mask_ptr, chunk: int) -> torch.Tensor:
    """The plain loop: per chunk, scores by matmul, masked entries to -inf, ``torch.topk``."""
    ranked = []
    for start in range(0, len(users), chunk):
        stop = min(start + chunk, len(users))
        scores = user_all[users[start:stop]] @ item_all.T
        scores[:, 0] = -torch.inf
        lo, hi = mask_ptr[start], mask_ptr[stop]
        scores[mask_rows[lo:hi] - start, mask_items[lo:hi]] = -torch.inf
        ranked.append(torch.topk(scores, K, dim=1).indices)
    return torch.cat(ranked)


def copy_bandwidth(n_bytes: int = 256 << 20) -> float:
    """Bytes/s moved by one large float32 ``copy_`` (read + write counted), best of 3."""
    src = torch.ones(n_bytes // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(3):
        begin = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - begin)
    return 2 * n_bytes / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="gowalla")
    parser.add_argument("--dataset-config", default=None, help="dataset YAML (default configs/dataset/<dataset>.yaml)")
    parser.add_argument("--data-path", default=None, help="folder holding <dataset>/ atomic files")
    parser.add_argument("--teacher", default=None, help="d=300 BPR checkpoint on the same split (default: random init)")
    parser.add_argument("--users", type=int, default=2048, help="test users sampled for the timed evaluations")
    parser.add_argument("--chunks", type=int, nargs="*", default=[16, 64, 1024], help="users per chunk (YAML's added)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    wall = time.perf_counter()
    torch.set_num_threads(args.threads)
    silence_known_warnings()
    dataset_config = Path(args.dataset_config or ROOT / f"configs/dataset/{args.dataset}.yaml")
    config_dict = {"show_progress": False, "state": "ERROR", "use_gpu": False, "embedding_size": 20,
                   "metrics": ["Recall", "NDCG"], "topk": [K], "checkpoint_dir": tempfile.mkdtemp(prefix="bench-eval-")}
    if args.data_path:
        config_dict["data_path"] = args.data_path
    config, _, (train, valid, test) = setup("BPR", args.dataset, [str(dataset_config)], config_dict)
    n_items = test._dataset.item_num
    yaml_chunk = int(config["eval_batch_size"]) // n_items
    chunks = sorted({*args.chunks, yaml_chunk, *(chunk_users(config, n_items, dim) for dim in (20, 300))})
    loaders = {chunk: sample_loader(config, test, args.users, chunk) for chunk in chunks}
    sample = loaders[chunks[0]]
    users = sample.uid_list
    mask_rows, mask_items, mask_ptr = per_user_csr(sample.uid2history_item[users.numpy()], "cpu")

    model_cls = get_model("BPR")
    trainers = {}
    for dim in (20, 300):
        with settings(config, embedding_size=dim):
            torch.manual_seed(0)
            model = model_cls(config, train._dataset)
        if dim == 300 and args.teacher:
            model.load_state_dict(load_checkpoint(args.teacher)["state_dict"])
        trainers[dim] = Trainer(config, model)
    torch.manual_seed(0)
    epoch_trainer = Trainer(config, model_cls(config, train._dataset))

    def recbole_arm(dim, chunk):
        return trainers[dim].evaluate(loaders[chunk], load_best_model=False)

    def fullsort_arm(dim, chunk):
        with settings(config, eval_chunk_users=chunk, eval_batch_size=chunk * n_items):
            return full_sort_evaluate(trainers[dim], loaders[chunk])

    def plain_arm(dim, chunk):
        model = trainers[dim].model
        model.eval()
        user_all, item_all = model.cached_embeddings()
        return plain_topk(user_all, item_all, users, mask_rows, mask_items, mask_ptr, chunk)

    arms = [(kind, dim, chunk) for dim in (20, 300) for chunk in chunks for kind in ("recbole", "fullsort", "plain")]
    arms += [("epoch", 20, None), ("bandwidth", None, None)]
    seconds: dict[tuple, list[float]] = {arm: [] for arm in arms}
    outputs: dict[tuple, object] = {}
    bandwidths: list[float] = []
    run = {"recbole": recbole_arm, "fullsort": fullsort_arm, "plain": plain_arm}
    for repeat in range(args.repeats):
        for index in np.random.default_rng(repeat).permutation(len(arms)):
            arm = arms[index]
            kind, dim, chunk = arm
            begin = time.perf_counter()
            if kind == "epoch":
                epoch_trainer._train_epoch(train, repeat)
            elif kind == "bandwidth":
                bandwidths.append(copy_bandwidth())
            else:
                outputs[arm] = run[kind](dim, chunk)
            seconds[arm].append(time.perf_counter() - begin)

    n_valid = len(valid.uid_list)
    bandwidth = statistics.median(bandwidths)
    epoch_seconds = statistics.median(seconds[("epoch", 20, None)])
    eval_step = int(config["eval_step"])
    rows = []
    checks = {}
    for dim in (20, 300):
        default_chunk = chunk_users(config, n_items, dim)
        expected = outputs[("recbole", dim, yaml_chunk)]
        checks[f"d{dim}_metrics_identical"] = all(
            outputs[(kind, dim, chunk)] == expected for kind in ("recbole", "fullsort") for chunk in chunks)
        trainers[dim].model.eval()
        user_all, item_all = trainers[dim].model.cached_embeddings()
        ranked, _ = rank_topk(user_all, item_all, users, sample.uid2history_item[users.numpy()],
                              sample.uid2positive_item[users.numpy()], K, default_chunk)
        checks[f"d{dim}_plain_lists_identical"] = bool(torch.equal(ranked, outputs[("plain", dim, default_chunk)]))
        for chunk in chunks:
            for kind in ("recbole", "fullsort", "plain"):
                users_per_s = len(users) / statistics.median(seconds[(kind, dim, chunk)])
                rows.append({"d": dim, "arm": kind, "chunk_users": chunk, "users_per_s": users_per_s,
                             "seconds": seconds[(kind, dim, chunk)],
                             "valid_pass_seconds": n_valid / users_per_s,
                             "yaml_chunk": chunk == yaml_chunk, "fullsort_default_chunk": chunk == default_chunk})
    bounds = {dim: bandwidth / (n_items * dim * 4) for dim in (20, 300)}
    report = {
        "dataset": args.dataset,
        "dataset_config": dataset_config.name,
        "teacher_d300": Path(args.teacher).name if args.teacher else "random init",
        "n_items": n_items,
        "timed_users": len(users),
        "valid_users": n_valid,
        "threads": args.threads,
        "repeats": args.repeats,
        "topk": K,
        "yaml_eval_batch_size": int(config["eval_batch_size"]),
        "copy_bandwidth_gb_per_s": bandwidth / 1e9,
        "bandwidth_bound_users_per_s": {f"d{dim}": value for dim, value in bounds.items()},
        "student_epoch_seconds_d20": epoch_seconds,
        "student_epoch_seconds_d20_repeats": seconds[("epoch", 20, None)],
        "eval_step": eval_step,
        "training_seconds_between_evaluations": eval_step * epoch_seconds,
        "checks": checks,
        "metrics_on_sample": {f"d{dim}": dict(outputs[("recbole", dim, yaml_chunk)]) for dim in (20, 300)},
        "rows": rows,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "wall_seconds": time.perf_counter() - wall,
    }
    print(f"{args.dataset}: {n_items} items, {len(users)} timed users, {n_valid} validation users, "
          f"{args.threads} thread(s), median of {args.repeats}")
    print(f"{'d':>4} {'arm':9} {'chunk':>6} {'users/s':>9} {'valid pass s':>13}")
    for row in rows:
        tags = " (yaml)" * row["yaml_chunk"] + " (fullsort default)" * (row["arm"] == "fullsort" and row["fullsort_default_chunk"])
        print(f"{row['d']:>4} {row['arm']:9} {row['chunk_users']:>6} {row['users_per_s']:>9.0f} "
              f"{row['valid_pass_seconds']:>13.1f}{tags}")
    print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s -> bound "
          + ", ".join(f"d={dim}: {value:.0f} users/s" for dim, value in bounds.items()))
    print(f"student epoch (BPR d=20) {epoch_seconds:.2f} s; {eval_step} epochs between evaluations = "
          f"{eval_step * epoch_seconds:.1f} s; checks {checks}; wall {report['wall_seconds']:.0f} s")
    if args.out:
        from freqd.io import atomic_write_text

        atomic_write_text(args.out, json.dumps(report, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
