"""Training with and without the reuse of freed memory (``FREQD_MALLOC_REUSE``), side by side.

For each case, two ``freqd train`` processes start together on one thread each, identical but for
``FREQD_MALLOC_REUSE`` (0: glibc's defaults; 1: freqd's, see ``freqd/threads.py``), so machine load
hits both alike. Reported per process: training seconds per epoch (``results.json``), user and
kernel CPU seconds and peak RSS (``wait4``), and whether both runs end with the same validation
and test metrics (the setting must not change a result).

    OMP_NUM_THREADS=1 python benchmarks/bench_allocator.py --cases gowalla-bpr300 citeulike-t-lightgcn256 \\
        --out benchmarks/results/allocator-2026-12-04.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "ml-100k-bpr20": ["--model", "BPR", "--dataset", "ml-100k", "--embedding_size=20", "--train_sampler=fast",
                      "--epochs=20", "--eval_step=20"],
    "citeulike-t-lightgcn256": ["--model", "LightGCN", "--dataset", "citeulike-t",
                                "--config", "configs/dataset/citeulike-t.yaml",
                                "--config", "configs/model/lightgcn-teacher-citeulike-cpu.yaml",
                                "--epochs=4", "--eval_step=4"],
    "gowalla-bpr300": ["--model", "BPR", "--dataset", "gowalla", "--config", "configs/dataset/gowalla.yaml",
                       "--config", "configs/model/bpr-teacher-gowalla.yaml", "--epochs=2", "--eval_step=2"],
}


def _run_pair(args: list[str]) -> dict:
    """Start the two processes together; wait for both; their metrics and resource use."""
    started = {}
    with tempfile.TemporaryDirectory() as tmp:
        for reuse in ("0", "1"):
            folder = Path(tmp) / f"reuse{reuse}"
            folder.mkdir()
            env = {**os.environ, "FREQD_MALLOC_REUSE": reuse, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
            command = [sys.executable, "-m", "freqd", "train", *[str(ROOT / a) if a.startswith("configs/") else a
                                                                for a in args],
                       "--threads", "1", "--show_progress=False", "--state=WARNING"]
            log = open(folder / "log.txt", "w", encoding="utf-8")
            started[reuse] = (subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT),
                              folder, log, time.perf_counter())
        out = {}
        for reuse, (process, folder, log, start) in started.items():
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            log.close()
            text = (folder / "log.txt").read_text(encoding="utf-8")
            if process.returncode != 0:
                raise SystemExit(f"FREQD_MALLOC_REUSE={reuse} failed:\n{text[-3000:]}")
            result = json.loads(next(folder.rglob("results.json")).read_text(encoding="utf-8"))
            out[reuse] = {"train_seconds_per_epoch": result["train_seconds_per_epoch"],
                          "wall_seconds": time.perf_counter() - start,
                          "user_seconds": usage.ru_utime, "kernel_seconds": usage.ru_stime,
                          "peak_rss_mb": usage.ru_maxrss / 1024, "epochs": result["epochs_run"],
                          "best_valid_result": result["best_valid_result"], "test_result": result["test_result"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = []
    for name in args.cases:
        pair = _run_pair(CASES[name])
        off, on = pair["0"], pair["1"]
        row = {"case": name, "command": "freqd train " + " ".join(CASES[name]) + " --threads 1",
               "default": off, "reuse": on,
               "epoch_ratio_default_over_reuse": off["train_seconds_per_epoch"] / on["train_seconds_per_epoch"],
               "cpu_ratio_default_over_reuse": (off["user_seconds"] + off["kernel_seconds"])
               / (on["user_seconds"] + on["kernel_seconds"]),
               "same_results": off["best_valid_result"] == on["best_valid_result"]
               and off["test_result"] == on["test_result"]}
        rows.append(row)
        print(f"{name}: epoch {off['train_seconds_per_epoch']:.2f} s -> {on['train_seconds_per_epoch']:.2f} s "
              f"({row['epoch_ratio_default_over_reuse']:.2f}x), CPU user+kernel "
              f"{off['user_seconds']:.0f}+{off['kernel_seconds']:.0f} s -> {on['user_seconds']:.0f}+"
              f"{on['kernel_seconds']:.0f} s, peak RSS {off['peak_rss_mb']:.0f} -> {on['peak_rss_mb']:.0f} MB, "
              f"same results: {row['same_results']}", flush=True)
    report = {"benchmark": "bench_allocator", "date": time.strftime("%Y-%m-%d"),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
              "cases": rows}
    if args.out:
        from freqd.io import atomic_write_json

        atomic_write_json(Path(args.out), report)


if __name__ == "__main__":
    main()
