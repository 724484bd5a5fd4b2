"""Strict YAML -> dataclass loading: typos and wrong types fail loudly."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from swm_ros.config import ConfigError, load_config, to_dict


@dataclass
class Inner:
    rate: float
    names: tuple[str, ...] = ()


@dataclass
class Outer:
    name: str
    inner: Inner
    steps: int = 10
    maybe: float | None = None
    table: dict[str, Inner] = field(default_factory=dict)


def test_loads_nested_and_converts_types():
    cfg = load_config(Outer, {"name": "a", "inner": {"rate": 2, "names": ["x", "y"]},
                              "table": {"k": {"rate": 1.5}}})
    assert cfg.inner.rate == 2.0 and isinstance(cfg.inner.rate, float)
    assert cfg.inner.names == ("x", "y")
    assert cfg.table["k"].rate == 1.5
    assert cfg.steps == 10 and cfg.maybe is None
    assert to_dict(cfg)["inner"]["names"] == ["x", "y"]


@pytest.mark.parametrize("data, message", [
    ({"name": "a", "inner": {"rate": 1.0}, "stepz": 3}, "unknown key"),
    ({"name": "a", "inner": {"rate": 1.0, "nmes": []}}, "unknown key"),
    ({"name": "a"}, "missing required"),
    ({"name": "a", "inner": {"rate": "fast"}}, "expected a number"),
    ({"name": "a", "inner": {"rate": 1.0}, "steps": 2.5}, "expected an integer"),
    ({"name": "a", "inner": {"rate": True}}, "expected a number"),
    ({"name": "a", "inner": [1, 2]}, "expected a mapping"),
])
def test_rejects_bad_configs(data, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Outer, data)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Outer, bad)
