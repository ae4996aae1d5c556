"""Real ``kill -9`` trials of ``freqd train``, ``distill`` and ``compare``, recorded as JSON.

Runs ``tests/test_kill_resume.py`` (in a pytest subprocess, once per ``--seeds`` value: the seed
draws the kill moments) with ``$FREQD_KILL_RESUME_RECORD`` pointing at a scratch file, into which
the test appends one JSON line per kill trial and per command result. The output JSON holds, per
command, every trial (when it was killed, what it resumed from), whether the final metrics and
checkpoints were bit-identical to an uninterrupted run, and the temporaries left behind; and
pytest's summary line per seed.

    OMP_NUM_THREADS=1 python benchmarks/bench_kill_resume.py --out benchmarks/results/kill-resume-2026-12-02.json
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

import torch

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("train", "distill", "compare")


def run_module(seed: int) -> tuple[str, list[dict], float]:
    """pytest's summary line, the recorded lines and the wall seconds of one run of the test module."""
    with tempfile.TemporaryDirectory(prefix="kill-resume-") as scratch:
        record = Path(scratch) / "record.jsonl"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "FREQD_KILL_RESUME_RECORD": str(record),
               "FREQD_KILL_RESUME_SEED": str(seed)}
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rxXf",
                               "tests/test_kill_resume.py"], cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        text = record.read_text(encoding="utf-8") if record.exists() else ""
        lines = [json.loads(line) for line in text.splitlines()]
    summary = [line for line in done.stdout.splitlines() if line.strip()][-1] if done.stdout.strip() else ""
    if done.returncode not in (0, 1):
        raise SystemExit(f"pytest failed to run (exit {done.returncode}):\n{done.stdout[-3000:]}\n"
                         f"{done.stderr[-3000:]}")
    return summary.strip("= "), lines, seconds


def per_command(lines: list[dict]) -> dict[str, dict]:
    """The recorded lines grouped by command: trials, bit-identity, orphaned temporaries."""
    out = {}
    for command in COMMANDS:
        mine = [line for line in lines if line["command"] == command]
        trials = [line for line in mine if "trial" in line]
        identical = [line["identical"] for line in mine if "identical" in line]
        orphans = [name for line in mine for name in line.get("orphaned_temporaries", [])]
        out[command] = {
            "trials": [{k: v for k, v in t.items() if k != "command"} for t in trials],
            "killed": sum(t["outcome"].startswith("killed") for t in trials),
            "bit_identical": identical[0] if identical else None,
            "kill_window_s": next((line["window_s"] for line in mine if "window_s" in line), None),
            "orphaned_temporaries": orphans,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="20261202", help="comma-separated seeds of the kill moments")
    parser.add_argument("--out", default=None, help="JSON file to write")
    args = parser.parse_args()
    runs = []
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        summary, lines, seconds = run_module(seed)
        runs.append({"seed": seed, "pytest": summary, "wall_seconds": round(seconds, 1),
                     "commands": per_command(lines)})
        print(f"seed {seed}: {summary} ({seconds:.0f} s)")
        for command, result in runs[-1]["commands"].items():
            print(f"  {command}: {len(result['trials'])} trials, {result['killed']} killed, bit-identical "
                  f"{result['bit_identical']}, orphaned temporaries {result['orphaned_temporaries'] or 'none'}")
            for trial in result["trials"]:
                print(f"    {trial['outcome']}")
    totals = {command: {"trials": sum(len(r["commands"][command]["trials"]) for r in runs),
                        "killed": sum(r["commands"][command]["killed"] for r in runs),
                        "bit_identical_runs": sum(r["commands"][command]["bit_identical"] is True for r in runs),
                        "runs": len(runs),
                        "orphaned_temporaries": sum(len(r["commands"][command]["orphaned_temporaries"]) for r in runs)}
              for command in COMMANDS}
    report = {
        "benchmark": "kill -9 at random moments after the first -last.pth, resume (--resume <-last>; compare: rerun), "
                     "final metrics and checkpoints against an uninterrupted run",
        "setup": "ml-100k, BPR d=8 (train; teacher of distill), FreqD d=8 student (distill), teacher d=8 + one FreqD "
                 "d=4 arm, one seed (compare); 8 epochs, eval_step 1, train_sampler fast, 1 thread; CPU",
        "command": f"OMP_NUM_THREADS=1 python benchmarks/bench_kill_resume.py --seeds {args.seeds}",
        "test": "tests/test_kill_resume.py",
        "date": time.strftime("%Y-%m-%d"),
        "machine": "shared 2-core CPU, no GPU, other jobs running",
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "totals": totals,
        "runs": runs,
    }
    if args.out:
        sys.path.insert(0, str(ROOT))
        from freqd.io import atomic_write_json

        atomic_write_json(args.out, report)


if __name__ == "__main__":
    main()
