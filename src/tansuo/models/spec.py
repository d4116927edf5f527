"""Model specifications: a registered name plus config overrides, written on one line.

``sasrec:item_repr=id+text:max_len=100`` names the SASRec model with two settings changed, so
that one ``tansuo evaluate --models`` run can compare variants of the same model side by side.
Values are converted to the config field's declared type; a wrong field or value is an error
naming the field and what it expects.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tansuo.models.base import ModelConfig, Recommender

__all__ = ["ModelSpec", "parse_model_spec", "parse_model_specs", "model_factories"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class ModelSpec:
    label: str
    """The spec as written: how the model is named in reports."""
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)

    def config(self, cls: type[Recommender], seed: int | None = None) -> ModelConfig:
        values = dict(self.overrides)
        fields = {f.name for f in dataclasses.fields(cls.config_class)}
        if seed is not None and "seed" in fields and "seed" not in values:
            values["seed"] = seed
        return cls.config_class(**values)


def _convert(kind: Any, raw: str, where: str) -> Any:
    origin = typing.get_origin(kind)
    if kind is bool:
        low = raw.strip().lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise ValueError(f"{where}: expected true or false, got {raw!r}")
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            raise ValueError(f"{where}: expected {kind.__name__}, got {raw!r}") from None
    if kind is str:
        return raw
    if origin in (tuple, list, dict) or kind in (tuple, list, dict):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            raise ValueError(f"{where}: expected JSON for {kind}, got {raw!r}") from None
        return tuple(value) if (origin or kind) is tuple else value
    return raw


def parse_model_spec(text: str, registry: Mapping[str, type[Recommender]]) -> ModelSpec:
    """``name[:field=value]...`` → :class:`ModelSpec`, validated against the model's config."""
    label = text.strip()
    name, *parts = label.split(":")
    if name not in registry:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(registry))}")
    cls = registry[name]
    hints = typing.get_type_hints(cls.config_class)
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    overrides: dict[str, Any] = {}
    for part in parts:
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"model {label!r}: expected field=value after ':', got {part!r}")
        if key not in fields:
            raise ValueError(f"model {label!r}: {cls.config_class.__name__} has no field "
                             f"{key!r}; expected one of {', '.join(sorted(fields))}")
        overrides[key] = _convert(hints.get(key, str), raw, f"model {label!r}, field {key!r}")
    spec = ModelSpec(label, name, overrides)
    try:
        spec.config(cls)  # the config's own checks (ranges, choices) run now, not mid-run
    except (ValueError, TypeError) as exc:
        raise ValueError(f"model {label!r}: {exc}") from None
    return spec


def parse_model_specs(text: str | Sequence[str], registry: Mapping[str, type[Recommender]]
                      ) -> list[ModelSpec]:
    items = text.split(",") if isinstance(text, str) else list(text)
    specs = [parse_model_spec(t, registry) for t in items if t.strip()]
    if not specs:
        raise ValueError("no model named")
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"a model is named twice: {labels}")
    return specs


def model_factories(specs: str | Sequence[str], registry: Mapping[str, type[Recommender]]
                    ) -> dict[str, Callable[[int], Recommender]]:
    """Label → factory(seed) building a fresh, unfitted model for that seed."""
    out: dict[str, Callable[[int], Recommender]] = {}
    for spec in parse_model_specs(specs, registry):
        cls = registry[spec.name]
        out[spec.label] = (lambda seed, s=spec, c=cls: c(s.config(c, seed)))
    return out
