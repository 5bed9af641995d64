"""Nested settings merged key by key: the one rule every settings layer follows.

The configuration's layers (file <- environment <- flags <- `--set`), a deployment's settings under a run's,
tuned settings over a run's, and storage options over those that travelled to a worker all merge this way: a
key of `override` wins, and a section (a mapping under both) merges key by key. A leaf module, so that the
secrets helpers below storage and the configuration above it share one rule.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["merge_settings"]


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(merged.get(k), dict):
            merged[k] = _merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def merge_settings(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Nested settings: `override` wins key by key, sections merge. Neither argument is changed; the result
    shares no section dict with `base` that the merge changed."""
    return _merge(dict(base), override)
