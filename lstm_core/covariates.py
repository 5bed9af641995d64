"""Covariate roles, calendar features from the timestamps, and the encoding of static covariates.

Roles (declared in the configuration, never guessed from the data):

- historic: numeric, observed only up to each series' last target value; over the horizon the last
  value is carried forward.
- future: numeric, known ahead; the input holds their values for the horizon after each series' last
  observed target (rows whose target is empty).
- calendar: derived from the timestamps (hour of day, day of week, ...), known ahead by construction.
- static: constant per series; numeric ones are standardised over the training series, categorical
  ones one-hot encoded with a vocabulary fitted on the training series (unseen categories: all zeros).

Future, calendar and static columns are the *known-ahead* inputs.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import Tick

if TYPE_CHECKING:
    from lstm_core.config import ForecastConfig

ROLES = ("target", "historic", "future", "calendar", "static")
KNOWN_AHEAD = ("future", "calendar", "static")

# Each calendar feature is a cycle, fed to the network as its sine and cosine (no jump at the wrap).
# name -> (value of a DatetimeIndex, period)
CALENDAR_FEATURES = ("minute", "hour", "dayofweek", "dayofmonth", "dayofyear", "weekofyear", "month", "quarter")

# Whether calendar_features 'auto' switches the features on, per kind of frequency. Decided from the
# accuracy benchmark; until it is measured, 'auto' adds none, so results stay as they were.
AUTO_CALENDAR: dict[str, bool] = {"subdaily": False, "daily": False, "weekly": False, "monthly": False,
                                  "other": False}


def frequency_kind(freq: str) -> str:
    """'subdaily', 'daily', 'weekly', 'monthly' (months and quarters) or 'other' (years, odd steps)."""
    offset = to_offset(freq)
    if isinstance(offset, Tick):
        step = pd.Timedelta(offset)
        if step < pd.Timedelta(days=1):
            return "subdaily"
        return "daily" if step == pd.Timedelta(days=1) else "other"
    name = offset.name.split("-")[0]
    if name in ("D", "B", "C") and offset.n == 1:
        return "daily"
    if name == "W" and offset.n == 1:
        return "weekly"
    if name in ("ME", "MS", "BME", "BMS", "CBME", "CBMS", "SM", "SMS", "QE", "QS", "BQE", "BQS"):
        return "monthly"
    return "other"


def suited_calendar_features(freq: str) -> tuple[str, ...]:
    """The calendar features that vary, and repeat, at this frequency (a cycle longer than one step)."""
    offset = to_offset(freq)
    kind = frequency_kind(freq)
    if kind == "subdaily":  # a fixed step (Tick) shorter than a day
        minute = ("minute",) if isinstance(offset, Tick) and pd.Timedelta(offset) < pd.Timedelta(hours=1) else ()
        return (*minute, "hour", "dayofweek")
    if kind == "daily":
        return ("dayofweek", "dayofmonth", "month")
    if kind == "weekly":
        return ("weekofyear",)
    if kind == "monthly":
        name = offset.name.split("-")[0]
        return ("quarter",) if name.startswith(("Q", "BQ")) else ("month",)
    return ()


def resolve_calendar_features(setting: str | Sequence[str], freq: str) -> tuple[str, ...]:
    """The calendar features a run uses: 'off' none, 'on' those suited to `freq`, a list as given,
    'auto' those suited to `freq` where `AUTO_CALENDAR` switches them on for its kind of frequency."""
    if isinstance(setting, str):
        if setting == "off":
            return ()
        if setting == "on":
            return suited_calendar_features(freq)
        if setting == "auto":
            return suited_calendar_features(freq) if AUTO_CALENDAR.get(frequency_kind(freq), False) else ()
        raise ValueError(f"calendar_features must be auto, on, off or a list, not {setting!r}")
    return tuple(setting)


def calendar_names(features: Sequence[str]) -> tuple[str, ...]:
    """Feature columns of the calendar features: `<name>_sin`, `<name>_cos` each."""
    return tuple(f"{f}_{part}" for f in features for part in ("sin", "cos"))


def calendar_values(ds: Any, features: Sequence[str]) -> np.ndarray:
    """(n, 2 * len(features)) sine and cosine of each feature's position in its cycle.

    `ds` is any array of timestamps (naive or zone-aware: the features use the wall clock of the
    timestamps as given, so data normalised to UTC get UTC hours).
    """
    idx = pd.DatetimeIndex(np.asarray(ds).ravel() if not isinstance(ds, pd.DatetimeIndex) else ds)
    cols = []
    pos: np.ndarray
    period: float | np.ndarray  # one cycle's length in `pos` units, per row where it varies (month lengths)
    for f in features:
        if f == "minute":
            pos, period = idx.minute.to_numpy(), 60.0
        elif f == "hour":
            pos, period = idx.hour.to_numpy() + idx.minute.to_numpy() / 60.0, 24.0
        elif f == "dayofweek":
            pos, period = idx.dayofweek.to_numpy(), 7.0
        elif f == "dayofmonth":
            pos, period = idx.day.to_numpy() - 1.0, idx.days_in_month.to_numpy().astype(float)
        elif f == "dayofyear":
            pos, period = idx.dayofyear.to_numpy() - 1.0, np.where(idx.is_leap_year, 366.0, 365.0)
        elif f == "weekofyear":
            pos, period = idx.isocalendar().week.to_numpy(dtype=float) - 1.0, 52.1775
        elif f == "month":
            pos, period = idx.month.to_numpy() - 1.0, 12.0
        elif f == "quarter":
            pos, period = idx.quarter.to_numpy() - 1.0, 4.0
        else:
            raise ValueError(f"unknown calendar feature {f!r}; choose from {list(CALENDAR_FEATURES)}")
        angle = 2 * np.pi * np.asarray(pos, dtype=np.float64) / period
        cols += [np.sin(angle), np.cos(angle)]
    return np.stack(cols, axis=1) if cols else np.zeros((len(idx), 0))


@dataclass(frozen=True)
class CovariateSpec:
    """Declared covariates by role (input names), and the calendar features in use."""

    historic: tuple[str, ...] = ()
    future: tuple[str, ...] = ()
    static: tuple[str, ...] = ()
    calendar: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: ForecastConfig, freq: str | None = None) -> CovariateSpec:
        """The covariates `config` declares, and its calendar features: those of `config`'s frequency (it must
        be resolved), or of `freq` when given (validation, which learns the frequency from the data, uses
        this rather than resolving the configuration itself)."""
        calendar = config.calendar() if freq is None else resolve_calendar_features(config.calendar_features, freq)
        return cls(tuple(config.historic_covariates), tuple(config.future_covariates),
                   tuple(config.static_covariates), tuple(calendar))

    @property
    def columns(self) -> tuple[str, ...]:
        """Input columns the covariates come from (calendar features come from ds)."""
        return (*self.historic, *self.future, *self.static)

    @property
    def numeric(self) -> tuple[str, ...]:
        """Columns that must be numeric and finite row by row."""
        return (*self.historic, *self.future)

    def as_dict(self) -> dict[str, list[str]]:
        """The spec as JSON lists by role (the manifest's and model metadata's `covariates`)."""
        return {"historic": list(self.historic), "future": list(self.future), "calendar": list(self.calendar),
                "static": list(self.static)}


class StaticEncoderState(TypedDict, total=False):
    """`StaticEncoder` as JSON (in a model version's metadata); a missing field is empty."""

    columns: list[str]  # the static covariates, in input order
    numeric: dict[str, list[float]]  # numeric column -> [mean, std]
    categories: dict[str, list[str]]  # categorical column -> its vocabulary, sorted


@dataclass(frozen=True)
class StaticEncoder:
    """How static covariates become network inputs, fitted on the training series.

    Numeric columns: standardised with the training series' mean and standard deviation (per-series
    scaling would turn a constant into zero). Categorical columns: one-hot over the categories seen in
    training (`column=value`), sorted; a category not seen in training encodes as all zeros.
    """

    columns: tuple[str, ...] = ()
    numeric: dict[str, tuple[float, float]] = field(default_factory=dict)  # column -> (mean, std)
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)  # column -> sorted vocabulary

    @classmethod
    def fit(cls, static: pd.DataFrame) -> StaticEncoder:
        """`static`: one row per training series, one column per static covariate."""
        numeric, categories = {}, {}
        for c in static.columns:
            col = static[c]
            if is_numeric_column(col):
                v = col.to_numpy(dtype=np.float64)
                mean = float(np.mean(v)) if len(v) else 0.0
                std = float(np.std(v)) if len(v) else 1.0
                numeric[c] = (mean, std if np.isfinite(std) and std > 0 else 1.0)
            else:
                categories[c] = tuple(sorted({category_text(v) for v in col.tolist()}))
        return cls(tuple(static.columns), numeric, categories)

    @property
    def names(self) -> tuple[str, ...]:
        """Encoded feature names, in column order."""
        out: list[str] = []
        for c in self.columns:
            if c in self.numeric:
                out.append(c)
            else:
                out.extend(f"{c}={v}" for v in self.categories[c])
        return tuple(out)

    def transform(self, static: pd.DataFrame) -> np.ndarray:
        """(S, len(names)) encoded values for the rows (series) of `static`."""
        parts = []
        for c in self.columns:
            if c not in static.columns:
                raise ValueError(f"static covariate {c!r} is missing")
            col = static[c]
            if c in self.numeric:
                mean, std = self.numeric[c]
                if not is_numeric_column(col):
                    raise ValueError(f"static covariate {c!r} was numeric in training, is {col.dtype} now")
                parts.append(((col.to_numpy(dtype=np.float64) - mean) / std)[:, None])
            else:
                vocab = self.categories[c]
                text = np.array([category_text(v) for v in col.tolist()], dtype=object)
                parts.append((text[:, None] == np.array(vocab, dtype=object)[None, :]).astype(np.float64))
        return np.concatenate(parts, axis=1) if parts else np.zeros((len(static), 0))

    def to_dict(self) -> StaticEncoderState:
        """JSON-ready state (columns, numeric mean/std, category vocabularies), read back by `from_dict`."""
        return StaticEncoderState(columns=list(self.columns), numeric={k: list(v) for k, v in self.numeric.items()},
                                  categories={k: list(v) for k, v in self.categories.items()})

    @classmethod
    def from_dict(cls, d: StaticEncoderState | None) -> StaticEncoder:
        """The encoder `to_dict` wrote; None or an empty state is an encoder of no columns."""
        d = d or {}
        numeric = {k: (float(v[0]), float(v[1])) for k, v in d.get("numeric", {}).items()}
        return cls(tuple(d.get("columns", ())), numeric,
                   {k: tuple(str(x) for x in v) for k, v in d.get("categories", {}).items()})


def is_numeric_column(col: pd.Series) -> bool:
    """True for a numeric column that is not boolean (booleans are categories)."""
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)


def category_text(value: Any) -> str:
    """A category as text: integers and strings alike ('1', 'eu'); a float that is whole reads as an int."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
