"""freqd.resolver.Registry, and the kinds that resolve through it: models, distillers, projectors, α schedules."""

from __future__ import annotations

import math

import pytest

from freqd.resolver import Registry, normalise


class Widget:
    pass


class Gadget:
    pass


@pytest.fixture
def registry() -> Registry[type]:
    reg: Registry[type] = Registry("widget")
    reg.register("LightWidget", Widget)

    @reg.register("gadget_box")
    class Boxed(Gadget):
        pass

    return reg


def test_normalise_drops_case_dashes_and_underscores():
    assert normalise("Light-GCN") == normalise("light_gcn") == normalise("LIGHTGCN") == "lightgcn"


@pytest.mark.parametrize("query", ["LightWidget", "lightwidget", "light-widget", "LIGHT_WIDGET", "Light-_Widget"])
def test_case_dash_and_underscore_variants_resolve_to_the_same_object(registry, query):
    assert registry.resolve(query) is Widget
    assert registry[query] is Widget and query in registry


def test_the_decorator_registers_and_returns_the_class(registry):
    boxed = registry.resolve("GadgetBox")
    assert issubclass(boxed, Gadget) and boxed.__name__ == "Boxed"
    assert registry.names() == ["gadget_box", "LightWidget"]
    assert sorted(registry) == ["gadgetbox", "lightwidget"] and len(registry) == 2


def test_a_class_or_an_instance_passes_through(registry):
    assert registry.resolve(Gadget) is Gadget
    instance = Widget()
    assert registry.resolve(instance) is instance
    assert Widget not in registry


def test_an_unknown_name_names_the_kind_and_query_lists_the_choices_and_suggests_the_close_one(registry):
    with pytest.raises(ValueError, match=r"^unknown widget 'LightWidgit'; available: \['gadget_box', 'LightWidget'\]; "
                                         r"did you mean 'LightWidget'\?$"):
        registry.resolve("LightWidgit")
    with pytest.raises(ValueError, match=r"^unknown widget 'zzz'; available: \['gadget_box', 'LightWidget'\]$"):
        registry.resolve("zzz")


def test_a_second_object_under_the_same_name_is_refused_and_the_same_one_is_not(registry):
    assert registry.register("light-widget", Widget) is Widget
    with pytest.raises(ValueError, match="two widgets are named 'light_widget'"):
        registry.register("light_widget", Gadget)


def test_the_fallback_answers_names_not_registered_and_the_note_ends_the_error():
    reg: Registry[int] = Registry("number", fallback=lambda name: int(name) if name.isdigit() else None,
                                  note="digits are numbers too")
    reg.register("one", 1)
    assert reg.resolve("ONE") == 1 and reg.resolve("42") == 42
    with pytest.raises(ValueError, match=r"^unknown number 'x'; available: \['one'\]; digits are numbers too$"):
        reg.resolve("x")


# -- the kinds --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["BPR", "bpr", "LightGCN", "light-gcn", "Light_GCN"])
def test_models_resolve_their_names(name):
    from freqd.models import BPR, MODELS, LightGCN, get_model

    assert get_model(name) is {"bpr": BPR, "lightgcn": LightGCN}[normalise(name)]
    assert MODELS.names() == ["BPR", "Hash", "LightGCN"]
    assert get_model(BPR) is BPR


def test_models_fall_back_to_recbole_and_suggest_close_names():
    from recbole.model.general_recommender import ItemKNN

    from freqd.models import get_model

    assert get_model("item-knn") is ItemKNN
    with pytest.raises(ValueError, match=r"unknown model 'LightGNC'; available: \['BPR', 'Hash', 'LightGCN'\]; did you mean 'LightGCN'\?; RecBole"):
        get_model("LightGNC")


def test_distillers_resolve_every_available_name_and_keep_their_mapping():
    from freqd.distillers import DISTILLERS, REGISTRY, FreqD, available, get_distiller
    from freqd.distillers.base import registry_key

    assert {"CD", "DCD", "DE", "FitNet", "FreqD", "HTD", "KD", "PCKD", "RRD", "UnKD"} <= set(available())
    for name in available():
        cls = get_distiller(name)
        assert cls.name == name
        assert get_distiller(name.upper()) is get_distiller(name.lower()) is cls
        assert REGISTRY[registry_key(name)] is DISTILLERS[registry_key(name)] is cls
    assert get_distiller("freq-d") is get_distiller(FreqD) is FreqD
    with pytest.raises(ValueError, match=r"unknown distiller 'FrqD'; available: \[.*'UnKD'\]; did you mean 'FreqD'\?"):
        get_distiller("FrqD")


@pytest.mark.parametrize("name, cls_name", [("linear", "LinearProjector"), ("MLP", "MLPProjector"),
                                            ("Experts", "ExpertProjector")])
def test_projectors_resolve_their_names_with_unchanged_constructor_arguments(name, cls_name):
    from torch import nn

    from freqd.distillers import projectors

    assert set(projectors.PROJECTOR_CLASSES.names()) == set(projectors.PROJECTORS)
    built = projectors.build_projector(name, 3, 4, hidden=6, experts=2, dropout=0.1, bias=True)
    assert type(built).__name__ == cls_name
    linears = [m for m in built.modules() if isinstance(m, nn.Linear)]
    expected = {"LinearProjector": [(3, 4, True)], "MLPProjector": [(3, 6, True), (6, 4, True)],
                "ExpertProjector": [(3, 6, True), (6, 4, True)] * 2}[cls_name]
    assert [(m.in_features, m.out_features, m.bias is not None) for m in linears] == expected
    if cls_name == "LinearProjector":
        assert projectors.build_projector("linear", 3, 4).linear.bias is None
    dropouts = [m.p for m in built.modules() if isinstance(m, nn.Dropout)]
    assert all(p == 0.1 for p in dropouts)
    assert type(projectors.build_projector(type(built), 3, 4)) is type(built)


def test_an_unknown_projector_is_refused_by_name():
    from freqd.distillers.projectors import build_projector

    with pytest.raises(ValueError, match=r"unknown projector 'mpl'; available: \['experts', 'linear', 'mlp'\]; did you mean 'mlp'\?"):
        build_projector("mpl", 3, 4)


@pytest.mark.parametrize("name", ["const", "cos", "linear", "reverse"])
def test_schedules_resolve_their_names_with_the_same_formulas(name):
    from freqd.graph import ALPHA_SCHEDULES, SCHEDULES, alpha_schedule

    assert set(ALPHA_SCHEDULES.names()) == set(SCHEDULES)
    frac = 3 / 8
    expected = {"const": 0.5, "cos": -0.2 + 0.7 * (1 + math.cos(math.pi * frac)) / 2,
                "linear": 0.5 - 0.7 * frac, "reverse": -0.2 + 0.7 * (1 - math.cos(math.pi * frac)) / 2}[name]
    assert alpha_schedule(name, 3, 0.5, -0.2, 8) == pytest.approx(expected)
    assert alpha_schedule(name.upper(), 3, 0.5, -0.2, 8) == alpha_schedule(name, 3, 0.5, -0.2, 8)
    assert alpha_schedule(name, 20, 0.5, -0.2, 8) == pytest.approx(0.5 if name == "const" else
                                                                  {"cos": -0.2, "linear": -0.2, "reverse": 0.5}[name])


def test_an_unknown_schedule_is_refused_by_name():
    from freqd.graph import alpha_schedule

    with pytest.raises(ValueError, match=r"unknown alpha schedule 'cosine'; available: \['const', 'cos', 'linear', 'reverse'\]; did you mean 'cos'\?"):
        alpha_schedule("cosine", 0, 0.5, length=10)
