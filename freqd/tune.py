"""``freqd tune``: a hyperparameter search on validation only, with Optuna (TPE, median pruning).

A tune YAML names one run — a model trained from scratch, or a student distilled from a teacher
checkpoint with ``kd`` — and a search space over its config keys::

    model: BPR                      # the model trained (the student when kd is set)
    dataset: citeulike-t            # optional: else the config files', else ml-100k
    config_files: [../dataset/citeulike-t.yaml, ../model/bpr-student-citeulike.yaml]
    overrides: {train_sampler: fast}
    kd: FreqD                       # optional
    teacher: ../../saved/teacher.pth  # with kd; or --teacher-checkpoint
    seed: 0
    trials: 20                      # the budget: finished (complete or pruned) trials
    pruner: {startup_trials: 3, warmup_epochs: 20}   # or none
    space:
      kd_weight: {type: float, low: 0.01, high: 10, log: true}
      freqd_alpha: {type: float, low: 0.0, high: 0.5}
      projector: {type: categorical, choices: [linear, mlp]}

Paths are relative to the YAML's folder; ``split_seed`` defaults to 2020, as in ``freqd compare``
(the split does not move with ``seed``). Every trial trains with the config's early stopping and
reports the smoothed validation score after each evaluation, which the pruner reads; the test set
is never evaluated. Trials live in ``<out>/study.journal`` (Optuna's journal, JSON lines; a search
begun in a ``study.db`` by an earlier freqd continues there): rerunning the command continues the
search, and copying the journal into another machine's ``--out`` folder continues it there (with
the same config files and a teacher of the same weights; a trial that was running starts again
with its values unless its checkpoint folder is copied too). A trial cut by an interrupt
continues exactly from its last evaluation (each trial keeps a resume checkpoint under
``<out>/runs/saved/trial-<n>/`` until it finishes; a trial cut before its first evaluation starts
again with the same values), and the sampler's random state is stored with the trials, so a
restarted search draws what the uncut one would have. One process runs a search at a time
(``<out>/tune.lock``; a second is refused with an error). The output folder also holds
``trials.csv``, ``best.yaml`` (the fixed overrides but ``threads``, plus the best values, to pass
as ``--config``) and ``tune.json``, written again after every finished trial; a trial cut by a stop
is a FAIL in Optuna's terms, counted as ``cut`` (not ``failed``) in ``tune.json``, and
``trials.csv``'s ``continues`` column names it in the row of the trial that went on with it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock, Timeout
from tqdm import tqdm

from freqd.io import atomic_write_json, atomic_write_text, to_jsonable

PARAM_TYPES = ("float", "int", "categorical")
_TOP_KEYS = {"title", "model", "dataset", "config_files", "overrides", "kd", "teacher", "seed", "trials", "pruner",
             "sampler_seed", "space"}
_PARAM_KEYS = {"float": {"type", "low", "high", "log"}, "int": {"type", "low", "high", "log", "step"},
               "categorical": {"type", "choices"}}
#: Settings of the machine the search ran on, not results: left out of ``best.yaml``.
MACHINE_KEYS = frozenset({"threads"})
#: With progress on, a running trial prints its epoch and score at most this often (seconds).
STATUS_SECONDS = 60.0
#: Keys the search sets itself for every trial.
_RESERVED = {"seed", "model", "dataset", "results_dir", "checkpoint_dir"}


class TuneConfigError(ValueError):
    """A tune YAML that cannot be run; the message names the file, key and value."""


class SearchBusyError(RuntimeError):
    """Another process is running the search in the same output folder."""


@dataclass(frozen=True)
class Param:
    """One searched config key."""

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: int | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log)
        if self.type == "int":
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))


@dataclass(frozen=True)
class TuneConfig:
    """A parsed tune YAML (see the module docstring)."""

    source: Path
    model: str
    space: tuple[Param, ...]
    dataset: str | None = None
    config_files: tuple[Path, ...] = ()
    overrides: dict[str, Any] = field(default_factory=dict)
    kd: str | None = None
    teacher: Path | None = None
    seed: int = 0
    trials: int = 20
    sampler_seed: int = 0
    startup_trials: int = 3
    warmup_epochs: int = 0
    prune: bool = True
    title: str = ""

    def fingerprint(self) -> str:
        """sha1 of what decides the trials' results (not the budget): a resumed search must match it.

        The teacher enters by its weights (:func:`freqd.checkpoints.weights_digest`), not its path,
        so a search moved to another machine continues with a teacher rebuilt there bit for bit.
        The config files enter by their text and their paths relative to the tune YAML, so the
        checkout may lie elsewhere there.
        """
        from freqd.checkpoints import weights_digest

        folder = self.source.resolve().parent
        return self._digest(weights_digest(self.teacher) if self.teacher else None,
                            {Path(os.path.relpath(p, folder)).as_posix(): p for p in self.config_files})

    def path_fingerprint(self) -> str:
        """The fingerprint as searches begun by an earlier freqd stored it (the teacher's path, the
        config files' absolute paths): such a search continues in the same place."""
        return self._digest(str(self.teacher) if self.teacher else None, {str(p): p for p in self.config_files})

    def _digest(self, teacher: str | None, files: dict[str, Path]) -> str:
        content = {
            "model": self.model, "dataset": self.dataset, "kd": self.kd, "seed": self.seed, "teacher": teacher,
            "config_files": {name: path.read_text(encoding="utf-8") for name, path in files.items()},
            "overrides": self.overrides, "space": [vars(p) for p in self.space],
        }
        return hashlib.sha1(json.dumps(to_jsonable(content), sort_keys=True).encode()).hexdigest()


def _fail(source: Path, message: str) -> TuneConfigError:
    return TuneConfigError(f"{source}: {message}")


def _param(source: Path, name: str, spec: Any) -> Param:
    where = f"space.{name}"
    if not isinstance(spec, dict):
        raise _fail(source, f"{where} must be a mapping with a 'type' ({', '.join(PARAM_TYPES)}), got {spec!r}")
    kind = spec.get("type")
    if kind not in PARAM_TYPES:
        raise _fail(source, f"{where}.type={kind!r} is not one of {PARAM_TYPES}")
    unknown = sorted(set(spec) - _PARAM_KEYS[kind])
    if unknown:
        raise _fail(source, f"{where}: unknown keys {unknown} for type {kind} (allowed: {sorted(_PARAM_KEYS[kind])})")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or len(choices) < 2:
            raise _fail(source, f"{where}.choices must be a list of at least 2 values, got {choices!r}")
        return Param(name, kind, choices=tuple(choices))
    low, high, log = spec.get("low"), spec.get("high"), spec.get("log", False)
    number = int if kind == "int" else (int, float)
    for key, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, number) or not math.isfinite(value):
            raise _fail(source, f"{where}.{key} must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}")
    assert low is not None and high is not None  # both checked to be numbers just above
    if not low < high:
        raise _fail(source, f"{where}: low ({low}) must be below high ({high})")
    if not isinstance(log, bool):
        raise _fail(source, f"{where}.log must be true or false, got {log!r}")
    if log and low <= 0:
        raise _fail(source, f"{where}: a log scale needs low > 0, got {low}")
    step = spec.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 1 or log):
        raise _fail(source, f"{where}.step must be a positive integer (and not with log), got {step!r}")
    return Param(name, kind, low=float(low) if kind == "float" else low, high=float(high) if kind == "float" else high,
                 log=log, step=step)


def _count(source: Path, raw: dict, key: str, default: int, minimum: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(source, f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def load_tune_config(path: str | Path, teacher: str | Path | None = None) -> TuneConfig:
    """Parse and check a tune YAML; ``teacher`` replaces its ``teacher`` checkpoint."""
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"tune config not found: {path}")
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        from freqd.config import yaml_problem

        raise TuneConfigError(yaml_problem(source, exc, "tune config")) from None
    if not isinstance(raw, dict):
        raise _fail(source, "must hold a mapping of keys to values")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise _fail(source, f"unknown keys {unknown} (allowed: {sorted(_TOP_KEYS)})")
    folder = source.parent
    model = raw.get("model")
    if not isinstance(model, str) or not model:
        raise _fail(source, f"model must be a model name such as BPR, got {model!r}")
    files = raw.get("config_files") or []
    if not isinstance(files, list):
        raise _fail(source, f"config_files must be a list of YAML paths, got {files!r}")
    config_files = tuple((folder / f).resolve() for f in files)
    for given, resolved in zip(files, config_files):
        if not resolved.is_file():
            raise _fail(source, f"config_files: {given!r} not found (looked for {resolved})")
    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise _fail(source, f"overrides must be a mapping, got {overrides!r}")
    space_raw = raw.get("space")
    if not isinstance(space_raw, dict) or not space_raw:
        raise _fail(source, "space must map at least one config key to its range")
    for key in sorted(set(space_raw) & _RESERVED):
        raise _fail(source, f"space.{key}: the search sets {key!r} itself")
    for key in sorted(set(space_raw) & set(overrides)):
        raise _fail(source, f"space.{key} is also fixed in overrides")
    space = tuple(_param(source, name, spec) for name, spec in space_raw.items())
    if overrides.get("strict_keys", True) is not False:
        from freqd.config import check_keys

        try:
            check_keys([*overrides, *space_raw], "overrides / space")
        except ValueError as exc:
            raise _fail(source, str(exc)) from None
    kd = raw.get("kd")
    if kd is not None:
        from freqd.distillers import get_distiller

        try:
            get_distiller(kd)
        except (KeyError, ValueError) as exc:
            raise _fail(source, f"kd={kd!r}: {exc}") from None
    teacher_path = Path(teacher).expanduser().resolve() if teacher else None
    if teacher_path is None and raw.get("teacher"):
        teacher_path = (folder / str(raw["teacher"])).resolve()
    if kd is not None and teacher_path is None:
        raise _fail(source, f"kd={kd!r} needs a teacher checkpoint ('teacher:' or --teacher-checkpoint)")
    if kd is None and teacher_path is not None:
        raise _fail(source, "a teacher is given but no kd: name the distiller, or drop the teacher")
    if teacher_path is not None and not teacher_path.is_file():
        raise _fail(source, f"teacher checkpoint not found: {teacher_path}")
    pruner = raw.get("pruner", {})
    prune = pruner != "none"
    if prune:
        if not isinstance(pruner, dict) or set(pruner) - {"startup_trials", "warmup_epochs"}:
            raise _fail(source, f"pruner must be 'none' or a mapping of startup_trials, warmup_epochs; got {pruner!r}")
    pruner = pruner if prune else {}
    config = TuneConfig(
        source=source, model=model, space=space, dataset=raw.get("dataset"), config_files=config_files,
        overrides=dict(overrides), kd=kd, teacher=teacher_path, seed=_count(source, raw, "seed", 0, 0),
        trials=_count(source, raw, "trials", 20, 1), sampler_seed=_count(source, raw, "sampler_seed", 0, 0),
        startup_trials=_count(source, pruner, "startup_trials", 3, 0),
        warmup_epochs=_count(source, pruner, "warmup_epochs", 0, 0), prune=prune, title=str(raw.get("title", "")),
    )
    check_trial_settings(config, config.overrides)
    return config


def check_trial_settings(config: TuneConfig, fixed: dict[str, Any]) -> None:
    """The settings of every trial have valid types and ranges before the search starts: the config
    files with the ``fixed`` overrides (strings as ``--key=value`` gives them), and both ends of each
    numeric range (every choice of a categorical one) of the space; a :class:`TuneConfigError` names
    the key, the value and where it is set."""
    from freqd.compare.config import parse_override_value
    from freqd.config import yaml_settings
    from freqd.core_settings import CORE_SETTINGS, check_run, check_settings
    from freqd.distillers import distiller_settings

    settings_cls = distiller_settings(config.kd)
    classes = CORE_SETTINGS + ((settings_cls,) if settings_cls is not None else ())
    fixed = {key: parse_override_value(value) if isinstance(value, str) else value for key, value in fixed.items()}
    try:
        check_run([*((f"config file {file}", yaml_settings([file])) for file in config.config_files),
                   ("the overrides", fixed)], classes)
        for param in config.space:
            for value in param.choices if param.type == "categorical" else (param.low, param.high):
                check_settings({param.name: value}, classes, f"space.{param.name}")
    except ValueError as exc:
        raise _fail(config.source, str(exc)) from None


#: The search's trials, as Optuna's journal: a text file of JSON lines, appended to, that moves
#: between machines by copying it into another ``--out`` folder.
JOURNAL = "study.journal"


def study_storage(out: str | Path):
    """The Optuna storage of the search in ``out``: its journal file, or the SQLite ``study.db`` of a
    search begun by an earlier freqd, which continues there."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    out = Path(out)
    if (out / "study.db").exists():
        return optuna.storages.RDBStorage(f"sqlite:///{(out / 'study.db').resolve()}")
    journal = str((out / JOURNAL).resolve())
    return optuna.storages.JournalStorage(JournalFileBackend(journal, lock_obj=JournalFileOpenLock(journal)))


def load_study(out: str | Path):
    """The Optuna study of the search in ``out`` (read it for the trials' curves and attributes)."""
    import optuna

    out = Path(out)
    if not (out / "study.db").exists() and not (out / JOURNAL).exists():
        raise FileNotFoundError(f"no search in {out}: neither {JOURNAL} nor study.db is there")
    return optuna.load_study(study_name="freqd-tune", storage=study_storage(out))


def _resume_interrupted(study) -> int:
    """Queue again the values of trials an interrupt cut (left running by a kill, or failed by
    Ctrl-C), each marked with the trial it continues (whose checkpoint and reported scores the new
    trial takes over); close the running ones as failed. Return how many."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    continued = {t.user_attrs.get("continues") for t in trials}
    stale = [t for t in trials if t.state == TrialState.RUNNING
             or (t.state == TrialState.FAIL and t.user_attrs.get("interrupted") and t.number not in continued)]
    for trial in stale:
        if trial.state == TrialState.RUNNING:
            study.tell(trial.number, state=TrialState.FAIL)
        reported = {str(step): value for step, value in trial.intermediate_values.items()}
        chain = [*trial.user_attrs.get("chain", []), trial.number]
        study.enqueue_trial(trial.params, user_attrs={"continues": trial.number, "chain": chain,
                                                      "reported": reported}, skip_if_exists=False)
    return len(stale)


def _trial_dir(runs: Path, number: int) -> Path:
    """Where trial ``number`` keeps its checkpoints while it runs."""
    return runs / "saved" / f"trial-{number}"


def sampler_rngs(sampler) -> list:
    """The NumPy generators behind Optuna's TPE sampler (its own and its random start-up sampler's);
    [] where this Optuna version keeps them elsewhere."""
    try:
        return [sampler._rng.rng, sampler._random_sampler._rng.rng]
    except AttributeError:
        return []


def save_sampler_state(study, sampler) -> None:
    """Store the sampler's random state in the study once a trial has drawn its values, so a search
    restarted after a cut draws what the uncut search would have drawn (not the seed's first values again)."""
    states = []
    for rng in sampler_rngs(sampler):
        kind, keys, pos, has_gauss, gauss = rng.get_state()
        states.append([kind, [int(k) for k in keys], int(pos), int(has_gauss), float(gauss)])
    if states:
        study.set_user_attr("sampler_state", states)


def restore_sampler_state(study, sampler, seed: int, n_params: int) -> None:
    """Continue the sampler's random stream where the search left it.

    A search stored without it (by an older freqd) is replayed when every trial it drew came from
    the random start-up phase (one uniform per parameter): the stream is then exactly the uncut
    search's. Otherwise it gets a stream seeded by its trial count, so it does not redraw the
    seed's first values.
    """
    import numpy as np

    states, rngs = study.user_attrs.get("sampler_state"), sampler_rngs(sampler)
    if not rngs:
        return
    if states and len(states) == len(rngs):
        for rng, (kind, keys, pos, has_gauss, gauss) in zip(rngs, states):
            rng.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        return
    trials = study.get_trials(deepcopy=False)
    drawn = [t for t in trials if "fixed_params" not in t.system_attrs]  # not values queued again
    if len(drawn) <= getattr(sampler, "_n_startup_trials", 0):
        rngs[1].uniform(size=len(drawn) * n_params)  # the start-up sampler's draws, replayed
    elif trials:
        for offset, rng in enumerate(rngs):
            rng.seed(np.random.SeedSequence([seed, len(trials), offset]).generate_state(1)[0])


def _relative(path: str | Path, out: Path) -> str:
    """``path`` relative to the search's folder when it lies inside it."""
    try:
        return Path(path).resolve().relative_to(out.resolve()).as_posix()
    except ValueError:
        return str(path)


def _discard(runs: Path, trial) -> None:
    """Delete a finished trial's checkpoints and those of the interrupted trials it continued."""
    for number in [*trial.user_attrs.get("chain", []), trial.number]:
        shutil.rmtree(_trial_dir(runs, int(number)), ignore_errors=True)


def run_tune(config: TuneConfig | str | Path, out: str | Path | None = None, trials: int | None = None,
             overrides: dict[str, Any] | None = None, progress: bool = True, pruner=None) -> dict[str, Any]:
    """Run (or continue) the search until ``trials`` trials (default: the config's) have finished.

    ``overrides`` are fixed for every trial on top of the config's. ``pruner`` replaces the
    configured Optuna pruner (tests). Returns what ``tune.json`` holds.
    """
    config = config if isinstance(config, TuneConfig) else load_tune_config(config)
    budget = config.trials if trials is None else int(trials)
    if budget < 1:
        raise ValueError(f"trials={trials!r} is invalid: expected a positive integer")
    fixed = {**config.overrides, **(overrides or {})}
    clash = sorted(set(fixed) & {p.name for p in config.space})
    if clash:
        raise ValueError(f"overrides {clash} are searched in {config.source}'s space")
    if overrides:
        check_trial_settings(config, fixed)
    out = Path(out) if out is not None else Path("results/tune") / config.source.stem
    out.mkdir(parents=True, exist_ok=True)
    # One process per search: a second one would take the first's running trial for an interrupted one.
    lock = FileLock(out / "tune.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise SearchBusyError(f"another freqd tune is running the search in {out}; wait for it, or give this "
                           f"one another --out") from None
    try:
        repair_journal(out)
        return _search(config, out, budget, fixed, progress, pruner)
    finally:
        lock.release()


def repair_journal(out: str | Path) -> None:
    """Make the journal in ``out`` readable after a kill, by the process that holds the search's lock.

    The journal's own lock file, left by a process killed while writing, is removed (no other process
    can be writing: Optuna would wait 30 s and then take it anyway). A last line cut by the kill is
    dropped with a warning: Optuna skips it, but the next line appended would be glued to it and make
    the journal unreadable.
    """
    out = Path(out)
    journal = out / JOURNAL
    (out / f"{JOURNAL}.lock").unlink(missing_ok=True)
    data = journal.read_bytes() if journal.is_file() else b""
    if not data or data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    with open(journal, "r+b") as handle:
        handle.truncate(keep)
        os.fsync(handle.fileno())
    warnings.warn(f"{journal}: dropped a last line cut by an interrupted write ({len(data) - keep} bytes)",
                  stacklevel=2)


def _search(config: TuneConfig, out: Path, budget: int, fixed: dict[str, Any], progress: bool,
            pruner) -> dict[str, Any]:
    """:func:`run_tune` once it holds the search's lock."""
    import optuna
    from optuna.trial import TrialState

    from freqd.runs import distill, train
    from freqd.trainers.trainer import newest_last_checkpoint

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if pruner is None:
        pruner = (optuna.pruners.MedianPruner(n_startup_trials=config.startup_trials,
                                              n_warmup_steps=config.warmup_epochs)
                  if config.prune else optuna.pruners.NopPruner())
    fingerprint = config.fingerprint()
    sampler = optuna.samplers.TPESampler(seed=config.sampler_seed)
    study = optuna.create_study(storage=study_storage(out), study_name="freqd-tune", load_if_exists=True,
                                sampler=sampler, pruner=pruner, direction="maximize")
    stored = study.user_attrs.get("fingerprint")
    if stored is None:
        study.set_user_attr("fingerprint", fingerprint)
    elif stored not in (fingerprint, config.path_fingerprint()):
        raise ValueError(f"{out} holds a search of another configuration (the run, its files, the space or the "
                         f"teacher's weights changed since it started): use another --out, or delete the folder "
                         f"to start over")
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials(deepcopy=False))
    if done < budget:
        _resume_interrupted(study)  # a spent budget queues nothing: a larger one later continues them
    restore_sampler_state(study, sampler, config.sampler_seed, len(config.space))
    runs = out / "runs"
    from freqd.config import yaml_settings

    settings = {**yaml_settings(config.config_files), **fixed}
    bigger = str(settings.get("valid_metric_bigger", True)).lower() not in ("false", "0")
    # One split for every seed, as in ``freqd compare``, unless the files or overrides choose one.
    defaults = {"show_progress": False, "state": "WARNING"}
    if "split_seed" not in settings:
        defaults["split_seed"] = 2020

    def objective(trial) -> float:
        params = {p.name: p.suggest(trial) for p in config.space}
        save_sampler_state(study, sampler)
        folder = _trial_dir(runs, trial.number)
        config_dict = {**defaults, **fixed, **params, "seed": config.seed,
                       "results_dir": str(runs), "checkpoint_dir": str(folder)}
        if config.dataset:
            config_dict["dataset"] = config.dataset
        resume, reported = None, set()
        for earlier in reversed(trial.user_attrs.get("chain", [])):  # the newest checkpoint of the chain
            resume = newest_last_checkpoint(_trial_dir(runs, int(earlier)))
            if resume is not None:
                break
        if resume is not None:  # the interrupted trial's scores, so the pruner sees the whole curve
            for step, value in sorted((int(k), v) for k, v in trial.user_attrs.get("reported", {}).items()):
                trial.report(value, step=step)
                reported.add(step)

        said = [time.monotonic()]

        def report(epoch: int, score: float) -> None:
            if epoch not in reported:  # an evaluation the interrupted trial had reported comes again
                trial.report(score if bigger else -score, step=epoch)
            if progress and time.monotonic() - said[0] >= STATUS_SECONDS:  # long trials say where they are
                said[0] = time.monotonic()
                tqdm.write(f"trial {trial.number}: epoch {epoch}, smoothed validation {score:.4f}", file=sys.stderr)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch} (smoothed validation {score:.4f})")

        files = [str(p) for p in config.config_files]
        common: dict[str, Any] = dict(config_file_list=files, config_dict=config_dict, saved=True, evaluate_test=False,
                                      on_evaluation=report, resume=None if resume is None else str(resume))
        try:
            if config.kd is None:
                result = train(config.model, config.dataset, **common)
            else:
                result = distill(str(config.teacher), config.model, config.kd, dataset=config.dataset, **common)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)  # the next run continues it
            raise
        except optuna.TrialPruned:
            _discard(runs, trial)
            raise
        _discard(runs, trial)
        for key in ("best_epoch", "epochs_run", "converged"):
            trial.set_user_attr(key, result[key])
        # Paths relative to the output folder: the journal moves between machines.
        trial.set_user_attr("run_dir", _relative(result["run_dir"], out))
        if resume is not None:
            trial.set_user_attr("resumed_from", _relative(resume, out))
        trial.set_user_attr("valid_metric", result["config"]["valid_metric"])
        return result["best_valid_score"] if bigger else -result["best_valid_score"]

    remaining = max(0, budget - done)
    if remaining:
        def write(study, trial) -> None:  # after every finished trial, so a long search shows where it stands
            _write_outputs(config, study, out, budget, fixed, bigger)

        study.optimize(objective, n_trials=remaining, catch=(), show_progress_bar=progress, callbacks=[write])
    return _write_outputs(config, study, out, budget, fixed, bigger)


def _write_outputs(config: TuneConfig, study, out: Path, budget: int, fixed: dict[str, Any],
                   bigger: bool) -> dict[str, Any]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    continued = {t.user_attrs.get("continues") for t in trials}
    # Trials a stop cut (failed in Optuna's terms) and a later trial continued, or will.
    cut = [t for t in trials if t.state == TrialState.FAIL and (t.number in continued or t.user_attrs.get("interrupted"))]
    rows = []
    for t in trials:
        value = None if t.value is None else (t.value if bigger else -t.value)
        rows.append({"trial": t.number, "state": t.state.name, "value": value, **t.params,
                     **{k: t.user_attrs.get(k) for k in ("best_epoch", "epochs_run", "converged", "continues")}})
    columns = ["trial", "state", "value", *[p.name for p in config.space], "best_epoch", "epochs_run", "converged",
               "continues"]
    lines = [",".join(columns)] + [",".join("" if r.get(c) is None else str(r.get(c)) for c in columns) for r in rows]
    atomic_write_text(out / "trials.csv", "\n".join(lines) + "\n")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    summary: dict[str, Any] = {
        "config": str(config.source), "model": config.model, "kd": config.kd, "seed": config.seed,
        "budget": budget, "finished": sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials),
        "complete": len(complete), "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials) - len(cut), "cut": len(cut),
        "space": [vars(p) for p in config.space],
        "test_evaluated": False,
    }
    if complete:
        best = study.best_trial
        value = best.value if bigger else -best.value
        metric = best.user_attrs.get("valid_metric", "the validation metric")
        summary.update(best_trial=best.number, best_value=value, best_params=best.params, valid_metric=metric,
                       best_converged=best.user_attrs.get("converged"))
        so_far = "" if summary["finished"] >= budget else "so far (the search is under way) "
        header = (f"# freqd tune {config.source.name}: best {so_far}of {summary['finished']} trials (budget {budget}), "
                  f"trial {best.number}, smoothed validation {metric} {value:.6f}"
                  f"{'' if best.user_attrs.get('converged') else ' (not converged: capped by epochs)'}.\n"
                  f"# The fixed overrides and the best values; pass with the same config files as --config.\n")
        kept = {key: value for key, value in fixed.items() if key not in MACHINE_KEYS}
        body = yaml.safe_dump(to_jsonable({**kept, **best.params}), sort_keys=False, allow_unicode=True)
        atomic_write_text(out / "best.yaml", header + body)
    atomic_write_json(out / "tune.json", to_jsonable(summary))
    return summary
