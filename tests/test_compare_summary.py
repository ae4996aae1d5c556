"""The comparison report's arithmetic on a synthetic store: no training, no dataset, no model loaded."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from freqd.compare import parse_comparison_config
from freqd.compare.store import (
    StoredResults,
    arm_paths,
    check_stale,
    is_done,
    load_result,
    read_results,
    teacher_paths,
    write_result,
)
from freqd.compare.summary import EvalData, summarise

SEEDS = [0, 1, 2]
N_USERS = 60
KEYS = ["recall@10", "ndcg@10", "recall@20", "ndcg@20"]
#: NDCG@20 of each run, chosen so that the means, stds and gaps below are easy to check by hand.
NDCG20 = {"teacher": [0.30], "scratch": [0.20, 0.22, 0.24], "freqd": [0.25, 0.26, 0.30], "fd": [0.21, 0.21, 0.21]}
#: users/s measured at run time (None: a result stored before timings were, as in older folders).
SPEED = {"teacher": [1000.0], "scratch": [3000.0, 3300.0, 3600.0], "freqd": [2500.0, 2700.0, 2900.0],
         "fd": [None, None, None]}


def comparison_config(**changes):
    raw = {
        "title": "synthetic", "dataset": "ml-100k",
        "teacher": {"model": "BPR", "embedding_size": 32, "seed": 0},
        "student": {"model": "BPR", "embedding_size": 4},
        "seeds": SEEDS, "control": "scratch",
        "arms": [{"name": "scratch"}, {"name": "freqd", "label": "FreqD", "kd": "FreqD"},
                 {"name": "fd", "label": "plain FD", "kd": "FreqD", "overrides": {"freqd_alpha": 0.0}}],
        "evaluation": {"activity_groups": 3},
        "latency": {"users": 200, "batch_size": 100, "repeats": 2, "warmup": 0},
    }
    raw.update(changes)
    return parse_comparison_config(raw)


def eval_data() -> EvalData:
    counts = np.arange(N_USERS) % 7 + 1
    order = np.lexsort((np.arange(N_USERS), counts))
    return EvalData(protocol="recbole", n_users=N_USERS + 5, n_items=40, users=np.arange(1, N_USERS + 1),
                    user_train_counts=counts, activity_groups=[np.sort(g) for g in np.array_split(order, 3)],
                    n_head_items=8, head_share=0.55)


def per_user(rng, ndcg20: float) -> dict[str, np.ndarray]:
    """Per-user arrays whose NDCG@20 mean is ``ndcg20``; head/tail arrays NaN for users without such items."""
    arrays = {"users": np.arange(1, N_USERS + 1)}
    for key in KEYS:
        noise = rng.normal(0.0, 0.08, N_USERS)
        arrays[key] = (ndcg20 if key == "ndcg@20" else rng.uniform(0.1, 0.4)) + noise - noise.mean()
    for group in ("head", "tail"):
        for metric in ("recall@20", "ndcg@20"):
            values = rng.uniform(0.0, 0.5, N_USERS)
            values[rng.random(N_USERS) < 0.3] = np.nan
            arrays[f"{group}_{metric}"] = values
    return arrays


def run_result(name: str, index: int, arrays, timed: bool = True) -> dict:
    speed = SPEED[name][index]
    result = {
        "name": name, "label": name, "key": f"key-{name}-{index}", "spec": {},
        "metrics": {key: float(arrays[key].mean()) for key in KEYS},
        "run": {"model": "BPR", "embedding_size": 32 if name == "teacher" else 4, "epochs_run": 10 + index,
                "best_epoch": 5 + index, "converged": index != 2, "stopping": [1, 5, 1],
                "train_seconds_per_epoch": 0.5 + index, "threads": 1},
        "history": [{"epoch": e, "valid_ndcg@20": 0.1 + 0.01 * e} for e in range(3)],
        "checkpoint": f"nowhere/{name}-{index}.pth", "wall_seconds": 10.0,
    }
    if name == "teacher":
        result.update(kind="teacher", source="trained")
    else:
        result.update(kind="arm", seed=SEEDS[index])
    if timed and speed is not None:
        n_parameters = 1000 if name == "teacher" else 100
        result["size"] = {"n_parameters": n_parameters, "bytes": 4 * n_parameters}
        result["latency"] = {"users_per_s": speed, "seconds": [200 / speed], "users": 200, "batch_size": 100,
                             "threads": 1, "k": 20, "repeats": 2, "warmup": 0}
    return result


def synthetic(timed: bool = True) -> StoredResults:
    rng = np.random.default_rng(7)
    teacher_users = per_user(rng, NDCG20["teacher"][0])
    arms, users = {}, {}
    for name in ("scratch", "freqd", "fd"):
        arms[name], users[name] = [], {}
        for index, seed in enumerate(SEEDS):
            arrays = per_user(rng, NDCG20[name][index])
            arms[name].append(run_result(name, index, arrays, timed))
            users[name][seed] = arrays
    return StoredResults(teacher=run_result("teacher", 0, teacher_users, timed), teacher_users=teacher_users,
                         arms=arms, users=users)


def write_store(stored: StoredResults, out):
    write_result(*teacher_paths(out)[:2], stored.teacher, stored.teacher_users)
    for name, results in stored.arms.items():
        for seed, result in zip(SEEDS, results):
            json_path, npz_path, _ = arm_paths(out, name, seed)
            json_path.parent.mkdir(parents=True, exist_ok=True)
            write_result(json_path, npz_path, result, stored.users[name][seed])
    return out


@pytest.fixture
def summary():
    stored = synthetic()
    return summarise(comparison_config(), stored, eval_data()), stored


def rows_by_name(summary):
    return {row.name: row for row in summary.rows}


# -- the arithmetic ------------------------------------------------------------------------------
def test_mean_and_sample_std_over_seeds(summary):
    rows = rows_by_name(summary[0])
    scratch, freqd, fd = (rows[name].metrics["ndcg@20"] for name in ("scratch", "freqd", "fd"))
    assert scratch["mean"] == pytest.approx(0.22, abs=1e-12)
    assert scratch["std"] == pytest.approx(0.02, abs=1e-12)  # sample std (ddof 1): sqrt((0.02² + 0 + 0.02²) / 2)
    assert freqd["mean"] == pytest.approx(0.27, abs=1e-12)
    assert freqd["std"] == pytest.approx(math.sqrt((0.02 ** 2 + 0.01 ** 2 + 0.03 ** 2) / 2), abs=1e-12)
    assert fd["std"] == pytest.approx(0.0, abs=1e-12)
    assert freqd["values"] == pytest.approx([0.25, 0.26, 0.30], abs=1e-12)
    teacher = rows["teacher"].metrics["ndcg@20"]
    assert teacher["mean"] == pytest.approx(0.30, abs=1e-12) and teacher["std"] is None
    assert rows["freqd"].epochs_run["mean"] == 11.0 and rows["freqd"].epochs_run["std"] == pytest.approx(1.0)
    assert rows["freqd"].not_converged == 1 and rows["freqd"].best_epoch["mean"] == 6.0


def test_gap_recovered_and_share_of_teacher(summary):
    result, stored = summary
    rows = rows_by_name(result)
    assert result.gap_reference == "scratch"
    # (0.27 − 0.22) ÷ (0.30 − 0.22) and (0.21 − 0.22) ÷ (0.30 − 0.22), by hand.
    assert rows["freqd"].gap_recovered["ndcg@20"] == pytest.approx(0.625, abs=1e-9)
    assert rows["fd"].gap_recovered["ndcg@20"] == pytest.approx(-0.125, abs=1e-9)
    assert rows["freqd"].relative_to_teacher["ndcg@20"] == pytest.approx(0.9, abs=1e-9)
    assert rows["teacher"].gap_recovered["ndcg@20"] == pytest.approx(1.0)
    for key in KEYS:  # every metric, from the stored per-seed numbers
        teacher = stored.teacher["metrics"][key]
        scratch = np.mean([r["metrics"][key] for r in stored.arms["scratch"]])
        freqd = np.mean([r["metrics"][key] for r in stored.arms["freqd"]])
        assert rows["freqd"].gap_recovered[key] == pytest.approx((freqd - scratch) / (teacher - scratch), rel=1e-12)
        assert rows["freqd"].relative_to_teacher[key] == pytest.approx(freqd / teacher, rel=1e-12)


def test_gap_is_measured_from_the_first_scratch_arm_when_the_control_is_distilled():
    stored = synthetic()
    result = summarise(comparison_config(control="fd"), stored, eval_data())
    rows = rows_by_name(result)
    assert result.gap_reference == "scratch" and rows["fd"].significance is None
    assert rows["freqd"].gap_recovered["ndcg@20"] == pytest.approx(0.625, abs=1e-9)


def test_teacher_as_control_without_a_scratch_arm():
    comparison = comparison_config(control="teacher", arms=[{"name": "freqd", "label": "FreqD", "kd": "FreqD"}])
    result = summarise(comparison, synthetic(), eval_data())
    teacher, freqd = result.rows
    assert result.gap_reference is None and freqd.gap_recovered is None and teacher.significance is None
    assert freqd.significance["per_seed_delta"] == pytest.approx([-0.05, -0.04, 0.0], abs=1e-12)


def test_paired_tests_against_the_control_average_each_user_over_seeds_first(summary):
    result, stored = summary
    rows = rows_by_name(result)
    assert rows["scratch"].significance is None
    control = np.mean([stored.users["scratch"][s]["ndcg@20"] for s in SEEDS], axis=0)
    for name in ("freqd", "fd"):
        arm = np.mean([stored.users[name][s]["ndcg@20"] for s in SEEDS], axis=0)
        test = rows[name].significance
        assert test["n_pairs"] == N_USERS
        assert test["mean_diff"] == pytest.approx((arm - control).mean(), abs=1e-12)
        assert test["wilcoxon_pvalue"] == pytest.approx(stats.wilcoxon(arm - control).pvalue, rel=1e-9)
        assert test["t_pvalue"] == pytest.approx(stats.ttest_rel(arm, control).pvalue, rel=1e-9)
        assert test["wins"] == int((arm > control).sum()) and test["losses"] == int((arm < control).sum())
    # The teacher's single run stands for every seed.
    teacher = rows["teacher"].significance
    assert teacher["wilcoxon_pvalue"] == pytest.approx(
        stats.wilcoxon(stored.teacher_users["ndcg@20"] - control).pvalue, rel=1e-9)
    assert teacher["per_seed_delta"] == pytest.approx([0.10, 0.08, 0.06], abs=1e-12)


def test_per_seed_deltas_are_differences_of_the_seed_means(summary):
    rows = rows_by_name(summary[0])
    assert rows["freqd"].significance["per_seed_delta"] == pytest.approx([0.05, 0.04, 0.06], abs=1e-12)
    assert rows["fd"].significance["per_seed_delta"] == pytest.approx([0.01, -0.01, -0.03], abs=1e-12)


def test_size_and_speed_come_from_the_stored_measurements(summary):
    rows = rows_by_name(summary[0])
    assert rows["teacher"].speedup == pytest.approx(1.0) and rows["teacher"].compression == pytest.approx(1.0)
    assert rows["scratch"].latency["users_per_s"] == pytest.approx(3300.0)  # mean over the seeds
    assert rows["scratch"].latency["values"] == [3000.0, 3300.0, 3600.0]
    assert rows["scratch"].speedup == pytest.approx(3300.0 / 1000.0)
    assert rows["freqd"].speedup == pytest.approx(2700.0 / 1000.0)
    assert rows["freqd"].compression == pytest.approx(10.0) and rows["freqd"].bytes == 400
    assert rows["fd"].latency is None and rows["fd"].speedup is None and rows["fd"].n_parameters is None
    assert rows["fd"].compression is None


def test_groups_are_means_of_per_user_values_over_seeds(summary):
    result, stored = summary
    data = eval_data()
    rows = rows_by_name(result)
    assert [g["n_users"] for g in result.groups.activity] == [20, 20, 20]
    for group, positions in zip(result.groups.activity, data.activity_groups):
        counts = data.user_train_counts[positions]
        assert (group["min_train"], group["max_train"]) == (counts.min(), counts.max())
        per_seed = [stored.users["freqd"][s]["ndcg@20"][positions].mean() for s in SEEDS]
        stat = rows["freqd"].activity[group["group"]]["ndcg@20"]
        assert stat["mean"] == pytest.approx(np.mean(per_seed))
        assert stat["std"] == pytest.approx(np.std(per_seed, ddof=1))
    head = stored.teacher_users["head_recall@20"]
    assert result.groups.items[0] == {"group": "head", "n_users": int((~np.isnan(head)).sum())}
    assert rows["teacher"].items["head"]["recall@20"]["mean"] == pytest.approx(np.nanmean(head))


def test_per_user_arrays_of_other_users_are_refused():
    stored = synthetic()
    stored.users["freqd"][1]["users"] = stored.users["freqd"][1]["users"][::-1].copy()
    with pytest.raises(ValueError, match="freqd seed 1"):
        summarise(comparison_config(), stored, eval_data())


# -- the store and the report --------------------------------------------------------------------
def test_store_round_trip_and_a_torn_file(tmp_path):
    stored = synthetic()
    out = write_store(stored, tmp_path / "out")
    loaded = read_results(comparison_config(), out)
    assert loaded.arms["freqd"][2]["metrics"] == stored.arms["freqd"][2]["metrics"]
    np.testing.assert_array_equal(loaded.users["fd"][1]["ndcg@20"], stored.users["fd"][1]["ndcg@20"])
    json_path, npz_path, _ = arm_paths(out, "scratch", 0)
    assert is_done(json_path, npz_path, "key-scratch-0") and not is_done(json_path, npz_path, "other")
    npz_path.write_bytes(b"torn")
    assert load_result(json_path, npz_path) is None
    with pytest.raises(FileNotFoundError, match="s0.json"):
        read_results(comparison_config(), out)


def test_results_stored_without_measurements_are_reused_not_stale(tmp_path):
    """Results made before size and latency were stored keep their key: reused, not rerun."""
    comparison = comparison_config()
    teacher_key, teacher_content = comparison.teacher_key()
    keys = {(arm.name, seed): comparison.arm_key(arm, seed, teacher_key) for arm in comparison.arms for seed in SEEDS}
    stored = synthetic(timed=False)
    stored.teacher.update(key=teacher_key, spec=teacher_content)
    for name, results in stored.arms.items():
        for seed, result in zip(SEEDS, results):
            result.update(key=keys[(name, seed)][0], spec=keys[(name, seed)][1])
    out = write_store(stored, tmp_path / "out")
    check_stale(out, teacher_key, teacher_content, keys, rerun_stale=False)
    for (name, seed), (key, _) in keys.items():
        assert is_done(*arm_paths(out, name, seed)[:2], key)
    assert "latency" not in json.loads(teacher_paths(out)[0].read_text())


@pytest.fixture
def no_models(monkeypatch):
    """Loading or timing a model fails the test."""
    import torch

    import freqd.compare.evaluate as evaluate

    def refuse(*args, **kwargs):
        raise AssertionError("the report loaded or timed a model")

    for name in ("load_model", "measure_latency", "model_size"):
        monkeypatch.setattr(evaluate, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)


def test_build_report_reads_the_store_only(tmp_path, no_models):
    from freqd.compare.report import build_report

    out = write_store(synthetic(), tmp_path / "out")
    report = build_report(comparison_config(), out, eval_data())
    assert [row["name"] for row in report["rows"]] == ["teacher", "scratch", "freqd", "fd"]
    assert report["rows"][2]["gap_recovered"]["ndcg@20"] == pytest.approx(0.625, abs=1e-9)
    for name in ("report.md", "results.csv", "runs.csv", "groups.csv", "results.json", "bars.png", "curves.png"):
        assert (out / name).stat().st_size > 0, name
    with open(out / "results.csv", newline="") as handle:
        results = {row["arm"]: row for row in csv.DictReader(handle)}
    assert float(results["freqd"]["ndcg@20_gap_recovered"]) == pytest.approx(0.625, abs=1e-9)
    assert float(results["scratch"]["speedup_vs_teacher"]) == pytest.approx(3.3)
    assert results["fd"]["users_per_s"] == "" and results["fd"]["speedup_vs_teacher"] == ""
    with open(out / "runs.csv", newline="") as handle:
        runs = list(csv.DictReader(handle))
    assert len(runs) == 10 and runs[0]["arm"] == "teacher" and runs[3]["seed"] == "2"
    stored = json.loads((out / "results.json").read_text())
    assert stored["rows"][2]["significance"]["per_seed_delta"] == pytest.approx([0.05, 0.04, 0.06], abs=1e-12)
    markdown = (out / "report.md").read_text()
    assert "| scratch | BPR d=4 | 100 | 400 B | 10.0 | — | — | 3,300 | 3.3 |" in markdown
    assert "| plain FD | BPR d=4 | — | — | — | — | — | — | — |" in markdown
    assert "users/s (top-20)" in markdown and "measured per model, right after its run" in markdown


def test_a_folder_stored_without_measurements_renders_dashes(tmp_path, no_models):
    from freqd.compare.report import build_report, size_table

    stored = synthetic(timed=False)
    stored.teacher.update(run=None, source="checkpoint", history=[])
    report = build_report(comparison_config(), write_store(stored, tmp_path / "out"), eval_data())
    table = size_table(report)
    assert "| users/s | × teacher speed |" in table
    assert "| teacher | — | — | — | — | — | — | — | — |" in table
    assert "| FreqD | BPR d=4 | — | — | — | — | — | — | — | 1.50 ± 1.00 |" in table
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "teacher (seed 0) → student BPR d=4" in markdown


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_report_store_and_summary_import_without_the_runner():
    """No import cycle: the report side never imports the runner (nor the model code); the runner imports it."""
    code = ("import sys, freqd.compare.report, freqd.compare.summary, freqd.compare.store; "
            "print(sorted(m for m in sys.modules if m in ('freqd.compare.runner', 'freqd.compare.evaluate'))); "
            "import freqd.compare.runner")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_measure_latency_times_one_model():
    import torch

    from freqd.compare.evaluate import measure_latency

    class Tables:
        def cached_embeddings(self):
            return torch.ones(11, 4), torch.ones(31, 4)

    spec = comparison_config().latency
    timed = measure_latency(Tables(), np.arange(1, 11), spec)
    assert timed["users"] == 200 and timed["k"] == 20 and len(timed["seconds"]) == spec.repeats
    assert timed["users_per_s"] == pytest.approx(200 / min(timed["seconds"]))
