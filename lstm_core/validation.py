"""Check a long-format frame (series_id, ds, y [, declared covariates]) against the data contract.

Dataset-level problems raise `DataValidationError` naming the file, column and
row. Problems that belong to one series put that series in `skipped` with a
reason, and the rest go on.

Only declared covariates are used (`CovariateSpec`): historic and future ones must be numeric and
finite in the history; future ones must also hold values for the horizon after each series' last
observed y (the rows whose y is empty); static ones must be constant per series.

This module runs the checks in order and keeps the record of what was skipped and why (`SkippedSeries`,
`ValidationResult`); the checks themselves: one column at a time (`lstm_core.column_checks`, with how text
is read, `TextRules`), per series (`lstm_core.series_checks`), and how long a series must be
(`lstm_core.length_rules`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lstm_core import timestamps
from lstm_core.column_checks import TextRules, check_numeric, check_series_id, static_column
from lstm_core.covariates import CovariateSpec
from lstm_core.errors import DataValidationError
from lstm_core.frequency import FrequencyDisagreement, infer_frequency, is_fixed
from lstm_core.length_rules import MIN_POINTS
from lstm_core.series_checks import future_block, regularise, series_problems, split_future, static_values

if TYPE_CHECKING:
    from lstm_core.config import ForecastConfig

REQUIRED = ("series_id", "ds", "y")


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
    series_id = check_series_id(df["series_id"], source)
    y = check_numeric(df["y"], "y", source, rules, series_id)
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
        frame[c] = check_numeric(df[c], c, source, rules, series_id)
    static_cols = list(spec.static)
    declared = dict(rules.static_types)
    for c in static_cols:
        frame[c] = static_column(df[c].reset_index(drop=True), c, declared.get(c), source, rules, series_id)
    frame["_row"] = np.arange(len(frame))
    frame = _drop(frame, skipped)
    frame = frame.sort_values(["series_id", "ds"], kind="stable").reset_index(drop=True)

    # Rows past each series' last observed y carry no target: known-future inputs (used when
    # future covariates are declared, dropped otherwise).
    frame, future = split_future(frame)
    static = static_values(frame, future, static_cols, skip) if static_cols else None
    frame = frame.drop(columns=static_cols)
    if future is not None:
        future = future[["series_id", "ds", *spec.future, "_row"]]

    series_problems(frame, numeric, skip)
    frame = _drop(frame, skipped)
    need = MIN_POINTS  # shortness is never a reason to skip: windows follow what each series allows
    if len(frame) == 0:
        return _result(frame, skipped, numeric, None, 0, len(df), spec, None, freq)

    frame = regularise(frame, freq, gap_policy, max_gap, numeric, source, skip, skipped)
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
    future = future_block(frame, future, list(spec.future), freq, horizon, skip) if spec.future else None
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


