"""``freqd tune``: config errors, a search that never touches test, resume, interrupted trials, pruning."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml
from filelock import FileLock

from freqd import runs, tune
from freqd.cli import main
from freqd.io import file_sha256
from freqd.trainers import Trainer
from freqd.tune import (
    JOURNAL,
    SearchBusyError,
    TuneConfigError,
    load_study,
    load_tune_config,
    repair_journal,
    restore_sampler_state,
    run_tune,
    sampler_rngs,
    save_sampler_state,
    study_storage,
)

pytestmark = pytest.mark.usefixtures("one_thread")

RUN = {"epochs": 2, "embedding_size": 8, "train_sampler": "fast", "use_gpu": False}
SPACE = {"learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}


def _write(path: Path, content: dict) -> Path:
    path.write_text(yaml.safe_dump(content), encoding="utf-8")
    return path


@pytest.mark.parametrize("content, message", [
    ({"model": "BPR"}, "space must map at least one"),
    ({"model": "BPR", "space": SPACE, "trails": 3}, r"unknown keys \['trails'\]"),
    ({"model": "BPR", "space": {"kd_weight": {"type": "float", "low": 1, "high": 0.5}}}, r"low \(1\) must be below"),
    ({"model": "BPR", "space": {"kd_weight": {"type": "float", "low": 0, "high": 1, "log": True}}}, "low > 0"),
    ({"model": "BPR", "space": {"kd_weight": {"type": "normal", "low": 0, "high": 1}}}, "type='normal'"),
    ({"model": "BPR", "space": {"kd_weight": {"type": "float", "low": 0, "hi": 1}}}, r"unknown keys \['hi'\]"),
    ({"model": "BPR", "space": {"projector": {"type": "categorical", "choices": ["linear"]}}}, "at least 2"),
    ({"model": "BPR", "space": {"seed": {"type": "int", "low": 0, "high": 3}}}, "sets 'seed' itself"),
    ({"model": "BPR", "space": SPACE, "overrides": {"learning_rate": 0.1}}, "also fixed in overrides"),
    ({"model": "BPR", "space": SPACE, "kd": "FreqD"}, "needs a teacher checkpoint"),
    ({"model": "BPR", "space": SPACE, "kd": "Nope", "teacher": "t.pth"}, "unknown distiller"),
    ({"model": "BPR", "space": SPACE, "trials": 0}, "trials must be an integer >= 1"),
    ({"model": "BPR", "space": SPACE, "config_files": ["missing.yaml"]}, "'missing.yaml' not found"),
    ({"model": "BPR", "space": SPACE, "pruner": {"patience": 3}}, "pruner must be"),
])
def test_bad_tune_configs_name_the_file_and_key(tmp_path, content, message):
    path = _write(tmp_path / "bad.yaml", content)
    with pytest.raises(TuneConfigError, match=message) as info:
        load_tune_config(path)
    assert "bad.yaml" in str(info.value)


@pytest.fixture
def spy(monkeypatch):
    """Which loaders each run builds and which ones its trainer evaluates."""
    seen = {"built": [], "evaluated": []}
    build = runs.build_dataloaders

    def recording_build(config, data):
        loaders = build(config, data)
        seen["built"].append(loaders)
        return loaders

    evaluate = Trainer.evaluate

    def recording_evaluate(self, eval_data, *args, **kwargs):
        seen["evaluated"].append(eval_data)
        return evaluate(self, eval_data, *args, **kwargs)

    monkeypatch.setattr(runs, "build_dataloaders", recording_build)
    monkeypatch.setattr(Trainer, "evaluate", recording_evaluate)
    return seen


@pytest.mark.slow
def test_distillation_search_resumes_and_never_evaluates_test(tmp_path, bpr_teacher_32, spy):
    space = {"kd_weight": {"type": "float", "low": 0.1, "high": 2.0, "log": True},
             "freqd_alpha": {"type": "float", "low": 0.0, "high": 0.5}}
    path = _write(tmp_path / "search.yaml", {"model": "BPR", "kd": "FreqD", "overrides": RUN, "space": space,
                                              "trials": 2, "pruner": "none"})
    config = load_tune_config(path, teacher=bpr_teacher_32)
    out = tmp_path / "out"
    summary = run_tune(config, out=out, progress=False)
    assert (summary["finished"], summary["complete"]) == (2, 2)
    assert len(spy["built"]) == 2
    tests = {id(loaders[2]) for loaders in spy["built"]}
    valids = {id(loaders[1]) for loaders in spy["built"]}
    assert spy["evaluated"] and all(id(loader) in valids for loader in spy["evaluated"])
    assert not any(id(loader) in tests for loader in spy["evaluated"])
    # The best values are written with the fixed overrides, inside the space.
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert 0.1 <= best["kd_weight"] <= 2.0 and 0.0 <= best["freqd_alpha"] <= 0.5
    assert best["embedding_size"] == 8
    rows = (out / "trials.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and rows[0].split(",")[:3] == ["trial", "state", "value"]
    assert {"kd_weight", "freqd_alpha", "best_epoch", "converged"} <= set(rows[0].split(","))
    values = [float(r.split(",")[2]) for r in rows[1:]]
    assert summary["best_value"] == pytest.approx(max(values))
    # Rerun with a larger budget: only the missing trial is trained.
    again = run_tune(config, out=out, trials=3, progress=False, overrides={"threads": 1})
    assert (again["finished"], len(spy["built"])) == (3, 3)
    assert "threads" not in yaml.safe_load((out / "best.yaml").read_text())     # the machine's, not a result
    # Another space in the same folder is refused.
    changed = _write(tmp_path / "search.yaml", {"model": "BPR", "kd": "FreqD", "overrides": RUN, "trials": 2,
                                                 "space": {**space, "freqd_alpha": {"type": "float", "low": 0.1,
                                                                                     "high": 0.5}}})
    with pytest.raises(ValueError, match="another configuration"):
        run_tune(load_tune_config(changed, teacher=bpr_teacher_32), out=out, progress=False)


def test_a_spent_budget_queues_no_continuation(tmp_path):
    path = _write(tmp_path / "search.yaml", {"model": "BPR", "overrides": RUN, "space": SPACE, "trials": 1})
    out = tmp_path / "out"
    out.mkdir()
    study = optuna.create_study(storage=study_storage(out), study_name="freqd-tune", direction="maximize")
    space = {"learning_rate": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True)}
    study.tell(study.ask(space), 0.5)
    study.ask(space)  # cut by a kill after a run with a larger budget
    summary = run_tune(load_tune_config(path), out=out, progress=False)
    assert [t.state.name for t in load_study(out).trials] == ["COMPLETE", "RUNNING"]
    assert (summary["finished"], summary["best_value"]) == (1, 0.5)
    assert [row.split(",")[1] for row in (out / "trials.csv").read_text().splitlines()[1:]] == ["COMPLETE", "RUNNING"]


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["journal", "sqlite"])  # a search begun by an earlier freqd is in study.db
def test_interrupted_trial_is_run_again_with_its_values(tmp_path, storage):
    path = _write(tmp_path / "search.yaml", {"model": "BPR", "overrides": RUN, "space": SPACE, "trials": 1})
    config = load_tune_config(path)
    out = tmp_path / "out"
    out.mkdir()
    url = (optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / JOURNAL)))
           if storage == "journal" else f"sqlite:///{out / 'study.db'}")
    study = optuna.create_study(storage=url, study_name="freqd-tune", direction="maximize")
    cut = study.ask({"learning_rate": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True)})
    summary = run_tune(config, out=out, progress=False)
    trials = load_study(out).trials
    states = [t.state.name for t in trials]
    assert states == ["FAIL", "COMPLETE"] and (summary["failed"], summary["cut"]) == (0, 1)
    rows = list(csv.DictReader((out / "trials.csv").read_text().splitlines()))
    assert [(row["state"], row["continues"]) for row in rows] == [("FAIL", ""), ("COMPLETE", "0")]
    assert trials[1].params == cut.params
    assert (out / JOURNAL).exists() == (storage == "journal")


@pytest.mark.slow
def test_a_search_moved_to_another_folder_continues_with_a_rebuilt_teacher(tmp_path, bpr_teacher_32, spy,
                                                                            monkeypatch):
    space = {"kd_weight": {"type": "float", "low": 0.1, "high": 2.0, "log": True}}
    search = {"model": "BPR", "kd": "KD", "config_files": ["run.yaml"], "space": space, "trials": 2, "pruner": "none"}
    _write(tmp_path / "run.yaml", RUN)
    path = _write(tmp_path / "search.yaml", search)
    headers = []
    write = tune._write_outputs

    def recording(config, study, out, *args):  # best.yaml's first line each time the files are written
        summary = write(config, study, out, *args)
        headers.append((out / "best.yaml").read_text().splitlines()[0])
        return summary

    monkeypatch.setattr(tune, "_write_outputs", recording)
    whole = run_tune(load_tune_config(path, teacher=bpr_teacher_32), out=tmp_path / "whole", progress=False)
    # Written after each trial (twice after the last: by the callback, then at the end).
    assert ["under way" in header for header in headers] == [True, False, False]
    assert "best of 2 trials (budget 2)" in headers[-1]
    first = tmp_path / "first"
    run_tune(load_tune_config(path, teacher=bpr_teacher_32), out=first, trials=1, progress=False)
    assert len((first / "trials.csv").read_text().strip().splitlines()) == 2  # written as each trial ends
    # Another machine: the checkout elsewhere (the YAML and the config files it names), the journal
    # copied into a new folder, the teacher rebuilt (same weights, a checkpoint that differs in its
    # saved config and optimizer state).
    elsewhere = tmp_path / "checkout"
    elsewhere.mkdir()
    _write(elsewhere / "run.yaml", RUN)
    here = load_tune_config(path, teacher=bpr_teacher_32)
    path = _write(elsewhere / "search.yaml", search)
    assert load_tune_config(path, teacher=bpr_teacher_32).path_fingerprint() != here.path_fingerprint()
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / JOURNAL).write_bytes((first / JOURNAL).read_bytes())
    state = torch.load(bpr_teacher_32, weights_only=False)
    state["config"]["checkpoint_dir"] = str(tmp_path / "elsewhere")
    state["optimizer"] = {}
    rebuilt = tmp_path / "rebuilt.pth"
    torch.save(state, rebuilt)
    assert file_sha256(rebuilt) != file_sha256(bpr_teacher_32)
    built = len(spy["built"])
    summary = run_tune(load_tune_config(path, teacher=rebuilt), out=moved, trials=2, progress=False)
    assert len(spy["built"]) == built + 1  # only the missing trial was trained
    assert summary["best_value"] == whole["best_value"] and summary["best_params"] == whole["best_params"]
    assert [t.params for t in load_study(moved).trials] == [t.params for t in load_study(tmp_path / "whole").trials]
    # A teacher with other weights does not mix into the search.
    state["state_dict"] = {k: v + 1e-3 if v.is_floating_point() else v for k, v in state["state_dict"].items()}
    other = tmp_path / "other.pth"
    torch.save(state, other)
    with pytest.raises(ValueError, match="teacher's weights"):
        run_tune(load_tune_config(path, teacher=other), out=moved, trials=3, progress=False)


class _InterruptAt(optuna.pruners.BasePruner):
    """Never prunes; raises KeyboardInterrupt (a Ctrl-C) when the trial reports ``step``."""

    def __init__(self, step: int):
        self.step = step

    def prune(self, study, trial) -> bool:
        if trial.last_step == self.step:
            raise KeyboardInterrupt
        return False


@pytest.mark.slow
def test_a_trial_cut_mid_run_continues_exactly(tmp_path, monkeypatch):
    epochs = {"n": 0}
    train_epoch = Trainer._train_epoch

    def counting(self, *args, **kwargs):
        epochs["n"] += 1
        return train_epoch(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_train_epoch", counting)
    run = {**RUN, "epochs": 6, "eval_step": 1, "stopping_step": 10}
    path = _write(tmp_path / "search.yaml", {"model": "BPR", "overrides": run, "space": SPACE, "trials": 1})
    config = load_tune_config(path)
    reference = run_tune(config, out=tmp_path / "whole", progress=False, pruner=optuna.pruners.NopPruner())
    assert epochs["n"] == 6
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        run_tune(config, out=out, progress=False, pruner=_InterruptAt(3))
    assert epochs["n"] == 6 + 4  # epochs 0-3 (RecBole counts from 0)
    summary = run_tune(config, out=out, progress=False, pruner=optuna.pruners.NopPruner())
    # The continued trial trained only the epochs after its last checkpoint (epoch 2: the cut came
    # during the evaluation of epoch 3), and ends exactly where the uncut search ended.
    assert epochs["n"] == 6 + 4 + 3
    assert summary["best_value"] == reference["best_value"]
    assert summary["best_params"] == reference["best_params"]
    cut, whole = load_study(out).trials
    assert (cut.state.name, whole.state.name) == ("FAIL", "COMPLETE")
    uncut = load_study(tmp_path / "whole").trials[0]
    assert whole.intermediate_values == uncut.intermediate_values and len(uncut.intermediate_values) == 6
    assert whole.user_attrs["resumed_from"].startswith("runs/saved/trial-0/")  # inside the folder: portable
    assert whole.user_attrs["resumed_from"].endswith("-last.pth") and whole.user_attrs["run_dir"].startswith("runs/")
    assert not list((out / "runs" / "saved").glob("trial-*"))  # finished trials leave no checkpoints
    # A further run has nothing left to continue.
    again = run_tune(config, out=out, progress=False)
    assert again["finished"] == 1 and epochs["n"] == 13


@pytest.mark.slow
def test_a_pruned_trial_stops_at_its_first_evaluation(tmp_path, spy):
    path = _write(tmp_path / "search.yaml", {"model": "BPR", "overrides": {**RUN, "epochs": 5}, "space": SPACE,
                                              "trials": 1})
    summary = run_tune(load_tune_config(path), out=tmp_path / "out", progress=False,
                       pruner=optuna.pruners.ThresholdPruner(lower=2.0))  # every NDCG is below 2: prune
    assert (summary["finished"], summary["pruned"], summary["complete"]) == (1, 1, 0)
    assert len(spy["evaluated"]) == 1
    assert "best_params" not in summary and not (tmp_path / "out" / "best.yaml").exists()


@pytest.mark.slow
def test_a_running_trial_says_where_it_is(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tune, "STATUS_SECONDS", 0.0)
    path = _write(tmp_path / "search.yaml", {"model": "BPR", "overrides": {**RUN, "epochs": 3, "eval_step": 1},
                                              "space": SPACE, "trials": 1})
    run_tune(load_tune_config(path), out=tmp_path / "out", progress=True)
    err = capsys.readouterr().err
    said = re.findall(r"trial 0: epoch \d+", err)
    assert said == ["trial 0: epoch 0", "trial 0: epoch 1", "trial 0: epoch 2"]  # one per evaluation
    run_tune(load_tune_config(path), out=tmp_path / "quiet", progress=False)
    assert "trial 0: epoch" not in capsys.readouterr().err


def test_a_second_process_on_the_same_search_is_refused(tmp_path, capsys):
    path = _write(tmp_path / "search.yaml", {"model": "BPR", "overrides": RUN, "space": SPACE, "trials": 1})
    out = tmp_path / "out"
    out.mkdir()
    held = FileLock(out / "tune.lock")  # what a running search holds
    held.acquire(timeout=0)
    try:
        with pytest.raises(SearchBusyError, match="another freqd tune is running"):
            run_tune(load_tune_config(path), out=out, progress=False)
        assert main(["tune", str(path), "--out", str(out), "--no-progress"]) == 2
        assert "another freqd tune is running the search in" in capsys.readouterr().err
        assert not (out / JOURNAL).exists()  # refused before touching the study
    finally:
        held.release()


def _draws(study, n: int) -> list[float]:
    distribution = optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True)
    values = []
    for _ in range(n):
        trial = study.ask({"learning_rate": distribution})
        values.append(trial.params["learning_rate"])
        study.tell(trial, 0.0)
    return values


def test_a_restarted_sampler_continues_its_random_stream():
    storage = optuna.storages.InMemoryStorage()
    uncut = _draws(optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0), direction="maximize"), 4)
    first = optuna.samplers.TPESampler(seed=0)
    study = optuna.create_study(storage=storage, study_name="s", sampler=first, direction="maximize")
    assert _draws(study, 2) == uncut[:2]
    save_sampler_state(study, first)
    second = optuna.samplers.TPESampler(seed=0)  # a new process: the seed's stream from its start
    restarted = optuna.load_study(storage=storage, study_name="s", sampler=second)
    restore_sampler_state(restarted, second, seed=0, n_params=1)
    assert _draws(restarted, 2) == uncut[2:]
    # A search stored without the state (an older freqd), still in the random start-up phase, with
    # one trial queued again after a cut: replayed, it draws what the uncut search drew.
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0), direction="maximize")
    _draws(study, 2)
    study.enqueue_trial({"learning_rate": uncut[1]})
    _draws(study, 1)
    fresh = optuna.samplers.TPESampler(seed=0)
    restore_sampler_state(study, fresh, seed=0, n_params=1)
    study.sampler = fresh
    assert _draws(study, 2) == uncut[2:]
    # Past the start-up phase the stream cannot be replayed: it is reseeded, not restarted.
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=1), direction="maximize")
    _draws(study, 2)
    fresh = optuna.samplers.TPESampler(seed=0, n_startup_trials=1)
    restore_sampler_state(study, fresh, seed=0, n_params=1)
    start = optuna.samplers.TPESampler(seed=0, n_startup_trials=1)
    for rng, initial in zip(sampler_rngs(fresh), sampler_rngs(start)):
        assert not np.array_equal(rng.get_state()[1], initial.get_state()[1])


def test_cli_reports_a_config_error(tmp_path, capsys):
    path = _write(tmp_path / "bad.yaml", {"model": "BPR", "space": {}})
    assert main(["tune", str(path)]) == 2
    assert "space must map" in capsys.readouterr().err


def test_a_journal_cut_mid_line_is_repaired_and_continues(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    storage = tune.study_storage(out)
    study = optuna.create_study(storage=storage, study_name="freqd-tune", direction="maximize")
    distribution = {"learning_rate": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True)}
    study.tell(study.ask(distribution), 0.5)
    whole = (out / JOURNAL).read_bytes()
    with open(out / JOURNAL, "ab") as handle:  # a kill in the middle of writing the next record
        handle.write(b'{"op_code":4,"worker_id":"x","study_id":0,"datetime_start":"20')
    (out / f"{JOURNAL}.lock").write_text("")  # the journal's lock, left by the killed writer
    with pytest.warns(UserWarning, match="dropped a last line"):
        repair_journal(out)
    assert (out / JOURNAL).read_bytes() == whole and not (out / f"{JOURNAL}.lock").exists()
    again = load_study(out)
    again.tell(again.ask(distribution), 0.7)
    assert [t.value for t in load_study(out).trials] == [0.5, 0.7]
    repair_journal(out)  # a whole journal is left as it is, without a warning
    assert len(load_study(out).trials) == 2


def test_shipped_tune_configs_parse(tmp_path):
    """Every configs/tune YAML loads: its files exist, its keys and space are valid, and a
    distilling search takes the teacher it is given (a placeholder file here)."""
    teacher = tmp_path / "teacher.pth"
    teacher.write_bytes(b"")
    shipped = sorted((Path(__file__).resolve().parents[1] / "configs" / "tune").glob("*.yaml"))
    assert shipped
    for path in shipped:
        kd = yaml.safe_load(path.read_text(encoding="utf-8")).get("kd")
        config = tune.load_tune_config(path, teacher=teacher if kd else None)
        assert config.kd == kd and config.space and config.trials >= 1, path.name
