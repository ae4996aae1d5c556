"""FreqD training cost against the scratch student (issue 3), side by side, one subprocess per arm.

Each arm trains the same student (BPR, d=20) for ``--epochs`` epochs on the same data and reports
the median train seconds per epoch and the process's peak RSS; FreqD arms distil from a BPR
teacher (d=300 by default). Cost does not depend on the teacher's quality, so without
``--teacher`` a teacher is initialised (not trained) and saved once. Evaluation is switched off
(``eval_step`` beyond the run) so only training is timed.

    python benchmarks/bench_freqd_cost.py --dataset gowalla --epochs 2 --out cost.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from freqd.compat import silence_known_warnings

ARMS = {
    "scratch": None,
    "freqd-default": "configs/kd/freqd.yaml",
    "freqd-cooccurrence": "configs/kd/freqd-cooccurrence.yaml",
    "freqd-reference-gowalla": "configs/kd/freqd-reference-head.yaml",
}
ROOT = Path(__file__).resolve().parents[1]


def run_arm(arm: str, dataset: str, teacher: str, epochs: int, threads: int) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from freqd.runs import distill, train

    settings = {"show_progress": False, "state": "ERROR", "use_gpu": False, "epochs": epochs,
                "eval_step": epochs + 1, "embedding_size": 20, "train_batch_size": 2048}
    start = time.perf_counter()
    if ARMS[arm] is None:
        result = train("BPR", dataset, config_dict=settings, saved=False)
    else:
        settings["freqd_spectral_log_every"] = 0
        result = distill(teacher, "BPR", "FreqD", dataset=dataset, config_file_list=[str(ROOT / ARMS[arm])],
                             config_dict=settings, saved=False)
    history = json.loads(Path(result["run_dir"], "results.json").read_text())
    import csv

    rows = list(csv.DictReader(open(Path(result["run_dir"]) / "metrics.csv")))
    seconds = [float(r["train_seconds"]) for r in rows]
    return {
        "arm": arm,
        "train_seconds_per_epoch": float(np.median(seconds)),
        "epoch_seconds": seconds,
        "wall_seconds": time.perf_counter() - start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "n_parameters": history["n_parameters"],
    }


def make_teacher(dataset: str, size: int) -> str:
    """An initialised (untrained) BPR teacher checkpoint of the given size, on the usual split."""
    from freqd.io import atomic_torch_save
    from freqd.models import BPR
    from freqd.runs import run_metadata, setup

    config, data, (train, _, _) = setup("BPR", dataset, None, {"use_gpu": False, "state": "ERROR",
                                                                 "embedding_size": size})
    model = BPR(config, train._dataset)
    path = Path("saved") / f"bench-teacher-{dataset}-d{size}.pth"
    atomic_torch_save({"config": config, "state_dict": model.state_dict(), "epoch": 0,
                       "freqd": run_metadata(config, model, data, train)}, path, pickle_protocol=4)
    return str(path)


def main() -> None:
    silence_known_warnings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="gowalla")
    parser.add_argument("--teacher", default=None, help="teacher checkpoint (default: an initialised d=300 BPR)")
    parser.add_argument("--teacher-size", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--arms", nargs="*", default=list(ARMS))
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(run_arm(args.arm, args.dataset, args.teacher, args.epochs, args.threads)))
        return
    teacher = args.teacher or make_teacher(args.dataset, args.teacher_size)
    results = []
    for arm in args.arms:
        command = [sys.executable, __file__, "--arm", arm, "--dataset", args.dataset, "--teacher", teacher,
                   "--epochs", str(args.epochs), "--threads", str(args.threads)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    base = next(r for r in results if r["arm"] == "scratch")["train_seconds_per_epoch"]
    for r in results:
        r["ratio_to_scratch"] = r["train_seconds_per_epoch"] / base
    report = {"dataset": args.dataset, "teacher": teacher, "epochs": args.epochs, "threads": args.threads,
              "arms": results}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
