"""The settings every run reads: the RecBole keys freqd relies on and the model, training, evaluation
and run options freqd adds, declared once as :class:`freqd.settings.Settings` models.

:class:`freqd.Config` validates them after RecBole has merged its defaults, freqd's, the config
files and the overrides, before any dataset is built, and writes the validated values back (so
``epochs: 3.0`` trains 3 epochs and ``results.json`` records 3). The comparison spec and the tune
YAML check each run's files and overrides with :func:`check_run` before any run. RecBole's semantics are kept
(``topk`` is an integer or a list of them); keys RecBole reads but freqd does not rely on are left
to RecBole.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, ValidationError, field_validator

from freqd.datasets.train_loader import TrainSampler
from freqd.settings import Float, Int, Settings, SettingsError
from freqd.threads import AUTO, parse_threads

#: Evaluation protocols: RecBole's (train and validation items masked at test time) or the reference code's.
EvalProtocol = Literal["recbole", "reference"]
PROTOCOLS: tuple[EvalProtocol, ...] = get_args(EvalProtocol)

#: RecBole's optimisers (``learner``); RecBole falls back to Adam, with a warning, for any other name.
LEARNERS = ("adam", "sgd", "adagrad", "rmsprop", "sparse_adam", "adamw")


PositiveInt = Annotated[Int, Field(ge=1)]
Seed = Annotated[Int, Field(ge=0, lt=2**32)]


def _metric_class(name: str):
    """RecBole's metric class named ``name`` (any case); ValueError listing the names otherwise."""
    from recbole.evaluator.register import metrics_dict

    cls = metrics_dict.get(str(name).lower())
    if cls is None:
        raise ValueError(f"unknown metric {name!r}; RecBole's metrics: {sorted(metrics_dict)}")
    return cls


def _has_cutoff(name: str) -> bool:
    """Whether RecBole reports metric ``name`` per cutoff (``ndcg@20``) rather than once (``auc``)."""
    needs = getattr(_metric_class(name), "metric_need", [])
    return "rec.topk" in needs or "rec.items" in needs


class RunSettings(Settings):
    """Seeds, threads, logging and output folders of a run."""

    seed: Seed = Field(2020, description="random seed of the model, the training order and the negatives")
    split_seed: Seed | None = Field(None, description="seed of RecBole's random data split (default: seed), so "
                                                      "runs with different seeds can share one split")
    threads: PositiveInt | Literal["auto"] = Field(
        AUTO, description="torch threads: a positive integer, or auto (usable CPUs / parallel jobs, at most "
                          "$OMP_NUM_THREADS)")
    reproducibility: bool = Field(True, description="deterministic cuDNN kernels (RecBole)")
    show_progress: bool = Field(True, description="progress bar of every epoch")
    results_dir: str = Field("results", min_length=1, description="folder of the per-run results.json and "
                                                                  "metrics.csv")
    checkpoint_dir: str = Field("saved", min_length=1, description="folder of the checkpoints (RecBole)")
    strict_keys: bool = Field(True, description="refuse config keys no component defines (False accepts the "
                                                "keys of your own components)")

    @field_validator("results_dir", "checkpoint_dir", mode="before")
    @classmethod
    def _folder(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, value: Any) -> Any:
        return parse_threads(value)


class ModelSettings(Settings):
    """The options of freqd's backbones (BPR-MF, LightGCN); None where a model does not use them."""

    embedding_size: PositiveInt | None = Field(None, description="embedding dimension d (properties/model/"
                                                                 "<Model>.yaml: 64)")
    n_layers: Annotated[Int, Field(ge=0)] | None = Field(None, description="LightGCN propagation layers (0: MF)")
    reg_weight: Annotated[Float, Field(ge=0)] | None = Field(None, description="LightGCN L2 weight on the batch's "
                                                                               "ego embeddings")
    require_pow: bool = Field(False, description="LightGCN: squared norms in the L2 term")
    init_std: Annotated[Float, Field(gt=0)] | None = Field(None, description="N(0, init_std^2) initial tables "
                                                                             "(None: RecBole's xavier init)")
    sparse_embeddings: bool = Field(False, description="BPR-MF only: sparse row gradients with a lazy row-wise "
                                                       "Adam")
    hash_bits: PositiveInt | None = Field(None, description="Hash: bits per code b, a multiple of 8")
    hash_mode: Literal["ste", "tanh", "identity"] | None = Field(
        None, description="Hash: through the sign by straight-through estimation (ste), by tanh(beta z) "
                          "(tanh), or not at all (identity: the float student)")
    hash_beta: Annotated[Float, Field(gt=0)] | None = Field(None, description="Hash tanh mode: beta at epoch 0")
    hash_beta_end: Annotated[Float, Field(gt=0)] | None = Field(None, description="Hash tanh mode: final beta")
    hash_beta_schedule: Literal["const", "cos", "linear", "reverse"] | None = Field(
        None, description="Hash tanh mode: beta over epochs (FreqD's alpha-schedule kinds)")
    hash_beta_epochs: PositiveInt | None = Field(None, description="Hash tanh mode: epochs the beta schedule takes")
    hash_score_scale: Annotated[Float, Field(gt=0)] | None = Field(
        None, description="Hash: gamma of the training scores gamma <h_u, h_i> / b (ranking unchanged)")
    hash_quantization_weight: Annotated[Float, Field(ge=0)] | None = Field(
        None, description="Hash: weight of the mean (z - sign z)^2")
    hash_balance_weight: Annotated[Float, Field(ge=0)] | None = Field(
        None, description="Hash: weight of the squared mean of each bit over the batch rows")
    hash_decorrelation_weight: Annotated[Float, Field(ge=0)] | None = Field(
        None, description="Hash: weight of ||C^T C / n - I||^2 / b^2 over the batch rows")
    hash_ties: Literal["random", "score"] | None = Field(
        None, description="Hash: tie-break of the Hamming ranking, random (seeded, integers only) or score "
                          "(the continuous scores: uses floats)")
    hash_tie_seed: Seed | None = Field(None, description="Hash: seed of the random tie-break")

    @field_validator("hash_bits")
    @classmethod
    def _whole_bytes(cls, value: int | None) -> int | None:
        if value is not None and value % 8:
            raise ValueError("must be a multiple of 8 (codes are packed into bytes)")
        return value


class TrainingSettings(Settings):
    """The training loop: budget, optimiser, loader, early stopping, checkpoints and the KD weight."""

    epochs: PositiveInt = Field(300, description="maximum training epochs")
    train_batch_size: PositiveInt = Field(2048, description="training pairs per step")
    learner: str = Field("adam", description=f"optimiser, one of {LEARNERS} (any case)")
    learning_rate: Annotated[Float, Field(gt=0)] = Field(0.001, description="optimiser step size")
    weight_decay: Annotated[Float, Field(ge=0)] = Field(0.0, description="coupled L2 penalty of the optimiser")
    fused_optimizer: bool = Field(True, description="torch's fused Adam/AdamW kernel (same update)")
    train_sampler: TrainSampler = Field("recbole", description="training loader: RecBole's, or the "
                                                                          "vectorised whole-epoch draw")
    eval_step: PositiveInt = Field(1, description="epochs between two validations")
    stopping_step: PositiveInt = Field(10, description="validations without improvement before stopping")
    valid_smoothing: PositiveInt = Field(1, description="early stopping and the best model follow the mean of the "
                                                        "last n validation scores (1: RecBole's rule)")
    keep_last_checkpoint: bool = Field(True, description="write <run>-last.pth after every validation, for an "
                                                         "exact --resume")
    kd_weight: Annotated[Float, Field(ge=0)] | None = Field(
        None, description="distillation: loss = rec loss + kd_weight * distiller loss (None: the distiller's "
                          "reference value, properties/kd/<Name>.yaml)")
    coreset: str | None = Field(None, min_length=1, description="a selection file (freqd coreset): train on the "
                                                                "selected users' interactions only")
    kd_coreset: str | None = Field(None, min_length=1, description="a selection file (freqd coreset): the "
                                                                   "distillation term on the selected users only")
    coreset_fold_in: Literal["auto", "mean", "none"] = Field(
        "auto", description="users outside the coreset get the mean of their training items' embeddings (mean; "
                            "auto: where the model scores its raw tables, i.e. BPR) or keep their initial rows (none)")
    train_pairs: str | None = Field(None, min_length=1, description="a pairs file (freqd-pairs/1): train on its "
                                                                    "(user, item) pairs instead of the split's")

    @field_validator("learner")
    @classmethod
    def _learner(cls, value: str) -> str:
        if value.lower() not in LEARNERS:
            raise ValueError(f"expected one of {LEARNERS}")
        return value


class EvaluationSettings(Settings):
    """Full-sort evaluation: cutoffs, metrics, the early-stopping metric and the protocol."""

    eval_batch_size: PositiveInt = Field(4096, description="scores per evaluation batch (users x items)")
    topk: Annotated[list[PositiveInt], Field(min_length=1)] = Field(
        [10, 20, 50], description="cutoffs k of the top-k metrics: an integer or a list of them")
    metrics: Annotated[list[str], Field(min_length=1)] = Field(
        ["Recall", "NDCG", "Hit"], description="RecBole metric names (any case): a name or a list of them")
    valid_metric: str = Field("NDCG@20", description="early-stopping metric, name@k with the name in metrics and "
                                                     "k in topk")
    protocol: EvalProtocol = Field("recbole", description="recbole: mask train+valid items at test time, "
                                                                "average over users with targets; reference: mask "
                                                                "train items only, average over all users")
    eval_chunk_users: PositiveInt | None = Field(None, description="users scored per chunk in full-sort evaluation "
                                                                   "(None: 16 below d = 64, else 256)")
    rank_chunk_items: PositiveInt | None = Field(None, description="items scored per block wherever a whole catalogue "
                                                                   "is ranked (full-sort evaluation, teacher and "
                                                                   "student top-N); None: all items at once")
    metric_decimal_place: Annotated[Int, Field(ge=0)] = Field(6, description="decimals of the logged metrics")

    @field_validator("topk", "metrics", mode="before")
    @classmethod
    def _one_or_list(cls, value: Any) -> Any:
        return list(value) if isinstance(value, (list, tuple)) else [value]

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        from recbole.evaluator import metric_types

        for name in value:
            _metric_class(name)
        kinds = {metric_types[name.lower()] for name in value}
        if len(kinds) > 1:
            raise ValueError("ranking and value metrics cannot be used together (RecBole)")
        return value

    @field_validator("valid_metric")
    @classmethod
    def _known_valid_metric(cls, value: str) -> str:
        name, _, cutoff = value.partition("@")
        _metric_class(name)
        if cutoff and not (cutoff.isdigit() and int(cutoff) >= 1):
            raise ValueError("expected a metric name, or name@k with k a positive integer")
        return value


#: The settings of every run, in the order their errors are reported.
CORE_SETTINGS: tuple[type[Settings], ...] = (RunSettings, ModelSettings, TrainingSettings, EvaluationSettings)


def core_keys() -> frozenset[str]:
    """Every key the core settings declare."""
    return frozenset().union(*(cls.keys() for cls in CORE_SETTINGS))


def _line(key: str, value: Any, source: str, reason: str) -> str:
    return f"{key}={value!r}{f' in {source}' if source else ''}: {reason}"


def check_settings(values: Mapping[str, Any], classes: Iterable[type[Settings]] = CORE_SETTINGS,
                   source: Callable[[str], str] | str = "") -> dict[str, Any]:
    """The validated values of the keys of ``values`` that ``classes`` declare (None: absent).

    Keys no class declares are left alone; a declared key left out keeps its field's default. A
    :class:`SettingsError` names every invalid key, its value and, through ``source(key)`` (or the
    string ``source``), where the value came from.
    """
    name_source = source if callable(source) else (lambda key: source)
    validated: dict[str, Any] = {}
    problems: list[str] = []
    for cls in classes:
        given = {key: values[key] for key in cls.model_fields if values.get(key) is not None}
        if not given:
            continue
        try:
            settings = cls(**given)
        except ValidationError as exc:
            reported = set()
            for error in exc.errors():
                reason = error["msg"].removeprefix("Value error, ")
                if not error["loc"]:  # a check across fields: its message names them
                    problems.append(reason)
                    continue
                key = str(error["loc"][0])
                if key in reported or (error["type"] == "missing" and key not in given):
                    continue
                reported.add(key)
                problems.append(_line(key, given.get(key, error.get("input")), name_source(key), reason))
            continue
        validated.update({key: getattr(settings, key) for key in given})
    if problems:
        raise SettingsError("; ".join(problems))
    return validated


def check_consistency(values: Mapping[str, Any], source: Callable[[str], str] | str = "") -> None:
    """For a run that validates: ``valid_metric`` must be one of the computed results, its name in
    ``metrics`` and, for a metric reported per cutoff, its k in ``topk`` (RecBole would fail at the
    first validation). Not part of :class:`freqd.Config`'s checks: a config that only evaluates may
    leave ``valid_metric`` out of its metrics."""
    name_source = source if callable(source) else (lambda key: source)
    valid, metrics, topk = values.get("valid_metric"), values.get("metrics"), values.get("topk")
    if valid is None or metrics is None or topk is None:
        return
    name, _, cutoff = str(valid).partition("@")
    topk = [topk] if isinstance(topk, int) else list(topk)
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if name.lower() not in {m.lower() for m in metrics}:
        reason = f"{name} is not among metrics {metrics}"
    elif _has_cutoff(name) and not cutoff:
        reason = f"{name} is reported per cutoff: write {name}@k with k in topk {topk}"
    elif _has_cutoff(name) and int(cutoff) not in topk:
        reason = f"k={cutoff} is not among topk {topk}"
    elif not _has_cutoff(name) and cutoff:
        reason = f"{name} has no cutoff: write {name}"
    else:
        return
    raise SettingsError(_line("valid_metric", valid, name_source("valid_metric"), reason))


def check_run(layers: Sequence[tuple[str, Mapping[str, Any]]],
              classes: Iterable[type[Settings]] = CORE_SETTINGS) -> None:
    """The settings of a run that trains and validates, merged from ``layers`` (``(label, mapping)``,
    later layers win) over freqd's evaluation defaults, checked before the run: types and ranges
    (:func:`check_settings`) and ``valid_metric`` (:func:`check_consistency`). An error names the
    label of the layer each invalid value came from."""
    defaults = {key: EvaluationSettings.model_fields[key].default for key in ("metrics", "topk", "valid_metric")}
    layers = [("the defaults", defaults), *layers]
    merged = {key: value for _, layer in layers for key, value in layer.items()}

    def source(key: str) -> str:
        return next(label for label, layer in reversed(layers) if key in layer)

    check_settings(merged, classes, source)
    check_consistency(merged, source)
