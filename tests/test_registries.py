"""The one registry type: every named kind of thing is looked up the same way."""

from __future__ import annotations

import pytest

from medmask.data.manifest import DATASET_ADAPTERS
from medmask.masking import MASK_STRATEGIES, PIXEL_MASKERS, strategy_reports, strategy_requires
from medmask.models._registry import MODELS
from medmask.registry import Registry


def test_unknown_name_lists_the_valid_ones():
    registry: Registry = Registry("widget")
    registry.register("b")(lambda: "b")
    registry.register("a")(lambda: "a")
    with pytest.raises(ValueError, match=r"unknown widget 'c'; valid names: a, b"):
        registry.create("c")
    assert registry.names() == ["a", "b"] and registry.names("a") == ["a"]
    assert registry.create("a") == "a"


def test_lazy_entries_import_on_first_use():
    registry: Registry = Registry("widget")
    registry.add_lazy("join", "os.path:join")
    assert registry.entry("join").factory is None
    assert registry.create("join", "x", "y") == "x/y"
    assert registry.entry("join").factory is not None
    with pytest.raises(ValueError, match="module:function"):
        registry.add_lazy("bad", "os.path.join")


def test_a_name_is_registered_once():
    registry: Registry = Registry("widget")
    registry.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a")(lambda: 2)


def test_every_kind_uses_the_one_registry_type():
    for registry in (MASK_STRATEGIES, PIXEL_MASKERS, MODELS, DATASET_ADAPTERS):
        assert isinstance(registry, Registry)
        with pytest.raises(ValueError, match="valid names"):
            registry.entry("no-such-name")


def test_strategies_declare_what_they_need_from_outside_the_batch():
    assert strategy_requires("ahm") == ("policy",)
    assert strategy_requires("random") == () == strategy_requires("rgmim")
    assert "filled_share" in strategy_reports("rgmim") and strategy_reports("random") == ()
