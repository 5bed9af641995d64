"""Nested settings merged key by key: the one rule every settings layer follows.

The configuration's layers (file <- environment <- flags <- `--set`), a deployment's settings under a run's,
tuned settings over a run's, and storage options over those that travelled to a worker all merge this way: a
key of `override` wins, and a section (a mapping under both) merges key by key. A leaf module, so that the
secrets helpers below storage and the configuration above it share one rule.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar, cast

__all__ = ["merge_settings"]

V = TypeVar("V")  # the settings' values: a merge keeps their type


def _merge(base: dict[str, object], override: Mapping[str, object]) -> dict[str, object]:
    merged = dict(base)
    for k, v in override.items():
        section = merged.get(k)
        if isinstance(v, Mapping) and isinstance(section, dict):
            merged[k] = _merge(section, v)
        else:
            merged[k] = v
    return merged


def merge_settings(base: Mapping[str, V], override: Mapping[str, V]) -> dict[str, V]:
    """Nested settings: `override` wins key by key, sections merge. Neither argument is changed; the result
    shares no section dict with `base` that the merge changed."""
    # the merged tree holds only values (and sections) of the two trees: `V` (JSON values, mostly) stays
    return cast("dict[str, V]", _merge(dict(base), override))
