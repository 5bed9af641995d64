"""The output contract and its commit protocol.

Under the output URL, hive-partitioned by run (`run=<run_id>`), each file also
carrying a `run_id` column so a single file stands on its own:

    predictions/run=<id>/part-<k>.parquet   series_id, ds, step, yhat, model_version, run_id, cutoff,
                                            yhat_lo_<L>, yhat_hi_<L> per interval level, model,
                                            yhat_lstm, yhat_autoets, yhat_autotheta, yhat_dynamic_theta,
                                            yhat_seasonal_naive, yhat_naive
    metrics/run=<id>/part-<k>.parquet       series_id (null = overall), metric, value, model (a label: `lstm`,
                                            `seasonal_naive`, `autoets`, ..., `served`), run_id, cutoff,
                                            backtest_window (null: over all backtest windows), model_version (the
                                            LSTM's; null for the other models)
    quarantine/run=<id>/part-<k>.parquet    series_id, field, reason, run_id
    backtest/run=<id>/part-<k>.parquet      series_id, cutoff, ds, step, y, yhat, seasonal_naive, intervals, run_id,
                                            autoets, autotheta, dynamic_theta, naive, served, model, served
                                            intervals, history
    realised/run=<id>/part-<k>.parquet      series_id, metric, value, model, forecast_run_id, cutoff, points, run_id,
                                            model_version
    revisions/run=<id>/part-<k>.parquet     series_id, ds, yhat_previous, yhat, revision, scale, previous_run_id,
                                            run_id (lstm_core.revisions)

Every timestamp is written in microseconds (`timestamp[us]`, what Spark 3, DuckDB, polars and pandas all
read), and no column is named by a reserved word of DuckDB or Spark SQL: version `OUTPUT_SCHEMA_VERSION`
of the tables, recorded in the manifest.
    runs/<id>/plots/*.png                   the run's plots (written before the manifest)
    runs/<id>/manifest.json                 written last; readers trust status == "succeeded"
    runs/<id>/lease.json                    held while a process runs this run id (lstm_core.lease)
    models/                                 the model store

One part per shard (`k` = shard number; a run of one shard writes part-0 only).
A sharded run writes the overall metric rows to `metrics/run=<id>/part-overall.parquet` (and those of
`realised/` to its `part-overall.parquet`).
A table of a run is all the part files of its partition.

A re-run of a run id first removes that run's manifest, then its partitions, so
a half-replaced run is never marked succeeded.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import fsspec
import pandas as pd
import pyarrow as pa
from pydantic import JsonValue

from lstm_core.atomic import LinkRefused, put_bytes, read_json, remove_file, remove_tree, write_json, write_parquet
from lstm_core.layout import FOLDERS, LEASE, MANIFEST, OUTPUT_SCHEMA_VERSION, TABLES, OutputLayout
from lstm_core.location import Location, is_local, join
from lstm_core.metrics import interval_columns
from lstm_core.realised import interval_levels, realised_schema
from lstm_core.records import Manifest
from lstm_core.revisions import revisions_schema
from lstm_core.secrets import scrub
from lstm_core.statistical import CANDIDATES, STATISTICAL_MODELS

if TYPE_CHECKING:
    from lstm_core.config import ForecastConfig

__all__ = ["FOLDERS", "MANIFEST", "OUTPUT_SCHEMA_VERSION", "TABLES", "OutputStore", "RunWriter", "committed_runs",
           "read_committed", "table_schema"]


TIME_UNIT = "us"  # Spark 3 refuses Parquet's nanosecond timestamps; microseconds every reader takes


def _ts(tz: str | None) -> pa.DataType:
    return pa.timestamp(TIME_UNIT, tz=tz)


def _interval_fields(levels: Sequence[float]) -> list[tuple[str, pa.DataType]]:
    return [(c, pa.float64()) for lv in levels for c in interval_columns(lv)]


# The served forecast's columns (lstm_core.combination): which model served a row, each candidate's own forecast.


def predictions_schema(tz: str | None = None, levels: Sequence[float] = (), served: bool = False) -> pa.Schema:
    """Columns of `predictions/`: the original seven, then the bounds of each interval level; a served run
    (`served`) adds `model` (what served the row) and `yhat_<candidate>` (each candidate's own forecast)."""
    return pa.schema([
        ("series_id", pa.string()), ("ds", _ts(tz)), ("step", pa.int64()), ("yhat", pa.float64()),
        ("model_version", pa.string()), ("run_id", pa.string()), ("cutoff", _ts(tz)), *_interval_fields(levels),
        *((("model", pa.string()), *((f"yhat_{c}", pa.float64()) for c in CANDIDATES)) if served else ()),
    ])


def backtest_schema(tz: str | None = None, levels: Sequence[float] = (), served: bool = False) -> pa.Schema:
    """Columns of `backtest/`: utilsforecast's cross-validation layout, intervals, the run id; a served run
    adds every candidate side by side (`autoets`, `autotheta`, `dynamic_theta`, `naive`), the served forecast (`served`,
    `model`, `served_lo_<L>`, `served_hi_<L>`, calibrated on earlier windows only) and `history` (points
    before the cutoff)."""
    extra = [*((m, pa.float64()) for m in STATISTICAL_MODELS), ("naive", pa.float64()),
             ("served", pa.float64()), ("model", pa.string()),
             *((c.replace("yhat_", "served_"), pa.float64()) for lv in levels for c in interval_columns(lv)),
             ("history", pa.int64())] if served else []
    return pa.schema([
        ("series_id", pa.string()), ("cutoff", _ts(tz)), ("ds", _ts(tz)), ("step", pa.int64()), ("y", pa.float64()),
        ("yhat", pa.float64()), ("seasonal_naive", pa.float64()), *_interval_fields(levels), ("run_id", pa.string()),
        *extra,
    ])


def metrics_schema(tz: str | None = None) -> pa.Schema:
    """Columns of `metrics/`: the original five, then the backtest window's `cutoff` and `backtest_window`
    (both null on the rows over all windows: the run's figures), then `model_version` (the LSTM's version on
    its rows, null on the others'; `model` is the label: `lstm`, `seasonal_naive`, each statistical model, `naive`
    and `served`)."""
    return pa.schema([
        ("series_id", pa.string()), ("metric", pa.string()), ("value", pa.float64()), ("model", pa.string()),
        ("run_id", pa.string()), ("cutoff", _ts(tz)), ("backtest_window", pa.int64()),
        ("model_version", pa.string()),
    ])


METRICS_SCHEMA = metrics_schema()
QUARANTINE_SCHEMA = pa.schema([
    ("series_id", pa.string()), ("field", pa.string()), ("reason", pa.string()), ("run_id", pa.string()),
])


def new_run_id(now: datetime | None = None) -> str:
    """A fresh run id that sorts by time: `YYYYmmddTHHMMSSZ-<6 hex>` (UTC)."""
    import os

    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + os.urandom(3).hex()


def slot_run_id(scheduled: datetime, config_hash: str) -> str:
    """The run id of a scheduled slot: its start time in UTC and the configuration's hash.

    The same slot with the same configuration always gets the same id, so a retried or
    re-run slot replaces its own outputs instead of adding a second set of rows.
    """
    if scheduled.tzinfo is None:
        scheduled = scheduled.replace(tzinfo=UTC)
    return "sched-" + scheduled.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + config_hash


@dataclass
class RunWriter:
    """Writes one run's files under its own partitions, then commits with the manifest."""

    fs: fsspec.AbstractFileSystem
    root: str
    run_id: str
    lease: Any = None  # a lstm_core.lease.RunLease; checked before clearing and before committing
    location: Location | None = None  # set by `open`: lets a copy rebuild its filesystem without pickled credentials

    def __getstate__(self) -> dict[str, object]:
        # Shard tasks on Dask workers get a copy without the lease (it holds a heartbeat thread):
        # the flow's process owns the lease and checks it before clearing and before committing.
        # Nor the filesystem, which would pickle its credentials: the copy rebuilds it from its Location
        # (which travels without secrets and takes those of the receiving process's environment).
        state = {**self.__dict__, "lease": None}
        if self.location is not None:
            state["fs"] = None
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        if self.fs is None and self.location is not None:  # __getstate__ drops fs only where a Location rebuilds it
            self.fs = self.location.fs

    @classmethod
    def open(cls, output: Location | str, run_id: str) -> RunWriter:
        """The writer of one run. Locally, refuses (LinkRefused) an output root whose folders are links."""
        output = Location.of(output)
        fs, root = output.fs, output.path
        if is_local(fs):
            for name in FOLDERS:  # the model store and scratch are written from their own roots: check here
                if os.path.islink(os.path.join(root, name)):
                    raise LinkRefused(f"{scrub(os.path.join(root, name))} is a symbolic link: refusing to write "
                                      f"through it (the job writes only real folders under the output root)")
        return cls(fs, root, run_id, location=output)

    @property
    def layout(self) -> OutputLayout:
        """The output contract's paths under this writer's root."""
        return OutputLayout(self.root)

    def part_path(self, table: str, part: int | str = 0) -> str:
        """Path of part `part` of `table` in this run's partition."""
        return self.layout.part(table, self.run_id, part)

    @property
    def manifest_path(self) -> str:
        """Path of this run's `manifest.json`."""
        return self.layout.manifest(self.run_id)

    def begin(self) -> None:
        """Clear any earlier attempt of this run id: manifest first, so readers stop trusting it.

        (The run's lease beside the manifest stays: the process calling this holds it.)
        """
        if self.lease is not None:
            self.lease.check()
        remove_file(self.fs, self.manifest_path, root=self.root)
        run_dir = self.layout.run_dir(self.run_id)
        self.fs.invalidate_cache(run_dir)
        try:
            entries = self.fs.ls(run_dir, detail=False)
        except FileNotFoundError:
            entries = []
        for entry in entries:  # the run's own files (plots...), all but the lease
            if entry.rstrip("/").rsplit("/", 1)[-1] not in (LEASE, MANIFEST):
                remove_tree(self.fs, entry, root=self.root)
        for table in TABLES:
            remove_tree(self.fs, self.layout.partition(table, self.run_id), root=self.root)

    def write(self, table: str, df: pd.DataFrame, part: int | str = 0) -> str:
        """Write one part file of `table`; its schema follows the output contract (interval columns as
        `df` holds them; timestamps in the zone of `df`'s own)."""
        schema = {"quarantine": QUARANTINE_SCHEMA}.get(table)
        if table in ("predictions", "backtest"):
            tz = _tz_of(df["ds"])
            levels = interval_levels(list(df.columns))
            served = "model" in df.columns
            schema = predictions_schema(tz, levels, served) if table == "predictions" else \
                backtest_schema(tz, levels, served)
        elif table == "metrics":
            df = df.assign(**{c: df[c] if c in df.columns else None
                              for c in ("cutoff", "backtest_window", "model_version")})
            schema = metrics_schema(_tz_of(df["cutoff"]))
        elif table == "realised":
            schema = realised_schema(_tz_of(df["cutoff"]))
        elif table == "revisions":
            schema = revisions_schema(_tz_of(df["ds"]))
        if schema is None:
            raise ValueError(f"no output table {table!r}: one of {', '.join(TABLES)}, quarantine")
        df = df.assign(run_id=self.run_id)[schema.names]
        path = self.part_path(table, part)
        write_parquet(self.fs, path, df, schema, root=self.root)
        return path

    def write_file(self, name: str, data: bytes) -> str:
        """Store a file that belongs to the run (a plot, a report) under `runs/<run_id>/`."""
        path = self.layout.run_file(self.run_id, name)  # ValueError for an absolute path, "..", the manifest
        put_bytes(self.fs, path, data, root=self.root)
        return path

    def commit(self, manifest: Manifest | Mapping[str, object]) -> str:
        """Write the manifest (`runs/<run_id>/manifest.json`, one whole file), stamped with this run id;
        returns its path. A `Manifest` is written as its JSON form (`model_dump(mode="json")`: exactly the
        fields it has set); a plain dict as it is (a marker written by hand, as tests do).

        Raises LeaseLostError when this process no longer holds the run id.
        """
        if self.lease is not None:
            self.lease.check()  # a run that lost its run id to another process never commits
        record = manifest.model_dump(mode="json") if isinstance(manifest, Manifest) else manifest
        write_json(self.fs, self.manifest_path, {**record, "run_id": self.run_id}, root=self.root)
        return self.manifest_path

    def read_manifest(self) -> dict[str, JsonValue] | None:
        """The manifest this run id committed before (a re-run replaces it), or None: absent, not a JSON
        object, or, locally, a link (a planted `manifest.json` is replaced when the run commits, never read)."""
        if is_local(self.fs) and os.path.islink(self.manifest_path):
            return None
        try:
            manifest = read_json(self.fs, self.manifest_path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError):
            return None
        return manifest if isinstance(manifest, dict) else None


@dataclass
class OutputStore:
    """The output URL opened once per run: its filesystem and the output contract's layout under it.

    The flow opens it at the start (`OutputStore.open(config)`) and asks it for the run's writer, the committed
    runs, the partitions and the scratch; tasks on workers take the model store from the configuration
    (`ModelStore.of`). No other code builds these paths: lstm_core.layout holds them.
    """

    location: Location  # the output root: its URL and the filesystem that reaches it
    scratch_url: str | None = None

    @classmethod
    def open(cls, config: ForecastConfig) -> OutputStore:
        """The store of `config.output_url` (a ForecastConfig); scratch under `scratch_url` when set."""
        return cls(config.location(config.output_url), config.scratch_url)

    @property
    def url(self) -> str:
        """The output URL (no credentials)."""
        return self.location.url

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The filesystem that reaches the output URL."""
        return self.location.fs

    @property
    def root(self) -> str:
        """The filesystem's path for `url`."""
        return self.location.path

    @property
    def layout(self) -> OutputLayout:
        """Paths as the filesystem sees them (what the manifest records)."""
        return OutputLayout(self.root)

    @property
    def url_layout(self) -> OutputLayout:
        """Paths as URLs (for opening with other storage options, and for people)."""
        return OutputLayout(self.url, self.scratch_url)

    def writer(self, run_id: str) -> RunWriter:
        """The writer of one run (refuses, locally, an output root whose folders are links)."""
        return RunWriter.open(self.location, run_id)

    def committed_runs(self) -> list[str]:
        """Run ids whose manifest says succeeded (see the module's `committed_runs`)."""
        return committed_runs(self.location)

    def partitions(self, run_id: str, tables: Sequence[str]) -> dict[str, str]:
        """table -> its partition of `run_id` (the manifest's `outputs` of a sharded run)."""
        return {t: self.layout.partition(t, run_id) for t in tables}

    def remove_scratch(self, run_id: str) -> None:
        """Remove the run's scratch folder (a sharded run's split input)."""
        from lstm_core.shard_split import remove_scratch

        remove_scratch(self.location.with_url(self.url_layout.scratch()), run_id)


def _tz_of(column: pd.Series) -> str | None:
    tz = getattr(column.dtype, "tz", None)
    return str(tz) if tz is not None else None


def committed_runs(output: Location | str, storage_options: dict | None = None) -> list[str]:
    """Run ids whose manifest says succeeded: the runs a reader may trust. `output`: the output root
    (a URL, reached with the fsspec `storage_options`, or a Location). See `catchup.committed_manifests`."""
    from lstm_core.catchup import committed_manifests

    return sorted(rid for rid, _ in committed_manifests(Location.of(output, storage_options)))


def read_committed(output: Location | str, table: str, storage_options: dict | None = None) -> pd.DataFrame:
    """A table's rows from committed runs only (what a careful downstream reader does). `output`: the
    output root (a URL, reached with the fsspec `storage_options`, or a Location). Empty when no run is
    committed yet; a misspelt table raises ValueError and an output root that does not exist
    FileNotFoundError (a typo would otherwise read as 'nothing committed')."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}: the output tables are {', '.join(TABLES)}")
    output = Location.of(output, storage_options)
    fs, root = output.fs, output.path
    if not fs.exists(root):
        raise FileNotFoundError(f"no output at {output.shown}")
    frames = []
    for rid in committed_runs(output):
        partition = OutputLayout(root).partition(table, rid)
        fs.invalidate_cache(partition)
        try:
            parts = [p for p in fs.ls(partition, detail=False)
                     if p.rsplit("/", 1)[-1].startswith("part-") and p.endswith(".parquet")]
        except FileNotFoundError:
            continue
        for path in sorted(parts, key=_part_order):
            with fs.open(path, "rb") as fh:
                frames.append(pd.read_parquet(fh))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def table_schema(output: Location | str, table: str, storage_options: dict | None = None) -> pa.Schema:
    """The schema of every run of `table` together, for reading its folder as one dataset.

    pandas and pyarrow take a dataset's schema from its first file, so a run written before a column
    existed (predictions before intervals) would hide that column in later runs. This unifies the schemas
    of all part files (their footers only) and adds the `run` partition column:
    `pd.read_parquet(f"{out}/predictions", schema=table_schema(out, "predictions"))`, or
    `pyarrow.dataset.dataset(..., partitioning="hive", schema=...)`; older runs read with nulls there.
    """
    import pyarrow.parquet as pq

    output = Location.of(output, storage_options)
    fs, root = output.fs, output.path
    base = join(root, table)
    fs.invalidate_cache(base)
    try:
        paths = [p for p in fs.find(base) if p.rsplit("/", 1)[-1].startswith("part-") and p.endswith(".parquet")]
    except FileNotFoundError:
        paths = []
    schemas = []
    for path in sorted(paths):
        with fs.open(path, "rb") as fh:
            schemas.append(pq.read_schema(fh).remove_metadata())
    if not schemas:
        raise FileNotFoundError(f"no part files under {scrub(join(output.url, table))}")
    unified = pa.unify_schemas(schemas, promote_options="permissive")
    return unified if "run" in unified.names else unified.append(pa.field("run", pa.string()))


def _part_order(path: str) -> tuple[int, int | str]:
    """part-0, part-1, ..., part-10, then named parts (part-overall)."""
    name = path.rsplit("/", 1)[-1][len("part-"):-len(".parquet")]
    return (0, int(name)) if name.isdigit() else (1, name)
