"""The data a run works on: validated series packed into the panels the network, the statistical models and
the backtest read (`Prepared`), with the training cutoff, the fingerprint a saved model records, and which series
the network serves (the others go to the fallback).

Its own module so that the modelling path (`lstm_core.modelling`) and the training and promotion steps
(`lstm_core.promotion`) both read it without importing each other.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lstm_core.artifacts import data_fingerprint
from lstm_core.backtest import training_cutoff
from lstm_core.config import ForecastConfig
from lstm_core.engine import panel_of
from lstm_core.length_rules import min_input, min_train_length, network_reasons
from lstm_core.panel import Panel
from lstm_core.tuning import check_tuned_fits
from lstm_core.validation import SkippedSeries, ValidationResult
from lstm_core.windows import plan_windows, target_bounds, validation_span, windows_per_series

_log = logging.getLogger("lstm_core.modelling")


@dataclass
class Prepared:
    """Validated series packed for the model, and what validation found (the frame itself is released)."""

    panel: Panel  # full history of every valid series: (S, T, F) values with per-series lengths
    # what the model trains on: the history before the earliest backtest cutoff (window
    # `first_window`) of the series long enough for it; with one window, every series up to T - H
    train_panel: Panel
    fingerprint: str  # of `panel`'s values, dates and ids: a saved model records the data it learned from
    train_windows: int  # training windows available in `train_panel`
    validation_windows: int
    skipped: list[SkippedSeries] = field(default_factory=list)
    filled_points: int = 0
    rows_read: int = 0
    first_window: int = 0
    # series the network cannot learn (too few points for one training window, or constant), with the reason:
    # the fallback serves them (shortness is never a reason to skip a series)
    fallback: list[SkippedSeries] = field(default_factory=list)
    # every valid series, those the network cannot serve included: the statistical models and the served
    # forecast cover these; None: the same as `panel` (which holds the series the network serves)
    full: Panel | None = None

    @property
    def all_series(self) -> Panel:
        """Every valid series: what gets a forecast (the network's `panel` plus the fallback's)."""
        return self.panel if self.full is None else self.full

    @property
    def series_read(self) -> int:
        """Series the input held: every valid one plus those validation skipped."""
        return int(self.all_series.n_series) + len(self.skipped)

    def skipped_frame(self) -> pd.DataFrame:
        """The skipped series as the quarantine table (`series_id`, `field`, `reason`)."""
        return ValidationResult(pd.DataFrame(), self.skipped).skipped_frame()


def prepare_data(validated: ValidationResult, config: ForecastConfig, log=None) -> Prepared:
    """Pack validated series into the panels a run needs (`config` resolved to the data's frequency).

    The training panel ends before the earliest backtest cutoff, so no backtest window (and never the
    holdout) is seen in training. Raises ConfigError when tuned settings (`tuned: latest`) ask for a
    window the data cannot fill. An empty `validated` gives empty panels: the caller decides whether
    that is an error (see `no_valid_series`).
    """
    log = log or _log
    window = config.resolved_values("preparing the data").window  # ConfigError unless resolved
    full = panel_of(validated, config)
    serves = network_serves(full, config)
    panel = full if serves.all() else full.select(serves)
    check_tuned_fits(config, panel)  # tuned: latest: a tuned window the data cannot use is refused, not clipped
    first_window, train_panel = training_cutoff(panel, config)
    chunk = config.chunk_length
    span = validation_span(config.validation_steps, chunk)
    plan = plan_windows(train_panel.lengths, window, chunk, span, min_input(config))
    padded = train_panel.pad_rows(plan.pad)
    lo, hi = target_bounds(padded, window, plan.holdout, chunk, plan.first_target)
    train_windows = int((hi - lo).clip(min=0).sum())
    val_windows = int(np.where(plan.holdout > 0, span // chunk, 0).sum())
    fallback = [SkippedSeries(str(sid), "y", reason or "constant history: handed to the fallback") for sid, reason, ok
                in zip(full.series_ids, network_reasons(full.lengths, config), serves, strict=True) if not ok]
    if fallback:
        log.info("%d series are too short for the network to learn (fewer than %d points): handed to the "
                 "fallback", len(fallback), min_train_length(config))
    log.info("%d series, %d features; %d training windows available (%d sampled per series per epoch), "
             "%d validation windows; training cutoff: backtest window %d of %d (%d series)", panel.n_series,
             panel.n_features, train_windows,
             windows_per_series(padded, window, plan.holdout, chunk, config.training.windows_per_series,
                                config.training.min_windows_per_epoch, plan.first_target), val_windows, first_window,
             config.backtest.windows, train_panel.n_series)
    return Prepared(panel, train_panel, data_fingerprint(panel), train_windows, val_windows,
                    list(validated.skipped), validated.filled_points, validated.rows_read, first_window, fallback,
                    full=None if serves.all() else full)


def network_serves(panel: Panel, config: ForecastConfig) -> np.ndarray:
    """(S,) bool: the series the network learns and forecasts: those `length_rules.network_reasons` keeps (at
    least `min_train_length(config)` points) that are not constant. The others are served by the statistical
    fallback (`lstm_core.combination`); a lower network minimum serves more, with nothing to change here.
    """
    if panel.n_series == 0:
        return np.zeros(0, dtype=bool)
    y = panel.y
    safe = np.minimum(panel.offsets[:-1], max(len(y) - 1, 0))
    varies = np.maximum.reduceat(y, safe) > np.minimum.reduceat(y, safe)
    learns = np.array([r is None for r in network_reasons(panel.lengths, config)], dtype=bool)
    return learns & np.where(panel.lengths > 0, varies, False)
