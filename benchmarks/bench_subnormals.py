"""Epoch time with subnormal floats kept against flushed to zero: one training command run both ways.

Adam's moments of parameters whose gradient stays zero (dead ReLU units of a FreqD projector, rows a
batch never touches) decay geometrically and, after a few hundred steps, reach the subnormal range
(below 1.2e-38), where x86 arithmetic is slow. freqd flushes them to zero (``freqd.threads.apply_threads``).
This script runs one ``freqd`` training command for ``--epochs`` epochs in a fresh process with
subnormals kept (``apply_threads`` patched) and as shipped, one after the other, and reports the
training seconds of the first and last ``--window`` epochs of each, the last validation score of
each, and the subnormal values in the kept run's checkpoint. Everything after ``--`` is the
``freqd`` command (without ``--epochs``); it runs in a temporary folder, so nothing is left behind.

    python benchmarks/bench_subnormals.py --epochs 80 --out benchmarks/results/subnormals.json \\
        -- distill --teacher saved/BPR-T.pth --student BPR --embedding_size 20 --kd FreqD --config ...
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from freqd import load_checkpoint

#: Runs ``freqd`` with ``apply_threads`` patched to keep subnormals (argv[1] == "keep") or as shipped.
WRAPPER = """
import sys
import torch
import freqd.runs
import freqd.threads
from freqd.cli import main

original = freqd.threads.apply_threads

def keeping_subnormals(*args, **kwargs):
    count = original(*args, **kwargs)
    torch.set_flush_denormal(False)
    return count

if sys.argv[1] == "keep":
    freqd.threads.apply_threads = keeping_subnormals
    freqd.runs.apply_threads = keeping_subnormals
sys.exit(main(sys.argv[2:]))
"""
EPOCH = re.compile(r"epoch (\d+) training \[time: ([0-9.]+)s")
SCORE = re.compile(r"valid_score: ([0-9.]+)")


def subnormal_counts(checkpoint: Path) -> dict[str, list[int]]:
    """Per tensor of the checkpoint (model, optimizer, distiller): [subnormal values, all values], where any."""
    state = load_checkpoint(checkpoint)
    tiny = torch.finfo(torch.float32).tiny
    found: dict[str, list[int]] = {}

    def walk(obj, name: str) -> None:
        if torch.is_tensor(obj):
            if obj.is_floating_point() and obj.numel():
                size = obj.float().abs()
                count = int(((size > 0) & (size < tiny)).sum())
                if count:
                    found[name] = [count, obj.numel()]
        elif isinstance(obj, dict):
            for key, value in obj.items():
                walk(value, f"{name}.{key}" if name else str(key))
        elif isinstance(obj, (list, tuple)):
            for index, value in enumerate(obj):
                walk(value, f"{name}[{index}]")

    walk({key: state[key] for key in ("state_dict", "optimizer", "freqd") if key in state}, "")
    return found


def run(mode: str, command: list[str], epochs: int) -> dict:
    """Training seconds per epoch, last validation score and checkpoint subnormals of one fresh run."""
    command = [str(Path(arg).resolve()) if Path(arg).exists() else arg for arg in command]  # the cwd changes
    with tempfile.TemporaryDirectory(prefix="subnormals-") as folder:
        argv = [*command, f"--epochs={epochs}", "--show_progress=False", "--threads", "1"]
        done = subprocess.run([sys.executable, "-c", WRAPPER, mode, *argv], cwd=folder, capture_output=True,
                              text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode:
            raise SystemExit(f"freqd {' '.join(argv)} failed ({mode}):\n{done.stderr[-3000:]}")
        checkpoints = sorted(Path(folder, "saved").glob("*.pth"))
        counts = subnormal_counts(checkpoints[-1]) if checkpoints else {}
    log = done.stdout + done.stderr
    seconds = [float(m.group(2)) for m in EPOCH.finditer(log)]
    scores = [float(m.group(1)) for m in SCORE.finditer(log)]
    return {"train_seconds": seconds, "last_valid_score": scores[-1] if scores else None,
            "checkpoint_subnormals": counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=80, help="epochs of each run")
    parser.add_argument("--window", type=int, default=10, help="epochs averaged at the start and at the end")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the freqd command, e.g. distill ...")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the freqd command after --")
    runs = {}
    for mode in ("keep", "flush"):
        result = run(mode, command, args.epochs)
        seconds = result["train_seconds"]
        result["first_epochs_median"] = statistics.median(seconds[:args.window])
        result["last_epochs_median"] = statistics.median(seconds[-args.window:])
        runs[mode] = result
        subnormals = sum(count for count, _ in result["checkpoint_subnormals"].values())
        print(f"{mode:5s}: {len(seconds)} epochs, median s/epoch first {args.window} "
              f"{result['first_epochs_median']:.2f}, last {args.window} {result['last_epochs_median']:.2f}; "
              f"last valid score {result['last_valid_score']}; {subnormals:,} subnormal values in its checkpoint")
    ratio = runs["keep"]["last_epochs_median"] / runs["flush"]["last_epochs_median"]
    print(f"last {args.window} epochs: kept {ratio:.1f}x the flushed time")
    if args.out:
        result = {
            # Absolute paths are machine paths: only their file names are recorded.
            "command": ["freqd", *(Path(arg).name if Path(arg).is_absolute() else arg for arg in command),
                        f"--epochs={args.epochs}"], "window": args.window, "runs": runs,
            "ratio_kept_to_flushed_last_epochs": ratio,
            "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                        "load_average": os.getloadavg()},
            "torch": torch.__version__,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
