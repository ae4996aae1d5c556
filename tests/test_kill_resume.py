"""Real ``kill -9``: ``freqd train``, ``distill``, ``compare`` and ``tune`` killed at random moments end bit-identical.

Each command runs in a subprocess on ml-100k with a tiny model. It is killed (SIGKILL) a seeded
random time after its first ``-last.pth`` appeared (within the time an uninterrupted run takes
from there to its ``results.json``; ``compare``: to its exit), resumed with ``--resume <its -last file>``
(``compare``: the same command again), possibly killed again, and finally left to finish. Its
final test metrics and checkpoints must equal an uninterrupted run's bit for bit (CPU), and every
resume must read a whole file. No temporary (``*.tmp``) should be left anywhere: see
:func:`_temporaries` for the one case where one still is.

``benchmarks/bench_kill_resume.py`` runs this module with ``$FREQD_KILL_RESUME_RECORD`` set: each
trial is then appended to that file as one JSON line (``$FREQD_KILL_RESUME_SEED`` draws other
kill moments).
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from freqd import load_checkpoint
from freqd.tune import load_study

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
EPOCHS = 8
TINY = [f"--epochs={EPOCHS}", "--eval_step=1", "--train_sampler=fast", "--threads=1", "--show_progress=False",
        "--state=WARNING"]
TRAIN = ["train", "--model", "BPR", "--dataset", "ml-100k", "--embedding_size=8", *TINY]
DISTILL_SETTINGS = ["--student", "BPR", "--kd", "FreqD", "--embedding_size", "8", "--freqd_neighbors=2",
                    "--freqd_spectral_log_every=0", *TINY]
KILLS = {"train": 3, "distill": 2, "compare": 1}
SEED = int(os.environ.get("FREQD_KILL_RESUME_SEED", "20261202"))


def _record(entry: dict) -> None:
    """One trial as a JSON line in ``$FREQD_KILL_RESUME_RECORD`` (the benchmark's record), if set."""
    target = os.environ.get("FREQD_KILL_RESUME_RECORD")
    if target:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")


def _start(args: list[str], cwd: Path, log: str) -> subprocess.Popen:
    """``python -m freqd <args>`` on one thread in ``cwd``, output to ``cwd/<log>`` (a pipe could fill and block)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    with open(cwd / log, "w", encoding="utf-8") as out:
        return subprocess.Popen([sys.executable, "-m", "freqd", *args], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def _finish(args: list[str], cwd: Path, log: str) -> str:
    process = _start(args, cwd, log)
    code = process.wait(timeout=600)
    output = (cwd / log).read_text(encoding="utf-8")
    assert code == 0, output[-3000:]
    return output


def _lasts(folder: Path) -> set[Path]:
    return set(folder.rglob("*-last.pth"))


def _kill_after_first_last(args: list[str], cwd: Path, log: str, delay: float) -> tuple[str, set[Path], float]:
    """Start the command, wait for a new ``-last.pth``, SIGKILL it ``delay`` s later.

    Returns (what happened, the ``-last`` files it wrote that remain, seconds from start to kill).
    """
    before = _lasts(cwd)
    start = time.perf_counter()
    process = _start(args, cwd, log)
    while not (_lasts(cwd) - before) and process.poll() is None:
        time.sleep(0.01)
    if process.poll() is None:
        time.sleep(delay)
    if process.poll() is not None:  # also a resumed run with one epoch left: its -last lives for milliseconds
        assert process.returncode == 0, (cwd / log).read_text(encoding="utf-8")[-3000:]
        return "finished before the kill", set(), time.perf_counter() - start
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return "killed", _lasts(cwd) - before, time.perf_counter() - start


def _reference(args: list[str], cwd: Path, log: str, end: str | None = "results.json") -> tuple[float, str]:
    """An uninterrupted run: (the kill window, its output). The window is the time from its first
    ``-last.pth`` until a file named ``end`` appears (the run's result; None: until it exits)."""
    process = _start(args, cwd, log)
    while not _lasts(cwd):
        assert process.poll() is None, (cwd / log).read_text(encoding="utf-8")[-3000:]
        time.sleep(0.01)
    seen = time.perf_counter()
    window = None
    while process.poll() is None:
        if window is None and end is not None and any(cwd.rglob(end)):
            window = time.perf_counter() - seen
        time.sleep(0.01)
    assert process.returncode == 0, (cwd / log).read_text(encoding="utf-8")[-3000:]
    return window or time.perf_counter() - seen, (cwd / log).read_text(encoding="utf-8")


def _results_file(output: str, cwd: Path) -> Path:
    line = next(line for line in output.splitlines() if line.startswith("results:"))
    return cwd / line.split(":", 1)[1].strip()


def _same_run(a: dict, b: dict, cwd_a: Path, cwd_b: Path) -> None:
    assert a["test_result"] == b["test_result"]
    assert (a["best_valid_score"], a["best_epoch"], a["epochs_run"]) == (b["best_valid_score"], b["best_epoch"],
                                                                       b["epochs_run"])
    first, second = load_checkpoint(cwd_a / a["checkpoint"]), load_checkpoint(cwd_b / b["checkpoint"])
    assert first["state_dict"].keys() == second["state_dict"].keys()
    for key, value in first["state_dict"].items():
        assert torch.equal(value, second["state_dict"][key]), key


def _temporaries(folder: Path, command: str) -> None:
    """No temporary may remain: a resumed run sweeps the killed run's checkpoint and run folders
    (``freqd.io.sweep_orphans``), and every atomic write removes dead writers' temporaries in its folder."""
    left = sorted(folder.rglob("*.tmp"))
    for tmp in left:
        pid = tmp.name.rsplit(".", 3)[1]
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)  # its writer is dead: an orphan, not a write in progress
    names = [str(tmp.relative_to(folder)) for tmp in left]
    _record({"command": command, "orphaned_temporaries": names})
    assert not left, f"orphaned temporaries of killed writers were not cleaned: {names}"


def _kill_and_resume(command: str, args: list[str], cwd: Path, window: float, rng: random.Random) -> str:
    """Kill ``args`` KILLS[command] times, resuming each time from the killed process's ``-last.pth``;
    then let it finish. A fresh run that finishes before its kill is started again (once); a resumed
    one that does is the final run. Returns the final run's output."""
    resume_from: Path | None = None
    resume_epoch, kills = -1, 0
    for trial in range(KILLS[command] + 1):
        if kills == KILLS[command]:
            break
        # The process's first -last is written after epoch resume_epoch + 1; scale the reference's
        # window (EPOCHS - 1 epochs, the test evaluation, results.json) to the epochs left after it.
        left = window * (EPOCHS - resume_epoch - 1) / EPOCHS
        delay = rng.uniform(0.0, 0.7 * left)
        current = args + (["--resume", str(resume_from)] if resume_from else [])
        results_before = set(cwd.rglob("results.json"))
        log = f"{command}-{trial}.log"
        outcome, written, seconds = _kill_after_first_last(current, cwd, log, delay)
        wrote_results = bool(set(cwd.rglob("results.json")) - results_before)
        entry = {"command": command, "trial": trial, "resumed": resume_from is not None,
                 "delay_after_first_last_s": round(delay, 3), "killed_at_s": round(seconds, 3), "outcome": outcome}
        if outcome == "killed":
            kills += 1
        if outcome == "killed" and written:
            (resume_from,) = written  # the killed process's own -last (the older ones are never rewritten)
            resume_epoch = entry["resume_from_epoch"] = int(load_checkpoint(resume_from)["epoch"])
            entry["outcome"] = f"killed; resumed from its -last (epoch {resume_epoch})"
        elif outcome == "killed":
            stage = ("after its results.json was written" if wrote_results else
                     "after training ended, before results.json (-last already deleted)")
            entry["outcome"] = (f"killed {stage}; "
                                + ("resumed from the previous -last" if resume_from else "rerun from the start"))
        elif resume_from is not None:
            entry["outcome"] = "finished before the kill: the final run"
        else:
            entry["outcome"] = "finished before the kill: started again"
        _record(entry)
        if outcome != "killed" and resume_from is not None:
            return (cwd / log).read_text(encoding="utf-8")
    return _finish(args + (["--resume", str(resume_from)] if resume_from else []), cwd, f"{command}-final.log")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An uninterrupted ``freqd train`` (the reference, and the teacher of the distillation) and its kill window."""
    folder = tmp_path_factory.mktemp("train-whole")
    window, output = _reference(TRAIN, folder, "whole.log")
    result = json.loads(_results_file(output, folder).read_text(encoding="utf-8"))
    return folder, result, window


def test_train_killed_and_resumed_is_bit_identical(trained, tmp_path):
    folder, whole, window = trained
    output = _kill_and_resume("train", TRAIN, tmp_path, window, random.Random(SEED))
    resumed = json.loads(_results_file(output, tmp_path).read_text(encoding="utf-8"))
    _same_run(whole, resumed, folder, tmp_path)
    _record({"command": "train", "identical": True, "window_s": round(window, 3)})
    _temporaries(tmp_path, "train")


def test_distill_killed_and_resumed_is_bit_identical(trained, tmp_path):
    folder, teacher, _ = trained
    args = ["distill", "--teacher", str(folder / teacher["checkpoint"]), *DISTILL_SETTINGS]
    reference = tmp_path / "whole"
    reference.mkdir()
    window, output = _reference(args, reference, "whole.log")
    whole = json.loads(_results_file(output, reference).read_text(encoding="utf-8"))
    killed = tmp_path / "killed"
    killed.mkdir()
    output = _kill_and_resume("distill", args, killed, window, random.Random(SEED + 1))
    resumed = json.loads(_results_file(output, killed).read_text(encoding="utf-8"))
    _same_run(whole, resumed, reference, killed)
    assert resumed["teacher_split_verified"] is True
    _record({"command": "distill", "identical": True, "window_s": round(window, 3)})
    _temporaries(killed, "distill")


COMPARISON = {
    "title": "kill -9",
    "dataset": "ml-100k",
    "overrides": {"epochs": EPOCHS, "eval_step": 1, "train_sampler": "fast", "eval_batch_size": 1_000_000,
                  "use_gpu": False, "freqd_spectral_log_every": 0, "freqd_neighbors": 2},
    "teacher": {"model": "BPR", "embedding_size": 8, "seed": 0},
    "student": {"model": "BPR", "embedding_size": 4},
    "seeds": [0],
    "control": "teacher",
    "arms": [{"name": "freqd", "kd": "FreqD"}],
    "latency": False,
}


def _stored(out: Path) -> dict:
    """The comparison's stored results: metrics, per-user arrays and checkpoints of the teacher and the arm."""
    stored = {}
    for name, json_path in (("teacher", out / "teacher.json"), ("freqd", out / "arms" / "freqd" / "s0.json")):
        result = json.loads(json_path.read_text(encoding="utf-8"))
        with np.load(json_path.with_suffix(".npz")) as arrays:
            per_user = {key: arrays[key] for key in arrays.files}
        stored[name] = (result["metrics"], result["run"]["test_result"], per_user,
                        load_checkpoint(out / result["checkpoint"])["state_dict"])
    return stored


def test_compare_killed_and_rerun_is_bit_identical(tmp_path):
    config = tmp_path / "kill.yaml"
    config.write_text(yaml.safe_dump(COMPARISON))
    args = ["compare", str(config), "--no-progress", "--threads", "1"]
    window, _ = _reference([*args, "--out", "whole"], tmp_path, "compare-whole.log", end=None)
    rng = random.Random(SEED + 2)
    killed = [*args, "--out", "killed"]
    for trial in range(KILLS["compare"]):
        delay = rng.uniform(0.0, 0.7 * window)
        outcome, _, seconds = _kill_after_first_last(killed, tmp_path, f"compare-{trial}.log", delay)
        done = [name for name in ("teacher.json", "arms/freqd/s0.json") if (tmp_path / "killed" / name).is_file()]
        _record({"command": "compare", "trial": trial, "delay_after_first_last_s": round(delay, 3),
                 "killed_at_s": round(seconds, 3), "outcome": f"{outcome}; stored then: {done or 'nothing'}; "
                 "rerun of the same command"})
    _finish(killed, tmp_path, "compare-final.log")
    reference, resumed = _stored(tmp_path / "whole"), _stored(tmp_path / "killed")
    for name, (metrics, test_result, per_user, state) in resumed.items():
        assert metrics == reference[name][0] and test_result == reference[name][1]
        assert per_user.keys() == reference[name][2].keys()
        assert all(np.array_equal(per_user[key], reference[name][2][key], equal_nan=True) for key in per_user)
        assert state.keys() == reference[name][3].keys()
        assert all(torch.equal(state[key], reference[name][3][key]) for key in state)
    _record({"command": "compare", "identical": True, "window_s": round(window, 3)})
    _temporaries(tmp_path / "killed", "compare")


SEARCH = {
    "model": "BPR",
    "dataset": "ml-100k",
    "overrides": {"epochs": EPOCHS, "eval_step": 1, "train_sampler": "fast", "embedding_size": 8,
                  "eval_batch_size": 1_000_000, "use_gpu": False},
    "trials": 2,
    "pruner": "none",
    "space": {"learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
}


def _finished_trials(out: Path) -> list[list[str]]:
    """The complete trials of a search: its rows of trials.csv without the trial numbers (its own, and
    the cut trial it continues)."""
    rows = csv.DictReader((out / "trials.csv").read_text(encoding="utf-8").splitlines())
    return [[v for k, v in row.items() if k not in ("trial", "continues")] for row in rows if row["state"] == "COMPLETE"]


def test_tune_killed_and_rerun_matches_the_uncut_search(tmp_path):
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(SEARCH))
    args = ["tune", str(config), "--no-progress", "--threads", "1"]
    window, _ = _reference([*args, "--out", "whole"], tmp_path, "tune-whole.log", end=None)
    delay = random.Random(SEED + 3).uniform(0.0, 0.3 * window)  # within the first trial
    outcome, written, seconds = _kill_after_first_last([*args, "--out", "killed"], tmp_path, "tune-0.log", delay)
    _record({"command": "tune", "delay_after_first_last_s": round(delay, 3), "killed_at_s": round(seconds, 3),
             "outcome": outcome})
    output = _finish([*args, "--out", "killed"], tmp_path, "tune-final.log")
    assert "2 of 2 trials finished (2 complete, 0 pruned, 0 failed, 1 cut by a stop and continued)" in output
    assert _finished_trials(tmp_path / "killed") == _finished_trials(tmp_path / "whole")
    best = [yaml.safe_load((tmp_path / out / "best.yaml").read_text()) for out in ("killed", "whole")]
    assert best[0] == best[1]  # (the header's trial number counts the cut trial)
    # Killed within the first trial (the delay is under a third of the two trials' time): it went on
    # from its checkpoint, not from the start.
    assert outcome == "killed" and written
    trials = load_study(tmp_path / "killed").trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials[1].user_attrs["continues"] == 0 and trials[1].user_attrs["resumed_from"].endswith("-last.pth")
    assert not list((tmp_path / "killed" / "runs" / "saved").glob("trial-*"))
    _temporaries(tmp_path / "killed", "tune")
