"""Foundation speed benchmarks (issue 2), measured side by side in one process.

1. ml-100k LightGCN: freqd's (PyG normalisation, CSR propagation) against RecBole 1.2.1's own,
   same seed/config: train seconds per epoch, full-sort evaluation seconds, test metrics; freqd's
   both with RecBole's training loader (same batches, so the same metrics) and with its own
   (``train_sampler: fast``: other negatives, so other metrics).
   RecBole's LightGCN cannot build its adjacency on scipy >= 1.13 (``dok_matrix._update``), so
   its ``get_norm_adj_mat`` is replaced by the same formula written with ``coo_matrix`` (the
   propagation, loss and training loop are RecBole's).
2. Gowalla BPR-MF: train seconds per epoch at d=300 and d=20, with RecBole's default Adam and
   freqd's fused Adam.
3. Full-sort evaluation throughput (users/s) on Gowalla for d=300 and d=20.

Usage: python benchmarks/bench_foundation.py [--epochs 3] [--threads 2] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone

import numpy as np
import scipy.sparse as sp
import torch
from recbole.config import Config as RecBoleConfig
from recbole.data import create_dataset, data_preparation
from recbole.model.general_recommender import LightGCN as RecBoleLightGCN
from recbole.trainer import Trainer as RecBoleTrainer
from recbole.utils import init_seed

from freqd.compat import silence_known_warnings
from freqd.config import Config
from freqd.datasets import prepare_dataset
from freqd.models import BPR, LightGCN
from freqd.runs import setup
from freqd.threads import apply_threads
from freqd.trainers import Trainer

QUIET = {"show_progress": False, "state": "ERROR", "use_gpu": torch.cuda.is_available()}


def _recbole_norm_adj(self):
    """RecBole's own formula (degree + 1e-7, D^-1/2 A D^-1/2, COO tensor) without dok_matrix."""
    inter = self.interaction_matrix
    n = self.n_users + self.n_items
    rows = np.concatenate([inter.row, inter.col + self.n_users])
    cols = np.concatenate([inter.col + self.n_users, inter.row])
    adj = sp.coo_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n)).tocsr()
    inv = sp.diags(np.power(np.asarray((adj > 0).sum(axis=1)).ravel() + 1e-7, -0.5))
    norm = (inv @ adj @ inv).tocoo()
    index = torch.LongTensor(np.array([norm.row, norm.col]))
    return torch.sparse_coo_tensor(index, torch.FloatTensor(norm.data), norm.shape)


def time_training(config_cls, model_cls, trainer_cls, dataset, settings, epochs):
    if settings.get("train_sampler") == "fast":  # freqd's own setup builds its training loader
        # setup applies the config's thread count: keep the one the other arms run with
        settings = {**settings, "threads": torch.get_num_threads()}
        config, _, (train, valid, test) = setup(model_cls.__name__, dataset, [], settings)
    else:
        config = config_cls(model=model_cls, dataset=dataset, config_dict=dict(settings))
        init_seed(config["seed"], True)
        data = create_dataset(config)
        train, valid, test = data_preparation(config, data)
    init_seed(config["seed"], True)
    model = model_cls(config, train._dataset).to(config["device"])
    trainer = trainer_cls(config, model)
    seconds = []
    for epoch in range(epochs):
        model.train()
        start = time.perf_counter()
        trainer._train_epoch(train, epoch)
        seconds.append(time.perf_counter() - start)
    start = time.perf_counter()
    result = trainer.evaluate(test, load_best_model=False)
    eval_seconds = time.perf_counter() - start
    return {
        "train_seconds_per_epoch": float(np.median(seconds)),
        "eval_seconds": eval_seconds,
        "eval_users": len(test.uid_list),
        "test": {k: float(v) for k, v in result.items()},
    }


def bench_lightgcn_ml100k(epochs: int) -> dict:
    RecBoleLightGCN.get_norm_adj_mat = _recbole_norm_adj
    settings = {**QUIET, "n_layers": 2, "embedding_size": 64, "reg_weight": 1e-5, "metrics": ["Recall", "NDCG"],
                "topk": [20], "valid_metric": "NDCG@20", "metric_decimal_place": 6}
    stock = time_training(RecBoleConfig, RecBoleLightGCN, RecBoleTrainer, "ml-100k", settings, epochs)
    ours = time_training(Config, LightGCN, Trainer, "ml-100k", settings, epochs)
    fast = time_training(Config, LightGCN, Trainer, "ml-100k", {**settings, "train_sampler": "fast"}, epochs)
    return {
        "recbole": stock,
        "freqd": ours,
        "freqd_fast_loader": fast,
        "epoch_speedup": stock["train_seconds_per_epoch"] / ours["train_seconds_per_epoch"],
        "epoch_speedup_fast_loader": stock["train_seconds_per_epoch"] / fast["train_seconds_per_epoch"],
        "eval_speedup": stock["eval_seconds"] / ours["eval_seconds"],
    }


def bench_gowalla(epochs: int) -> dict:
    gowalla = prepare_dataset("gowalla")
    out = {}
    for size in (300, 20):
        for fused in (False, True):
            settings = {**QUIET, **gowalla, "embedding_size": size, "eval_batch_size": 10_000_000,
                        "metrics": ["Recall", "NDCG"], "topk": [20], "valid_metric": "NDCG@20",
                        "fused_optimizer": fused}
            run = time_training(Config, BPR, Trainer, "gowalla", settings, epochs)
            run["eval_users_per_second"] = run["eval_users"] / run["eval_seconds"]
            out[f"bpr_d{size}_{'fused' if fused else 'recbole'}_adam"] = run
    return out


def main() -> None:
    silence_known_warnings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-gowalla", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    apply_threads(args.threads)  # as a run sets it: threads, subnormal flush, reuse of freed memory
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
                   f"{'cuda ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}",
        "torch": torch.__version__,
        "epochs_timed": args.epochs,
        "lightgcn_ml100k": bench_lightgcn_ml100k(args.epochs),
    }
    if not args.skip_gowalla:
        report["bpr_gowalla"] = bench_gowalla(args.epochs)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
