"""Per-step cost of BPR-MF at several sizes: dense fused Adam vs row-sparse tables (``sparse_embeddings``).

A BPR batch touches a few thousand rows of the tables, yet dense Adam rewrites every row each step;
with ``sparse_embeddings: True`` the tables get sparse gradients and a lazy row-wise Adam. For each
size, a dense and a sparse model (same initialisation, optimisers built by ``Trainer`` from the
same config) take a step on the same batches from RecBole's training loader, alternating so machine
noise hits both alike. Only the step is timed (zero_grad, forward, backward, optimiser), as wall time
and as the thread's CPU time (on a shared machine the wall time of short steps is inflated by waiting
for a core; with one thread, CPU time is the work done); the loader's wall time per batch is reported
apart. Epoch times are extrapolated as steps-per-epoch × median step, and every row is divided by the
d=20 dense epoch (the scratch student), so the d=300 rows read as "teacher epoch ÷ student epoch".

    python benchmarks/bench_teacher_speed.py --dataset gowalla --sizes 20 300 1000 --steps 20 \\
        --out benchmarks/results/teacher-speed-gowalla.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="gowalla")
    parser.add_argument("--dataset-config", default=None, help="dataset YAML (default configs/dataset/<dataset>.yaml)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 300, 1000])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per size and mode (after --warmup)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--weight-decay", type=float, default=5e-8, help="the Gowalla teacher's (configs/model)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if 20 not in args.sizes:
        parser.error("--sizes must include 20 (the scratch student, the denominator)")

    import numpy as np
    import torch

    from freqd.threads import apply_threads

    apply_threads(args.threads)  # as a run sets it: threads, subnormal flush, reuse of freed memory
    from freqd.compat import silence_known_warnings
    from freqd.models import get_model
    from freqd.runs import setup
    from freqd.trainers import Trainer

    silence_known_warnings()
    dataset_config = args.dataset_config
    if dataset_config is None and (ROOT / f"configs/dataset/{args.dataset}.yaml").is_file():
        dataset_config = str(ROOT / f"configs/dataset/{args.dataset}.yaml")
    settings = {"show_progress": False, "state": "ERROR", "use_gpu": False, "weight_decay": args.weight_decay,
                "learner": "adam"}
    config, _, (train_data, _, _) = setup("BPR", args.dataset, [dataset_config] if dataset_config else None, settings)
    train = train_data._dataset

    batches, loader_seconds = [], []
    iterator = iter(train_data)
    for _ in range(args.warmup + args.steps):
        begin = time.perf_counter()
        batches.append(next(iterator))
        loader_seconds.append(time.perf_counter() - begin)
    uid, iid, nid = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"], config["NEG_PREFIX"] + config["ITEM_ID_FIELD"]
    touched = [len(torch.unique(b[uid])) + len(torch.unique(torch.cat([b[iid], b[nid]]))) for b in batches]

    def build(size: int, sparse: bool):
        config["embedding_size"], config["sparse_embeddings"] = size, sparse
        torch.manual_seed(0)
        model = get_model("BPR")(config, train)
        return model, Trainer(config, model).optimizer

    def step(model, optimizer, batch) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.thread_time()
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
        return time.perf_counter() - wall, time.thread_time() - cpu

    steps_per_epoch = len(train_data)
    rows = []
    for size in args.sizes:
        arms = {"dense": build(size, False), "sparse": build(size, True)}
        times = {mode: [] for mode in arms}
        for index, batch in enumerate(batches):
            order = ("dense", "sparse") if index % 2 == 0 else ("sparse", "dense")
            for mode in order:
                seconds = step(*arms[mode], batch)
                if index >= args.warmup:
                    times[mode].append(seconds)
        tables = [model.item_embedding.weight.detach() for model, _ in arms.values()]
        drift = float((tables[0] - tables[1]).abs().max())
        for mode, values in times.items():
            wall, cpu = np.median(np.array(values), axis=0)
            rows.append({"embedding_size": size, "mode": mode, "step_ms_median": 1000 * float(wall),
                         "step_cpu_ms_median": 1000 * float(cpu),
                         "step_ms_p90": 1000 * float(np.percentile([v[0] for v in values], 90)),
                         "epoch_seconds_est": steps_per_epoch * float(wall),
                         "epoch_cpu_seconds_est": steps_per_epoch * float(cpu),
                         "max_abs_table_difference_dense_vs_sparse": drift})
        print(f"d={size:5d}  dense {rows[-2]['step_ms_median']:8.1f} ms (CPU {rows[-2]['step_cpu_ms_median']:.1f})  "
              f"sparse {rows[-1]['step_ms_median']:8.1f} ms (CPU {rows[-1]['step_cpu_ms_median']:.1f})  "
              f"(item tables differ by at most {drift:.2e} after {len(batches)} steps)", flush=True)
        del arms

    loader_ms = 1000 * float(np.median(loader_seconds[args.warmup:]))
    base = next(r for r in rows if r["embedding_size"] == 20 and r["mode"] == "dense")
    for row in rows:
        row["ratio_to_d20_dense"] = row["epoch_seconds_est"] / base["epoch_seconds_est"]
        row["cpu_ratio_to_d20_dense"] = row["epoch_cpu_seconds_est"] / base["epoch_cpu_seconds_est"]
        row["ratio_to_d20_dense_with_loader"] = ((row["step_ms_median"] + loader_ms)
                                                 / (base["step_ms_median"] + loader_ms))

    print(f"\n{args.dataset}: {train.user_num} user rows, {train.item_num} item rows, {steps_per_epoch} steps/epoch of "
          f"{config['train_batch_size']}, ~{np.mean(touched):.0f} rows touched per batch, "
          f"loader {loader_ms:.1f} ms/batch, "
          f"{args.threads} thread(s)")
    print("| d | mode | step ms | step CPU ms | epoch s (est.) | ÷ d=20 dense epoch | same, CPU | wall, with loader |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['embedding_size']} | {r['mode']} | {r['step_ms_median']:.1f} | {r['step_cpu_ms_median']:.1f} | "
              f"{r['epoch_seconds_est']:.1f} | {r['ratio_to_d20_dense']:.2f}× | {r['cpu_ratio_to_d20_dense']:.2f}× | "
              f"{r['ratio_to_d20_dense_with_loader']:.2f}× |")
    report = {
        "dataset": args.dataset, "dataset_config": Path(dataset_config).name if dataset_config else None,
        "user_rows": train.user_num, "item_rows": train.item_num, "train_batch_size": config["train_batch_size"],
        "steps_per_epoch": steps_per_epoch, "rows_touched_per_batch_mean": float(np.mean(touched)),
        "steps_timed": args.steps, "warmup": args.warmup, "threads": args.threads, "weight_decay": args.weight_decay,
        "loader_ms_median": loader_ms, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "rows": rows,
    }
    if args.out:
        from freqd.io import atomic_write_text

        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
