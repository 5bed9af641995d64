"""Run plots as PNG bytes, from plain data (lists, arrays, dicts; small helpers pick examples from frames).

Drawn with matplotlib's object API on the Agg canvas, so nothing here touches
pyplot's global state or needs a display; the caller decides where the bytes go.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

LSTM_COLOR = "#1f77b4"
NAIVE_COLOR = "#ff7f0e"
ACTUAL_COLOR = "#222222"


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def loss_curves(histories: Sequence[dict[str, Sequence[float]]], *, title: str, loss_name: str = "loss",
                best_epochs: Sequence[int] | None = None, note: str | None = None) -> bytes:
    """Training and validation loss by epoch, one pair of lines per ensemble member."""
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    styles = ["-", "--", ":", "-."]
    for i, hist in enumerate(histories):
        suffix = f" (member {i})" if len(histories) > 1 else ""
        ls = styles[i % len(styles)]
        train = np.asarray(hist.get("loss", []), dtype=float)
        val = np.asarray(hist.get("val_loss", []), dtype=float)
        if len(train):
            ax.plot(np.arange(1, len(train) + 1), train, color=LSTM_COLOR, ls=ls, marker="o", ms=3,
                    label="training" + suffix)
        if len(val):
            ax.plot(np.arange(1, len(val) + 1), val, color=NAIVE_COLOR, ls=ls, marker="o", ms=3,
                    label="validation" + suffix)
        if best_epochs is not None and i < len(best_epochs) and 0 < best_epochs[i] <= len(val):
            b = best_epochs[i]
            ax.axvline(b, color="grey", ls=":", lw=1)
            right = b > len(val) / 2
            ax.annotate(f"best epoch {b}", (b, val[b - 1]), textcoords="offset points", xytext=(-4 if right else 4, 8),
                        ha="right" if right else "left", fontsize=8)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{loss_name} (scaled units)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title, fontsize=10)
    if note:
        ax.set_title(note, fontsize=8, color="#555555")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no training history recorded", ha="center", va="center", transform=ax.transAxes)
    return _png(fig)


@dataclass
class SeriesExample:
    """One series around its holdout: recent history, actual holdout and each model's forecast."""

    label: str  # e.g. "best", "median", "worst"
    series_id: str
    history_ds: np.ndarray
    history_y: np.ndarray
    holdout_ds: np.ndarray
    actual: np.ndarray
    forecasts: dict[str, np.ndarray] = field(default_factory=dict)  # model label -> (H,)
    mase: dict[str, float] = field(default_factory=dict)  # model label -> MASE


def pick_examples(mase: np.ndarray) -> dict[str, int]:
    """Indices of the best, median and worst series by MASE (finite values only; may repeat when few)."""
    mase = np.asarray(mase, dtype=float)
    finite = np.flatnonzero(np.isfinite(mase))
    if len(finite) == 0:
        return {}
    order = finite[np.argsort(mase[finite], kind="stable")]
    return {"best": int(order[0]), "median": int(order[(len(order) - 1) // 2]), "worst": int(order[-1])}


def holdout_examples(examples: Sequence[SeriesExample], *, title: str = "Forecast vs actual on the holdout") -> bytes:
    """One panel per example: history, the actual holdout and each model's forecast of it."""
    n = max(1, len(examples))
    fig = Figure(figsize=(8.5, 2.7 * n), layout="constrained")
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    colors = [LSTM_COLOR, NAIVE_COLOR, "#2ca02c", "#9467bd"]
    for ax, ex in zip(axes, examples, strict=False):  # no examples still draws one (empty) panel
        ax.plot(ex.history_ds, ex.history_y, color="#999999", lw=1, label="history")
        ax.plot(ex.holdout_ds, ex.actual, color=ACTUAL_COLOR, lw=1.6, marker=".", ms=4, label="actual")
        for (name, fc), color in zip(ex.forecasts.items(), colors, strict=False):  # more colours than models
            ax.plot(ex.holdout_ds, fc, color=color, lw=1.4, ls="--" if name == "seasonal naive" else "-",
                    label=name)
        if len(ex.holdout_ds):
            ax.axvline(ex.holdout_ds[0], color="grey", ls=":", lw=1)
        scores = ", ".join(f"{k} {v:.3g}" for k, v in ex.mase.items())
        ax.set_title(f"{ex.label}: series {ex.series_id}  (MASE {scores})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        for lab in ax.get_xticklabels():
            lab.set_rotation(15)
    if examples:
        axes[0].legend(fontsize=8, ncol=4, loc="upper left")
    else:
        axes[0].text(0.5, 0.5, "no series with a finite MASE", ha="center", va="center",
                     transform=axes[0].transAxes)
    fig.suptitle(title, fontsize=11)
    return _png(fig)


def error_distribution(model_mase: np.ndarray, baseline_mase: np.ndarray, *, model_label: str = "LSTM",
                       baseline_label: str = "seasonal naive") -> bytes:
    """Per-series MASE of the model against the baseline: both distributions, and series by series."""
    a = np.asarray(model_mase, dtype=float)
    b = np.asarray(baseline_mase, dtype=float)
    both = np.isfinite(a) & np.isfinite(b)
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    if both.any():
        values = np.concatenate([a[both], b[both]])
        lo, hi = float(np.min(values)), float(np.percentile(values, 99))  # the top 1% is clipped into the last bin
        pad = 0.05 * (hi - lo) or 0.05 * max(abs(hi), 1.0)
        bins = np.linspace(max(0.0, lo - pad), hi + pad, 25)
        left.hist(np.clip(a[both], bins[0], bins[-1]), bins=bins, alpha=0.6, color=LSTM_COLOR,
                  label=f"{model_label} (median {np.median(a[both]):.3g})")
        left.hist(np.clip(b[both], bins[0], bins[-1]), bins=bins, alpha=0.6, color=NAIVE_COLOR,
                  label=f"{baseline_label} (median {np.median(b[both]):.3g})")
        left.legend(fontsize=8)
        left.yaxis.set_major_locator(MaxNLocator(integer=True))
        right.scatter(b[both], a[both], s=12, alpha=0.7, color=LSTM_COLOR)
        top = float(np.max(values))
        lim = (max(0.0, lo - pad), top + pad)
        right.plot(lim, lim, color="grey", ls="--", lw=1)
        right.set_xlim(*lim)
        right.set_ylim(*lim)
        wins = int(np.sum(a[both] < b[both]))
        right.set_title(f"{model_label} better on {wins} of {int(both.sum())} series (below the line)", fontsize=9)
    else:
        for ax in (left, right):
            ax.text(0.5, 0.5, "no series with a finite MASE", ha="center", va="center", transform=ax.transAxes)
    left.set_xlabel("MASE per series")
    left.set_ylabel("series")
    excluded = int((~both).sum())
    left.set_title("Distribution of per-series error" +
                   (f" ({excluded} series without a finite MASE left out)" if excluded else ""), fontsize=9)
    right.set_xlabel(f"{baseline_label} MASE")
    right.set_ylabel(f"{model_label} MASE")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return _png(fig)


# --- intervals and backtests -------------------------------------------------------------------------
Bands = dict  # level (percent) -> (lower (H,), upper (H,))


@dataclass
class IntervalExample:
    """One series' published forecast: recent history, the forecast and its interval at each level."""

    label: str  # e.g. "best", "median", "worst"
    series_id: str
    history_ds: np.ndarray
    history_y: np.ndarray
    ds: np.ndarray
    yhat: np.ndarray
    bands: Bands = field(default_factory=dict)
    mase: float | None = None  # backtest MASE, shown in the title


@dataclass
class BacktestWindow:
    """One backtest window to draw: its cutoff, dates, actuals and forecasts."""
    cutoff: pd.Timestamp
    ds: np.ndarray
    yhat: np.ndarray
    bands: Bands = field(default_factory=dict)


@dataclass
class BacktestExample:
    """One series over its backtest: the actuals and each window's forecast (with intervals, where calibrated)."""

    label: str
    series_id: str
    ds: np.ndarray
    y: np.ndarray
    windows: list[BacktestWindow] = field(default_factory=list)
    mase: float | None = None


def _draw_bands(ax, ds: np.ndarray, bands: Bands, color: str, legend: bool = True) -> None:
    # widest first, lightest: the narrower, likelier band sits darker on top
    for level in sorted(bands, reverse=True):
        lo, hi = (np.asarray(v, dtype=float) for v in bands[level])
        if np.isfinite(lo).any():
            alpha = 0.12 + 0.25 * (1 - float(level) / 100) ** 0.5
            ax.fill_between(ds, lo, hi, color=color, alpha=alpha, lw=0,
                            label=f"{float(level):g}% interval" if legend else "_nolegend_")


def _finish(fig: Figure, axes, examples, title: str, empty: str) -> bytes:
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        for lab in ax.get_xticklabels():
            lab.set_rotation(15)
    if examples:
        axes[0].legend(fontsize=8, ncol=4, loc="upper left")
    else:
        axes[0].text(0.5, 0.5, empty, ha="center", va="center", transform=axes[0].transAxes)
    fig.suptitle(title, fontsize=11)
    return _png(fig)


def forecast_intervals(examples: Sequence[IntervalExample], *,
                       title: str = "Published forecast with prediction intervals") -> bytes:
    """One panel per example: the last weeks of history, then the forecast inside its intervals."""
    n = max(1, len(examples))
    fig = Figure(figsize=(8.5, 2.7 * n), layout="constrained")
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    for ax, ex in zip(axes, examples, strict=False):  # no examples still draws one (empty) panel
        ax.plot(ex.history_ds, ex.history_y, color=ACTUAL_COLOR, lw=1, label="history")
        _draw_bands(ax, ex.ds, ex.bands, LSTM_COLOR)
        ax.plot(ex.ds, ex.yhat, color=LSTM_COLOR, lw=1.6, label="forecast")
        if len(ex.ds):
            ax.axvline(ex.ds[0], color="grey", ls=":", lw=1)
        score = f"  (backtest MASE {ex.mase:.3g})" if ex.mase is not None and np.isfinite(ex.mase) else ""
        ax.set_title(f"{ex.label}: series {ex.series_id}{score}", fontsize=9)
    return _finish(fig, axes, examples, title, "no series to show")


def backtest_windows(examples: Sequence[BacktestExample], *,
                     title: str = "Backtest: each window's forecast against the actuals") -> bytes:
    """One panel per example: the actuals over the backtest span and every window's forecast from its cutoff."""
    n = max(1, len(examples))
    fig = Figure(figsize=(8.5, 2.7 * n), layout="constrained")
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    colors = [LSTM_COLOR, "#2ca02c", "#9467bd", "#d62728", "#8c564b", "#e377c2"]
    for ax, ex in zip(axes, examples, strict=False):  # no examples still draws one (empty) panel
        ax.plot(ex.ds, ex.y, color=ACTUAL_COLOR, lw=1.2, marker=".", ms=3, label="actual")
        labelled = False
        for i, win in enumerate(ex.windows):
            color = colors[i % len(colors)]
            if win.bands:  # the widest level only: overlapping windows stay readable
                top = max(win.bands)
                shown = bool(np.isfinite(np.asarray(win.bands[top][0], dtype=float)).any())
                _draw_bands(ax, win.ds, {top: win.bands[top]}, color, legend=shown and not labelled)
                labelled = labelled or shown
            ax.plot(win.ds, win.yhat, color=color, lw=1.4, label=f"cutoff {win.cutoff:%Y-%m-%d %H:%M}")
            ax.axvline(win.cutoff, color=color, ls=":", lw=1)
        score = f"  (backtest MASE {ex.mase:.3g})" if ex.mase is not None and np.isfinite(ex.mase) else ""
        ax.set_title(f"{ex.label}: series {ex.series_id}{score}", fontsize=9)
    return _finish(fig, axes, examples, title, "no backtest windows to show")


def _bands_of(rows: pd.DataFrame) -> Bands:
    bands = {}
    for col in rows.columns:
        if col.startswith("yhat_lo_") and col.replace("_lo_", "_hi_") in rows.columns:
            bands[float(col[len("yhat_lo_"):])] = (rows[col].to_numpy(float),
                                                    rows[col.replace("_lo_", "_hi_")].to_numpy(float))
    return bands


def _chosen(mase: pd.Series) -> list[tuple[str, str, float]]:
    """(label, series_id, MASE) of the best, median and worst series; a series shown once."""
    mase = pd.Series(mase, dtype=float)
    picks = pick_examples(mase.to_numpy())
    out, seen = [], set()
    for label, i in picks.items():
        sid = str(mase.index[i])
        if sid not in seen:
            seen.add(sid)
            out.append((label, sid, float(mase.iloc[i])))
    return out


def interval_examples(history: pd.DataFrame, predictions: pd.DataFrame, mase: pd.Series,
                      history_points: int | None = None) -> list[IntervalExample]:
    """Examples for `forecast_intervals`: the best, median and worst series by `mase` (per series_id,
    e.g. the backtest's pooled MASE), with their last `history_points` points (default: 3 horizons).

    history: series_id, ds, y; predictions: series_id, ds, yhat and any yhat_lo_<L>/yhat_hi_<L>."""
    examples = []
    for label, sid, score in _chosen(mase):
        fc = predictions[predictions["series_id"] == sid].sort_values("ds")
        keep = history_points or 3 * max(len(fc), 1)
        hist = history[history["series_id"] == sid].sort_values("ds").tail(keep)
        examples.append(IntervalExample(label, sid, hist["ds"].to_numpy(), hist["y"].to_numpy(float),
                                        fc["ds"].to_numpy(), fc["yhat"].to_numpy(float), _bands_of(fc), score))
    return examples


def backtest_examples(frame: pd.DataFrame, history: pd.DataFrame, mase: pd.Series,
                      history_points: int | None = None) -> list[BacktestExample]:
    """Examples for `backtest_windows` from a backtest frame (series_id, cutoff, ds, y, yhat, intervals):
    the best, median and worst series by `mase`, with `history_points` of history before the earliest
    cutoff (default: one horizon)."""
    examples = []
    for label, sid, score in _chosen(mase):
        rows = frame[frame["series_id"] == sid].sort_values(["cutoff", "ds"])
        if rows.empty:
            continue
        horizon = int(rows.groupby("cutoff").size().max())
        first = rows["cutoff"].min()
        hist = history[(history["series_id"] == sid) & (history["ds"] <= first)].sort_values("ds")
        hist = hist.tail(history_points or horizon)
        actual = pd.concat([hist[["ds", "y"]], rows[["ds", "y"]]]).drop_duplicates("ds").sort_values("ds")
        windows = [BacktestWindow(pd.Timestamp(g["cutoff"].iloc[0]), g["ds"].to_numpy(), g["yhat"].to_numpy(float),
                                  _bands_of(g)) for _, g in rows.groupby("cutoff", sort=True)]
        examples.append(BacktestExample(label, sid, actual["ds"].to_numpy(), actual["y"].to_numpy(float), windows,
                                        score))
    return examples
