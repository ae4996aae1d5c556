"""FreqD quality (issue 3): teacher, scratch student, plain FD (α = 0) and FreqD over several seeds.

For one dataset and backbone: the teacher is trained once (seed 0) and reused; every student arm
runs for each seed. Each finished run's result is written atomically to ``<out>/<arm>-s<seed>.json``
and reused on a rerun, so an interrupted benchmark continues where it stopped. Prints a Markdown
table: test Recall@20 / NDCG@20 mean ± std over seeds, and the share of the teacher–scratch
NDCG@20 gap each arm recovers.

    python benchmarks/bench_freqd_quality.py --dataset citeulike-t --backbone BPR \\
        --teacher-config configs/model/bpr.yaml --teacher-size 400 --seeds 0 1 2 --out bench-out/citeulike-bpr
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from freqd._compat import silence_known_warnings
from freqd.io import atomic_write_text
from freqd.quick_start import run_distill, run_freqd

ROOT = Path(__file__).resolve().parents[1]


def cached(path: Path, run) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    result = run()
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    return result


def main() -> None:
    silence_known_warnings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--backbone", default="BPR")
    parser.add_argument("--teacher-size", type=int, default=300)
    parser.add_argument("--student-size", type=int, default=20)
    parser.add_argument("--teacher-config", action="append", default=[])
    parser.add_argument("--student-config", action="append", default=[])
    parser.add_argument("--kd-config", default=str(ROOT / "configs/kd/freqd.yaml"))
    parser.add_argument("--dataset-config", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for all runs")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = {"show_progress": False, **dict(item.split("=", 1) for item in args.set)}
    data_files = [args.dataset_config] if args.dataset_config else []

    teacher = cached(out / "teacher.json", lambda: run_freqd(
        args.backbone, args.dataset, config_file_list=data_files + args.teacher_config,
        config_dict={**common, "seed": 0, "embedding_size": args.teacher_size}))
    arms: dict[str, list[dict]] = {"scratch": [], "plain FD (α=0)": [], "FreqD": []}
    for seed in args.seeds:
        student = {**common, "seed": seed, "embedding_size": args.student_size}
        files = data_files + args.student_config
        arms["scratch"].append(cached(out / f"scratch-s{seed}.json", lambda: run_freqd(
            args.backbone, args.dataset, config_file_list=files, config_dict=student)))
        for arm, extra in (("plain FD (α=0)", {"freqd_alpha": 0.0}), ("FreqD", {})):
            name = "fd" if extra else "freqd"
            arms[arm].append(cached(out / f"{name}-s{seed}.json", lambda: run_distill(
                teacher["checkpoint"], args.backbone, "FreqD", dataset=args.dataset,
                config_file_list=files + [args.kd_config], config_dict={**student, **extra})))

    def stats(runs, metric):
        values = np.array([r["test_result"][metric] for r in runs])
        return values.mean(), values.std(ddof=1) if len(values) > 1 else 0.0

    scratch_ndcg = stats(arms["scratch"], "ndcg@20")[0]
    gap = teacher["test_result"]["ndcg@20"] - scratch_ndcg
    lines = [f"{args.dataset}, {args.backbone} {args.teacher_size} → {args.student_size}, seeds {args.seeds}, "
             f"protocol {teacher['protocol']}", "",
             "| arm | Recall@20 | NDCG@20 | gap recovered | s/epoch | epochs |", "|---|---|---|---|---|---|",
             f"| teacher (d={args.teacher_size}, seed 0) | {teacher['test_result']['recall@20']:.4f} | "
             f"{teacher['test_result']['ndcg@20']:.4f} | | {teacher['train_seconds_per_epoch']:.2f} | "
             f"{teacher['epochs_run']} |"]
    for arm, runs in arms.items():
        (r_mean, r_std), (n_mean, n_std) = stats(runs, "recall@20"), stats(runs, "ndcg@20")
        recovered = (n_mean - scratch_ndcg) / gap if gap > 0 else float("nan")
        seconds = np.mean([r["train_seconds_per_epoch"] for r in runs])
        epochs = np.mean([r["epochs_run"] for r in runs])
        lines.append(f"| {arm} | {r_mean:.4f} ± {r_std:.4f} | {n_mean:.4f} ± {n_std:.4f} | "
                     f"{'' if arm == 'scratch' else f'{recovered:.0%}'} | {seconds:.2f} | {epochs:.0f} |")
    table = "\n".join(lines)
    print(table)
    atomic_write_text(out / "table.md", table + "\n")


if __name__ == "__main__":
    main()
