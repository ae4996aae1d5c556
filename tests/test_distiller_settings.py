"""Every distiller's settings: typed pydantic models whose defaults validate and whose bad values are
refused with the key and value named, parametrised over ``freqd.distillers.available()``."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import get_args

import pytest
import yaml

from freqd.config import known_keys
from freqd.distillers import DistillerSettings, available, get_distiller
from freqd.settings import Settings, SettingsError

KD_PROPERTIES = Path(__file__).parents[1] / "freqd" / "properties" / "kd"

#: Per distiller, at least one out-of-range and one wrong-type value of its own keys.
BAD = {
    "FreqD": [("freqd_alpha", 5), ("freqd_alpha", -1.5), ("freqd_keep_prob", 0.0), ("freqd_topk", 0),
              ("freqd_neighbors", 2.5), ("freqd_distance", "l1"), ("freqd_graph", "knn"),
              ("freqd_coefficients", [1.0]), ("freqd_order", 3), ("freqd_schedule_epochs", 0),
              ("projector_dropout", 1.0), ("projector_per_entity", "sometimes")],
    "CD": [("cd_temperature", 0), ("cd_t2", math.inf), ("cd_pool", "big"), ("cd_guide", "oracle")],
    "DCD": [("dcd_pool", 1), ("dcd_temperature", "hot")],
    "DE": [("de_experts", 0), ("de_hidden", 0), ("de_tau_start", "warm")],
    "FitNet": [("fitnet_hidden_ratio", 0), ("fitnet_norm", "maybe"), ("fitnet_sample", "all")],
    "HTD": [("htd_alpha", -0.1), ("htd_groups", 2.5), ("htd_tau_end", 0)],
    "KD": [("kd_temperature", -1), ("kd_topk", [50])],
    "FreqDKD": [("kd_response_weight", -1), ("kd_response_weight", "twice"), ("freqd_alpha", 5), ("kd_topk", [50])],
    "PCKD": [("pckd_alpha", -1), ("pckd_samples", "ten"), ("pckd_tau_ce", math.nan)],
    "RRD": [("rrd_uninteresting", -5), ("rrd_interesting", 1.5)],
    "UnKD": [("unkd_pool", 1), ("unkd_lambda", "none")],
}
CASES = [(name, key, value) for name, cases in BAD.items() for key, value in cases]
CASES += [(name, "kd_weight", value) for name in BAD for value in (-1, "heavy")]

#: Rules between keys: the message names every key involved.
CROSS = [
    ("FreqD", {"freqd_neighbors": 4, "freqd_keep_prob": 0.5}, ["freqd_neighbors=4", "freqd_keep_prob=0.5"]),
    ("FreqD", {"freqd_neighbors": 4, "freqd_filter_first": False},
     ["freqd_neighbors=4", "freqd_filter_first=False", "projector='mlp'"]),
    ("FreqDKD", {"freqd_neighbors": 4, "freqd_keep_prob": 0.5}, ["freqd_neighbors=4", "freqd_keep_prob=0.5"]),
    ("CD", {"cd_samples": 10, "cd_pool": 5}, ["cd_samples=10", "cd_pool=5"]),
    ("DCD", {"dcd_samples": 3, "dcd_pool": 5}, ["dcd_samples=3", "dcd_pool=5"]),
    ("DE", {"de_tau_start": 0.1, "de_tau_end": 0.5}, ["de_tau_end=0.5", "de_tau_start=0.1"]),
    ("HTD", {"htd_tau_start": 0.1, "htd_tau_end": 0.5}, ["htd_tau_end=0.5", "htd_tau_start=0.1"]),
    ("PCKD", {"pckd_samples": 20, "pckd_topk": 10}, ["pckd_samples=20", "pckd_topk=10"]),
    ("RRD", {"rrd_interesting": 20, "rrd_pool": 10}, ["rrd_interesting=20", "rrd_pool=10"]),
]


def test_every_distiller_has_cases():
    assert set(BAD) == set(available())


@pytest.mark.parametrize("name", available())
def test_settings_are_a_typed_model_whose_defaults_validate(name):
    cls = get_distiller(name).settings_cls
    assert issubclass(cls, DistillerSettings) and issubclass(cls, Settings)
    defaults = cls()
    assert cls.from_config({}, where=name) == defaults
    assert cls.validate_values(defaults.model_dump()) == defaults
    for key, field in cls.model_fields.items():
        assert field.description and "\n" not in field.description, f"{key} has no one-line description"
    assert "kd_weight" in cls.keys() and cls.keys() <= known_keys()


@pytest.mark.parametrize("name", available())
def test_kd_weight_has_one_home_the_properties_yaml(name):
    """The reference kd_weight lives in freqd/properties/kd/<Name>.yaml (only there); every other default is
    a field default."""
    shipped = yaml.safe_load((KD_PROPERTIES / f"{name}.yaml").read_text(encoding="utf-8"))
    assert set(shipped) == {"kd_weight"}
    cls = get_distiller(name).settings_cls
    assert cls.model_fields["kd_weight"].default is None
    assert cls.from_config(shipped).kd_weight == pytest.approx(shipped["kd_weight"]) and shipped["kd_weight"] > 0


@pytest.mark.parametrize("name, key, value", CASES)
def test_bad_values_are_refused_naming_key_and_value(name, key, value):
    cls = get_distiller(name).settings_cls
    with pytest.raises(SettingsError, match=f"^{re.escape(name)}: .*{re.escape(f'{key}={value!r}')}"):
        cls.from_config({key: value}, where=name)


@pytest.mark.parametrize("name", available())
def test_the_distiller_refuses_bad_settings_before_reading_teacher_or_data(name):
    key, value = BAD[name][0]
    with pytest.raises(SettingsError, match=re.escape(f"{name}: {key}={value!r}")):
        get_distiller(name)({key: value}, None, None, None)
    with pytest.raises(SettingsError, match=re.escape(f"{name}: kd_weight=-1")):
        get_distiller(name)({"kd_weight": -1}, None, None, None)


@pytest.mark.parametrize("name, values, named", CROSS)
def test_rules_between_keys_name_every_key(name, values, named):
    with pytest.raises(SettingsError) as error:
        get_distiller(name).settings_cls.from_config(values, where=name)
    assert all(part in str(error.value) for part in named), str(error.value)


def test_examples_from_the_settings_spec():
    """freqd_alpha=5, kd_weight=-1, freqd_neighbors=2.5, freqd_distance='l1': each refused, named."""
    cls = get_distiller("FreqD").settings_cls
    for key, value, reason in [("freqd_alpha", 5, "less than or equal to 1"),
                               ("kd_weight", -1, "greater than or equal to 0"),
                               ("freqd_neighbors", 2.5, "valid integer"),
                               ("freqd_distance", "l1", "'mse' or 'cosine'")]:
        with pytest.raises(SettingsError, match=re.escape(f"{key}={value!r}: ") + ".*" + re.escape(reason)):
            cls.from_config({key: value})


def test_values_are_read_in_their_type_and_the_range_edges_are_accepted():
    cls = get_distiller("FreqD").settings_cls
    s = cls.from_config({"freqd_topk": "3", "freqd_neighbors": 8.0, "freqd_coefficients": [1, -0.5],
                         "freqd_alpha": -1, "freqd_alpha_end": 1, "freqd_keep_prob": 1, "kd_weight": 0})
    assert (s.freqd_topk, s.freqd_neighbors, s.freqd_coefficients) == (3, 8, (1.0, -0.5))
    assert (s.freqd_alpha, s.freqd_alpha_end, s.freqd_keep_prob, s.kd_weight) == (-1.0, 1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="frozen"):
        s.freqd_alpha = 0.2


def test_choices_match_the_code_that_reads_them():
    from freqd.distillers.freqd import Schedule
    from freqd.distillers.projectors import PROJECTORS, build_projector
    from freqd.graph import SCHEDULES

    assert get_args(Schedule) == tuple(SCHEDULES)
    for kind in PROJECTORS:
        build_projector(kind, 2, 3, hidden=4)


@pytest.mark.parametrize("name", available())
def test_an_unknown_key_is_refused_when_built_directly(name):
    with pytest.raises(SettingsError, match="not_a_key"):
        get_distiller(name).settings_cls.validate_values({"not_a_key": 1})
