"""The issue-5 comparisons: run ``freqd compare`` configs and write their tables into RESULTS.md.

Each config runs into ``<out-root>/<config name>`` (resumable: rerunning the same command reuses
finished runs) and its section of ``benchmarks/RESULTS.md`` (between ``<!-- compare:NAME -->``
markers) is replaced with the report's tables, this exact command, the date, the machine and the
time taken. Without configs it runs the four benchmark comparisons (CPU-hours to days):

    python benchmarks/bench_compare.py                        # all four below
    python benchmarks/bench_compare.py configs/compare/citeulike-t-bpr.yaml --seeds 0,1,2

Further ``--key=value`` apply to every run, ``--teacher.key=value`` / ``--student.key=value`` to
the teacher / every arm only (as for ``freqd compare``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from time import perf_counter

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ["citeulike-t-bpr", "citeulike-t-lightgcn", "gowalla-bpr", "gowalla-lightgcn"]
SECTION = "## 5. Offline A/B comparisons (issue 5)"
SECTION_INTRO = (
    "Written by `benchmarks/bench_compare.py` (one subsection per comparison config, replaced when it is "
    "rerun). Each report's definitions (protocol, groups, tests, speed) are in `report.md` of its output "
    "folder and in the README's *Comparing students* section.")


def section_text(name: str, report: dict, command: str, seconds: float) -> str:
    """The RESULTS.md subsection of one comparison."""
    from freqd.compare.report import accuracy_table, groups_tables, significance_table, size_table

    trained = len(report["executed"])
    total = 1 + len(report["rows"][1:]) * len(report["seeds"])
    compute = report.get("compute_seconds", 0.0)
    env = report["environment"]
    return "\n".join([
        f"<!-- compare:{name} -->",
        f"### {report['title']}",
        "",
        "```",
        command,
        "```",
        "",
        f"{report['date']}; {env['cpu_count']} CPU cores ({env['processor']}), torch {env['torch']} with "
        f"{env['torch_threads']} threads, device {env['device']}; this invocation took {_duration(seconds)} and trained "
        f"{trained} of the {total} runs (teacher + arms × seeds), the others were reused from "
        f"`{report['out']}`; all runs together took {_duration(compute)} of training and evaluation. "
        f"Seeds {report['seeds']}, protocol `{report['protocol']}`, control `{report['control']}`, "
        f"{report['n_test_users']} test users.",
        "",
        accuracy_table(report),
        "",
        size_table(report),
        "",
        f"Paired tests against `{report['control']}` (per-user {report['test_metric']}, pooled over seeds):",
        "",
        significance_table(report),
        "",
        groups_tables(report),
        f"<!-- /compare:{name} -->",
    ])


def update_results(path: Path, name: str, text: str) -> None:
    """Replace (or append) the subsection ``name`` in the issue-5 section of ``path``."""
    from freqd.io import atomic_write_text

    content = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmark results\n"
    start, end = f"<!-- compare:{name} -->", f"<!-- /compare:{name} -->"
    if start in content and end in content:
        before, rest = content.split(start, 1)
        content = before + text + rest.split(end, 1)[1]
    else:
        if SECTION not in content:
            content = content.rstrip("\n") + f"\n\n{SECTION}\n\n{SECTION_INTRO}\n"
        content = content.rstrip("\n") + "\n\n" + text + "\n"
    atomic_write_text(path, content)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def main(argv: list[str] | None = None) -> int:
    from freqd.cli import parse_arms, parse_overrides, parse_seeds, split_overrides
    from freqd.compare import load_comparison_config, run_comparison
    from freqd.compare.store import arm_paths, load_result, teacher_paths
    from freqd.compat import silence_known_warnings

    silence_known_warnings()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", help="comparison YAMLs (default: the four benchmark configs)")
    parser.add_argument("--out-root", default="bench-out/compare", help="one output folder per config below this")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"), help="the file to update")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds, replacing the configs'")
    parser.add_argument("--arms", default=None, help="comma-separated arm names: only these (and the control)")
    parser.add_argument("--rerun-stale", action="store_true", help="recompute results whose configuration changed")
    parser.add_argument("--teacher-checkpoint", default=None, metavar="PTH",
                        help="distil this trained teacher instead of training each config's teacher")
    args, extra = parser.parse_known_args(argv)
    shared, teacher, student = split_overrides(parse_overrides(extra))
    configs = args.configs or [str(ROOT / "configs" / "compare" / f"{name}.yaml") for name in BENCHMARKS]
    command = "python benchmarks/bench_compare.py " + " ".join(shlex.quote(a) for a in argv)
    for config_path in configs:
        comparison = load_comparison_config(config_path)
        name = Path(config_path).stem
        start = perf_counter()
        report = run_comparison(comparison, out=Path(args.out_root) / name, seeds=parse_seeds(args.seeds),
                                overrides=shared, teacher_overrides=teacher, student_overrides=student,
                                rerun_stale=args.rerun_stale, arms=parse_arms(args.arms),
                                teacher_checkpoint=args.teacher_checkpoint)
        out = Path(report["out"])
        runs = [load_result(*teacher_paths(out)[:2])[0]]
        runs += [load_result(*arm_paths(out, row["name"], seed)[:2])[0]
                 for row in report["rows"][1:] for seed in report["seeds"]]
        report["compute_seconds"] = sum(run.get("wall_seconds") or 0.0 for run in runs)
        update_results(Path(args.results), name, section_text(name, report, command.strip(),
                                                               perf_counter() - start))
        print(f"{name}: {out}/report.md; {args.results} updated", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # this checkout's freqd, whatever is installed
    sys.exit(main())
