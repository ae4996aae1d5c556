"""The core settings (freqd.core_settings): wrong types and ranges are refused before any data is
loaded, naming the key, the value and its source; YAML syntax errors name the file and line; the
CLI ends such errors with one line and exit code 2; comparison and tune overrides get the same checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import Field, model_validator

from freqd.cli import main
from freqd.compare.config import ComparisonConfigError, load_comparison_config, parse_comparison_config
from freqd.config import Config, known_keys, yaml_settings
from freqd.core_settings import CORE_SETTINGS, TrainingSettings, check_consistency, check_settings, core_keys
from freqd.settings import Settings, SettingsError

REPO = Path(__file__).resolve().parents[1]
QUIET = {"use_gpu": False, "state": "ERROR"}
OVERRIDES = "in the overrides"

BAD = [
    ("epochs", "abc"), ("epochs", -1), ("epochs", 0), ("epochs", True), ("embedding_size", 2.5),
    ("embedding_size", "abc"), ("train_batch_size", 0), ("eval_batch_size", 0), ("learning_rate", 0),
    ("learning_rate", float("inf")), ("weight_decay", -0.1), ("eval_step", 0), ("stopping_step", 0),
    ("topk", [0, 10]), ("topk", "abc"), ("topk", []), ("metrics", ["NDCG", "nDCGG"]), ("metrics", ["NDCG", "AUC"]),
    ("valid_metric", "NDGC@20"), ("seed", -1), ("seed", 1.5), ("split_seed", "x"), ("n_layers", -1),
    ("reg_weight", -1e-5), ("init_std", 0), ("threads", 0), ("threads", "many"), ("train_sampler", "slow"),
    ("sparse_embeddings", "maybe"), ("valid_smoothing", 0), ("keep_last_checkpoint", 2), ("protocol", "loo"),
    ("kd_weight", -1), ("learner", "adma"), ("eval_chunk_users", 0),
]


def _single_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# -- the settings classes -----------------------------------------------------------------------
@pytest.mark.parametrize("key, value", BAD)
def test_a_bad_value_is_refused_naming_key_and_value(key, value):
    with pytest.raises(SettingsError, match=re.escape(f"{key}={value!r}")):
        check_settings({key: value})


@pytest.mark.parametrize("values, expected", [
    ({"epochs": 3.0}, {"epochs": 3}), ({"epochs": "3"}, {"epochs": 3}), ({"topk": 20}, {"topk": [20]}),
    ({"topk": [10, 20]}, {"topk": [10, 20]}), ({"metrics": "ndcg"}, {"metrics": ["ndcg"]}),
    ({"threads": "AUTO"}, {"threads": "auto"}), ({"threads": "2"}, {"threads": 2}),
    ({"learning_rate": "1e-3"}, {"learning_rate": 0.001}),
    ({"keep_last_checkpoint": 0}, {"keep_last_checkpoint": False}),
    ({"n_layers": 0, "weight_decay": 0, "kd_weight": 0}, {"n_layers": 0, "weight_decay": 0.0, "kd_weight": 0.0}),
    ({"learner": "AdamW", "valid_metric": "Recall@10"}, {"learner": "AdamW", "valid_metric": "Recall@10"}),
    ({"results_dir": Path("out"), "my_own_key": object()}, {"results_dir": "out"}),
])
def test_good_values_are_accepted_and_normalised(values, expected):
    assert check_settings(values) == expected


def test_every_error_is_named_at_once_with_its_source():
    with pytest.raises(SettingsError) as info:
        check_settings({"epochs": -1, "learning_rate": "x", "train_sampler": "fast"}, source=lambda key: f"<{key}>")
    message = str(info.value)
    assert "epochs=-1 in <epochs>: " in message and "learning_rate='x' in <learning_rate>: " in message
    assert "train_sampler" not in message and "\n" not in message


class _Range(Settings):
    """Settings with a check across fields."""

    low: int = 0
    high: int = 1

    @model_validator(mode="after")
    def _ordered(self):
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


def test_a_check_across_fields_is_reported_by_its_message():
    with pytest.raises(SettingsError, match=r"^low \(5\) must be below high \(1\)$"):
        check_settings({"low": 5}, (_Range,))
    assert check_settings({"low": 5, "high": "6"}, (_Range,)) == {"low": 5, "high": 6}


def test_the_declared_keys_are_known_documented_and_their_defaults_are_freqds():
    assert core_keys() <= known_keys()
    for cls in CORE_SETTINGS:
        for name, field in cls.model_fields.items():
            assert field.description, f"{cls.__name__}.{name} has no description"
    for model in ("BPR", "LightGCN"):
        config = Config(model=model, dataset="ml-100k", config_dict=QUIET)
        for cls in CORE_SETTINGS:
            for name, field in cls.model_fields.items():
                if field.default is not None and config[name] is not None:
                    assert config[name] == field.default, (model, name)


def test_every_shipped_config_has_valid_settings():
    checked = 0
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        content = yaml.safe_load(path.read_text()) or {}
        if path.parent.name in ("compare", "tune"):
            groups = [content.get("overrides") or {}]
            groups += [arm.get("overrides") or {} for arm in content.get("arms") or []]
            groups += [(content.get(role) or {}).get("overrides") or {} for role in ("teacher", "student")]
        else:
            groups = [content]
        for group in groups:
            check_settings(group)
        checked += 1
    assert checked > 20


# -- freqd.Config ---------------------------------------------------------------------------------
@pytest.mark.parametrize("key, value", [("epochs", "abc"), ("embedding_size", 2.5), ("embedding_size", "abc"),
                                        ("train_batch_size", 0), ("epochs", -1), ("kd_weight", -1),
                                        ("learning_rate", 0), ("topk", [0, 10])])
def test_config_refuses_a_bad_override_naming_its_source(key, value):
    with pytest.raises(SettingsError) as info:
        Config(model="BPR", dataset="ml-100k", config_dict={**QUIET, key: value})
    assert f"{key}={value!r} {OVERRIDES}" in str(info.value)


def test_config_names_the_file_a_bad_value_came_from(tmp_path):
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text("epochs: 0\nlearning_rate: 0.01\n")
    second.write_text("epochs: 5\nlearning_rate: -0.01\n")
    with pytest.raises(SettingsError, match=r"learning_rate=-0\.01 in config file .*second\.yaml"):
        Config(model="BPR", dataset="ml-100k", config_file_list=[str(first), str(second)], config_dict=QUIET)
    with pytest.raises(SettingsError, match=r"epochs=0 in config file .*first\.yaml"):
        Config(model="BPR", dataset="ml-100k", config_file_list=[str(first)], config_dict=QUIET)


def test_config_holds_the_validated_values():
    config = Config(model="BPR", dataset="ml-100k",
                    config_dict={**QUIET, "epochs": 3.0, "topk": 20, "threads": "2", "embedding_size": "16"})
    assert (config["epochs"], config["topk"], config["threads"], config["embedding_size"]) == (3, [20], 2, 16)
    assert isinstance(config["epochs"], int)
    config = Config(model="BPR", dataset="ml-100k", config_dict={**QUIET, "topk": [10, 20]})
    assert config["topk"] == [10, 20]


def test_lightgcn_options_are_checked():
    with pytest.raises(SettingsError, match="n_layers=-1"):
        Config(model="LightGCN", dataset="ml-100k", config_dict={**QUIET, "n_layers": -1})
    assert Config(model="LightGCN", dataset="ml-100k", config_dict={**QUIET, "n_layers": 3.0})["n_layers"] == 3


def test_valid_metric_must_be_computed_for_a_run_that_validates():
    with pytest.raises(SettingsError, match=r"valid_metric='NDCG@30' in <here>: k=30 is not among topk"):
        check_consistency({"valid_metric": "NDCG@30", "metrics": ["NDCG"], "topk": [10, 20]}, "<here>")
    with pytest.raises(SettingsError, match=r"valid_metric='MRR@10'.*not among metrics"):
        check_consistency({"valid_metric": "MRR@10", "metrics": ["NDCG"], "topk": 10})
    with pytest.raises(SettingsError, match=r"valid_metric='NDCG'.*per cutoff"):
        check_consistency({"valid_metric": "NDCG", "metrics": ["NDCG"], "topk": 10})
    check_consistency({"valid_metric": "recall@10", "metrics": "Recall", "topk": 10})
    check_consistency({"valid_metric": "GAUC", "metrics": ["GAUC", "NDCG"], "topk": [10]})
    # An evaluation-only config may leave valid_metric out of its metrics: freqd.Config accepts it.
    Config(model="BPR", dataset="ml-100k", config_dict={**QUIET, "metrics": ["Recall"], "topk": [5]})


def test_a_misspelt_key_is_reported_before_a_bad_value():
    with pytest.raises(ValueError, match="unknown config key 'embeding_size'"):
        Config(model="BPR", dataset="ml-100k", config_dict={**QUIET, "embeding_size": 8, "epochs": -1})


class _AlphaSettings(Settings):
    """A stand-in for a distiller's pydantic settings."""

    freqd_alpha: float = Field(0.5, ge=0, le=1)


def test_the_distillers_settings_are_validated_and_written_back(monkeypatch):
    from freqd.distillers import get_distiller

    monkeypatch.setattr(get_distiller("FreqD"), "settings_cls", _AlphaSettings, raising=False)
    with pytest.raises(SettingsError, match=r"FreqD settings: freqd_alpha=5 in the overrides"):
        Config(model="BPR", dataset="ml-100k", config_dict={**QUIET, "freqd_alpha": 5}, kd="FreqD")
    config = Config(model="BPR", dataset="ml-100k", config_dict={**QUIET, "freqd_alpha": 1}, kd="FreqD")
    assert config["freqd_alpha"] == 1.0 and isinstance(config["freqd_alpha"], float)
    Config(model="BPR", dataset="ml-100k", config_dict={**QUIET, "freqd_alpha": 5})  # no kd: not FreqD's run


def test_freqds_own_settings_refuse_an_alpha_out_of_range():
    from freqd.distillers import get_distiller

    if getattr(get_distiller("FreqD"), "settings_cls", None) is None:
        pytest.skip("FreqD declares no pydantic settings_cls yet")
    with pytest.raises(SettingsError, match="FreqD settings: freqd_alpha=5 in the overrides"):
        Config(model="BPR", dataset="ml-100k", config_dict={**QUIET, "freqd_alpha": 5}, kd="FreqD")


# -- YAML syntax ----------------------------------------------------------------------------------
def test_a_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("epochs: 3\nlearning_rate: [0.1\nembedding_size: 4\n")
    for build in (lambda: yaml_settings([path]),
                  lambda: Config(model="BPR", dataset="ml-100k", config_file_list=[str(path)], config_dict=QUIET)):
        with pytest.raises(ValueError) as info:
            build()
        assert not isinstance(info.value, yaml.YAMLError)
        assert _single_line(str(info.value)).startswith(f"config file {path}, line 3")


def test_an_empty_config_file_is_no_settings_and_a_list_is_refused(tmp_path):
    empty, listed = tmp_path / "empty.yaml", tmp_path / "list.yaml"
    empty.write_text("# nothing yet\n")
    listed.write_text("- 1\n- 2\n")
    assert Config(model="BPR", dataset="ml-100k", config_file_list=[str(empty)], config_dict=QUIET)["epochs"] == 300
    with pytest.raises(ValueError, match="list.yaml must hold a mapping"):
        Config(model="BPR", dataset="ml-100k", config_file_list=[str(listed)], config_dict=QUIET)


# -- the command line -----------------------------------------------------------------------------
@pytest.fixture
def no_data(monkeypatch):
    """Loading a dataset (or reading a teacher checkpoint's weights) fails the test."""
    import freqd.checkpoints
    import freqd.runs

    def refuse(*args, **kwargs):
        raise AssertionError("a dataset was loaded")

    monkeypatch.setattr(freqd.runs, "create_dataset", refuse)
    monkeypatch.setattr(freqd.checkpoints, "load_checkpoint", lambda *a, **k: {"config": {"dataset": "ml-100k"}})
    monkeypatch.setattr(freqd.checkpoints, "load_teacher", refuse)


@pytest.mark.parametrize("argv, named", [
    (["train", "--model", "BPR", "--epochs=abc"], "epochs='abc'"),
    (["train", "--model", "BPR", "--embedding_size=abc"], "embedding_size='abc'"),
    (["train", "--model", "BPR", "--embedding_size=2.5"], "embedding_size=2.5"),
    (["train", "--model", "BPR", "--train_batch_size=0"], "train_batch_size=0"),
    (["train", "--model", "BPR", "--epochs=-1"], "epochs=-1"),
    (["train", "--model", "BPR", "--learning_rate=0"], "learning_rate=0"),
    (["train", "--model", "BPR", "--seed", "abc"], "seed='abc'"),
    (["distill", "--teacher", "t.pth", "--kd_weight=-1"], "kd_weight=-1"),
    (["distill", "--teacher", "t.pth", "--embedding_size", "2.5"], "embedding_size=2.5"),
    (["distill", "--teacher", "t.pth", "--embedding-size", "x"], "embedding_size='x'"),
    (["distill", "--teacher", "t.pth", "--epochs=abc"], "epochs='abc'"),
])
def test_cli_bad_values_end_in_one_line_and_exit_2(argv, named, no_data, capsys):
    assert main([*argv, "--use_gpu=False"]) == 2
    line = _single_line(capsys.readouterr().err)
    assert line.startswith("freqd: error: ") and named in line and "Traceback" not in line


def test_cli_distiller_settings_are_checked_before_any_data(no_data, capsys, monkeypatch):
    from freqd.distillers import get_distiller

    monkeypatch.setattr(get_distiller("FreqD"), "settings_cls", _AlphaSettings, raising=False)
    assert main(["distill", "--teacher", "t.pth", "--kd", "FreqD", "--freqd_alpha=5", "--use_gpu=False"]) == 2
    assert "freqd_alpha=5" in _single_line(capsys.readouterr().err)


def test_cli_yaml_syntax_error_names_file_and_line(tmp_path, no_data, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("epochs: 3\nmetrics: [Recall\n")
    assert main(["train", "--model", "BPR", "--config", str(path), "--use_gpu=False"]) == 2
    line = _single_line(capsys.readouterr().err)
    assert f"config file {path}, line " in line


def test_cli_bad_value_in_a_config_file_names_it(tmp_path, no_data, capsys):
    path = tmp_path / "mine.yaml"
    path.write_text("train_batch_size: 0\n")
    assert main(["train", "--model", "BPR", "--config", str(path), "--use_gpu=False"]) == 2
    assert f"train_batch_size=0 in config file {path}" in _single_line(capsys.readouterr().err)


# -- comparison and tune specs --------------------------------------------------------------------
def _comparison(**changes) -> dict:
    raw = {"dataset": "ml-100k", "teacher": {"model": "BPR", "embedding_size": 32}, "student": {"model": "BPR"},
           "seeds": [0], "arms": [{"name": "scratch"}, {"name": "fd", "kd": "FreqD"}]}
    return {**raw, **changes}


@pytest.mark.parametrize("changes, named", [
    ({"arms": [{"name": "scratch"}, {"name": "fd", "kd": "FreqD", "overrides": {"kd_weight": -1}}]},
     r"arm 'fd': kd_weight=-1 in arms\[1\]\.overrides"),
    ({"arms": [{"name": "scratch", "overrides": {"epochs": "abc"}}]}, r"arm 'scratch': epochs='abc' in arms\[0\]"),
    ({"teacher": {"model": "BPR", "overrides": {"learning_rate": 0}}},
     r"teacher: learning_rate=0 in teacher\.overrides"),
    ({"student": {"model": "BPR", "overrides": {"train_batch_size": 0}}},
     r"arm 'scratch': train_batch_size=0 in student\.overrides"),
    ({"overrides": {"topk": [10], "valid_metric": "NDCG@20"}}, r"teacher: valid_metric='NDCG@20'.*not among topk"),
])
def test_comparison_overrides_are_checked_before_any_run(changes, named):
    with pytest.raises(ComparisonConfigError, match=named):
        parse_comparison_config(_comparison(**changes))


def test_comparison_checks_the_arms_files_and_command_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("eval_step: 0\n")
    raw = _comparison(arms=[{"name": "scratch"}, {"name": "fd", "kd": "FreqD", "config_files": [str(bad)]}])
    with pytest.raises(ComparisonConfigError, match=r"arm 'fd': eval_step=0 in config file .*bad\.yaml"):
        parse_comparison_config(raw)
    config = parse_comparison_config(_comparison())
    with pytest.raises(ComparisonConfigError, match=r"arm 'scratch': epochs=0 in the command-line student"):
        config.with_overrides(student_overrides={"epochs": 0})
    with pytest.raises(ComparisonConfigError, match=r"teacher: epochs=-2 in the command-line overrides"):
        config.with_overrides(overrides={"epochs": -2})
    assert config.with_overrides(overrides={"epochs": 2.0}).cli_overrides == {"epochs": 2.0}


def test_comparison_arm_distiller_settings_are_checked(monkeypatch):
    from freqd.distillers import get_distiller

    monkeypatch.setattr(get_distiller("FreqD"), "settings_cls", _AlphaSettings, raising=False)
    raw = _comparison(student={"model": "BPR", "overrides": {"freqd_alpha": 5}})
    with pytest.raises(ComparisonConfigError, match=r"arm 'fd': freqd_alpha=5 in student\.overrides"):
        parse_comparison_config(raw)


def test_comparison_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "cmp.yaml"
    path.write_text("dataset: ml-100k\narms: [\n  {name: a\n")
    with pytest.raises(ComparisonConfigError) as info:
        load_comparison_config(path)
    assert _single_line(str(info.value)).startswith(f"comparison config {path}, line ")


def test_tune_overrides_and_space_are_checked(tmp_path):
    from freqd.tune import TuneConfigError, load_tune_config, run_tune

    path = tmp_path / "tune.yaml"
    space = {"learning_rate": {"type": "float", "low": 0.001, "high": 0.1, "log": True}}
    path.write_text(yaml.safe_dump({"model": "BPR", "overrides": {"epochs": 0}, "space": space}))
    with pytest.raises(TuneConfigError, match="epochs=0 in the overrides"):
        load_tune_config(path)
    path.write_text(yaml.safe_dump({"model": "BPR", "space": {"learning_rate": {"type": "float", "low": 0,
                                                                                "high": 0.1}}}))
    with pytest.raises(TuneConfigError, match=r"learning_rate=0\.0 in space\.learning_rate"):
        load_tune_config(path)
    path.write_text(yaml.safe_dump({"model": "BPR", "space": {"train_sampler": {"type": "categorical",
                                                                                "choices": ["fast", "quick"]}}}))
    with pytest.raises(TuneConfigError, match=r"train_sampler='quick' in space\.train_sampler"):
        load_tune_config(path)
    path.write_text(yaml.safe_dump({"model": "BPR", "space": space}))
    config = load_tune_config(path)
    with pytest.raises(TuneConfigError, match="stopping_step=0 in the overrides"):
        run_tune(config, out=tmp_path / "out", overrides={"stopping_step": "0"})
    path.write_text("model: BPR\nspace: {learning_rate: {type: float\n")
    with pytest.raises(TuneConfigError, match=f"tune config {path}, line "):
        load_tune_config(path)


def test_the_schema_documents_every_setting():
    for cls in CORE_SETTINGS:
        for name, prop in cls.model_json_schema()["properties"].items():
            assert prop["description"] and "default" in prop, (cls.__name__, name)
    assert TrainingSettings.model_json_schema()["properties"]["train_sampler"]["enum"] == ["recbole", "fast"]
