"""Unknown config keys are refused with their source and a suggestion; every shipped config passes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from freqd.cli import main
from freqd.compare.config import ComparisonConfigError, parse_comparison_config
from freqd.config import Config, check_keys, known_keys

REPO = Path(__file__).resolve().parents[1]
QUIET = {"use_gpu": False, "state": "ERROR"}


@pytest.mark.parametrize("key, suggestion", [("embeding_size", "embedding_size"), ("learing_rate", "learning_rate"),
                                             ("freqd_alpah", "freqd_alpha"), ("rrd_temprature", "rrd_temperature"),
                                             ("valid_smothing", "valid_smoothing")])
def test_a_misspelt_override_is_refused_with_a_suggestion(key, suggestion):
    with pytest.raises(ValueError, match=f"unknown config key '{key}' in the overrides.*did you mean '{suggestion}'"):
        Config(model="BPR", dataset="ml-100k", config_dict={**QUIET, key: 1})


def test_a_misspelt_file_key_names_the_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("embedding_size: 20\nlearing_rate: 0.01\n")
    with pytest.raises(ValueError, match=r"unknown config key 'learing_rate' in config file .*mine\.yaml"):
        Config(model="BPR", dataset="ml-100k", config_file_list=[str(path)], config_dict=QUIET)


def test_own_components_keys_pass_with_strict_keys_off():
    config = Config(model="BPR", dataset="ml-100k", config_dict={**QUIET, "my_model_depth": 3, "strict_keys": False})
    assert config["my_model_depth"] == 3


def test_recbole_and_freqd_keys_are_known():
    # RecBole's (any model or dataset), freqd's properties, every distiller's settings.
    assert {"embedding_size", "eval_args", "benchmark_filename", "n_layers", "reg_weight", "valid_smoothing",
            "train_sampler", "kd_weight", "freqd_teacher_rank", "rrd_pool", "de_experts", "projector_per_entity",
            "keep_last_checkpoint", "split_seed"} <= known_keys()


def test_every_shipped_config_uses_known_keys():
    checked = 0
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        content = yaml.safe_load(path.read_text()) or {}
        if path.parent.name in ("compare", "tune"):
            keys = set(content.get("overrides") or {}) | set(content.get("space") or {})
            for arm in content.get("arms") or []:
                keys |= set(arm.get("overrides") or {})
        else:
            keys = set(content)
        check_keys(keys, str(path))
        checked += 1
    assert checked > 20


def test_a_comparison_typo_stops_before_any_run(tmp_path):
    raw = {"dataset": "ml-100k", "teacher": {"model": "BPR"}, "student": {"model": "BPR"}, "seeds": [0],
           "arms": [{"name": "scratch"}, {"name": "f", "kd": "FreqD", "overrides": {"freqd_alpah": 0.3}}]}
    with pytest.raises(ComparisonConfigError, match="unknown config key 'freqd_alpah'.*did you mean 'freqd_alpha'"):
        parse_comparison_config(raw)


def test_cli_names_the_misspelt_flag(capsys):
    assert main(["train", "--model", "BPR", "--embeding_size=20"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'embeding_size'" in err and "did you mean 'embedding_size'" in err
