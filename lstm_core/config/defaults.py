"""What follows from the frequency: the season, the window, the chunk and the patch.

A configuration whose `freq` is set (given, or inferred from the data and applied with
`ForecastConfig.resolved`) gets an unset `season_length` and `window` from here; `model.chunk` and
`model.patch` 'auto' are resolved from the horizon and the window. Pure functions of their arguments.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import Tick

from lstm_core.config.limits import MAX_STEPS

__all__ = ["default_season_length", "default_window", "frequency_defaults", "natural_cycle", "resolve_chunk",
           "resolve_patch"]


def default_season_length(freq: str) -> int:
    """The usual season of a pandas frequency, in steps.

    Hourly 24 (a day), daily 7 (a week), weekly 52, monthly 12, quarterly 4, yearly 1; sub-hourly steps
    a day's worth (15min: 96); business days 5; multiples (2h, 2D) the same span in their steps.
    """
    offset = to_offset(freq)
    name = offset.name.split("-")[0]
    n = max(int(getattr(offset, "n", 1) or 1), 1)
    day = pd.Timedelta(days=1)
    if isinstance(offset, Tick):
        step = pd.Timedelta(offset)
        if step < day:
            return max(1, int(day // step))  # the day's cycle: hourly 24, 15min 96, 30s 2880
        if step == day:
            return 7
        return max(1, int(pd.Timedelta(weeks=1) // step)) if step < pd.Timedelta(weeks=1) else 1
    per_year = {"D": 7, "B": 5, "C": 5, "W": 52, "SM": 24, "SMS": 24, "ME": 12, "MS": 12, "BME": 12, "BMS": 12,
                "CBME": 12, "CBMS": 12, "QE": 4, "QS": 4, "BQE": 4, "BQS": 4, "YE": 1, "YS": 1, "BYE": 1, "BYS": 1}
    if name in ("D", "B", "C"):
        return max(1, per_year[name] // n) if per_year[name] % n == 0 else 1
    if name in per_year:
        m = per_year[name]
        return m // n if m % n == 0 and m // n > 1 else 1
    return 1



def _in_bounds(value: Any) -> bool:
    """A step count a default may be computed from (anything else is reported by the field validators)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_STEPS)


def frequency_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """Raw settings (before validation) with the defaults that follow from the frequency filled in: a
    season_length list split into season_length and extra_season_lengths, then season_length from freq, then
    window from freq, season and horizon (and the chunk and patch of the `model` section).

    With freq unset, both wait for `ForecastConfig.resolved(freq)` once the data are seen. A value out of
    bounds gets no default computed from it (the field validators name it). Raises ValueError for an empty
    season list or seasons given both ways (pydantic reports it as a validation error).
    """
    data = dict(data)
    season = data.get("season_length")
    if isinstance(season, (list, tuple)):
        if not season:
            raise ValueError("season_length: an empty list; give one season or several, e.g. [24, 168]")
        if data.get("extra_season_lengths"):
            raise ValueError("give further seasons either as a season_length list or as extra_season_lengths")
        data["season_length"], data["extra_season_lengths"] = season[0], list(season[1:])
    if data.get("season_length") is None and data.get("freq") is not None:
        try:
            data["season_length"] = default_season_length(data["freq"])
        except (ValueError, TypeError):
            pass  # the freq validator names the bad value
    if not all(_in_bounds(data.get(k)) for k in ("horizon", "season_length")) or \
            not all(_in_bounds(v) for v in data.get("extra_season_lengths") or ()):
        return data  # the field validators name the value out of bounds (no default computed from it)
    if data.get("window") is None and data.get("season_length") is not None and data.get("freq") is not None:
        section = data.get("model")
        model: Mapping[str, Any] = section if isinstance(section, Mapping) else {}
        data["window"] = default_window(data["season_length"], data.get("horizon", 24), data["freq"],
                                        model.get("chunk", "auto"), model.get("patch", "auto"),
                                        data.get("extra_season_lengths") or ())
    return data


def resolve_chunk(chunk: Any, horizon: int) -> int:
    """'auto': half the horizon, rounded up, so a forecast is two recursive steps (one when H = 1)."""
    return int(chunk) if chunk != "auto" else max(1, -(-int(horizon) // 2))


def resolve_patch(patch: Any, chunk: int, window: int | None = None) -> int:
    """'auto': the chunk, so the network reads its input in the same pieces it writes its output; with a
    window that is not a multiple of the chunk, the largest divisor of the window below the chunk."""
    if patch != "auto":
        return int(patch)
    if window is None:
        return int(chunk)
    return max(d for d in range(1, min(int(chunk), int(window)) + 1) if window % d == 0)


def natural_cycle(freq: Any) -> int:
    """Steps in the longest regular cycle a window should see at this frequency: a day for data of minutes,
    a week for hourly and daily data, a year for weekly, monthly and quarterly data (1 when unknown)."""
    try:
        offset = to_offset(freq)
    except (TypeError, ValueError):
        return 1
    if isinstance(offset, Tick):
        step = pd.Timedelta(offset)
        span = pd.Timedelta("1D") if step < pd.Timedelta("1h") else pd.Timedelta("7D")
        return max(1, int(span // step)) if step <= span else 1
    name = offset.name.split("-")[0].upper()
    cycles = {"W": 52, "MS": 12, "ME": 12, "M": 12, "SMS": 24, "SME": 24, "QS": 4, "QE": 4, "Q": 4,
              "BQS": 4, "BQE": 4, "BMS": 12, "BME": 12, "B": 5, "C": 5}
    return cycles.get(name, 1)


def default_window(season_length: Any, horizon: Any, freq: Any = "h", chunk: Any = "auto", patch: Any = "auto",
                   extra_seasons: Any = ()) -> int:
    """The smallest multiple of the patch that covers three horizons, every season and the frequency's natural cycle.

    Three horizons and the cycles of the data let the network see the pattern it continues: a week for
    hourly data (which carry a weekly cycle besides the daily one), a year (52) for weekly data whatever
    season the user passes, so `--season 1` and `--season 52` see the same history.
    """
    try:
        m, h = max(1, int(season_length)), max(1, int(horizon))
        p = resolve_patch(patch, resolve_chunk(chunk, h))
    except (TypeError, ValueError):
        return 48  # the field validators report the bad value itself
    need = max(3 * h, m, *(int(e) for e in extra_seasons or ()), natural_cycle(freq))
    return max(p, p * -(-need // p))

