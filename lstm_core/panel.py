"""A compact, numpy-first view of many series: one value array plus offsets (CSR style).

Series `i` occupies rows `offsets[i]:offsets[i+1]` of `values`. Columns follow
`feature_names = ("y", *historic, *future, *calendar, *static_encoded)` with a parallel `roles`
tuple ("target", "historic", "future", "calendar", "static"). The known-ahead columns (future,
calendar, static) also have values past each series' end: `future`, shape (S, H, K), in feature order.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from lstm_core.covariates import KNOWN_AHEAD, CovariateSpec, StaticEncoder, calendar_names, calendar_values
from lstm_core.frequency import dates_after


@dataclass(frozen=True)
class Panel:
    """Many series in one array: rows of all series back to back (sorted by id, then time), `offsets` marking
    where each starts, plus the known-ahead values for the steps after each series' end.
    """

    series_ids: np.ndarray  # (S,) str, sorted
    offsets: np.ndarray  # (S + 1,) int64
    values: np.ndarray  # (N, F) float64; column 0 is y
    feature_names: tuple[str, ...]
    last_ds: np.ndarray  # (S,) last timestamp per series
    freq: str
    roles: tuple[str, ...] = ()  # (F,) role of each column; default: target, then historic
    future: np.ndarray | None = None  # (S, H, K) known-ahead columns for the H steps after each series' end
    static: pd.DataFrame | None = None  # (S rows) static covariates as read, to encode with a model's vocabulary
    static_encoder: StaticEncoder | None = None  # how the static columns of `values` were encoded
    calendar: tuple[str, ...] = ()  # calendar features (hour, dayofweek, ...) behind the calendar columns

    def __post_init__(self) -> None:
        if not self.roles:
            object.__setattr__(self, "roles", ("target", *("historic",) * (len(self.feature_names) - 1)))
        if len(self.roles) != len(self.feature_names):
            raise ValueError(f"roles {self.roles} do not match features {self.feature_names}")

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, freq: str, covariates: list[str] | tuple[str, ...] = (), *,
                   spec: CovariateSpec | None = None, future: pd.DataFrame | None = None,
                   static: pd.DataFrame | None = None, horizon: int = 0,
                   encoder: StaticEncoder | None = None) -> Panel:
        """`frame` must be validated: sorted by (series_id, ds), regular, finite.

        `covariates` (historic columns) is the short form of `spec`. `future`: the future covariates'
        rows for the `horizon` steps after each series' end (as validation returns them); `static`: one
        row per series (index series_id); `encoder`: the static encoding to use (default: fitted here).
        """
        spec = spec or CovariateSpec(historic=tuple(covariates))
        numeric = [*spec.historic, *spec.future]
        cal = calendar_names(spec.calendar)
        enc: StaticEncoder | None
        if len(frame) == 0:
            enc = encoder or StaticEncoder(tuple(spec.static))
            names = ("y", *numeric, *cal, *(enc.names if spec.static else ()))
            return cls(np.array([], dtype=object), np.zeros(1, np.int64), np.zeros((0, len(names))), names,
                       np.array([], dtype="datetime64[ns]"), freq, _roles(spec, enc), None,
                       static.iloc[:0] if static is not None else None, enc if spec.static else None, spec.calendar)
        # Codes, not one Python string per row: sorted rows make each series one run of a code.
        codes, uniques = pd.factorize(frame["series_id"], sort=False)
        change = np.flatnonzero(codes[1:] != codes[:-1]) + 1
        starts = np.concatenate([[0], change])
        offsets = np.concatenate([starts, [len(codes)]]).astype(np.int64)
        ids = np.asarray(uniques, dtype=object)[codes[starts]]
        parts = [frame[["y", *numeric]].to_numpy(dtype=np.float64)]
        if spec.calendar:
            parts.append(calendar_values(frame["ds"], spec.calendar))
        last_ds = frame["ds"].iloc[offsets[1:] - 1].to_numpy()
        static_rows: pd.DataFrame | None = None
        enc = None
        if spec.static:
            if static is None:
                raise ValueError(f"static covariates {list(spec.static)} declared but no static values given")
            static_rows = static.loc[pd.Index(ids, dtype=object)]
            enc = encoder or StaticEncoder.fit(static_rows)
            enc_values = enc.transform(static_rows)
            parts.append(np.repeat(enc_values, np.diff(offsets), axis=0))
        values = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        names = ("y", *numeric, *cal, *(enc.names if enc is not None else ()))
        panel = cls(ids, offsets, values, names, last_ds, freq, _roles(spec, enc), None, static_rows, enc,
                    spec.calendar)
        if horizon and panel.known_index.size:
            fut_values = None
            if spec.future:
                if future is None or len(future) == 0:
                    raise ValueError(f"future covariates {list(spec.future)} need their values for the horizon")
                fut_values = _future_matrix(future, ids, spec.future, horizon)
            panel = replace(panel, future=panel._known_steps(horizon, fut_values))
        return panel

    # --- shape --------------------------------------------------------------
    @property
    def n_series(self) -> int:
        """S, the number of series."""
        return len(self.series_ids)

    @property
    def n_features(self) -> int:
        """F, the number of columns (target first)."""
        return self.values.shape[1]

    @property
    def lengths(self) -> np.ndarray:
        """(S,) number of points of each series."""
        return np.diff(self.offsets)

    @property
    def y(self) -> np.ndarray:
        """(N,) the target column of all rows."""
        return self.values[:, 0]

    @property
    def known_index(self) -> np.ndarray:
        """Columns known ahead (future, calendar, static), in feature order."""
        return np.array([i for i, r in enumerate(self.roles) if r in KNOWN_AHEAD], dtype=np.int64)

    def codes(self) -> np.ndarray:
        """Series index of every row."""
        return np.repeat(np.arange(self.n_series), self.lengths)

    # --- known-ahead values ---------------------------------------------------
    def _known_steps(self, steps: int, future_values: np.ndarray | None = None) -> np.ndarray:
        """(S, steps, K) known-ahead values after each series' end: `future_values` (S, >=1, n_future) for the
        future covariates (carrying their last given step when fewer), calendar from the dates, static as is."""
        s = self.n_series
        out = np.zeros((s, steps, len(self.known_index)))
        k = 0
        n_future = sum(r == "future" for r in self.roles)
        if n_future:
            if future_values is None or future_values.shape[1] == 0:
                missing = [n for n, r in zip(self.feature_names, self.roles, strict=True) if r == "future"]
                raise ValueError(f"future covariates {missing} have no values after the series' end: give "
                                 "them as rows with y empty for each step of the horizon")
            have = min(steps, future_values.shape[1])
            out[:, :have, :n_future] = future_values[:, :have]
            out[:, have:, :n_future] = future_values[:, have - 1:have]
            k = n_future
        n_cal = sum(r == "calendar" for r in self.roles)
        if n_cal:
            dates = dates_after(self.last_ds, self.freq, steps) if s else np.zeros((0, steps))
            out[:, :, k:k + n_cal] = calendar_values(dates.reshape(-1), self.calendar).reshape(s, steps, n_cal)
            k += n_cal
        n_static = sum(r == "static" for r in self.roles)
        if n_static:
            static_cols = [i for i, r in enumerate(self.roles) if r == "static"]
            last = self.values[self.offsets[1:] - 1][:, static_cols] if s else np.zeros((0, n_static))
            out[:, :, k:k + n_static] = last[:, None, :]
        return out

    def known_ahead(self, steps: int) -> np.ndarray:
        """(S, steps, K): the known-ahead columns for the `steps` after each series' end.

        Raises ValueError when future covariates are declared but their values past the end are not given.
        """
        if self.future is not None and self.future.shape[1] >= steps:
            return self.future[:, :steps]
        fut = self.future[:, :, :sum(r == "future" for r in self.roles)] if self.future is not None else None
        return self._known_steps(steps, fut)

    # --- views ----------------------------------------------------------------
    def drop_last(self, k: int) -> Panel:
        """The panel without each series' last `k` points (the training part before a holdout).

        The known-ahead values of the dropped points become the start of `future`: the holdout is
        forecast with the true known-ahead values, as the published forecast is with the given ones.
        """
        if k == 0:
            return self
        lengths = self.lengths - k
        if (lengths <= 0).any():
            raise ValueError(f"cannot drop {k} points: a series has only {int(self.lengths.min())}")
        keep = np.ones(len(self.values), dtype=bool)
        ends = self.offsets[1:]
        drop_idx = (ends[:, None] - np.arange(1, k + 1)[None, :]).ravel()
        keep[drop_idx] = False
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        last = _step_back(pd.DatetimeIndex(self.last_ds), self.freq, k)
        future = self.future
        known = self.known_index
        if known.size:
            dropped = self.last_values(k)[:, :, known]
            future = dropped if self.future is None else np.concatenate([dropped, self.future], axis=1)
        return replace(self, offsets=offsets, values=self.values[keep], last_ds=last, future=future)

    def last_values(self, k: int) -> np.ndarray:
        """(S, k, F): the last `k` rows of each series."""
        idx = self.offsets[1:, None] - np.arange(k, 0, -1)[None, :]
        return self.values[idx]

    def pad_front(self, length: int) -> Panel:
        """Each series shorter than `length` points with its first row repeated before its start.

        A short series then still fills a window: the network sees a flat history before the first
        observation (a common device of global models). Timestamps (`last_ds`) and `future` are unchanged;
        positions counted from a series' start move by its padding, so use this last (model space).
        """
        return self.pad_rows(np.maximum(int(length) - self.lengths, 0))

    def pad_rows(self, pad: np.ndarray) -> Panel:
        """Each series with `pad` (S,) copies of its first row before its start (see `pad_front`)."""
        pad = np.asarray(pad, dtype=np.int64)
        if not pad.any():
            return self
        lengths = self.lengths + pad
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        # source row of each output row: the series' first row for the padding, then its own rows
        local = np.arange(int(offsets[-1])) - np.repeat(offsets[:-1], lengths)
        source = np.repeat(self.offsets[:-1], lengths) + np.maximum(local - np.repeat(pad, lengths), 0)
        return replace(self, offsets=offsets, values=self.values[source])

    def drop_upto(self, k: int) -> Panel:
        """Each series without its last `k` points, keeping at least its first point (a series of `k` points
        or fewer keeps one): for checks and plots over a panel that may hold very short series."""
        return self.drop_each(np.minimum(int(k), np.maximum(self.lengths - 1, 0))) if self.n_series else self

    def drop_each(self, drops: np.ndarray) -> Panel:
        """Each series without its own last `drops[i]` points (`drop_last` with a count per series).

        Known-ahead values of the dropped points start `future` as in `drop_last`, trimmed to the shortest
        such block over the series (a training panel's future is never read past its first steps).
        Raises ValueError when a series would lose every point.
        """
        drops = np.asarray(drops, dtype=np.int64)
        kinds = np.unique(drops)
        if len(kinds) <= 1:
            return self.drop_last(int(kinds[0])) if len(kinds) else self
        parts = [(np.flatnonzero(drops == d), self.select(drops == d).drop_last(int(d))) for d in kinds]
        order = np.argsort(np.concatenate([idx for idx, _ in parts]), kind="stable")
        lengths = np.concatenate([p.lengths for _, p in parts])[order]
        starts = np.concatenate([p.offsets[:-1] + sum(len(q.values) for _, q in parts[:k])
                                 for k, (_, p) in enumerate(parts)])[order]
        values = np.concatenate([p.values for _, p in parts])
        rows = np.concatenate([np.arange(a, a + n) for a, n in zip(starts, lengths, strict=True)]) \
            if len(lengths) else np.zeros(0, dtype=np.int64)
        future = None
        futures = [p.future for _, p in parts if p.future is not None]
        if len(futures) == len(parts):
            steps = min(f.shape[1] for f in futures)
            future = np.concatenate([f[:, :steps] for f in futures])[order]
        static = None if self.static is None else self.static
        return replace(self, offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                       values=values[rows], last_ds=np.concatenate([p.last_ds for _, p in parts])[order],
                       future=future, static=static)

    def select(self, mask: np.ndarray) -> Panel:
        """Keep the series where `mask` is true."""
        mask = np.asarray(mask, dtype=bool)
        lengths = self.lengths[mask]
        rows = np.repeat(mask, self.lengths)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return replace(self, series_ids=self.series_ids[mask], offsets=offsets, values=self.values[rows],
                       last_ds=self.last_ds[mask], future=None if self.future is None else self.future[mask],
                       static=None if self.static is None else self.static.iloc[np.flatnonzero(mask)])

    def encode_static(self, encoder: StaticEncoder | None) -> Panel:
        """The panel with its static columns encoded by `encoder` (a model's vocabulary); unseen
        categories become all zeros. Unchanged when there are no static covariates or it is the same."""
        if encoder is None or self.static is None or encoder == self.static_encoder:
            return self
        keep = [i for i, r in enumerate(self.roles) if r != "static"]
        enc = encoder.transform(self.static)
        values = np.concatenate([self.values[:, keep], np.repeat(enc, self.lengths, axis=0)], axis=1)
        names = tuple(self.feature_names[i] for i in keep) + encoder.names
        roles = tuple(self.roles[i] for i in keep) + ("static",) * len(encoder.names)
        future = self.future
        if future is not None:
            n_static_old = sum(r == "static" for r in self.roles)
            head = future[:, :, :future.shape[2] - n_static_old]
            future = np.concatenate([head, np.repeat(enc[:, None, :], future.shape[1], axis=1)], axis=2)
        return replace(self, values=values, feature_names=names, roles=roles, future=future, static_encoder=encoder)


def _roles(spec: CovariateSpec, enc: StaticEncoder | None) -> tuple[str, ...]:
    return ("target", *("historic",) * len(spec.historic), *("future",) * len(spec.future),
            *("calendar",) * len(calendar_names(spec.calendar)),
            *(("static",) * len(enc.names) if enc is not None and spec.static else ()))


def _future_matrix(future: pd.DataFrame, ids: np.ndarray, columns: tuple[str, ...], horizon: int) -> np.ndarray:
    """(S, horizon, len(columns)) from validated future rows (exactly `horizon` per series, in order)."""
    f = future.assign(series_id=future["series_id"].astype(object)).sort_values(["series_id", "ds"], kind="stable")
    pos = pd.Index(ids, dtype=object).get_indexer(f["series_id"])
    step = f.groupby("series_id", sort=False).cumcount().to_numpy()
    out = np.full((len(ids), horizon, len(columns)), np.nan)
    ok = (pos >= 0) & (step < horizon)
    out[pos[ok], step[ok]] = f[list(columns)].to_numpy(dtype=np.float64)[ok]
    return out


def _step_back(last: pd.DatetimeIndex, freq: str, k: int) -> np.ndarray:
    offset = pd.tseries.frequencies.to_offset(freq)
    return (last - k * offset).to_numpy()
