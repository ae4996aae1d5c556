"""``freqd compare``: config checks, per-user metrics vs RecBole, statistics, resume, reproducibility, report."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy import stats

from freqd.compare import (
    ComparisonConfigError,
    StaleResultError,
    load_comparison_config,
    parse_comparison_config,
    run_comparison,
)
from freqd.compare.stats import paired_tests

REPO = Path(__file__).resolve().parents[1]
FREQD_YAML = str(REPO / "configs" / "kd" / "freqd.yaml")

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**changes) -> dict:
    """Two epochs, tiny dimensions, two arms, two seeds on ml-100k: seconds per run (None drops a key)."""
    config = {
        "title": "tiny",
        "dataset": "ml-100k",
        "overrides": {"epochs": 2, "eval_batch_size": 1_000_000, "use_gpu": False, "state": "ERROR"},
        "teacher": {"model": "BPR", "embedding_size": 16, "seed": 0},
        "student": {"model": "BPR", "embedding_size": 4},
        "seeds": [0, 1],
        "control": "scratch",
        "arms": [{"name": "scratch"},
                 {"name": "freqd", "label": "FreqD", "kd": "FreqD", "config_files": [FREQD_YAML]}],
        "latency": {"users": 200, "batch_size": 100, "repeats": 1, "warmup": 0},
    }
    config.update(changes)
    return {key: value for key, value in config.items() if value is not None}


def write_config(folder: Path, **changes) -> Path:
    path = folder / "compare.yaml"
    path.write_text(yaml.safe_dump(tiny_config(**changes), allow_unicode=True))
    return path


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """One finished tiny comparison (teacher + 2 arms x 2 seeds), run with one thread."""
    folder = tmp_path_factory.mktemp("compare")
    cwd, threads, omp = os.getcwd(), torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    os.chdir(folder)
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        config = write_config(folder)
        report = run_comparison(config, out=folder / "out", progress=False)
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = omp
    return folder, config, report


@pytest.fixture
def copy_of(done, tmp_path):
    """A private copy of the finished comparison's folder (tests may delete or change files)."""
    folder, config, _ = done
    shutil.copytree(folder / "out", tmp_path / "out")
    shutil.copy(config, tmp_path / "compare.yaml")
    return tmp_path / "compare.yaml", tmp_path / "out"


def metrics_of(out: Path) -> dict:
    """Every stored (arm, seed) metric and per-user array of a comparison folder."""
    found = {"teacher": json.loads((out / "teacher.json").read_text())["metrics"]}
    for path in sorted((out / "arms").glob("*/s*.json")):
        found[f"{path.parent.name}/{path.stem}"] = json.loads(path.read_text())["metrics"]
        with np.load(path.with_suffix(".npz")) as arrays:
            found[f"{path.parent.name}/{path.stem}/ndcg@20"] = arrays["ndcg@20"].tolist()
    return found


# -- the finished comparison ---------------------------------------------------------------------
@pytest.mark.slow
def test_report_files_and_content(done):
    folder, _, report = done
    out = folder / "out"
    for name in ("report.md", "results.csv", "runs.csv", "groups.csv", "results.json", "bars.png", "curves.png",
                 "spectral.png"):
        assert (out / name).stat().st_size > 0
    assert [row["name"] for row in report["rows"]] == ["teacher", "scratch", "freqd"]
    assert {e["arm"] for e in report["executed"]} == {"teacher", "scratch", "freqd"} and len(report["executed"]) == 5
    stored = json.loads((out / "results.json").read_text())
    assert stored["rows"][2]["metrics"]["ndcg@20"]["values"] == report["rows"][2]["metrics"]["ndcg@20"]["values"]
    markdown = (out / "report.md").read_text()
    for text in ("% teacher NDCG@20", "gap recovered", "users/s (top-20)", "Wilcoxon p", "Q5", "head Recall@20",
                 "![bars.png](bars.png)", "## Definitions"):
        assert text in markdown
    scratch, freqd = report["rows"][1], report["rows"][2]
    assert scratch["significance"] is None
    assert freqd["significance"]["n_pairs"] == report["n_test_users"]
    # Δ per seed = difference of the per-seed means (which are RecBole's test numbers, checked above).
    expected = [f - c for f, c in zip(freqd["metrics"]["ndcg@20"]["values"], scratch["metrics"]["ndcg@20"]["values"])]
    assert freqd["significance"]["per_seed_delta"] == pytest.approx(expected, abs=1e-6)
    assert freqd["significance"]["mean_diff"] == pytest.approx(sum(expected) / 2, abs=1e-6)
    teacher_mean = report["rows"][0]["metrics"]["ndcg@20"]["mean"]
    scratch_mean, freqd_mean = (float(np.mean(row["metrics"]["ndcg@20"]["values"])) for row in (scratch, freqd))
    assert freqd["gap_recovered"]["ndcg@20"] == pytest.approx(
        (freqd_mean - scratch_mean) / (teacher_mean - scratch_mean), rel=1e-9)
    assert freqd["n_parameters"] == scratch["n_parameters"] == 4 * (944 + 1683)
    assert report["rows"][0]["compression"] == 1.0 and freqd["compression"] == pytest.approx(4.0)
    assert freqd["latency"]["users"] == 200 and freqd["latency"]["users_per_s"] > 0
    # Size and speed are measured once per run, right after it, and stored with its result.
    for path in [out / "teacher.json", *sorted((out / "arms").glob("*/s*.json"))]:
        result = json.loads(path.read_text())
        assert result["size"]["n_parameters"] == (16 if path.stem == "teacher" else 4) * (944 + 1683), path
        assert result["latency"]["users"] == 200 and result["latency"]["users_per_s"] > 0, path
    seeds = [json.loads((out / "arms" / "freqd" / f"s{s}.json").read_text())["latency"]["users_per_s"] for s in (0, 1)]
    assert freqd["latency"]["values"] == seeds and freqd["latency"]["users_per_s"] == pytest.approx(sum(seeds) / 2)


@pytest.mark.slow
def test_groups_partition_users_and_items(done):
    _, _, report = done
    groups = report["groups"]
    assert sum(g["n_users"] for g in groups["activity"]) == report["n_test_users"]
    assert groups["n_head_items"] == math.ceil(0.2 * 1682)
    maxima = [g["max_train"] for g in groups["activity"]]
    minima = [g["min_train"] for g in groups["activity"]]
    assert all(hi <= lo for hi, lo in zip(maxima[:-1], minima[1:]))
    assert 0 < groups["items"][0]["n_users"] <= report["n_test_users"]


@pytest.mark.slow
def test_per_user_means_equal_recbole_test_result(done):
    """The mean of the stored per-user metrics is RecBole's test_result (rounded to 6 places)."""
    folder, _, _ = done
    out = folder / "out"
    for path in [out / "teacher.json", *sorted((out / "arms").glob("*/s*.json"))]:
        result = json.loads(path.read_text())
        with np.load(path.with_suffix(".npz")) as arrays:
            for key in ("recall@10", "recall@20", "ndcg@10", "ndcg@20"):
                assert arrays[key].mean() == pytest.approx(result["run"]["test_result"][key], abs=5.01e-7), path
                assert arrays[key].mean() == result["metrics"][key]


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["recbole", "reference"])
def test_per_user_metrics_match_the_trainer_on_each_protocol(done, protocol):
    from freqd.compare.evaluate import aggregate, build_eval_context, load_model, per_user_metrics
    from freqd.trainers import Trainer

    folder, config, _ = done
    comparison = load_comparison_config(config).with_overrides(overrides={"protocol": protocol})
    ctx = build_eval_context(comparison)
    model = load_model(folder / "out" / json.loads((folder / "out" / "teacher.json").read_text())["checkpoint"], ctx)
    per_user = per_user_metrics(model, ctx, (10, 20), 20)
    ours = aggregate(per_user, ctx, ["recall@10", "recall@20", "ndcg@10", "ndcg@20"])
    trainer = Trainer(ctx.config, model, metadata={"n_real_users": ctx.n_real_users})
    expected = trainer.evaluate(ctx.test_data, load_best_model=False)
    for key, value in ours.items():
        assert value == pytest.approx(expected[key], abs=5.01e-7)
    if protocol == "reference":
        assert ours["ndcg@20"] == pytest.approx(per_user["ndcg@20"].sum() / ctx.n_real_users)


@pytest.mark.slow
def test_resume_runs_only_the_missing_result(copy_of, done):
    config, out = copy_of
    before = metrics_of(out)
    (out / "arms" / "freqd" / "s1.json").unlink()
    report = run_comparison(config, out=out, progress=False)
    assert report["executed"] == [{"arm": "freqd", "seed": 1}]
    assert metrics_of(out) == before


@pytest.mark.slow
def test_two_jobs_store_the_same_results_as_one_and_name_a_failed_run(done, tmp_path):
    """``jobs=2`` in a fresh folder: the teacher, then the arms in two worker processes. The arms that
    finish store the numbers of the one-process run; a failing arm is named with its seed; the
    report follows once the failed arm is left out (its finished runs are reused, not rerun)."""
    from freqd.compare.runner import RunFailedError

    folder, _, _ = done
    out = tmp_path / "out"
    # Valid settings that only the run can refuse: a teacher rank above the teacher's width (16).
    arms = tiny_config()["arms"] + [{"name": "broken", "kd": "FreqD", "config_files": [FREQD_YAML],
                                     "overrides": {"freqd_teacher_rank": 32}}]
    config = write_config(tmp_path, seeds=[0], arms=arms)
    with pytest.raises(RunFailedError) as error:
        run_comparison(config, out=out, progress=False, jobs=2)
    message = str(error.value)
    assert "1 of 3 runs failed" in message and "scratch" not in message and "freqd seed" not in message
    assert "broken seed 0: ValueError: freqd_teacher_rank=32 exceeds the teacher's size 16" in message
    original = metrics_of(folder / "out")
    assert metrics_of(out) == {key: value for key, value in original.items() if "s1" not in key}
    for path in [out / "teacher.json", *sorted((out / "arms").glob("*/s0.json"))]:
        assert json.loads(path.read_text())["run"]["threads"] == 1, path
    assert not (out / "arms" / "broken" / "s0.json").exists() and not (out / "report.md").exists()
    report = run_comparison(config, out=out, progress=False, jobs=2, arms=["scratch", "freqd"])
    assert report["executed"] == [] and [row["name"] for row in report["rows"]] == ["teacher", "scratch", "freqd"]
    assert "threads" in (out / "runs.csv").read_text().splitlines()[0].split(",")


def test_jobs_must_be_a_positive_integer(tmp_path):
    with pytest.raises(ComparisonConfigError, match="jobs=0 is invalid"):
        run_comparison(write_config(tmp_path), out=tmp_path / "out", progress=False, jobs=0)


def test_threads_is_checked_in_the_yaml_and_left_out_of_the_hash(tmp_path):
    with pytest.raises(ComparisonConfigError, match=r"arms\[0\]\.overrides\.threads=0 is invalid"):
        load_comparison_config(write_config(tmp_path, arms=[{"name": "a", "overrides": {"threads": 0}}], control=None))
    config = load_comparison_config(write_config(tmp_path))
    with pytest.raises(ComparisonConfigError, match="command-line override threads='x' is invalid"):
        config.with_overrides(overrides={"threads": "x"})
    key = config.arm_key(config.arms[0], 0, "t")[0]
    assert config.with_overrides(overrides={"threads": 2}).arm_key(config.arms[0], 0, "t")[0] == key


@pytest.mark.slow
def test_arm_subset_reports_finished_runs_without_training(copy_of):
    config, out = copy_of
    (out / "arms" / "freqd" / "s1.json").unlink()
    report = run_comparison(config, out=out, progress=False, arms=["scratch"])
    assert report["executed"] == []
    assert [row["name"] for row in report["rows"][1:]] == ["scratch"]
    with pytest.raises(ComparisonConfigError, match=r"arms \['nope'\] are not in the config"):
        run_comparison(config, out=out, progress=False, arms=["nope"])


@pytest.mark.slow
def test_report_only_trains_nothing_and_names_the_missing_runs(copy_of, tmp_path, capsys):
    """``--report-only`` rebuilds the report from stored results; a missing run is an error that names
    it and the selections that are complete, and nothing is trained or deleted."""
    from freqd.cli import main

    config, out = copy_of
    (out / "report.md").unlink()
    report = run_comparison(config, out=out, progress=False, report_only=True)
    assert report["executed"] == [] and (out / "report.md").is_file()
    assert [row["name"] for row in report["rows"]] == ["teacher", "scratch", "freqd"]
    before = metrics_of(out)
    (out / "arms" / "freqd" / "s1.json").unlink()
    del before["freqd/s1"], before["freqd/s1/ndcg@20"]
    with pytest.raises(ComparisonConfigError) as error:
        run_comparison(config, out=out, progress=False, report_only=True)
    assert str(error.value).startswith(f"1 of 5 results are not stored in {out}: freqd seed 1;")
    assert "--seeds 0 reports the seeds every arm has finished" in str(error.value)
    assert "--arms" not in str(error.value)  # the only complete arm is the control
    assert metrics_of(out) == before and not (out / "arms" / "freqd" / "s1.json").exists()
    assert main(["compare", str(config), "--out", str(out), "--report-only", "--seeds", "0", "--no-progress"]) == 0
    assert "none (all reused)" in capsys.readouterr().out
    (out / "arms" / "scratch" / "s1.json").unlink()
    (out / "arms" / "freqd" / "s0.json").unlink()
    with pytest.raises(ComparisonConfigError, match=r"3 of 5 results .*: freqd seed 0, scratch seed 1, freqd seed 1; "
                                                    r"the report needs every \(arm, seed\) of the selection$"):
        run_comparison(config, out=out, progress=False, report_only=True)
    assert main(["compare", str(config), "--out", str(tmp_path / "none"), "--report-only"]) == 2
    assert "no comparison folder" in capsys.readouterr().err and not (tmp_path / "none").exists()


@pytest.mark.slow
def test_a_torn_per_user_file_is_recomputed(copy_of):
    config, out = copy_of
    (out / "arms" / "scratch" / "s0.npz").write_bytes(b"torn")
    report = run_comparison(config, out=out, progress=False, seeds=[0])
    assert report["executed"] == [{"arm": "scratch", "seed": 0}]


@pytest.mark.slow
def test_changed_arm_config_is_refused_then_rerun(copy_of):
    config, out = copy_of
    raw = yaml.safe_load(config.read_text())
    raw["arms"][1]["overrides"] = {"freqd_alpha": 0.3}
    config.write_text(yaml.safe_dump(raw, allow_unicode=True))
    with pytest.raises(StaleResultError) as error:
        run_comparison(config, out=out, progress=False)
    message = str(error.value)
    assert "arms/freqd/s0.json" in message and "arms/freqd/s1.json" in message and "freqd_alpha" in message
    assert "scratch" not in message and "--rerun-stale" in message


@pytest.mark.slow
def test_changed_teacher_makes_distilled_arms_stale_not_scratch(copy_of):
    config, out = copy_of
    with pytest.raises(StaleResultError) as error:
        run_comparison(config, out=out, progress=False, teacher_overrides={"embedding_size": 8})
    message = str(error.value)
    assert "teacher.json" in message and "embedding_size: 16 -> 8" in message
    assert "arms/freqd/s0.json" in message and "arms/scratch" not in message


@pytest.mark.slow
@pytest.mark.parametrize("route", ["yaml", "argument"])
def test_existing_checkpoint_as_teacher(done, tmp_path, route):
    """A trained checkpoint named in the YAML, or passed as ``teacher_checkpoint`` in place of the
    YAML's teacher (``--teacher-checkpoint``), is evaluated, not retrained."""
    folder, _, report = done
    checkpoint = folder / "out" / json.loads((folder / "out" / "teacher.json").read_text())["checkpoint"]
    if route == "yaml":
        config = write_config(tmp_path, teacher={"checkpoint": str(checkpoint)}, arms=[{"name": "scratch"}], seeds=[0])
        result = run_comparison(config, out=tmp_path / "out", progress=False)
    else:
        config = write_config(tmp_path, arms=[{"name": "scratch"}], seeds=[0])
        result = run_comparison(config, out=tmp_path / "out", progress=False, teacher_checkpoint=checkpoint)
        stored = (tmp_path / "out" / "teacher.json").read_text()
        assert json.loads(stored)["source"] == "checkpoint" and json.loads(stored)["checkpoint"] is None
        assert json.loads(stored)["checkpoint_name"] == checkpoint.name and str(checkpoint.parent) not in stored
    assert result["executed"] == [{"arm": "teacher", "seed": 0}, {"arm": "scratch", "seed": 0}]
    assert result["rows"][0]["metrics"] == report["rows"][0]["metrics"]
    assert result["rows"][1]["metrics"]["ndcg@20"]["values"] == report["rows"][1]["metrics"]["ndcg@20"]["values"][:1]


@pytest.mark.slow
def test_a_teacher_rebuilt_elsewhere_keeps_results_and_other_weights_make_them_stale(done, tmp_path):
    """A teacher checkpoint enters the results' keys by its weights: the same weights saved again at
    another path with another saved config (a rebuild on another machine) reuse every stored result
    and are the file distilled from; changed weights make the teacher and the distilled arm stale."""
    from freqd.checkpoints import load_checkpoint

    folder, _, _ = done
    original = folder / "out" / json.loads((folder / "out" / "teacher.json").read_text())["checkpoint"]
    first = tmp_path / "first" / "BPR-a.pth"
    first.parent.mkdir()
    shutil.copy(original, first)
    config = write_config(tmp_path, arms=[{"name": "freqd", "kd": "FreqD", "config_files": [FREQD_YAML]}], seeds=[0],
                          control="teacher")
    out = tmp_path / "out"
    run_comparison(config, out=out, progress=False, teacher_checkpoint=first)
    stored = metrics_of(out)

    checkpoint = load_checkpoint(first)
    checkpoint["config"]["checkpoint_dir"] = str(tmp_path / "elsewhere")
    rebuilt = tmp_path / "second" / "BPR-b.pth"
    rebuilt.parent.mkdir()
    torch.save(checkpoint, rebuilt)
    assert rebuilt.read_bytes() != first.read_bytes()
    shutil.rmtree(first.parent)
    result = run_comparison(config, out=out, progress=False, teacher_checkpoint=rebuilt)
    assert result["executed"] == [] and metrics_of(out) == stored

    (out / "arms" / "freqd" / "s0.json").unlink()
    result = run_comparison(config, out=out, progress=False, teacher_checkpoint=rebuilt)
    assert result["executed"] == [{"arm": "freqd", "seed": 0}] and metrics_of(out) == stored

    other = next(key for key, value in checkpoint["state_dict"].items() if value.is_floating_point())
    checkpoint["state_dict"][other] = checkpoint["state_dict"][other] + 0.01
    changed = tmp_path / "third" / "BPR-c.pth"
    changed.parent.mkdir()
    torch.save(checkpoint, changed)
    with pytest.raises(StaleResultError) as error:
        run_comparison(config, out=out, progress=False, teacher_checkpoint=changed)
    assert "teacher.json" in str(error.value) and "arms/freqd/s0.json" in str(error.value)


def test_teacher_checkpoint_argument_errors(tmp_path, capsys):
    from freqd.cli import main

    config = load_comparison_config(write_config(tmp_path))
    with pytest.raises(ComparisonConfigError, match="teacher checkpoint 'nowhere.pth' not found"):
        config.with_overrides(teacher_checkpoint="nowhere.pth")
    (tmp_path / "t.pth").write_bytes(b"")
    with pytest.raises(ComparisonConfigError, match="teacher overrides given but the teacher is the checkpoint"):
        config.with_overrides(teacher_checkpoint=tmp_path / "t.pth", teacher_overrides={"epochs": 1})
    assert main(["compare", str(tmp_path / "compare.yaml"), "--teacher-checkpoint", "nowhere.pth"]) == 2
    assert "teacher checkpoint 'nowhere.pth' not found" in capsys.readouterr().err


@pytest.mark.slow
def test_split_seed_gives_every_seed_the_same_split():
    from freqd.datasets.loading import dataset_fingerprint
    from freqd.runs import setup

    def fingerprint(**settings):
        _, _, (train, _, _) = setup("BPR", "ml-100k", None, {"state": "ERROR", "use_gpu": False, **settings})
        return dataset_fingerprint(train._dataset)

    assert fingerprint(seed=0, split_seed=2020) == fingerprint(seed=1, split_seed=2020) != fingerprint(seed=1)


# -- the CLI and the benchmark script ------------------------------------------------------------
@pytest.mark.slow
def test_cli_compare_prints_tables_from_reused_runs(copy_of, capsys):
    from freqd.cli import main

    config, out = copy_of
    assert main(["compare", str(config), "--out", str(out), "--seeds", "0,1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "none (all reused)" in printed and "| FreqD | FreqD | 4 |" in printed and "Wilcoxon p" in printed


def test_cli_compare_reports_config_errors(tmp_path, capsys):
    from freqd.cli import main

    config = write_config(tmp_path, control="nobody")
    assert main(["compare", str(config)]) == 2
    assert "control: 'nobody' is not an arm" in capsys.readouterr().err
    assert main(["compare", str(write_config(tmp_path)), "--seed=3"]) == 2
    assert "'seed' is set by the comparison itself" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_compare_smoke_reproduces_in_a_fresh_folder(done, tmp_path):
    """The benchmark script on the tiny ml-100k config (seed 0), in a fresh folder: the same numbers."""
    spec = importlib.util.spec_from_file_location("bench_compare", REPO / "benchmarks" / "bench_compare.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    folder, _, report = done
    config = write_config(tmp_path, seeds=[0])
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## 4. Earlier\n\ntext\n")
    for _ in range(2):  # the second call reuses every run and replaces the section in place
        assert bench.main([str(config), "--out-root", str(tmp_path / "bench"), "--results", str(results)]) == 0
    text = results.read_text()
    assert text.count("<!-- compare:compare -->") == 1 and text.count("## 5. Offline A/B comparisons") == 1
    assert "python benchmarks/bench_compare.py" in text and "| FreqD | FreqD | 4 |" in text
    assert "trained 0 of the 3 runs" in text
    fresh = metrics_of(tmp_path / "bench" / "compare")
    original = metrics_of(folder / "out")
    assert fresh == {key: value for key, value in original.items() if "s1" not in key}


# -- config parsing ------------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    ({"arms": [{"name": "a"}, {"name": "a"}]}, "arm name 'a' is used twice"),
    ({"arms": [{"name": "x", "kd": "NoSuchKD"}]}, "arms[0].kd: unknown distiller 'NoSuchKD'; available: ["),
    ({"arms": [{"name": "bad name"}]}, "arms[0].name"),
    ({"arms": [{"name": "x", "overide": {}}]}, "unknown key arms[0].'overide'"),
    ({"arms": [{"name": "x", "config_files": ["missing.yaml"]}]}, "arms[0].config_files: config file 'missing.yaml'"),
    ({"seeds": [0, 0]}, "seeds: [0, 0] repeats a seed"),
    ({"seeds": "0,1"}, "seeds: expected a non-empty list of integers, got '0,1'"),
    ({"control": "nobody"}, "control: 'nobody' is not an arm"),
    ({"overrides": {"seed": 3}}, "overrides.seed: set by the comparison itself"),
    ({"teacher": {"model": "BPR", "checkpoint": "x.pth"}}, "either 'checkpoint' or a model"),
    ({"teacher": {"checkpoint": "nowhere.pth"}}, "teacher.checkpoint: 'nowhere.pth' not found"),
    ({"student": {"model": "NoSuchNet"}}, "student.model: unknown model 'NoSuchNet'"),
    ({"student": {"model": "BPR", "embedding_size": 0}}, "student.embedding_size: expected a positive integer"),
    ({"evaluation": {"test_metric": "ndcg@50"}}, "evaluation.test_metric"),
    ({"latency": {"repeats": 0}}, "latency.repeats: invalid value 0"),
    ({"colour": "red"}, "unknown key 'colour'"),
])
def test_config_errors_name_the_key_and_value(tmp_path, change, message):
    path = write_config(tmp_path, **change)
    with pytest.raises(ComparisonConfigError) as error:
        load_comparison_config(path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_config_file_naming_another_dataset_or_model_is_refused(tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("dataset: gowalla\n")
    with pytest.raises(ComparisonConfigError, match="sets dataset 'gowalla'"):
        load_comparison_config(write_config(tmp_path, config_files=[str(other)]))
    other.write_text("model: LightGCN\n")
    with pytest.raises(ComparisonConfigError, match="sets model 'LightGCN', but the teacher is a BPR"):
        load_comparison_config(write_config(tmp_path, teacher={"model": "BPR", "config_files": [str(other)]}))


def test_paths_resolve_against_the_config_file_and_shipped_configs_parse(tmp_path):
    (tmp_path / "kd").mkdir()
    shutil.copy(FREQD_YAML, tmp_path / "kd" / "freqd.yaml")
    arms = [{"name": "freqd", "kd": "freqd", "config_files": ["kd/freqd.yaml"]}]
    config = load_comparison_config(write_config(tmp_path, arms=arms, control=None))
    assert config.arms[0].config_files == ((tmp_path / "kd" / "freqd.yaml").resolve(),)
    assert config.arms[0].kd == "FreqD" and config.control == "freqd"
    for path in sorted((REPO / "configs" / "compare").glob("*.yaml")):
        shipped = load_comparison_config(path)
        assert shipped.control == "scratch" and len(shipped.seeds) == 3


def test_arm_hash_follows_file_contents_not_presentation(tmp_path):
    kd = tmp_path / "kd.yaml"
    kd.write_text("freqd_alpha: 0.5\n")
    raw = tiny_config(arms=[{"name": "f", "kd": "FreqD", "config_files": [str(kd)]}], control=None)
    config = parse_comparison_config(raw)
    key = config.arm_key(config.arms[0], 0, "t")[0]
    assert config.with_overrides(overrides={"show_progress": True}).arm_key(config.arms[0], 0, "t")[0] == key
    assert config.arm_key(config.arms[0], 1, "t")[0] != key
    assert config.arm_key(config.arms[0], 0, "other teacher")[0] != key
    kd.write_text("freqd_alpha: 0.4\n")
    assert config.arm_key(config.arms[0], 0, "t")[0] != key


# -- statistics ----------------------------------------------------------------------------------
def test_paired_tests_match_scipy_and_report_effect_sizes():
    rng = np.random.default_rng(0)
    control = rng.random(300)
    arm = control + rng.normal(0.02, 0.1, 300)
    out = paired_tests(arm, control)
    diff = arm - control
    assert out["n_pairs"] == 300 and out["mean_diff"] == pytest.approx(diff.mean())
    assert out["t_pvalue"] == pytest.approx(stats.ttest_rel(arm, control).pvalue)
    assert out["wilcoxon_pvalue"] == pytest.approx(stats.wilcoxon(arm, control).pvalue)
    assert out["d_z"] == pytest.approx(diff.mean() / diff.std(ddof=1))
    expected = stats.t.interval(0.95, df=299, loc=diff.mean(), scale=stats.sem(diff))
    assert out["ci95"] == pytest.approx(list(expected), rel=1e-12)
    assert out["wins"] + out["ties"] + out["losses"] == 300


def test_paired_t_interval_is_the_textbook_one():
    # Differences 1..5: mean 3, sd √2.5, t(0.975, 4) = 2.7764451: 3 ± 2.7764451 · √2.5 / √5.
    out = paired_tests(np.array([2.0, 4.0, 6.0, 8.0, 10.0]), np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert out["ci95"] == pytest.approx([3 - 2.7764451 / math.sqrt(2), 3 + 2.7764451 / math.sqrt(2)], rel=1e-7)
    assert out["ci95"] == pytest.approx(list(stats.t.interval(0.95, df=4, loc=3.0, scale=math.sqrt(0.5))), rel=1e-12)
    assert out["t_statistic"] == pytest.approx(3 / math.sqrt(0.5)) and out["d_z"] == pytest.approx(3 / math.sqrt(2.5))


def test_paired_tests_on_identical_samples():
    values = np.linspace(0, 1, 10)
    out = paired_tests(values, values)
    assert out["t_pvalue"] == 1.0 and out["wilcoxon_pvalue"] == 1.0 and out["d_z"] == 0.0 and out["ties"] == 10


def test_command_line_overrides_beat_every_yaml_setting():
    raw = tiny_config(arms=[{"name": "a", "overrides": {"epochs": 5, "learning_rate": 0.1}}], control=None)
    config = parse_comparison_config(raw).with_overrides(
        overrides={"epochs": 1, "embedding_size": 7}, student_overrides={"embedding_size": 3},
        teacher_overrides={"embedding_size": 9})
    arm = config.arm_overrides(config.arms[0], seed=4)
    assert (arm["epochs"], arm["learning_rate"], arm["embedding_size"], arm["seed"]) == (1, 0.1, 3, 4)
    teacher = config.teacher_overrides()
    assert (teacher["epochs"], teacher["embedding_size"], teacher["seed"]) == (1, 9, 0)
    assert arm["split_seed"] == 2020 and arm["state"] == "ERROR"


def test_quickstart_defaults_yield_to_the_users_yaml(tmp_path):
    from freqd.compare import quickstart_config

    assert quickstart_config().overrides == {"eval_batch_size": 1_000_000, "stopping_step": 30,
                                             "train_sampler": "fast"}
    own = tmp_path / "mine.yaml"
    own.write_text("stopping_step: 5\ntrain_sampler: recbole\n")
    config = quickstart_config(config_files=[str(own)])
    assert config.overrides == {"eval_batch_size": 1_000_000}
    assert config.arm_overrides(config.arms[0], seed=0).get("stopping_step") is None


def test_yaml_settings_merge_and_errors(tmp_path):
    from freqd.compare.config import file_settings
    from freqd.runs import data_settings

    first, second, bad = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "bad.yaml"
    first.write_text("dataset: ml-100k\nepochs: 3\n")
    second.write_text("epochs: 5\nsplit_seed: 7\n")
    bad.write_text("- a list\n")
    assert file_settings([first, second]) == {"dataset": "ml-100k", "epochs": 5, "split_seed": 7}
    assert data_settings([str(first), str(second)]) == {"dataset": "ml-100k", "split_seed": 7}
    with pytest.raises(ComparisonConfigError, match="bad.yaml must hold a mapping"):
        file_settings([bad])
    with pytest.raises(ValueError, match="bad.yaml must hold a mapping"):
        data_settings([str(bad)])


@pytest.mark.slow
def test_an_interrupted_run_continues_from_its_last_checkpoint(copy_of, monkeypatch):
    """A run that failed after its first epoch is continued, not restarted, and ends bit-identical."""
    from freqd.trainers.distill import DistillTrainer
    from freqd.trainers.trainer import Trainer

    config, out = copy_of
    before = metrics_of(out)
    for suffix in ("json", "npz"):
        (out / "arms" / "freqd" / f"s1.{suffix}").unlink()
    original_epoch, original_resume = DistillTrainer._train_epoch, Trainer.resume_checkpoint

    def failing_epoch(self, train_data, epoch_idx, *args, **kwargs):
        if epoch_idx == 1:
            raise RuntimeError("interrupted")
        return original_epoch(self, train_data, epoch_idx, *args, **kwargs)

    monkeypatch.setattr(DistillTrainer, "_train_epoch", failing_epoch)
    with pytest.raises(RuntimeError, match="interrupted"):
        run_comparison(config, out=out, progress=False)
    assert len(list((out / "arms" / "freqd" / "s1" / "saved").glob("*-last.pth"))) == 1
    monkeypatch.setattr(DistillTrainer, "_train_epoch", original_epoch)
    resumed_from = []

    def recording_resume(self, resume_file):
        resumed_from.append(Path(resume_file).name)
        return original_resume(self, resume_file)

    monkeypatch.setattr(Trainer, "resume_checkpoint", recording_resume)
    report = run_comparison(config, out=out, progress=False)
    assert report["executed"] == [{"arm": "freqd", "seed": 1}]
    assert len(resumed_from) == 1 and resumed_from[0].endswith("-last.pth")
    assert metrics_of(out) == before


def test_an_interrupted_run_of_another_configuration_is_started_over(tmp_path):
    from freqd.compare.runner import RUN_KEY, interrupted_run

    work = tmp_path / "s0"
    (work / "saved").mkdir(parents=True)
    assert interrupted_run(work, "abc") is None  # no key: an older layout, or nothing started
    (work / RUN_KEY).write_text("abc")
    assert interrupted_run(work, "abc") is None  # started, no -last.pth yet
    older, newer = work / "saved" / "BPR-1-last.pth", work / "saved" / "BPR-2-last.pth"
    older.write_bytes(b"1")
    newer.write_bytes(b"2")
    os.utime(older, ns=(1, 1))
    assert interrupted_run(work, "abc") == newer
    assert interrupted_run(work, "another") is None


@pytest.mark.slow
def test_a_run_held_by_another_process_is_waited_for_and_reused(copy_of, capsys, monkeypatch):
    """A second compare on the same folder waits on the run another process holds, then reuses its result.

    The holder keeps the lock until this process starts its blocking wait (a FileLock subclass signals
    it), so the order does not depend on how fast either process runs."""
    import subprocess
    import sys
    import time

    from freqd.compare import runner

    config, out = copy_of
    before = metrics_of(out)
    arm = out / "arms" / "freqd"
    aside = out.parent / "aside"
    aside.mkdir()
    for suffix in ("json", "npz"):
        shutil.move(arm / f"s1.{suffix}", aside / f"s1.{suffix}")
    ready, release = out.parent / "ready", out.parent / "release"

    class SignallingLock(runner.FileLock):
        def acquire(self, timeout=None, *args, **kwargs):
            if timeout != 0:  # the blocking wait, after the "another process" message
                release.touch()
            return super().acquire(timeout, *args, **kwargs)

    monkeypatch.setattr(runner, "FileLock", SignallingLock)
    holder = subprocess.Popen([sys.executable, "-c", f"""
import os, shutil, time
from filelock import FileLock
with FileLock({str(arm / "s1.lock")!r}):
    open({str(ready)!r}, "w").close()
    deadline = time.monotonic() + 120
    while not os.path.exists({str(release)!r}) and time.monotonic() < deadline:
        time.sleep(0.05)
    for suffix in ("json", "npz"):  # the other process stores its result, then releases the lock
        shutil.move({str(aside)!r} + f"/s1.{{suffix}}", {str(arm)!r} + f"/s1.{{suffix}}")
"""])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline, "the lock holder did not start"
            time.sleep(0.05)
        report = run_comparison(config, out=out, progress=False)
    finally:
        release.touch()
        holder.wait(timeout=60)
    assert holder.returncode == 0
    assert report["executed"] == []
    assert "freqd seed 1: another process is running it" in capsys.readouterr().err
    assert metrics_of(out) == before


def test_run_lock_is_exclusive_and_released_after_a_failure(tmp_path):
    from filelock import FileLock, Timeout

    from freqd.compare.runner import run_lock

    class Bar:
        @staticmethod
        def write(text, file=None):
            raise AssertionError(f"waited although the lock was free: {text}")

    work = tmp_path / "arms" / "scratch" / "s0"
    with run_lock(work, "scratch seed 0", Bar()):
        assert (tmp_path / "arms" / "scratch" / "s0.lock").exists()
        with pytest.raises(Timeout):
            FileLock(work.with_name("s0.lock")).acquire(timeout=0)
    with pytest.raises(RuntimeError, match="boom"), run_lock(work, "scratch seed 0", Bar()):
        raise RuntimeError("boom")
    with FileLock(work.with_name("s0.lock")).acquire(timeout=0):
        pass


def test_per_user_metrics_against_brute_force_with_history_masks_and_item_groups(monkeypatch):
    """Recall/NDCG/MAP@k and head/tail recall per user, from sparse positives, against a dense loop."""
    monkeypatch.setattr(np, "float", float, raising=False)  # RecBole's metrics need the alias its Config sets
    from types import SimpleNamespace

    from recbole.data.interaction import Interaction

    from freqd.compare.evaluate import per_user_metrics

    rng = np.random.default_rng(5)
    n_users, n_items, k = 7, 15, 5                            # item 0 is RecBole's padding item
    scores = torch.from_numpy(rng.normal(size=(n_users, n_items)).astype(np.float32))
    history = [(u, i) for u in range(n_users) for i in rng.choice(np.arange(1, n_items), 3, replace=False)]
    free = {u: [i for i in range(1, n_items) if (u, i) not in history] for u in range(n_users)}
    positives = [(u, int(i)) for u in range(n_users) if u != 3       # user 3 has no test items
                 for i in rng.choice(free[u], int(rng.integers(1, 5)), replace=False)]
    positives.append(positives[0])                                   # a repeated pair counts once
    head = torch.zeros(n_items, dtype=torch.bool)
    head[rng.choice(np.arange(1, n_items), 5, replace=False)] = True

    class Model:
        def eval(self):
            return self

        def full_sort_predict(self, interaction):
            return scores[interaction["user_id"]].clone().view(-1)

    batches = []
    for rows in (np.arange(0, 4), np.arange(4, n_users)):          # two evaluation batches, local row indices
        hist = [(r, i) for r, u in enumerate(rows) for (v, i) in history if v == u]
        pos = [(r, i) for r, u in enumerate(rows) for (v, i) in positives if v == u]
        batches.append((Interaction({"user_id": torch.from_numpy(rows)}),
                        (torch.tensor([a for a, _ in hist]), torch.tensor([b for _, b in hist])),
                        torch.tensor([a for a, _ in pos]), torch.tensor([b for _, b in pos])))
    config = {"device": "cpu", "topk": [k], "metric_decimal_place": 4}

    class Loader:
        _dataset = SimpleNamespace(item_num=n_items)

        def __iter__(self):
            return iter(batches)

    ctx = SimpleNamespace(config=config, head_items=head, users=np.arange(n_users),
                          train_dataset=SimpleNamespace(uid_field="user_id"), test_data=Loader())
    got = per_user_metrics(Model(), ctx, (k,), k)
    for u in range(n_users):
        masked = scores[u].clone()
        masked[0] = -math.inf
        for v, i in history:
            if v == u:
                masked[i] = -math.inf
        top = [int(i) for i in torch.argsort(masked, descending=True)[:k]]
        mine = {i for v, i in positives if v == u}
        hits = [int(i in mine) for i in top]
        for name, group in (("recall", mine), ("head_recall", {i for i in mine if head[i]}),
                            ("tail_recall", {i for i in mine if not head[i]})):
            expected = sum(i in group for i in top) / len(group) if group else math.nan
            assert got[f"{name}@{k}"][u] == pytest.approx(expected, nan_ok=True), (name, u)
        dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(mine), k)))
        assert got[f"ndcg@{k}"][u] == pytest.approx(dcg / idcg if mine else math.nan, nan_ok=True)
        precisions = [sum(hits[: r + 1]) / (r + 1) for r in range(k) if hits[r]]
        expected_map = sum(precisions) / min(len(mine), k) if mine else math.nan
        assert got[f"map@{k}"][u] == pytest.approx(expected_map, nan_ok=True)
