"""Epoch and validation time of one training run on 1 and on 2 ``gloo`` ranks of this machine.

Runs ``freqd train`` (or ``freqd distill`` with ``--teacher``) once per rank count, each rank
with one torch thread, for ``--epochs`` epochs with validation every ``--eval-step`` epochs,
and reads the run's ``metrics.csv`` (written by rank 0): the median ``train_seconds`` per epoch
and ``valid_seconds`` per validation pass, the wall time of the whole command (spawning and
data loading included) and the last validation NDCG@20. With the same seed the two runs see the
same epochs (the fast loader splits each batch over the ranks), so their metrics should agree
to float tolerance.

    OMP_NUM_THREADS=1 python benchmarks/bench_ranks.py --dataset gowalla --config configs/dataset/gowalla.yaml \\
        --config configs/model/bpr-student-gowalla.yaml --epochs 4 --eval-step 2 \\
        --out benchmarks/results/ranks-gowalla-<date>.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(args, nproc: int, work: Path) -> dict:
    command = [sys.executable, "-m", "freqd"]
    if args.teacher:
        command += ["distill", "--teacher", args.teacher, "--student", args.model, "--kd", args.kd]
    else:
        command += ["train", "--model", args.model]
    command += ["--dataset", args.dataset, "--threads", "1", f"--epochs={args.epochs}", f"--eval_step={args.eval_step}",
                "--train_sampler=fast", f"--nproc={nproc}", f"--checkpoint_dir={work / 'saved'}",
                f"--results_dir={work / 'runs'}", "--show_progress=False", f"--seed={args.seed}"]
    for config in args.config:
        command += ["--config", config]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    (metrics,) = list((work / "runs").glob("*/metrics.csv"))
    rows = list(csv.DictReader(metrics.open(encoding="utf-8")))
    train = [float(r["train_seconds"]) for r in rows if r.get("train_seconds")]
    valid = [float(r["valid_seconds"]) for r in rows if r.get("valid_seconds")]
    ndcg = [float(r["valid_ndcg@20"]) for r in rows if r.get("valid_ndcg@20")]
    return {"nproc": nproc, "wall_seconds": wall, "train_seconds": train, "valid_seconds": valid,
            "median_train_seconds": statistics.median(train), "median_valid_seconds": statistics.median(valid),
            "last_valid_ndcg@20": ndcg[-1] if ndcg else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--config", action="append", default=[], help="config YAML (repeatable)")
    parser.add_argument("--model", default="BPR")
    parser.add_argument("--teacher", help="a teacher checkpoint: time 'freqd distill' instead of 'freqd train'")
    parser.add_argument("--kd", default="FreqD")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--eval-step", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    runs = []
    for nproc in (1, 2):
        with tempfile.TemporaryDirectory() as work:
            runs.append(one_run(args, nproc, Path(work)))
        print(json.dumps({k: v for k, v in runs[-1].items() if not isinstance(v, list)}))
    report = {"dataset": args.dataset, "model": args.model, "kd": args.kd if args.teacher else None,
              "configs": args.config, "epochs": args.epochs, "eval_step": args.eval_step, "threads_per_rank": 1,
              "cpus": os.cpu_count(), "machine": f"{platform.machine()}, {platform.python_version()}", "runs": runs,
              "train_speedup_2_ranks": runs[0]["median_train_seconds"] / runs[1]["median_train_seconds"],
              "valid_speedup_2_ranks": runs[0]["median_valid_seconds"] / runs[1]["median_valid_seconds"]}
    print(json.dumps({k: report[k] for k in ("train_speedup_2_ranks", "valid_speedup_2_ranks")}))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
