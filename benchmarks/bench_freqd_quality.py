"""FreqD quality (issue 3): teacher, scratch student, plain FD (α = 0) and FreqD over several seeds.

Superseded by ``freqd compare`` / ``benchmarks/bench_compare.py``; kept so the command in
RESULTS.md §4 still runs. It builds the same comparison from its options and runs it with
:func:`freqd.compare.run_comparison` (resumable; the report lands in ``--out``):

    python benchmarks/bench_freqd_quality.py --dataset citeulike-t --backbone BPR \\
        --teacher-config configs/model/bpr.yaml --teacher-size 400 --seeds 0 1 2 --out bench-out/citeulike-bpr
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from freqd.compare import parse_comparison_config, run_comparison
    from freqd.compare.config import parse_override_value
    from freqd.compare.report import accuracy_table
    from freqd.compat import silence_known_warnings

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
    comparison = parse_comparison_config({
        "dataset": args.dataset,
        "config_files": [args.dataset_config] if args.dataset_config else [],
        "overrides": {k: parse_override_value(v) for k, v in (item.split("=", 1) for item in args.set)},
        "teacher": {"model": args.backbone, "embedding_size": args.teacher_size, "seed": 0,
                    "config_files": args.teacher_config},
        "student": {"model": args.backbone, "embedding_size": args.student_size, "config_files": args.student_config},
        "seeds": args.seeds,
        "control": "scratch",
        "arms": [{"name": "scratch"},
                 {"name": "fd", "label": "plain FD (α=0)", "kd": "FreqD", "config_files": [args.kd_config],
                  "overrides": {"freqd_alpha": 0.0}},
                 {"name": "freqd", "label": "FreqD", "kd": "FreqD", "config_files": [args.kd_config]}],
    })
    report = run_comparison(comparison, out=args.out)
    print(accuracy_table(report))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # this checkout's freqd, whatever is installed
    main()
