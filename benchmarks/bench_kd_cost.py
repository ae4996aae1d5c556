"""Training cost of every distiller against the scratch student (issues 3 and 4), side by side.

For each arm, one subprocess (so peak RSS is per arm) builds the data once, then:

* times the distiller's construction (its precomputation: teacher tables, graphs, the teacher's
  top-N rankings — computed cold, the on-disk cache is bypassed) and its per-epoch hook
  (``on_epoch_start``: resampling, student rankings);
* runs ``--steps`` training batches from RecBole's training loader, and on every batch times one
  scratch-student step and one distilled-student step (rec loss + kd_weight · KD loss, backward,
  fused Adam; with ``--set kd_coreset=FILE`` the KD loss on the selected users' triples only, as
  the trainer computes it), alternating, so machine noise hits both alike;
* reports the estimated epoch times ``steps_per_epoch × (loader + step) + hook`` and their ratio.

Full epochs of the slow methods take many minutes on CPU (DE/HTD on Gowalla), hence the per-step
estimate; ``bench_freqd_cost.py`` times whole epochs through the trainer.

    python benchmarks/bench_kd_cost.py --dataset gowalla --teacher saved/BPR-teacher.pth --steps 30 \\
        --out benchmarks/results/kd-cost-gowalla.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: arm -> (distiller, YAML under configs/kd/ or None, extra settings on top of it).
KD_ARMS = {
    "freqd-default": ("FreqD", "freqd.yaml", {}),
    "fd": ("FreqD", "freqd.yaml", {"freqd_alpha": 0.0}),
    "freqd-linear": ("FreqD", "freqd-linear.yaml", {}),
    "fd-linear": ("FreqD", "freqd-linear.yaml", {"freqd_alpha": 0.0}),
    "freqd-exact": ("FreqD", "freqd-linear.yaml", {"freqd_neighbors": 0, "freqd_teacher_rank": 0, "freqd_kd_rows": 0}),
    "fd-exact": ("FreqD", "freqd-linear.yaml", {"freqd_alpha": 0.0, "freqd_neighbors": 0, "freqd_teacher_rank": 0,
                                         "freqd_kd_rows": 0}),
    "freqd-rank64": ("FreqD", "freqd-linear.yaml", {"freqd_neighbors": 0, "freqd_teacher_rank": 64, "freqd_kd_rows": 0}),
    "freqd-nbr16-rank64": ("FreqD", "freqd-linear.yaml", {"freqd_neighbors": 16, "freqd_teacher_rank": 64,
                                                   "freqd_kd_rows": 0}),
    "freqd-nbr4-rank64": ("FreqD", "freqd-linear.yaml", {"freqd_neighbors": 4, "freqd_teacher_rank": 64, "freqd_kd_rows": 0}),
    "freqd-nbr4-rank32-rows1024": ("FreqD", "freqd-linear.yaml", {"freqd_neighbors": 4, "freqd_teacher_rank": 32,
                                                           "freqd_kd_rows": 1024}),
    "freqd-cooccurrence": ("FreqD", "freqd-cooccurrence.yaml", {}),
    "freqd-paper": ("FreqD", "freqd-reference-paper.yaml", {}),
    "freqd-head": ("FreqD", "freqd-reference-head.yaml", {}),
    "freqd-mlp": ("FreqD", "freqd-mlp.yaml", {}),
    "freqd-mlp-hidden64": ("FreqD", "freqd-mlp.yaml", {"projector_hidden": 64}),
    "freqd-hidden64": ("FreqD", "freqd.yaml", {"projector_hidden": 64}),
    "fd-hidden64": ("FreqD", "freqd.yaml", {"projector_hidden": 64, "freqd_alpha": 0.0}),
    "freqd-rows1024": ("FreqD", "freqd.yaml", {"freqd_kd_rows": 1024}),
    "freqd-hidden64-rows1024": ("FreqD", "freqd.yaml", {"projector_hidden": 64, "freqd_kd_rows": 1024}),
    "freqd-hidden32-rows512": ("FreqD", "freqd.yaml", {"projector_hidden": 32, "freqd_kd_rows": 512}),
    "freqd-linear-entity": ("FreqD", "freqd-linear.yaml", {"projector_per_entity": True}),
    "freqd-affine-entity": ("FreqD", "freqd-linear.yaml", {"projector_per_entity": True, "projector_bias": True,
                                                    "freqd_filter_first": True}),
    "freqd-kd": ("FreqDKD", "freqd.yaml", {}),
    "freqd-kd-smooth": ("FreqDKD", "freqd.yaml", {"kd_smooth_alpha": 0.5}),
    # Baselines: their reference settings are freqd's defaults (freqd/properties/kd/<Name>.yaml).
    **{name: (name, None, {}) for name in ("fitnet", "de", "pckd", "htd", "rrd", "dcd", "cd", "unkd", "kd")},
}


def run_arm(arm: str, dataset: str, teacher_path: str, steps: int, threads: int, dataset_config: str | None,
            common: dict | None = None) -> dict:
    import numpy as np
    import torch

    from freqd.threads import apply_threads

    apply_threads(threads)  # as a run sets it: threads, subnormal flush, reuse of freed memory
    from freqd.checkpoints import load_teacher
    from freqd.compat import silence_known_warnings
    from freqd.distillers import StepTables, get_distiller
    from freqd.models import get_model
    from freqd.runs import setup
    from freqd.trainers.distill import kd_term

    silence_known_warnings()
    kd, yaml_name, arm_settings = KD_ARMS[arm]
    files = ([dataset_config] if dataset_config else []) + ([str(ROOT / "configs/kd" / yaml_name)] if yaml_name else [])
    settings = {"show_progress": False, "state": "ERROR", "use_gpu": False, "embedding_size": 20, "threads": threads,
                "train_batch_size": 2048, "freqd_spectral_log_every": 0,
                # A fresh cache folder: the teacher's top-N is computed, not read back.
                "checkpoint_dir": tempfile.mkdtemp(prefix="bench-kd-"), **(common or {}), **arm_settings}
    config, _, (train_data, _, _) = setup("BPR", dataset, files, settings, kd=kd)
    train = train_data._dataset
    teacher = load_teacher(teacher_path, config, train)
    model_cls = get_model("BPR")
    torch.manual_seed(0)
    student, scratch = model_cls(config, train), model_cls(config, train)
    start = time.perf_counter()
    distiller = get_distiller(kd)(config, teacher, student, train)
    setup_seconds = time.perf_counter() - start
    distiller.train()
    start = time.perf_counter()
    distiller.on_epoch_start(0, student)
    hook_seconds = time.perf_counter() - start
    kd_weight = float(distiller.kd_weight)
    kd_users = None
    if config["kd_coreset"]:  # as the trainer: the distillation term on the selected users' triples only
        from freqd.coreset.files import read_selection

        kd_users = read_selection(config["kd_coreset"], train, key="kd_coreset")[0]
    optimizers = {
        "scratch": torch.optim.Adam(scratch.parameters(), lr=1e-3, fused=True),
        "kd": torch.optim.Adam([*student.parameters(), *distiller.parameters()], lr=1e-3, fused=True),
    }

    def step(kind: str, batch) -> float:
        begin = time.perf_counter()
        optimizers[kind].zero_grad()
        if kind == "scratch":
            loss = scratch.calculate_loss(batch)
        else:
            with student.one_step():  # as the trainer: the student's tables once per step
                tables = StepTables.of(student)
                loss = student.calculate_loss(batch) + kd_term(distiller, batch, tables, kd_weight, kd_users)
        loss.backward()
        optimizers[kind].step()
        return time.perf_counter() - begin

    times: dict[str, list[float]] = {"loader": [], "scratch": [], "kd": []}
    batches = iter(train_data)
    warmup = 3
    for index in range(steps + warmup):
        begin = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(train_data)
            batch = next(batches)
        loaded = time.perf_counter() - begin
        order = ("scratch", "kd") if index % 2 == 0 else ("kd", "scratch")
        measured = {kind: step(kind, batch) for kind in order}
        if index >= warmup:
            times["loader"].append(loaded)
            for kind, seconds in measured.items():
                times[kind].append(seconds)
    per_epoch = len(train_data)
    median = {kind: float(np.median(values)) for kind, values in times.items()}
    scratch_epoch = per_epoch * (median["loader"] + median["scratch"])
    kd_epoch = per_epoch * (median["loader"] + median["kd"]) + hook_seconds
    return {
        "arm": arm,
        "kd": kd,
        "kd_config": f"configs/kd/{yaml_name}" if yaml_name else f"freqd/properties/kd/{get_distiller(kd).name}.yaml",
        "kd_settings": {**(common or {}), **arm_settings},
        "steps_timed": steps,
        "steps_per_epoch": per_epoch,
        "setup_seconds": setup_seconds,
        "epoch_hook_seconds": hook_seconds,
        "median_ms": {kind: 1000 * value for kind, value in median.items()},
        "scratch_epoch_seconds_est": scratch_epoch,
        "kd_epoch_seconds_est": kd_epoch,
        "ratio_to_scratch": kd_epoch / scratch_epoch,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="gowalla")
    parser.add_argument("--dataset-config", default=None, help="dataset YAML (default configs/dataset/<dataset>.yaml)")
    parser.add_argument("--teacher", required=True, help="BPR teacher checkpoint on the same split")
    parser.add_argument("--steps", type=int, default=30, help="timed batches per arm (after 3 warm-up batches)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--arms", nargs="*", default=list(KD_ARMS), choices=list(KD_ARMS))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config settings for every arm (an arm's own settings win), e.g. freqd_neighbors=16")
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    common = {}
    for item in args.set:
        key, _, value = item.partition("=")
        common[key] = yaml.safe_load(value)
    dataset_config = args.dataset_config
    if dataset_config is None and (ROOT / f"configs/dataset/{args.dataset}.yaml").is_file():
        dataset_config = str(ROOT / f"configs/dataset/{args.dataset}.yaml")
    if args.arm:
        print(json.dumps(run_arm(args.arm, args.dataset, args.teacher, args.steps, args.threads, dataset_config, common)))
        return
    results = []
    for arm in args.arms:
        command = [sys.executable, __file__, "--arm", arm, "--dataset", args.dataset, "--teacher", args.teacher,
                   "--steps", str(args.steps), "--threads", str(args.threads), "--set", *args.set]
        if dataset_config:
            command += ["--dataset-config", dataset_config]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{arm}: failed\n{done.stderr[-2000:]}", file=sys.stderr, flush=True)
            continue
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"{arm:22s} x{r['ratio_to_scratch']:6.2f}  setup {r['setup_seconds']:7.2f} s  hook "
              f"{r['epoch_hook_seconds']:6.2f} s  step {r['median_ms']['kd']:8.1f} ms vs {r['median_ms']['scratch']:.1f} "
              f"ms (+ loader {r['median_ms']['loader']:.1f} ms)  RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    report = {"dataset": args.dataset, "teacher": Path(args.teacher).name, "steps": args.steps, "threads": args.threads,
              "settings": common,
              "date": time.strftime("%Y-%m-%d"), "arms": results}
    if args.out:
        from freqd.io import atomic_write_text

        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
