"""Check a long-format frame (series_id, ds, y [, declared covariates]) against the data contract.

Dataset-level problems raise `DataValidationError` naming the file, column and
row. Problems that belong to one series put that series in `skipped` with a
reason, and the rest go on.

Only declared covariates are used (`CovariateSpec`): historic and future ones must be numeric and
finite in the history; future ones must also hold values for the horizon after each series' last
observed y (the rows whose y is empty); static ones must be constant per series.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import Tick

from lstm_core import timestamps
from lstm_core.covariates import CovariateSpec, is_numeric_column
from lstm_core.errors import ConfigError, DataValidationError
from lstm_core.frequency import (
    FrequencyDisagreement,
    dates_after,
    infer_frequency,
    is_fixed,
    series_frequency,
    step_positions,
)
from lstm_core.inputs import DEFAULT_MISSING
from lstm_core.windows import min_train_length as min_train_length_of

if TYPE_CHECKING:
    from lstm_core.config import ForecastConfig

REQUIRED = ("series_id", "ds", "y")
@dataclass(frozen=True)
class TextRules:
    """How text becomes numbers and timestamps when the file cannot say it (settings of the same names).

    `missing_values`: cells read as missing in numeric columns; `decimal`: the decimal mark ('.' or ',');
    `thousands`: a thousands separator to drop (none unless declared); `time_format`: see `timestamps`;
    `static_types`: static covariate -> 'categorical' (text, whatever it looks like) or 'numeric'.
    """

    missing_values: tuple[str, ...] = DEFAULT_MISSING
    decimal: str = "."
    thousands: str | None = None
    time_format: str | None = None
    static_types: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_config(cls, config: ForecastConfig) -> TextRules:
        """The text rules a configuration sets (missing_values, decimal, thousands, time_format, static_types)."""
        return cls(tuple(config.missing_values), config.decimal, config.thousands, config.time_format,
                   tuple(sorted(config.static_types.items())))

    def hint(self) -> str:
        """One sentence naming how cells are read and the settings that change it (appended to a parse error)."""
        return ("read as missing: empty cells and " + ", ".join(repr(v) for v in self.missing_values if v)
                + f" (setting missing_values); decimal mark {self.decimal!r} (setting decimal); "
                + (f"thousands separator {self.thousands!r}" if self.thousands else
                   "no thousands separator unless declared (setting thousands)"))


@dataclass(frozen=True)
class SkippedSeries:
    """A series left out of the run: its id, the input field at fault (the user's column name) and why."""

    series_id: str
    field: str
    reason: str


@dataclass
class ValidationResult:
    """What validation keeps of an input: the clean frame, the skipped series with reasons, and what it found."""

    frame: pd.DataFrame  # clean rows, sorted by (series_id, ds), on a regular grid: series_id, ds, y, historic, future
    skipped: list[SkippedSeries] = field(default_factory=list)
    covariates: list[str] = field(default_factory=list)  # numeric covariate columns of `frame` (historic, future)
    future: pd.DataFrame | None = None  # series_id, ds, future covariates: the H steps after each series' end
    filled_points: int = 0
    rows_read: int = 0  # rows of the input frame
    spec: CovariateSpec = field(default_factory=CovariateSpec)
    static: pd.DataFrame | None = None  # one row per kept series (index series_id), the static covariates
    freq: str | None = None  # the frequency the series were checked against (given or inferred)

    def skipped_frame(self) -> pd.DataFrame:
        """The skipped series as a frame of string columns `series_id`, `field`, `reason` (the quarantine table)."""
        return pd.DataFrame(
            {
                "series_id": pd.Series([s.series_id for s in self.skipped], dtype="string"),
                "field": pd.Series([s.field for s in self.skipped], dtype="string"),
                "reason": pd.Series([s.reason for s in self.skipped], dtype="string"),
            }
        )


# Shortness is never a reason to skip a series: one valid observation is enough to be forecast (by the
# network, or by the fallback when the network has no window to learn it from).
MIN_POINTS = 1


def min_length(config: ForecastConfig | None = None) -> int:
    """The one minimum series length of a run: `MIN_POINTS` (1), whatever the window, chunk and horizon.

    Windows, validation and backtest cutoffs follow what each series allows (`windows.plan_windows`,
    `backtest.training_cutoff`); the network learns from series of `min_train_length(config)` points.
    """
    return MIN_POINTS


def min_input(config: ForecastConfig) -> int:
    """Real points every training input holds at least: one patch (the LSTM's first step sees real values;
    the rest of a short series' window is front padding). Measured on M3 yearly: 1 point gave OWA 0.970,
    one patch 0.931 (window 12, LSTM alone, holdout of the training part)."""
    if config.window is None:  # min(patch, None) would fail without saying why
        raise ConfigError("the network's minimum input needs the window: resolve the configuration first "
                          "(config.resolved(freq))")
    return int(min(config.patch_length, config.window))


def min_train_length(config: ForecastConfig) -> int:
    """Points from which the network learns a series (`windows.min_train_length`): one chunk of targets after
    one patch of real input; the rest of its window is front padding. Shorter series go to the fallback."""
    return min_train_length_of(config.chunk_length, min_input(config))


def network_reasons(lengths: np.ndarray, config: ForecastConfig) -> list[str | None]:
    """Per series of `lengths` points: None when the network learns and serves it, else why it is handed to
    the fallback (too few points for one training window)."""
    need = min_train_length(config)
    return [None if int(n) >= need else
            f"{int(n)} points: the network needs {need} to learn a series (an input of {min_input(config)} + "
            f"a chunk of {config.chunk_length} targets); handed to the fallback" for n in np.asarray(lengths)]


def length_rule(config: ForecastConfig, horizon: bool = False) -> str:
    """The network's minimum spelled out, for messages."""
    return f"input {min_input(config)} + chunk {config.chunk_length}"


def validate_for(df: pd.DataFrame, config: ForecastConfig, source: str | None = None, errors: str = "skip",
                 keep_short: bool = False) -> ValidationResult:
    """`validate` with everything taken from a configuration (its frequency may still be unset: inferred).
    `keep_short`: see `validate` (the forecast path keeps them: every series gets a forecast).

    The configuration is not resolved here: with its frequency unset, the result's `freq` is the one
    inferred, and the caller resolves the configuration once (`config.resolved(result.freq)`)."""
    spec = CovariateSpec.from_config(config) if config.is_resolved else None
    return validate(df, config.freq, window=config.window, horizon=config.horizon,
                    validation_steps=config.validation_steps, chunk=config.chunk_length if config.is_resolved else 1,
                    patch=config.patch_length if config.is_resolved else None,
                    gap_policy=config.gap_policy,
                    max_gap=config.max_gap, source=source, errors=errors, covariates=spec, config=config,
                    names=config.column_names(), rules=TextRules.from_config(config), keep_short=keep_short)


def validate(
    df: pd.DataFrame,
    freq: str | None,
    *,
    window: int | None,
    horizon: int,
    validation_steps: int | None = None,
    chunk: int = 1,
    patch: int | None = None,
    gap_policy: str = "fill",
    max_gap: int = 3,
    source: str | None = None,
    errors: str = "skip",
    covariates: CovariateSpec | None = None,
    config: ForecastConfig | None = None,
    names: dict[str, str] | None = None,
    rules: TextRules | None = None,
    keep_short: bool = False,
) -> ValidationResult:
    """Validate and regularise `df`. `errors='raise'` turns series-level problems into errors too.

    `freq` None: the frequency is inferred from the series (they must agree). `covariates`: the
    declared roles; other columns are ignored. Any series with a valid observation is kept, however short
    (`MIN_POINTS`): shortness is never a reason to skip; `window`, `chunk`, `patch` and `validation_steps`
    no longer bound the length (kept for callers). `names` (standard name -> the input's column) puts the
    user's column names in errors and in the quarantine's `field`; `rules`: how text is read (TextRules).

    `keep_short`: keep the series shorter than that, and constant ones, in `frame` (they are no data
    fault: the network cannot learn from them, a statistical fallback serves them; see
    `modelling.network_serves`). Without it they are skipped with their reason, as before.
    """
    names = {k: v for k, v in (names or {}).items() if k != v}
    if not names:
        return _validate(df, freq, window=window, horizon=horizon, validation_steps=validation_steps, chunk=chunk,
                         patch=patch, gap_policy=gap_policy, max_gap=max_gap, source=source, errors=errors,
                         covariates=covariates, config=config, rules=rules or TextRules(), keep_short=keep_short)
    try:
        result = _validate(df, freq, window=window, horizon=horizon, validation_steps=validation_steps, chunk=chunk,
                           patch=patch, gap_policy=gap_policy, max_gap=max_gap, source=source, errors=errors,
                           covariates=covariates, config=config, rules=rules or TextRules(),
                           keep_short=keep_short)
    except DataValidationError as exc:
        raise exc.renamed(names) from None
    result.skipped = [SkippedSeries(s.series_id, names.get(s.field, s.field), s.reason) for s in result.skipped]
    return result


def _validate(df: pd.DataFrame, freq: str | None, *, window: int | None, horizon: int, validation_steps: int | None,
              chunk: int, patch: int | None, gap_policy: str, max_gap: int, source: str | None, errors: str,
              covariates: CovariateSpec | None, config: ForecastConfig | None, rules: TextRules,
              keep_short: bool = False) -> ValidationResult:
    if gap_policy not in ("fill", "skip", "error"):
        raise ValueError(f"gap_policy must be fill, skip or error, not {gap_policy!r}")
    for col in REQUIRED:
        if col not in df.columns:
            raise DataValidationError(f"missing required column (have {list(df.columns)})", source=source, column=col)
    spec = covariates or CovariateSpec()
    for col in spec.columns:
        if col not in df.columns:
            raise DataValidationError(f"declared covariate column missing (have {list(df.columns)})",
                                      source=source, column=col)
    if len(df) == 0:
        raise DataValidationError("dataset has no rows", source=source)

    df = df.reset_index(drop=True)
    series_id = _check_series_id(df["series_id"], source)
    y = _check_numeric(df["y"], "y", source, rules, series_id)
    numeric = list(spec.numeric)
    skipped: dict[str, SkippedSeries] = {}

    def skip(sid: str, fld: str, reason: str) -> None:
        if errors == "raise":
            raise DataValidationError(reason, source=source, column=fld, series_id=sid)
        skipped.setdefault(sid, SkippedSeries(sid, fld, reason))

    parsed = timestamps.parse(df["ds"], series_id, source, skip, time_format=rules.time_format)
    derivable = False
    if freq is None:
        freq = _infer(parsed, series_id, source)
        if config is not None and not config.is_resolved:
            # the calendar features follow from the frequency just learned; the configuration itself is
            # resolved once, by the caller, from the result's freq (nothing below needs its window)
            spec = covariates or CovariateSpec.from_config(config, freq)
            derivable = True  # the configuration derives its window from the frequency learned
    if window is None and not derivable:
        raise ValueError("validate needs a window (or a configuration to derive it from)")
    frame = pd.DataFrame({"series_id": series_id, "ds": parsed.for_frequency(is_fixed(freq)), "y": y})
    for c in numeric:
        frame[c] = _check_numeric(df[c], c, source, rules, series_id)
    static_cols = list(spec.static)
    declared = dict(rules.static_types)
    for c in static_cols:
        frame[c] = _static_column(df[c].reset_index(drop=True), c, declared.get(c), source, rules, series_id)
    frame["_row"] = np.arange(len(frame))
    frame = _drop(frame, skipped)
    frame = frame.sort_values(["series_id", "ds"], kind="stable").reset_index(drop=True)

    # Rows past each series' last observed y carry no target: known-future inputs (used when
    # future covariates are declared, dropped otherwise).
    frame, future = _split_future(frame)
    static = _static_values(frame, future, static_cols, skip) if static_cols else None
    frame = frame.drop(columns=static_cols)
    if future is not None:
        future = future[["series_id", "ds", *spec.future, "_row"]]

    _series_problems(frame, numeric, skip)
    frame = _drop(frame, skipped)
    need = MIN_POINTS  # shortness is never a reason to skip: windows follow what each series allows
    if len(frame) == 0:
        return _result(frame, skipped, numeric, None, 0, len(df), spec, None, freq)

    frame = _regularise(frame, freq, gap_policy, max_gap, numeric, source, skip, skipped)
    frame = _drop(frame, skipped)

    # Length, constant and scale checks on the regular series (vectorised; only failures loop).
    codes, uniques = pd.factorize(frame["series_id"], sort=False)
    g = frame["y"].groupby(codes, sort=False)
    n, mean = g.size().to_numpy(), g.mean().to_numpy()
    centred = frame["y"].to_numpy() - mean[codes]
    with np.errstate(over="ignore", invalid="ignore"):
        ss = np.bincount(codes, weights=centred * centred, minlength=len(uniques))
    short = n < need  # no valid observation at all
    overflow = ~short & (~np.isfinite(mean) | ~np.isfinite(ss))
    constant = ~short & ~overflow & (ss == 0) & (n > 1)  # a single point is no constant series
    if keep_short:  # a constant history is no data fault either: the statistical fallback serves it
        constant = np.zeros_like(constant)
    for i in np.flatnonzero(short | overflow | constant).tolist():
        sid = str(uniques[i])
        if short[i]:
            skip(sid, "y", "series has no valid observation")
        elif overflow[i]:
            skip(sid, "y", "values too large to scale (overflow)")
        else:
            skip(sid, "y", "series is constant")
    frame = _drop(frame, skipped)
    future = _future_block(frame, future, list(spec.future), freq, horizon, skip) if spec.future else None
    frame = _drop(frame, skipped)
    if future is not None:
        future = future[future["series_id"].isin(frame["series_id"].unique())].reset_index(drop=True)
    filled = int((frame["_row"] < 0).sum())  # interpolated rows of the series kept
    return _result(frame, skipped, numeric, future, filled, len(df), spec, static, freq)


def _result(frame, skipped, numeric, future, filled, rows, spec, static, freq) -> ValidationResult:
    frame = _finish(frame)
    if static is not None:
        kept = pd.Index(frame["series_id"].unique().astype(object))
        static = static.loc[static.index.isin(kept)]
        static = static.loc[kept] if len(kept) else static.iloc[:0]
    return ValidationResult(frame, list(skipped.values()), numeric, future, filled, rows, spec, static, freq)


def _infer(parsed: timestamps.Timestamps, series_id: pd.Series, source: str | None) -> str:
    return infer_parsed_frequency(parsed, series_id, source)


def infer_parsed_frequency(parsed: timestamps.Timestamps, series_id: pd.Series, source: str | None,
                           column: str = "ds") -> str:
    """The frequency the series agree on. With a zone or offsets, a calendar frequency (days, weeks,
    months) is inferred on the data's own wall clock, where it is counted (weeks of Sundays at +05:30 are
    Saturdays in UTC); fixed steps (hours) on the instants, which a daylight-saving switch leaves regular.
    Raises DataValidationError when the series disagree or none tells (then freq must be set)."""
    last_error = None
    found: list[str] = []
    for ds in (parsed.wall, parsed.instants):
        if ds is None:
            continue
        frame = pd.DataFrame({"series_id": series_id.to_numpy(), "ds": ds.to_numpy()})
        try:
            freq = infer_frequency(frame)
        except FrequencyDisagreement as exc:
            last_error = exc
            continue
        if freq is not None:
            if parsed.wall is None or ds is parsed.instants or not is_fixed(freq):
                return freq
            found.append(freq)  # a fixed step on the wall clock: the instants decide
    if found:
        return found[0]
    if last_error is not None:
        sid = next(iter(last_error.examples.values()))
        raise DataValidationError(str(last_error), source=source, column=column, series_id=sid)
    raise DataValidationError("cannot infer the frequency: no series has three regularly spaced timestamps; "
                              "set freq", source=source, column=column)


def _drop(frame: pd.DataFrame, skipped: dict) -> pd.DataFrame:
    """The rows of series not skipped, renumbered."""
    if skipped:
        frame = frame[~frame["series_id"].isin(list(skipped))]
    return frame.reset_index(drop=True)


def _finish(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.drop(columns=[c for c in ("_row", "_pos") if c in frame.columns])
    frame["series_id"] = frame["series_id"].astype("string")
    return frame


def _is_numeric(col: pd.Series) -> bool:
    return is_numeric_column(col)


def _check_series_id(col: pd.Series, source: str | None) -> pd.Series:
    if isinstance(col.dtype, pd.CategoricalDtype):
        col = col.astype(object).where(col.notna(), None)
    if not (pd.api.types.is_string_dtype(col) or pd.api.types.is_object_dtype(col)):
        raise DataValidationError(f"must be string, got {col.dtype}", source=source, column="series_id")
    nulls = col.isna().to_numpy()
    if nulls.any():
        raise DataValidationError("null series_id", source=source, column="series_id", row=int(np.argmax(nulls)))
    if isinstance(col.dtype, pd.StringDtype) or pd.api.types.infer_dtype(col, skipna=False) == "string":
        return col.astype("string")  # every value is a str: no per-row check needed
    bad = ~col.map(lambda v: isinstance(v, str)).to_numpy(bool)
    if bad.any():
        r = int(np.argmax(bad))
        raise DataValidationError(f"must be string, got {type(col.iloc[r]).__name__} {col.iloc[r]!r}",
                                  source=source, column="series_id", row=r)
    return col.astype("string")


def _check_numeric(col: pd.Series, name: str, source: str | None, rules: TextRules | None = None,
                   series_id: pd.Series | None = None) -> pd.Series:
    """float64 with NaN for missing values, from any numeric encoding (nullable, decimal, mixed int/float) or
    from text (CSV): placeholders (`rules.missing_values`) are missing, `rules.decimal` / `rules.thousands`
    are read as declared, and any other text raises DataValidationError naming the column, series and row."""
    col = col.reset_index(drop=True)
    if pd.api.types.is_object_dtype(col) and len(col) and col.dropna().map(_is_number).all():
        col = pd.to_numeric(col, errors="coerce")  # Decimal and number objects (decimal columns, mixed files)
    if pd.api.types.is_string_dtype(col) or pd.api.types.is_object_dtype(col):
        col = _numbers_from_text(col, name, source, rules or TextRules(), series_id)
    if not _is_numeric(col):
        raise DataValidationError(f"must be numeric, got {col.dtype}", source=source, column=name)
    return pd.Series(col.to_numpy(dtype=np.float64, na_value=np.nan), name=col.name)


def _numbers_from_text(col: pd.Series, name: str, source: str | None, rules: TextRules,
                       series_id: pd.Series | None) -> pd.Series:
    values = col.astype(object)
    is_text = values.map(lambda v: isinstance(v, str)).to_numpy(bool)
    text = values.where(is_text, None).str.strip()
    missing = ~is_text & values.isna().to_numpy() | text.isin(set(rules.missing_values)).to_numpy()
    clean = text
    if rules.thousands:
        clean = clean.str.replace(rules.thousands, "", regex=False)
    if rules.decimal != ".":
        clean = clean.str.replace(rules.decimal, ".", regex=False)
    numbers = pd.to_numeric(clean.where(is_text & ~missing, None), errors="coerce")
    others = ~is_text & ~values.isna().to_numpy()
    if others.any():  # numbers among text (an object column from mixed files)
        numbers = numbers.where(~others, pd.to_numeric(values.where(others, None), errors="coerce"))
    bad = (is_text & ~missing & numbers.isna().to_numpy()) | (others & numbers.isna().to_numpy())
    if bad.any():
        r = int(np.argmax(bad))
        sid = str(series_id.iloc[r]) if series_id is not None else None
        raise DataValidationError(f"not a number: {values.iloc[r]!r}; {rules.hint()}", source=source, column=name,
                                  series_id=sid, row=r)
    return pd.Series(numbers.to_numpy(dtype=np.float64, na_value=np.nan), name=col.name)


def _static_column(col: pd.Series, name: str, declared: str | None, source: str | None, rules: TextRules,
                   series_id: pd.Series) -> pd.Series:
    """A static covariate as declared: 'categorical' as text (postcode 01067 stays '01067'; a stored number
    as its text), 'numeric' as float64 (text read like the target), undeclared as stored (CSV: text)."""
    if declared == "numeric":
        return _check_numeric(col, name, source, rules, series_id)
    if declared == "categorical" or isinstance(col.dtype, pd.CategoricalDtype):
        from lstm_core.covariates import category_text

        values = col.astype(object)
        return pd.Series([None if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA
                          else category_text(v.item() if hasattr(v, "item") else v) for v in values],
                         dtype=object, name=col.name)
    return col


def _is_number(v: Any) -> bool:
    from decimal import Decimal
    from numbers import Number

    return isinstance(v, (Number, Decimal)) and not isinstance(v, bool)


def _split_future(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Rows after each series' last observed y: the future rows (a series with no y at all keeps its rows)."""
    has_y = frame["y"].notna().to_numpy()
    pos = frame.groupby("series_id", sort=False).cumcount().to_numpy()
    last_obs = pd.Series(np.where(has_y, pos, -1)).groupby(frame["series_id"].to_numpy(), sort=False) \
        .transform("max").to_numpy()
    is_future = (pos > last_obs) & (last_obs >= 0)
    if not is_future.any():
        return frame, None
    return frame.loc[~is_future].reset_index(drop=True), frame.loc[is_future].reset_index(drop=True)


def _static_values(frame: pd.DataFrame, future: pd.DataFrame | None, columns: list[str], skip) -> pd.DataFrame:
    """One value per series and static column: the same on every row (history and future rows)."""
    rows = frame if future is None else pd.concat([frame, future], ignore_index=True)
    out = {}
    for c in columns:
        col = rows[c]
        missing = col.isna().to_numpy()
        for r in np.flatnonzero(missing)[:10_000]:
            skip(str(rows["series_id"].iloc[r]), c,
                 f"static covariate {c!r} is missing (row {int(rows['_row'].iloc[r])})")
        key = col.astype(object).map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else
                                     (v.item() if hasattr(v, "item") else v))
        first = key.groupby(rows["series_id"].to_numpy(), sort=False).transform("first")
        differs = (key != first).to_numpy() & ~missing
        for r in np.flatnonzero(differs)[:10_000]:
            skip(str(rows["series_id"].iloc[r]), c,
                 f"static covariate {c!r} changes within the series: {key.iloc[r]!r} (row {int(rows['_row'].iloc[r])}) "
                 f"after {first.iloc[r]!r}")
        out[c] = col.groupby(rows["series_id"].to_numpy(), sort=False).first()
    static = pd.DataFrame(out)
    static.index = static.index.astype(object)
    static.index.name = "series_id"
    return static


def _series_problems(frame: pd.DataFrame, covariates: list[str], skip) -> None:
    sid = frame["series_id"]
    dup = frame.duplicated(["series_id", "ds"], keep="first").to_numpy()
    for r in np.flatnonzero(dup)[:10_000]:
        skip(str(sid.iloc[r]), "ds", f"duplicate timestamp {frame['ds'].iloc[r]} (row {int(frame['_row'].iloc[r])})")
    y = frame["y"].to_numpy()
    nan = np.isnan(y)
    if nan.any():
        all_missing = pd.Series(nan).groupby(sid.to_numpy(), sort=False).all()
        for s in all_missing[all_missing].index:
            skip(str(s), "y", "all values missing")
    bad = ~np.isfinite(y)
    for r in np.flatnonzero(bad):
        kind = "NaN" if np.isnan(y[r]) else ("+inf" if y[r] > 0 else "-inf")
        skip(str(sid.iloc[r]), "y",
             f"non-finite value {kind} at {frame['ds'].iloc[r]} (row {int(frame['_row'].iloc[r])})")
    for c in covariates:
        vals = frame[c].to_numpy()
        for r in np.flatnonzero(~np.isfinite(vals)):
            skip(str(sid.iloc[r]), c,
                 f"non-finite covariate at {frame['ds'].iloc[r]} (row {int(frame['_row'].iloc[r])})")


def _appears(ds: pd.Series) -> str:
    """How one series' own timestamps look, for messages."""
    freq = series_frequency(ds)
    return repr(freq) if freq is not None else "irregular"


def _regularise(frame, freq, gap_policy, max_gap, covariates, source, skip, skipped):
    """Place each series on its frequency grid; refuse a frequency the data do not follow; fill or reject gaps."""
    sid = frame["series_id"]
    first = frame.groupby("series_id", sort=False)["ds"].transform("min")
    pos, on_grid = step_positions(frame["ds"], first, freq)
    codes, uniques = pd.factorize(frame["series_id"])
    n = len(uniques)
    off_series = np.bincount(codes[~on_grid], minlength=n) > 0
    # A series whose every step is k > 1 steps of `freq` follows a coarser frequency (daily data read
    # as hourly would otherwise be 23-step gaps in every series).
    same = codes[1:] == codes[:-1]
    steps = np.diff(pos)[same]
    step_codes = codes[1:][same]
    coarse = np.zeros(n, dtype=bool)
    multiple = np.zeros(n, dtype=np.int64)
    if len(steps):
        starts = np.flatnonzero(np.r_[True, step_codes[1:] != step_codes[:-1]])
        gcd = np.gcd.reduceat(np.abs(steps), starts)
        multiple[step_codes[starts]] = gcd
        coarse[step_codes[starts]] = gcd > 1
    follows = ~off_series & ~coarse
    if not follows.any():
        i = int(np.flatnonzero(off_series | coarse)[0])
        rows = np.flatnonzero(codes == i)
        looks = _appears(frame["ds"].iloc[rows])
        if off_series[i]:
            r = rows[np.argmax(~on_grid[rows])]
            why = f"timestamp {frame['ds'].iloc[r]} is off the grid"
        else:
            r = rows[0]
            why = f"its timestamps are {int(multiple[i])} steps of {freq!r} apart"
        raise DataValidationError(
            f"frequency {freq!r} matches no series: series {str(uniques[i])!r} appears to be {looks} ({why}); "
            "set freq to the data's frequency, or leave it unset to infer it",
            source=source, column="ds", series_id=str(uniques[i]), row=int(frame["_row"].iloc[r]))
    for r in np.flatnonzero(~on_grid):
        skip(str(sid.iloc[r]), "ds",
             f"timestamp {frame['ds'].iloc[r]} is off frequency {freq!r} (row {int(frame['_row'].iloc[r])})")
    for i in np.flatnonzero(coarse & ~off_series)[:10_000]:
        rows = np.flatnonzero(codes == i)
        skip(str(uniques[i]), "ds", f"timestamps follow {_appears(frame['ds'].iloc[rows])}, not frequency {freq!r} "
                                    f"(steps of {int(multiple[i])})")

    frame = frame.assign(_pos=pos)
    step = np.diff(pos)
    gap = np.where(same, step - 1, 0)
    for r in np.flatnonzero(gap > 0):
        missing = int(gap[r])
        s, at = str(sid.iloc[r + 1]), frame["ds"].iloc[r + 1]
        if s in skipped:  # already set aside (a coarser frequency is not also a gap)
            continue
        if gap_policy == "error":
            raise DataValidationError(f"gap of {missing} missing steps before {at}", source=source, column="ds",
                                      series_id=s, row=int(frame["_row"].iloc[r + 1]))
        if gap_policy == "skip" or missing > max_gap:
            allowed = max_gap if gap_policy == "fill" else 0
            skip(s, "ds", f"gap of {missing} missing steps before {at} (max_gap {allowed})")
    if not (gap > 0).any():
        return frame
    return _fill(frame, freq, covariates)


def _fill(frame: pd.DataFrame, freq: str, covariates: list[str]) -> pd.DataFrame:
    """Linear interpolation over the full grid of each series (blocks end on known values)."""
    codes, uniques = pd.factorize(frame["series_id"])
    pos = frame["_pos"].to_numpy()
    first_pos = pd.Series(pos).groupby(codes).min().to_numpy()
    last_pos = pd.Series(pos).groupby(codes).max().to_numpy()
    lengths = last_pos - first_pos + 1
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    glob_known = starts[codes] + (pos - first_pos[codes])
    total = int(lengths.sum())
    glob_all = np.arange(total)
    out_codes = np.repeat(np.arange(len(uniques)), lengths)
    local = glob_all - starts[out_codes]
    firsts = frame.groupby(codes, sort=False)["ds"].first()
    offset = to_offset(freq)
    if isinstance(offset, Tick):  # a fixed step (is_fixed): the k-th point is k steps after the first
        ds = pd.DatetimeIndex(firsts.to_numpy()[out_codes]) + pd.Timedelta(offset) * local
    else:
        grid = pd.date_range(frame["ds"].min(), frame["ds"].max(), freq=freq)
        ds = grid[first_pos[out_codes] + local]
    out = pd.DataFrame({"series_id": pd.Series(np.asarray(uniques, dtype=object)[out_codes], dtype="string"), "ds": ds})
    for c in ["y", *covariates]:
        out[c] = np.interp(glob_all, glob_known, frame[c].to_numpy())
    out["_row"] = -1  # interpolated rows; known rows keep their input row number
    out.loc[glob_known, "_row"] = frame["_row"].to_numpy()
    return out


def _future_block(frame: pd.DataFrame, future: pd.DataFrame | None, columns: list[str], freq: str, horizon: int,
                  skip) -> pd.DataFrame | None:
    """The future covariates at the `horizon` steps after each kept series' last timestamp.

    A series without a finite value at one of those steps is skipped, naming the covariate and step.
    """
    if frame.empty:
        return None
    ends = frame.groupby("series_id", sort=False)["ds"].last()
    want_ds = dates_after(ends.to_numpy(), freq, horizon)  # (S, H)
    want = pd.DataFrame({
        "series_id": np.repeat(ends.index.to_numpy(dtype=object), horizon),
        "ds": pd.Series(want_ds.reshape(-1)).astype(frame["ds"].dtype),
        "step": np.tile(np.arange(1, horizon + 1), len(ends)),
    })
    if future is None:
        future = pd.DataFrame({"series_id": pd.Series([], dtype=object), "ds": pd.Series([], dtype=frame["ds"].dtype),
                               **{c: pd.Series([], dtype=float) for c in columns}})
    have = future.drop_duplicates(["series_id", "ds"]).assign(series_id=lambda f: f["series_id"].astype(object))
    merged = want.merge(have[["series_id", "ds", *columns]], on=["series_id", "ds"], how="left")
    for c in columns:
        bad = ~np.isfinite(merged[c].to_numpy(dtype=np.float64, na_value=np.nan))
        for r in np.flatnonzero(bad):
            s = str(merged["series_id"].iloc[r])
            step, at = int(merged["step"].iloc[r]), merged["ds"].iloc[r]
            skip(s, c, f"future covariate {c!r} has no value for step {step} of {horizon} ({at}) after the last "
                       "observed y; future covariates need a row (y empty) for each step of the horizon")
    out = merged.drop(columns=["step"])
    out["series_id"] = out["series_id"].astype("string")
    return out
