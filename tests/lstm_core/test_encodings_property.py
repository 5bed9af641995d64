"""Issue 25, point 2: generated panels written in generated encodings read back to the same
(series_id, ds, y), and the forecast dates continue each series' own grid.

Panels: 1-3 series, ids that look like numbers (leading zeros), words or digits; hourly, daily, weekly,
month-start, month-end, quarterly and yearly grids; 12-40 points. Encodings: CSV text dates (ISO, month
strings, offsets, other orders with `time_format`, epoch integers), Parquet timestamps of every unit and
zone, dates, hive folders by id; writers pandas, pyarrow, polars and DuckDB. The default suite draws a
few examples; the full matrix of writers x encodings x frequencies is the slow test below.
"""
from __future__ import annotations

import itertools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lstm_core.config import validate_config
from lstm_core.frequency import dates_after, is_fixed
from lstm_core.inputs import read_series
from lstm_core.validation import validate_for

FREQS = ("h", "D", "W-SUN", "W-WED", "MS", "ME", "QS-JAN", "QE-DEC", "YS-JAN", "YE-DEC")
CSV_FORMS = ("iso", "iso_t", "month", "offset", "zulu", "dmy_dots", "mdy_slashes", "epoch_s", "epoch_ms")
PARQUET_FORMS = ("s", "ms", "us", "ns", "date32")
ZONES = (None, "UTC", "Europe/Paris", "+05:30")
LAYOUTS = ("file", "hive")
WRITERS = ("pandas", "pyarrow", "polars", "duckdb")
H = 3


@dataclass(frozen=True)
class Panel:
    """A long panel on one grid: `wall` is each point's wall-clock time (the data's own calendar)."""

    ids: tuple[str, ...]
    freq: str
    starts: tuple[pd.Timestamp, ...]
    length: int
    seed: int

    def frame(self) -> pd.DataFrame:
        rng = np.random.default_rng(self.seed)
        parts = []
        for i, (sid, start) in enumerate(zip(self.ids, self.starts)):
            wall = pd.date_range(start, periods=self.length, freq=self.freq)
            y = np.round(50 + 10 * i + 5 * np.sin(np.arange(self.length)) + rng.normal(0, 1, self.length), 3)
            parts.append(pd.DataFrame({"series_id": sid, "wall": wall, "y": y}))
        return pd.concat(parts, ignore_index=True)


ids = st.lists(st.one_of(st.from_regex(r"0[0-9]{1,3}", fullmatch=True),
                         st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,5}", fullmatch=True),
                         st.integers(0, 9999).map(str)),
               min_size=1, max_size=3, unique=True)


@st.composite
def panels(draw, freqs=FREQS) -> Panel:
    freq = draw(st.sampled_from(freqs))
    sids = draw(ids)
    year = draw(st.integers(1990, 2030)) if not freq.startswith("Y") else draw(st.integers(1950, 1990))
    starts = tuple(pd.Timestamp(year, draw(st.integers(1, 12)), draw(st.integers(1, 28)),
                                draw(st.integers(0, 23)) if freq == "h" else 0) for _ in sids)
    return Panel(tuple(sids), freq, starts, draw(st.integers(12, 40)), draw(st.integers(0, 2**16)))


@dataclass(frozen=True)
class Encoding:
    kind: str  # "csv" or "parquet"
    form: str  # a CSV_FORMS or PARQUET_FORMS entry
    zone: str | None = None  # Parquet timestamps only
    layout: str = "file"
    writer: str = "pandas"

    def applies_to(self, freq: str) -> bool:
        if self.writer == "polars" and self.zone == "+05:30":
            return False  # polars holds zone names only
        if self.writer == "duckdb" and self.zone not in (None, "UTC") and not is_fixed(freq):
            return False  # DuckDB writes TIMESTAMPTZ as UTC instants: the zone's calendar is not in the file
        if self.form == "month":
            return freq == "MS"
        if self.form in ("date32", "dmy_dots", "mdy_slashes"):
            return freq != "h"
        return True

    def time_format(self) -> str | None:
        return {"dmy_dots": "%d.%m.%Y", "mdy_slashes": "%m/%d/%Y", "epoch_s": "epoch_s",
                "epoch_ms": "epoch_ms"}.get(self.form)


def encode(frame: pd.DataFrame, enc: Encoding, fixed: bool) -> pd.DataFrame:
    """The frame with its time column in the encoding (still a pandas frame: the writer writes it)."""
    wall = frame["wall"]
    out = frame.drop(columns="wall")
    if enc.kind == "csv":
        text = {
            "iso": lambda: wall.dt.strftime("%Y-%m-%d" if not fixed else "%Y-%m-%d %H:%M:%S"),
            "iso_t": lambda: wall.dt.strftime("%Y-%m-%dT%H:%M:%S"),
            "month": lambda: wall.dt.strftime("%Y-%m"),
            # the values are UTC instants for fixed steps, the wall clock for calendar ones
            "offset": lambda: (wall.dt.tz_localize("UTC").dt.tz_convert("+05:30") if fixed else
                               wall.dt.tz_localize("+05:30")).dt.strftime("%Y-%m-%dT%H:%M:%S+05:30"),
            "zulu": lambda: wall.dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "dmy_dots": lambda: wall.dt.strftime("%d.%m.%Y"),
            "mdy_slashes": lambda: wall.dt.strftime("%m/%d/%Y"),
            "epoch_s": lambda: wall.astype("datetime64[ns]").astype("int64") // 10**9,
            "epoch_ms": lambda: wall.astype("datetime64[ns]").astype("int64") // 10**6,
        }[enc.form]()
        return out.assign(ds=text.to_numpy())
    if enc.form == "date32":
        return out.assign(ds=pd.Series(wall.dt.date.to_numpy(), dtype=pd.ArrowDtype(pa.date32())))
    ts = wall.astype(f"datetime64[{enc.form}]")
    if enc.zone is not None:
        # fixed steps: the generated values are UTC instants; calendar ones: the zone's wall clock
        ts = ts.dt.tz_localize("UTC").dt.tz_convert(enc.zone) if fixed else ts.dt.tz_localize(enc.zone)
    return out.assign(ds=ts)


def write(frame: pd.DataFrame, enc: Encoding, root: Path) -> str:
    """Write with the encoding's writer and layout; the URL to read."""
    suffix = ".csv" if enc.kind == "csv" else ".parquet"
    if enc.layout == "hive":
        for sid, g in frame.groupby("series_id"):
            folder = root / "lake" / f"series_id={sid}"
            folder.mkdir(parents=True)
            _write_one(g.drop(columns="series_id"), enc, folder / f"part{suffix}")
        return str(root / "lake")
    _write_one(frame, enc, root / f"data{suffix}")
    return str(root / f"data{suffix}")


def _write_one(frame: pd.DataFrame, enc: Encoding, path: Path) -> None:
    frame = frame.reset_index(drop=True)
    if enc.writer == "pandas":
        frame.to_csv(path, index=False) if enc.kind == "csv" else frame.to_parquet(path, index=False)
    elif enc.writer == "pyarrow":
        table = pa.Table.from_pandas(frame, preserve_index=False)
        pacsv.write_csv(table, path) if enc.kind == "csv" else pq.write_table(table, path)
    elif enc.writer == "polars":
        import polars as pl

        data = pl.from_pandas(frame)
        data.write_csv(path) if enc.kind == "csv" else data.write_parquet(path)
    else:
        import duckdb

        con = duckdb.connect()
        con.register("frame", frame)
        options = "HEADER, DELIMITER ','" if enc.kind == "csv" else "FORMAT PARQUET"
        con.execute(f"COPY frame TO '{path}' ({options})")
        con.close()


def check_round_trip(panel: Panel, enc: Encoding) -> None:
    frame = panel.frame()
    fixed = is_fixed(panel.freq)
    with tempfile.TemporaryDirectory() as tmp:
        url = write(encode(frame, enc, fixed), enc, Path(tmp))
        config = validate_config({"input_url": url, "horizon": H, "time_format": enc.time_format(),
                                  "model": {"units": [4]}})
        read = read_series(url, config.read_columns(), **config.input_options())
        result = validate_for(read, config, source=url)
    assert result.skipped == [], (enc, result.skipped)
    got = result.frame
    ds = got["ds"]
    if getattr(ds.dt, "tz", None) is not None:  # fixed steps: UTC instants; calendar: the zone's wall clock
        ds = ds.dt.tz_convert("UTC").dt.tz_localize(None) if fixed else ds.dt.tz_localize(None)
    want = frame.sort_values(["series_id", "wall"]).reset_index(drop=True)
    assert got["series_id"].astype(str).tolist() == want["series_id"].tolist(), enc
    assert (ds.to_numpy("datetime64[ns]") == want["wall"].to_numpy("datetime64[ns]")).all(), (enc, panel.freq)
    np.testing.assert_allclose(got["y"].to_numpy(), want["y"].to_numpy())
    # forecast dates continue each series' own grid (month ends stay ends, starts stay starts)
    last = got.groupby("series_id", sort=True)["ds"].max()
    future = dates_after(last.to_numpy(), result.freq, H)
    for (sid, end), row in zip(last.items(), future):
        end_wall = want.loc[want["series_id"] == sid, "wall"].max()
        grid = pd.date_range(end_wall, periods=H + 1, freq=panel.freq)[1:]
        steps = pd.DatetimeIndex(row)
        steps = steps.tz_convert("UTC").tz_localize(None) if steps.tz is not None and fixed else \
            (steps.tz_localize(None) if steps.tz is not None else steps)
        assert list(steps) == list(grid), (enc, panel.freq, sid)


def encodings(writers=("pandas", "pyarrow")):
    csv = [Encoding("csv", f, None, layout, w) for f in CSV_FORMS for layout in LAYOUTS for w in writers]
    parquet = [Encoding("parquet", f, z, layout, w) for f in PARQUET_FORMS for z in (ZONES if f != "date32" else (None,))
               for layout in LAYOUTS for w in writers]
    return csv + parquet


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(panel=panels(), enc=st.sampled_from(encodings()))
def test_generated_panels_read_back_in_generated_encodings(panel, enc):
    if not enc.applies_to(panel.freq):
        enc = Encoding(enc.kind, "iso" if enc.kind == "csv" else "us", None, enc.layout, enc.writer)
    check_round_trip(panel, enc)


@pytest.mark.slow
@pytest.mark.parametrize("writer", WRITERS)
def test_matrix_of_writers_encodings_and_frequencies(writer):
    failures = []
    for freq, enc in itertools.product(FREQS, encodings((writer,))):
        if not enc.applies_to(freq):
            continue
        start = pd.Timestamp("2021-03-20 05:00") if freq == "h" else pd.Timestamp("2019-10-27")
        panel = Panel(("007", "0042", "store-1"), freq, (start, start + pd.Timedelta(days=3), start), 30, 1)
        try:
            check_round_trip(panel, enc)
        except Exception as exc:  # noqa: BLE001 - collect every failing cell of the matrix, then report them
            failures.append(f"{freq} {enc}: {type(exc).__name__}: {str(exc)[:200]}")
    assert not failures, "\n".join(failures)
