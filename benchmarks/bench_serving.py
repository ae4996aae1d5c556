"""Serving figures on Gowalla: export size against checkpoint size, and top-20 speed on one thread.

For each student width (``--dims``), a BPR student is trained for ``--epochs`` epochs with the
command line (``freqd train --model BPR --dataset gowalla --config configs/dataset/gowalla.yaml
--embedding_size=D --epochs=1 --train_sampler=fast --eval_step=1``; scoring speed does not depend
on how well the model is trained), exported with ``freqd export``'s function, and timed on the
same ``--users`` random test users, seen (training + validation) items excluded, top-20:

* ``recommender``: :meth:`freqd.serving.Recommender.top_k` from the export folder (NumPy + torch,
  its default block of users per matrix product, :func:`freqd.serving.default_batch_size`);
* ``torchscript``: the export's ``scorer.pt`` through ``torch.jit.load`` (same blocks);
* ``fullsort``: the in-package scorer, :func:`freqd.evaluation.fullsort.rank_topk` on the model's
  tables with the test loader's masks, as ``full_sort_evaluate`` runs it (its default chunk of
  users; it also marks the hits of each list, which evaluation needs and serving does not);
* ``recommender_1024``: ``Recommender.top_k`` with 1024-user blocks (throughput only), the
  default before blocks were sized by the width.

Throughput is users/s for one call over all sampled users (median of ``--repeats``, the arms in
a fresh random order each repeat); request latency is the median milliseconds of one call for a
single user (``--single`` users). The arms must return the same top-20 items (checked; rows with
tied scores may differ between ``fullsort``, whose ``torch.topk`` breaks ties arbitrarily, and the
exports, which take the smaller index; blocks of another size can change a score in its last bit).

    OMP_NUM_THREADS=1 python benchmarks/bench_serving.py --dims 20,300 \\
        --out benchmarks/results/serving-gowalla-2026-12-02.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's freqd, not another installed one

from freqd.checkpoints import load_checkpoint  # noqa: E402
from freqd.compat import silence_known_warnings  # noqa: E402
from freqd.evaluation.fullsort import chunk_users, rank_topk  # noqa: E402
from freqd.export import export_model, load_scorer  # noqa: E402
from freqd.models import get_model  # noqa: E402
from freqd.runs import setup  # noqa: E402
from freqd.serving import Recommender, default_batch_size  # noqa: E402

K = 20
DATASET_YAML = "configs/dataset/gowalla.yaml"


def train_student(dim: int, epochs: int, folder: Path, data_path: Path) -> tuple[Path, list[str], float]:
    """Train a BPR student with the command line in ``folder``; (checkpoint, command, seconds)."""
    command = ["freqd", "train", "--model", "BPR", "--dataset", "gowalla", "--config", DATASET_YAML,
               f"--embedding_size={dim}", f"--epochs={epochs}", "--train_sampler=fast", "--eval_step=1", "--threads=1",
               "--show_progress=False"]
    args = [sys.executable, "-m", "freqd", *command[1:]]
    args[args.index(DATASET_YAML)] = str(ROOT / DATASET_YAML)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run([*args, f"--data_path={data_path}"], cwd=folder, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"training d={dim} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("checkpoint:"))
    return folder / line.split(":", 1)[1].strip(), [*command, "--data_path=dataset"], time.perf_counter() - start


def timed(fn) -> float:
    """Seconds of one call of ``fn``."""
    begin = time.perf_counter()
    fn()
    return time.perf_counter() - begin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", default="20", help="comma-separated student widths")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--checkpoint", action="append", default=[], metavar="D=PTH",
                        help="use this trained Gowalla BPR checkpoint for width D instead of training one")
    parser.add_argument("--data-path", default=str(ROOT / "dataset"), help="folder of the prepared gowalla/ files")
    parser.add_argument("--users", type=int, default=4096, help="random test users per throughput call")
    parser.add_argument("--single", type=int, default=200, help="single-user requests timed per arm")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    wall = time.perf_counter()
    torch.set_num_threads(1)
    silence_known_warnings()
    dims = [int(d) for d in args.dims.split(",") if d]
    given = {int(item.split("=", 1)[0]): Path(item.split("=", 1)[1]) for item in args.checkpoint}
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    data_path = Path(args.data_path).resolve()
    quiet = {"show_progress": False, "state": "ERROR", "use_gpu": False, "data_path": str(data_path)}

    config, _, (train, _, test) = setup("BPR", "gowalla", [str(ROOT / DATASET_YAML)], quiet)
    n_items = test._dataset.item_num
    rng = np.random.default_rng(0)
    users_np = np.sort(rng.choice(test.uid_list.numpy(), min(args.users, len(test.uid_list)), replace=False))
    users = torch.from_numpy(users_np)
    history = test.uid2history_item[users_np]
    positives = test.uid2positive_item[users_np]
    single = users_np[: args.single]

    results = []
    for dim in dims:
        if dim in given:
            checkpoint, command, train_seconds = given[dim], None, None
        else:
            checkpoint, command, train_seconds = train_student(dim, args.epochs, work, data_path)
        out = work / f"export-d{dim}"
        card = export_model(checkpoint, out, config_file_list=[str(ROOT / DATASET_YAML)],
                            config_dict={"data_path": str(data_path)}, latency_users=0)
        rec = Recommender.load(out)
        scorer = load_scorer(out / "scorer.pt")
        config["embedding_size"] = dim
        model = get_model("BPR")(config, train._dataset)
        model.load_state_dict(load_checkpoint(checkpoint)["state_dict"])
        model.eval()
        user_all, item_all = model.cached_embeddings()
        chunk = chunk_users(config, n_items, dim)

        def fullsort(ids=users, hist=history, pos=positives):
            return rank_topk(user_all, item_all, ids, hist, pos, K, chunk)[0]

        def recommender(ids=users_np):
            return rec.top_k(ids, K)[0]

        def torchscript(ids=users):
            with torch.no_grad():
                return scorer(ids, K)[0]

        def recommender_1024(ids=users_np):
            return rec.top_k(ids, K, batch_size=1024)[0]

        arms = {"fullsort": fullsort, "recommender": recommender, "torchscript": torchscript,
                "recommender_1024": recommender_1024}
        lists = {name: np.asarray(fn()) for name, fn in arms.items()}  # also the warm-up
        seconds = {name: [] for name in arms}
        request_ms = {name: [] for name in arms if name != "recommender_1024"}
        for repeat in range(args.repeats):
            for index in np.random.default_rng(repeat).permutation(len(arms)):
                name = list(arms)[index]
                seconds[name].append(timed(arms[name]))
        for name in np.random.default_rng(99).permutation(list(request_ms)):
            for user in single:
                one = np.array([user])
                call = {"fullsort": lambda one=one: fullsort(torch.from_numpy(one), test.uid2history_item[one],
                                                              test.uid2positive_item[one]),
                        "recommender": lambda one=one: recommender(one),
                        "torchscript": lambda one=one: torchscript(torch.from_numpy(one))}[name]
                request_ms[name].append(1000 * timed(call))
        same = {f"{a}_vs_{b}": float(np.mean(np.all(lists[a] == lists[b], axis=1)))
                for a, b in (("recommender", "torchscript"), ("fullsort", "recommender"),
                             ("recommender", "recommender_1024"))}
        size = card["bytes"]
        results.append({
            "embedding_size": dim,
            "train_command": " ".join(command) if command else "given checkpoint",
            "train_epochs": args.epochs if command else None,
            "train_seconds": train_seconds,
            "bytes": {"checkpoint": size["source_checkpoint"], "model.safetensors": size["model.safetensors"],
                      "scorer.pt": size["scorer.pt"], "tokens.json": (out / "tokens.json").stat().st_size,
                      "tables_float32": size["tables_float32"]},
            "export_vs_checkpoint": size["model.safetensors"] / size["source_checkpoint"],
            "fullsort_chunk_users": chunk,
            "export_batch_users": default_batch_size(dim),
            "users_per_second": {name: len(users_np) / statistics.median(t) for name, t in seconds.items()},
            "seconds": seconds,
            "request_ms_median": {name: statistics.median(t) for name, t in request_ms.items()},
            "request_ms_p90": {name: float(np.percentile(t, 90)) for name, t in request_ms.items()},
            "identical_top20_rows": same,
        })
        row = results[-1]
        print(f"d={dim}: checkpoint {size['source_checkpoint'] / 1e6:.1f} MB, model.safetensors "
              f"{size['model.safetensors'] / 1e6:.1f} MB, scorer.pt {size['scorer.pt'] / 1e6:.1f} MB")
        for name in arms:
            request = (f"   one user: {row['request_ms_median'][name]:6.2f} ms (p90 {row['request_ms_p90'][name]:.2f})"
                       if name in request_ms else "")
            print(f"  {name:16} {row['users_per_second'][name]:8.0f} users/s{request}")
        print(f"  identical top-20 rows: {same}")
    report = {
        "benchmark": "serving: export size vs checkpoint, top-20 users/s and single-user latency of the export "
                     "(Recommender.top_k, TorchScript scorer.pt) vs the in-package full-sort scorer",
        "dataset": "gowalla",
        "dataset_config": DATASET_YAML,
        "n_users": int(len(rec.users) - 1),
        "n_items": int(n_items - 1),
        "timed_users": int(len(users_np)),
        "single_user_requests": int(len(single)),
        "k": K,
        "threads": 1,
        "repeats": args.repeats,
        "note": "students trained for a few epochs only: scoring speed depends on the table sizes, not on the "
                "model's quality; seen (training + validation) items excluded by every arm",
        "command": f"OMP_NUM_THREADS=1 python benchmarks/bench_serving.py --dims {args.dims} --epochs {args.epochs}",
        "machine": "shared 2-core CPU, no GPU, other jobs running",
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
        "wall_seconds": time.perf_counter() - wall,
        "results": results,
    }
    shutil.rmtree(work, ignore_errors=True)
    if args.out:
        from freqd.io import atomic_write_text

        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
