"""Training-loader benchmark: RecBole's TrainDataLoader against freqd's FastTrainDataLoader.

Per dataset (ml-100k bundled; gowalla when ``freqd datasets prepare gowalla`` can build it), one
torch thread, BPR's pairwise loader with one uniform negative per positive:

* loader-only seconds per epoch (iterate every batch, no model), median over ``--epochs``;
* for context, one BPR d=20 scratch training epoch through ``Trainer`` with each loader.

With ``--quality-seeds 0,1,2`` it also trains BPR d=20 from scratch on ml-100k with each loader
(``configs/dataset/ml-100k.yaml``: early stopping with patience 30, the comparison's split seed)
and reports test NDCG@20 / Recall@20, mean ± std over the seeds.

Usage: python benchmarks/bench_sampler.py [--datasets ml-100k,gowalla] [--epochs 3]
       [--train-epochs 1] [--quality-seeds 0,1,2] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import recbole
import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from freqd.compat import silence_known_warnings
from freqd.config import Config
from freqd.datasets.loading import dataset_config
from freqd.datasets.train_loader import FastTrainDataLoader
from freqd.models import BPR
from freqd.trainers import Trainer

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "dataset"
QUIET = {"show_progress": False, "state": "ERROR", "use_gpu": False, "embedding_size": 20}


def _loader_epochs(loader, epochs: int) -> list[float]:
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for _batch in loader:
            pass
        seconds.append(time.perf_counter() - start)
    return seconds


def _train_epochs(config, loader, epochs: int) -> list[float]:
    init_seed(config["seed"], True)
    trainer = Trainer(config, BPR(config, loader.dataset))
    seconds = []
    for epoch in range(epochs):
        start = time.perf_counter()
        trainer._train_epoch(loader, epoch)
        seconds.append(time.perf_counter() - start)
    return seconds


def bench_dataset(name: str, epochs: int, train_epochs: int) -> dict:
    files = [str(CONFIGS / f"{name}.yaml")] if (CONFIGS / f"{name}.yaml").is_file() else []
    config = Config(model="BPR", dataset=name, config_file_list=files,
                    config_dict=dataset_config(name, dict(QUIET)))
    init_seed(config["seed"], True)
    dataset = create_dataset(config)
    start = time.perf_counter()
    recbole_train, _, _ = data_preparation(config, dataset)
    preparation_seconds = time.perf_counter() - start
    start = time.perf_counter()
    fast_train = FastTrainDataLoader(config, recbole_train._dataset, recbole_train._sampler)
    fast_setup_seconds = time.perf_counter() - start
    loaders = {"recbole": recbole_train, "fast": fast_train}
    result = {
        "dataset": name,
        "n_users": dataset.user_num - 1,
        "n_items": dataset.item_num - 1,
        "n_train_interactions": len(recbole_train.dataset),
        "train_batch_size": config["train_batch_size"],
        "batches_per_epoch": len(fast_train),
        "recbole_data_preparation_seconds": preparation_seconds,
        "fast_loader_setup_seconds": fast_setup_seconds,
    }
    for label, loader in loaders.items():
        seconds = _loader_epochs(loader, epochs)
        result[f"{label}_loader_seconds_per_epoch"] = float(np.median(seconds))
        result[f"{label}_loader_seconds_all"] = seconds
    result["loader_speedup"] = result["recbole_loader_seconds_per_epoch"] / result["fast_loader_seconds_per_epoch"]
    if train_epochs:
        for label, loader in loaders.items():
            result[f"{label}_bpr_d20_train_seconds_per_epoch"] = float(np.median(_train_epochs(config, loader, train_epochs)))
        result["train_epoch_speedup"] = (result["recbole_bpr_d20_train_seconds_per_epoch"]
                                         / result["fast_bpr_d20_train_seconds_per_epoch"])
    return result


def quality(seeds: list[int]) -> dict:
    """Test metrics of BPR d=20 from scratch on ml-100k, per loader, mean ± std over ``seeds``."""
    from freqd.runs import train

    result = {"dataset": "ml-100k", "model": "BPR", "embedding_size": 20, "seeds": seeds}
    for sampler in ("recbole", "fast"):
        runs = [train("BPR", "ml-100k", config_file_list=[str(CONFIGS / "ml-100k.yaml")], saved=True,
                          config_dict={**QUIET, "seed": seed, "split_seed": 2020, "eval_batch_size": 1_000_000,
                                       "train_sampler": sampler})
                for seed in seeds]
        row = {"epochs_run": [r["epochs_run"] for r in runs],
               "train_seconds_per_epoch": float(np.mean([r["train_seconds_per_epoch"] for r in runs]))}
        for metric in ("ndcg@20", "recall@20"):
            values = [r["test_result"][metric] for r in runs]
            row[metric] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1
                           else 0.0, "values": values}
        result[sampler] = row
        print(sampler, json.dumps(row), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="ml-100k,gowalla")
    parser.add_argument("--epochs", type=int, default=3, help="loader-only epochs timed per loader")
    parser.add_argument("--train-epochs", type=int, default=1, help="BPR d=20 training epochs per loader (0: skip)")
    parser.add_argument("--quality-seeds", help="comma-separated seeds for the ml-100k quality check (default: skip)")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    silence_known_warnings()
    torch.set_num_threads(1)
    report = {
        "benchmark": "training loader: RecBole TrainDataLoader vs FastTrainDataLoader (uniform, 1 negative)",
        "threads": 1,
        "epochs_timed": args.epochs,
        "versions": {"torch": torch.__version__, "recbole": recbole.__version__, "python": platform.python_version()},
        "datasets": [],
    }
    for name in filter(None, args.datasets.split(",")):
        try:
            row = bench_dataset(name, args.epochs, args.train_epochs)
        except (FileNotFoundError, ValueError) as err:  # data not available here: say so, keep going
            print(f"{name}: skipped: {err}", file=sys.stderr)
            row = {"dataset": name, "skipped": type(err).__name__}
        report["datasets"].append(row)
        print(json.dumps(row, indent=1), flush=True)
    if args.quality_seeds:
        report["quality"] = quality([int(seed) for seed in args.quality_seeds.split(",")])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
