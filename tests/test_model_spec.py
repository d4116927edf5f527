"""Model specs: ``name:field=value`` strings parsed against the model's typed config."""

from __future__ import annotations

import pytest

from tansuo.models import MODELS
from tansuo.models.spec import model_factories, parse_model_spec, parse_model_specs


def test_plain_name_and_overrides_are_typed():
    assert parse_model_spec("itemknn", MODELS).overrides == {}
    spec = parse_model_spec("itemknn:neighbors=50:shrink=2.5", MODELS)
    assert spec.label == "itemknn:neighbors=50:shrink=2.5" and spec.name == "itemknn"
    assert spec.overrides == {"neighbors": 50, "shrink": 2.5}
    spec = parse_model_spec("sasrec:item_repr=id+text:event_types=false:lr=1e-3", MODELS)
    assert spec.overrides == {"item_repr": "id+text", "event_types": False, "lr": 0.001}


def test_the_demo_trains_one_network_of_the_default_ensemble():
    from tansuo.models import DEFAULT_MODEL, DEMO_MODEL

    default, demo = (parse_model_spec(m, MODELS) for m in (DEFAULT_MODEL, DEMO_MODEL))
    assert default.name == demo.name == "sasrec"
    full = default.config(MODELS["sasrec"])
    assert full.members > 1
    assert demo.config(MODELS["sasrec"]) == full.replace(members=1)


def test_factories_build_a_fresh_model_per_seed():
    factories = model_factories("itemknn:neighbors=7,sasrec:hidden=32", MODELS)
    a, b = factories["sasrec:hidden=32"](3), factories["sasrec:hidden=32"](4)
    assert a is not b and (a.config.seed, b.config.seed) == (3, 4) and a.config.hidden == 32
    assert factories["itemknn:neighbors=7"](0).config.neighbors == 7
    # an explicit seed in the spec wins over the run's seed
    assert model_factories("sasrec:seed=9", MODELS)["sasrec:seed=9"](1).config.seed == 9


@pytest.mark.parametrize(("text", "message"), [
    ("magic", "unknown model 'magic'"),
    ("itemknn:size=3", "has no field 'size'"),
    ("itemknn:neighbors", "expected field=value"),
    ("itemknn:neighbors=ten", "field 'neighbors': expected int, got 'ten'"),
    ("sasrec:event_types=maybe", "field 'event_types': expected true or false"),
    ("sasrec:item_repr=pixels", "item_repr must be one of"),
    ("itemknn:neighbors=0", "model 'itemknn:neighbors=0'"),
])
def test_bad_specs_name_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        parse_model_spec(text, MODELS)


def test_lists_reject_repeats_and_emptiness():
    with pytest.raises(ValueError, match="named twice"):
        parse_model_specs("pop,itemknn,pop", MODELS)
    with pytest.raises(ValueError, match="no model named"):
        parse_model_specs(" , ", MODELS)
