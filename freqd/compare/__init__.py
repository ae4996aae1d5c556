"""Offline A/B comparison of compressed recommenders: ``freqd compare CONFIG`` and its Python API.

A teacher (trained once and cached, or an existing checkpoint), a student size and a list of
arms (scratch, FreqD variants, any registered distiller) run over several seeds; one report
gives accuracy (mean ± std, relative to the teacher, gap recovered), size and scoring speed,
paired per-user significance tests against a control arm, user-activity and item-popularity
groups, and plots.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from freqd.compare.config import (
    ArmSpec,
    ComparisonConfig,
    ComparisonConfigError,
    EvaluationSpec,
    LatencySpec,
    ModelSpec,
    TeacherSpec,
    file_settings,
    load_comparison_config,
    parse_comparison_config,
)
from freqd.compare.store import StaleResultError

if TYPE_CHECKING:
    from freqd.compare.runner import default_out, run_comparison


def quickstart_config(model: str = "BPR", dataset: str = "ml-100k", teacher_size: int = 300, student_size: int = 20,
                      alpha: float = 0.5, seeds=(0,), config_files=()) -> ComparisonConfig:
    """``freqd quickstart``: teacher, scratch, plain FD (FreqD α = 0) and FreqD (α) on one dataset.

    The sizes and the early-stopping patience (30 evaluations, unless a ``config_files`` YAML sets
    ``stopping_step``) of ``configs/compare/ml-100k.yaml``, and the fast training loader (unless the
    files set ``train_sampler``); both FreqD arms use FreqD's built-in defaults
    (those of ``configs/kd/freqd.yaml``: cosine distance), so that it runs without the repository's
    configs.
    """
    return parse_comparison_config({
        "title": f"quickstart {dataset}",
        "dataset": dataset,
        "config_files": list(config_files),
        "overrides": {k: v for k, v in {"eval_batch_size": 1_000_000, "stopping_step": 30,
                                        "train_sampler": "fast"}.items()
                      if k not in file_settings(config_files)},
        "teacher": {"model": model, "embedding_size": teacher_size, "seed": 0},
        "student": {"model": model, "embedding_size": student_size},
        "seeds": list(seeds),
        "control": "scratch",
        "arms": [
            {"name": "scratch", "label": "scratch"},
            {"name": "fd", "label": "plain FD (α=0)", "kd": "FreqD", "overrides": {"freqd_alpha": 0.0}},
            {"name": "freqd", "label": f"FreqD (α={alpha:g})", "kd": "FreqD", "overrides": {"freqd_alpha": alpha}},
        ],
    })


def __getattr__(name):
    """The runner on first use, so that importing the store, summary or report does not load the training stack."""
    if name in ("default_out", "run_comparison"):
        from freqd.compare import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'freqd.compare' has no attribute {name!r}")


__all__ = ["ArmSpec", "ComparisonConfig", "ComparisonConfigError", "EvaluationSpec", "LatencySpec", "ModelSpec",
           "StaleResultError", "TeacherSpec", "default_out", "load_comparison_config", "parse_comparison_config",
           "quickstart_config", "run_comparison"]
