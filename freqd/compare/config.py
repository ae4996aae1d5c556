"""The comparison config: typed dataclasses parsed from YAML, with errors naming the file, key and value.

Paths inside a comparison YAML (``config_files``, ``teacher.checkpoint``) are relative to that
YAML's folder, so a config runs the same from any working directory.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from freqd.io import to_jsonable

#: Config keys that change how a run is shown or how fast it runs, not what it computes: left out
#: of the arm hashes.
PRESENTATION_KEYS = frozenset({"show_progress", "state", "threads", "keep_last_checkpoint"})
#: Keys the comparison sets itself for every run.
RESERVED_KEYS = frozenset({"seed", "checkpoint_dir", "results_dir", "dataset", "model"})
#: Defaults added to every run unless the config says otherwise (quiet runs, fixed split).
RUN_DEFAULTS = {"show_progress": False, "state": "WARNING", "split_seed": 2020}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_METRIC = re.compile(r"^(recall|ndcg)@(\d+)$")


class ComparisonConfigError(ValueError):
    """A comparison config that cannot be run; the message names the file, key and value."""


@dataclass(frozen=True)
class ModelSpec:
    """The student (or a trained teacher): backbone, its YAML files and its config overrides."""

    model: str
    config_files: tuple[Path, ...] = ()
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TeacherSpec:
    """Either an existing checkpoint, or a model trained once with a fixed seed and cached."""

    checkpoint: Path | None = None
    spec: ModelSpec | None = None
    seed: int = 0


@dataclass(frozen=True)
class ArmSpec:
    """One arm: the student from scratch (``kd`` None) or distilled with a registered distiller.

    ``model`` replaces the comparison's student backbone for this arm only (a Hash code student
    beside float students); None keeps it.
    """

    name: str
    label: str
    kd: str | None = None
    model: str | None = None
    config_files: tuple[Path, ...] = ()
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluationSpec:
    """Reported cutoffs, the metric of the significance tests and the group definitions."""

    topk: tuple[int, ...] = (10, 20)
    test_metric: str = "ndcg@20"
    activity_groups: int = 5
    head_fraction: float = 0.2

    @property
    def group_k(self) -> int:
        match = _METRIC.match(self.test_metric)
        assert match is not None  # test_metric is checked when the spec is read
        return int(match.group(2))


@dataclass(frozen=True)
class LatencySpec:
    """Full-catalogue top-k scoring speed: users timed, batch size, repeats after warm-up, torch threads.

    One thread by default: on a busy machine a second OpenMP thread turns every small batch
    into a wait for the scheduler (measured: 24 ms per batch on the shared 2-core machine).
    """

    enabled: bool = True
    users: int = 4096
    batch_size: int = 512
    repeats: int = 5
    warmup: int = 1
    threads: int | None = 1
    k: int = 20


@dataclass(frozen=True)
class ComparisonConfig:
    """Everything one ``freqd compare`` run needs."""

    dataset: str
    teacher: TeacherSpec
    student: ModelSpec
    arms: tuple[ArmSpec, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    control: str = ""
    title: str = ""
    config_files: tuple[Path, ...] = ()
    overrides: dict[str, Any] = field(default_factory=dict)
    evaluation: EvaluationSpec = EvaluationSpec()
    latency: LatencySpec = LatencySpec()
    source: Path | None = None
    #: Command-line overrides: above every YAML setting (shared, teacher-only, student-only).
    cli_overrides: dict[str, Any] = field(default_factory=dict)
    cli_teacher_overrides: dict[str, Any] = field(default_factory=dict)
    cli_student_overrides: dict[str, Any] = field(default_factory=dict)

    def arm(self, name: str) -> ArmSpec:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(name)

    def with_overrides(self, seeds=None, overrides=None, teacher_overrides=None, student_overrides=None, arms=None,
                       teacher_checkpoint=None):
        """A copy with other seeds, a subset of the arms (``arms``: names; the control is always
        kept), a trained teacher checkpoint in place of the YAML's teacher, and command-line
        overrides (every run, the teacher, every arm), which beat every setting of the YAML."""
        config = self
        if teacher_checkpoint is not None:
            path = Path(teacher_checkpoint).expanduser().resolve()
            if not path.is_file():
                raise ComparisonConfigError(f"teacher checkpoint {str(teacher_checkpoint)!r} not found "
                                            f"(looked for {path})")
            config = replace(config, teacher=TeacherSpec(checkpoint=path))
        if seeds is not None:
            config = replace(config, seeds=_seeds(list(seeds), config.source))
        if arms is not None:
            names = [arm.name for arm in config.arms]
            unknown = [name for name in arms if name not in names]
            if unknown:
                raise ComparisonConfigError(f"{_where(config.source)}arms {unknown} are not in the config ({names})")
            keep = {*arms, config.control}
            config = replace(config, arms=tuple(arm for arm in config.arms if arm.name in keep))
        if overrides:
            _check_overrides(overrides, config.source, "command-line override")
            config = replace(config, cli_overrides={**config.cli_overrides, **overrides})
        if teacher_overrides:
            if config.teacher.spec is None:
                raise ComparisonConfigError(f"{_where(config.source)}teacher overrides given but the teacher is "
                                            f"the checkpoint {config.teacher.checkpoint}")
            _check_overrides(teacher_overrides, config.source, "command-line teacher override")
            config = replace(config, cli_teacher_overrides={**config.cli_teacher_overrides, **teacher_overrides})
        if student_overrides:
            _check_overrides(student_overrides, config.source, "command-line student override")
            config = replace(config, cli_student_overrides={**config.cli_student_overrides, **student_overrides})
        if overrides or teacher_overrides or student_overrides:
            _check_settings(config)
        return config

    # -- what each run gets ------------------------------------------------------------------
    def _teacher_spec(self) -> ModelSpec:
        """The spec of a teacher trained here (callers handle a checkpoint teacher first)."""
        assert self.teacher.spec is not None, "the teacher is a checkpoint, not a trained model"
        return self.teacher.spec

    def teacher_files(self) -> list[Path]:
        return [*self.config_files, *self._teacher_spec().config_files]

    def teacher_overrides(self) -> dict[str, Any]:
        return {**_defaults(self.teacher_files()), **self.overrides, **self._teacher_spec().overrides,
                **self.cli_overrides, **self.cli_teacher_overrides, "seed": self.teacher.seed}

    def arm_model(self, arm: ArmSpec) -> str:
        """The arm's student backbone: its own ``model``, else the comparison's student."""
        return arm.model or self.student.model

    def arm_files(self, arm: ArmSpec) -> list[Path]:
        return [*self.config_files, *self.student.config_files, *arm.config_files]

    def arm_overrides(self, arm: ArmSpec, seed: int) -> dict[str, Any]:
        return {**_defaults(self.arm_files(arm)), **self.overrides, **self.student.overrides, **arm.overrides,
                **self.cli_overrides, **self.cli_student_overrides, "seed": seed}

    def eval_files(self) -> list[Path]:
        return [*self.config_files, *self.student.config_files]

    def eval_overrides(self) -> dict[str, Any]:
        return {**_defaults(self.eval_files()), **self.overrides, **self.student.overrides, **self.cli_overrides,
                **self.cli_student_overrides}

    def teacher_key(self) -> tuple[str, dict[str, Any]]:
        """(hash, hashed content) identifying the teacher: its weights' digest, or its training spec.

        The weights (:func:`freqd.checkpoints.weights_digest`), not the file: a teacher rebuilt bit for
        bit on another machine keeps the results stored with the first one reusable.
        """
        content: dict[str, Any]
        if self.teacher.checkpoint is not None:
            from freqd.checkpoints import weights_digest

            content = {"weights_digest": weights_digest(self.teacher.checkpoint)}
        else:
            content = {"dataset": self.dataset, "model": self._teacher_spec().model,
                       "config_files": _file_digests(self.teacher_files()),
                       "overrides": _hashable(self.teacher_overrides())}
        return _digest(content), content

    def arm_key(self, arm: ArmSpec, seed: int, teacher_key: str | None) -> tuple[str, dict[str, Any]]:
        """(hash, hashed content) of one (arm, seed): what makes a stored result reusable."""
        content = {"dataset": self.dataset, "model": self.arm_model(arm), "kd": arm.kd,
                   "config_files": _file_digests(self.arm_files(arm)),
                   "overrides": _hashable(self.arm_overrides(arm, seed)),
                   "teacher": teacher_key if arm.kd else None,
                   "evaluation": to_jsonable(self.evaluation.__dict__)}
        return _digest(content), content

    def to_dict(self) -> dict[str, Any]:
        """The resolved config, for the report (paths absolute)."""
        teacher = ({"checkpoint": str(self.teacher.checkpoint)} if self.teacher.checkpoint is not None else
                   {"model": self._teacher_spec().model,
                    "config_files": [str(f) for f in self._teacher_spec().config_files],
                    "overrides": self._teacher_spec().overrides, "seed": self.teacher.seed})
        return to_jsonable({
            "title": self.title, "source": str(self.source) if self.source else None, "dataset": self.dataset,
            "config_files": [str(f) for f in self.config_files], "overrides": self.overrides, "teacher": teacher,
            "command_line_overrides": {"all": self.cli_overrides, "teacher": self.cli_teacher_overrides,
                                       "student": self.cli_student_overrides},
            "student": {"model": self.student.model, "config_files": [str(f) for f in self.student.config_files],
                        "overrides": self.student.overrides},
            "seeds": list(self.seeds), "control": self.control,
            "arms": [{"name": a.name, "label": a.label, "kd": a.kd, "config_files": [str(f) for f in a.config_files],
                      "overrides": a.overrides, **({"model": a.model} if a.model else {})} for a in self.arms],
            "evaluation": self.evaluation.__dict__, "latency": self.latency.__dict__,
        })


def _defaults(files: list[Path]) -> dict[str, Any]:
    """:data:`RUN_DEFAULTS` less the keys the YAML files set themselves."""
    return {k: v for k, v in RUN_DEFAULTS.items() if k not in file_settings(files)}


def file_settings(files: list[Path]) -> dict[str, Any]:
    """:func:`freqd.config.yaml_settings`, with its errors as :class:`ComparisonConfigError`."""
    from freqd.config import yaml_settings

    try:
        return yaml_settings(files)
    except ValueError as exc:
        raise ComparisonConfigError(str(exc)) from None


def _check_settings(config: ComparisonConfig) -> None:
    """Every run's settings (its config files, then each level of overrides that reaches it) have valid
    types and ranges (:mod:`freqd.core_settings`, and the arm's distiller settings), checked before
    any run; an error names the run, the key, the value and where it is set."""
    from freqd.core_settings import CORE_SETTINGS, check_run
    from freqd.distillers import distiller_settings
    from freqd.settings import SettingsError

    cli = [("the command-line overrides", config.cli_overrides)]
    runs: list[tuple[str, str | None, list[Path], list[tuple[str, dict[str, Any]]]]] = []
    if config.teacher.spec is not None:
        runs.append(("teacher", None, config.teacher_files(),
                     [("overrides", config.overrides), ("teacher.overrides", config.teacher.spec.overrides), *cli,
                      ("the command-line teacher overrides", config.cli_teacher_overrides)]))
    for index, arm in enumerate(config.arms):
        runs.append((f"arm {arm.name!r}", arm.kd, config.arm_files(arm),
                     [("overrides", config.overrides), ("student.overrides", config.student.overrides),
                      (f"arms[{index}].overrides", arm.overrides), *cli,
                      ("the command-line student overrides", config.cli_student_overrides)]))
    for who, kd, files, overrides in runs:
        # Override strings are read as RecBole reads config_dict strings (a Python literal, else the string).
        overrides = [(label, {k: parse_override_value(v) if isinstance(v, str) else v for k, v in layer.items()})
                     for label, layer in overrides]
        settings_cls = distiller_settings(kd)
        try:
            check_run([("the comparison's run defaults", RUN_DEFAULTS),
                       *((f"config file {file}", file_settings([file])) for file in files), *overrides],
                      CORE_SETTINGS + ((settings_cls,) if settings_cls is not None else ()))
        except SettingsError as exc:
            raise ComparisonConfigError(f"{_where(config.source)}{who}: {exc}") from None


def _check_file_keys(config: ComparisonConfig) -> None:
    """The YAML files must not name another dataset or backbone than the comparison does."""
    from freqd.models import get_model

    groups = [(config.teacher_files(), config.teacher.spec.model, "teacher")] if config.teacher.spec else []
    # An arm with its own backbone is checked on its own files: the shared student files name the student's.
    groups += [(list(arm.config_files) if arm.model else config.arm_files(arm), config.arm_model(arm),
                f"arm {arm.name!r}") for arm in config.arms]
    for files, model, who in groups:
        for file in files:
            keys = file_settings([file])
            if "dataset" in keys and keys["dataset"] != config.dataset:
                raise ComparisonConfigError(f"{_where(config.source)}{who}: config file {file} sets dataset "
                                            f"{keys['dataset']!r}, the comparison's dataset is {config.dataset!r}")
            if "model" in keys and get_model(str(keys["model"])) is not get_model(model):
                raise ComparisonConfigError(f"{_where(config.source)}{who}: config file {file} sets model "
                                            f"{keys['model']!r}, but the {who} is a {model}")


# -- parsing -------------------------------------------------------------------------------------
def load_comparison_config(path: str | Path) -> ComparisonConfig:
    """Read and check a comparison YAML (see ``configs/compare/ml-100k.yaml``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"comparison config not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        from freqd.config import yaml_problem

        raise ComparisonConfigError(yaml_problem(path, exc, "comparison config")) from None
    return parse_comparison_config(raw, source=path.resolve())


def parse_comparison_config(raw: Any, source: Path | None = None, base: Path | None = None) -> ComparisonConfig:
    """Build a :class:`ComparisonConfig` from a mapping; relative paths resolve against ``base``
    (default: the source file's folder, else the working directory)."""
    base = Path(base) if base is not None else (source.parent if source is not None else Path.cwd())
    where = _where(source)
    top = _mapping(raw, where, "the top level")
    _known(top, {"title", "dataset", "config_files", "overrides", "teacher", "student", "seeds", "control", "arms",
                 "evaluation", "latency"}, where, "")
    for key in ("dataset", "teacher", "student", "arms"):
        if key not in top:
            raise ComparisonConfigError(f"{where}missing required key {key!r}")
    dataset = top["dataset"]
    if not isinstance(dataset, str) or not dataset:
        raise ComparisonConfigError(f"{where}dataset: expected a dataset name, got {dataset!r}")
    config_files = _files(top.get("config_files"), base, where, "config_files")
    overrides = _overrides(top.get("overrides"), where, "overrides")
    teacher = _teacher(top["teacher"], base, where)
    student = _model_spec(top["student"], base, where, "student", {"model", "embedding_size", "config_files",
                                                                     "overrides"})
    arms = _arms(top["arms"], base, where)
    names = [arm.name for arm in arms]
    control = top.get("control", names[0])
    if control not in names and control != "teacher":
        raise ComparisonConfigError(f"{where}control: {control!r} is not an arm ({names}) or 'teacher'")
    config = ComparisonConfig(
        dataset=dataset, teacher=teacher, student=student, arms=arms,
        seeds=_seeds(top.get("seeds", [0, 1, 2]), source), control=control,
        title=str(top.get("title") or (source.stem if source else dataset)),
        config_files=config_files, overrides=overrides,
        evaluation=_evaluation(top.get("evaluation"), where), latency=_latency(top.get("latency"), where),
        source=source,
    )
    _check_file_keys(config)
    _check_settings(config)
    return config


def _where(source: Path | None) -> str:
    return f"{source}: " if source is not None else ""


def _mapping(value: Any, where: str, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ComparisonConfigError(f"{where}{key}: expected a mapping, got {value!r}")
    return value


def _known(mapping: dict, allowed: set[str], where: str, prefix: str) -> None:
    for key in mapping:
        if key not in allowed:
            raise ComparisonConfigError(
                f"{where}unknown key {prefix}{key!r}; expected one of {sorted(allowed)}")


def _files(value: Any, base: Path, where: str, key: str) -> tuple[Path, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ComparisonConfigError(f"{where}{key}: expected a list of YAML paths, got {value!r}")
    paths = []
    for item in value:
        path = (base / item).resolve()
        if not path.is_file():
            raise ComparisonConfigError(f"{where}{key}: config file {item!r} not found (looked for {path})")
        paths.append(path)
    return tuple(paths)


def _check_threads(overrides: dict, where: str, key: str) -> None:
    """A ``threads`` override (named ``key`` in the message) must be a positive integer or ``auto``."""
    from freqd.threads import parse_threads

    if "threads" in overrides:
        try:
            parse_threads(overrides["threads"], key=key)
        except ValueError as exc:
            raise ComparisonConfigError(f"{where}{exc}") from None


def _check_overrides(overrides: dict, source: Path | None, key: str) -> None:
    _check_threads(overrides, f"{_where(source)}{key} ", "threads")
    for name in overrides:
        if name in RESERVED_KEYS:
            raise ComparisonConfigError(
                f"{_where(source)}{key}: {name!r} is set by the comparison itself "
                f"({'use seeds / teacher.seed' if name == 'seed' else 'use the dedicated key'})")
    _check_known(overrides, f"{_where(source)}{key}")


def _overrides(value: Any, where: str, key: str) -> dict[str, Any]:
    mapping = _mapping(value, where, key)
    for name in mapping:
        if not isinstance(name, str):
            raise ComparisonConfigError(f"{where}{key}: config keys must be strings, got {name!r}")
        if name in RESERVED_KEYS:
            raise ComparisonConfigError(
                f"{where}{key}.{name}: set by the comparison itself "
                f"({'use seeds / teacher.seed' if name == 'seed' else 'use the dedicated key'})")
    _check_threads(mapping, where, f"{key}.threads")
    _check_known(mapping, f"{where}{key}")
    return dict(mapping)


def _check_known(mapping: dict, where: str) -> None:
    """Unknown config keys (typos) are refused before any run, unless ``strict_keys: False`` is among them."""
    from freqd.config import check_keys

    if mapping.get("strict_keys", True) is not False:
        try:
            check_keys(mapping, where.rstrip(": "))
        except ValueError as exc:
            raise ComparisonConfigError(str(exc)) from None


def _model_spec(value: Any, base: Path, where: str, key: str, allowed: set[str]) -> ModelSpec:
    mapping = _mapping(value, where, key)
    _known(mapping, allowed, where, f"{key}.")
    model = mapping.get("model")
    if not isinstance(model, str) or not model:
        raise ComparisonConfigError(f"{where}{key}.model: expected a backbone name (BPR, LightGCN), got {model!r}")
    from freqd.models import get_model

    try:
        get_model(model)
    except ValueError as exc:
        raise ComparisonConfigError(f"{where}{key}.model: {exc}") from exc
    overrides = _overrides(mapping.get("overrides"), where, f"{key}.overrides")
    if "embedding_size" in mapping:
        size = mapping["embedding_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise ComparisonConfigError(f"{where}{key}.embedding_size: expected a positive integer, got {size!r}")
        if overrides.get("embedding_size", size) != size:
            raise ComparisonConfigError(f"{where}{key}: embedding_size {size} and overrides.embedding_size "
                                        f"{overrides['embedding_size']} disagree")
        overrides["embedding_size"] = size
    return ModelSpec(model=model, config_files=_files(mapping.get("config_files"), base, where,
                                                      f"{key}.config_files"), overrides=overrides)


def _teacher(value: Any, base: Path, where: str) -> TeacherSpec:
    mapping = _mapping(value, where, "teacher")
    seed = mapping.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ComparisonConfigError(f"{where}teacher.seed: expected an integer, got {seed!r}")
    if "checkpoint" in mapping:
        others = set(mapping) - {"checkpoint"}
        if others:
            raise ComparisonConfigError(f"{where}teacher: give either 'checkpoint' or a model to train, not both "
                                        f"(also found {sorted(others)})")
        checkpoint = mapping["checkpoint"]
        if not isinstance(checkpoint, str):
            raise ComparisonConfigError(f"{where}teacher.checkpoint: expected a path, got {checkpoint!r}")
        path = (base / checkpoint).resolve()
        if not path.is_file():
            raise ComparisonConfigError(f"{where}teacher.checkpoint: {checkpoint!r} not found (looked for {path})")
        return TeacherSpec(checkpoint=path)
    if "model" not in mapping:
        raise ComparisonConfigError(f"{where}teacher: give 'checkpoint: PATH' or 'model:' (with config_files, "
                                    "overrides) to train one")
    spec = _model_spec({k: v for k, v in mapping.items() if k != "seed"}, base, where, "teacher",
                       {"model", "embedding_size", "config_files", "overrides"})
    return TeacherSpec(spec=spec, seed=seed)


def _arms(value: Any, base: Path, where: str) -> tuple[ArmSpec, ...]:
    if not isinstance(value, list) or not value:
        raise ComparisonConfigError(f"{where}arms: expected a non-empty list of arms, got {value!r}")
    from freqd.distillers import get_distiller

    arms, seen = [], set()
    for index, item in enumerate(value):
        key = f"arms[{index}]"
        mapping = _mapping(item, where, key)
        _known(mapping, {"name", "label", "kd", "model", "config_files", "overrides"}, where, f"{key}.")
        name = mapping.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ComparisonConfigError(
                f"{where}{key}.name: expected a name of letters, digits, '_', '.', '-' (it names files), got {name!r}")
        if name == "teacher":
            raise ComparisonConfigError(f"{where}{key}.name: 'teacher' is reserved for the teacher row")
        if name in seen:
            raise ComparisonConfigError(f"{where}{key}.name: arm name {name!r} is used twice")
        seen.add(name)
        from freqd.models import get_model

        kd = _resolve(mapping.get("kd"), lambda name: get_distiller(name).name, "distiller", f"{where}{key}.kd")
        model = _resolve(mapping.get("model"), lambda name: get_model(name).__name__, "model", f"{where}{key}.model")
        arms.append(ArmSpec(name=name, label=str(mapping.get("label") or name), kd=kd, model=model,
                            config_files=_files(mapping.get("config_files"), base, where, f"{key}.config_files"),
                            overrides=_overrides(mapping.get("overrides"), where, f"{key}.overrides")))
    return tuple(arms)


def _resolve(value: Any, resolve, what: str, where: str) -> str | None:
    """A registered name's canonical spelling (None stays None); errors name ``where``."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ComparisonConfigError(f"{where}: expected a {what} name, got {value!r}")
    try:
        return resolve(value)
    except ValueError as exc:
        raise ComparisonConfigError(f"{where}: {exc}") from exc


def _seeds(value: Any, source: Path | None) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if (not isinstance(value, (list, tuple)) or not value
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in value)):
        raise ComparisonConfigError(f"{_where(source)}seeds: expected a non-empty list of integers, got {value!r}")
    if len(set(value)) != len(value):
        raise ComparisonConfigError(f"{_where(source)}seeds: {list(value)} repeats a seed")
    return tuple(value)


def _evaluation(value: Any, where: str) -> EvaluationSpec:
    mapping = _mapping(value, where, "evaluation")
    _known(mapping, set(EvaluationSpec.__dataclass_fields__), where, "evaluation.")
    topk = mapping.get("topk", [10, 20])
    if not isinstance(topk, list) or not topk or not all(isinstance(k, int) and k > 0 for k in topk):
        raise ComparisonConfigError(f"{where}evaluation.topk: expected a list of positive integers, got {topk!r}")
    metric = str(mapping.get("test_metric", "ndcg@20")).lower()
    match = _METRIC.match(metric)
    if match is None or int(match.group(2)) not in topk:
        raise ComparisonConfigError(f"{where}evaluation.test_metric: expected recall@k or ndcg@k with k in "
                                    f"evaluation.topk {topk}, got {mapping.get('test_metric')!r}")
    groups = mapping.get("activity_groups", 5)
    if not isinstance(groups, int) or groups < 1:
        raise ComparisonConfigError(f"{where}evaluation.activity_groups: expected an integer >= 1, got {groups!r}")
    head = mapping.get("head_fraction", 0.2)
    if not isinstance(head, (int, float)) or not 0 < head < 1:
        raise ComparisonConfigError(f"{where}evaluation.head_fraction: expected a number in (0, 1), got {head!r}")
    return EvaluationSpec(topk=tuple(sorted(topk)), test_metric=metric, activity_groups=groups,
                          head_fraction=float(head))


def _latency(value: Any, where: str) -> LatencySpec:
    if value is False:
        return LatencySpec(enabled=False)
    mapping = _mapping(value, where, "latency")
    _known(mapping, set(LatencySpec.__dataclass_fields__), where, "latency.")
    values = {}
    for name, default in LatencySpec().__dict__.items():
        item = mapping.get(name, default)
        if name == "enabled":
            ok = isinstance(item, bool)
        elif name == "threads":
            ok = item is None or (isinstance(item, int) and item >= 1)
        else:
            ok = isinstance(item, int) and not isinstance(item, bool) and item >= (0 if name == "warmup" else 1)
        if not ok:
            raise ComparisonConfigError(f"{where}latency.{name}: invalid value {item!r}")
        values[name] = item
    return LatencySpec(**values)


# -- hashing -------------------------------------------------------------------------------------
def parse_override_value(text: str) -> Any:
    """A ``--key=value`` string as RecBole reads it (Python literal, else true/false, else the string)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {"true": True, "false": False}.get(text.lower(), text)


def file_sha256(path: str | Path) -> str:
    from freqd.io import file_sha256 as sha

    return sha(path)


def _file_digests(files: list[Path]) -> list[list[str]]:
    return [[Path(f).name, file_sha256(f)] for f in files]


def _hashable(overrides: dict[str, Any]) -> dict[str, Any]:
    return to_jsonable({k: v for k, v in sorted(overrides.items()) if k not in PRESENTATION_KEYS})


def _digest(content: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]
