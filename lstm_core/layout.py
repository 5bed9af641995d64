"""Every path of the output contract, in one place.

Under the output URL (see lstm_core.outputs for what each file holds):

    <table>/run=<run_id>/part-<k>.parquet   predictions, metrics, quarantine, backtest, realised, revisions
    runs/<run_id>/manifest.json             the commit marker, written last
    runs/<run_id>/lease.json                held while a process runs the run id
    runs/<run_id>/<name>                    the run's own files (plots/*.png)
    models/<model_key>/<version>/           the model store
    tuning/study=<name>/                    tuning results
    _scratch/run=<run_id>/                  a sharded run's split input (or under `scratch_url`)

The paths are strings joined with "/", for a URL or a filesystem path alike; nothing here opens storage.
"""
from __future__ import annotations

from dataclasses import dataclass

from lstm_core.location import join

TABLES = ("predictions", "metrics", "quarantine", "backtest", "realised", "revisions")
# The version of the tables' columns and types, recorded in each manifest (`output_schema_version`).
# 1 (manifests without the field): nanosecond timestamps, the metrics' `window`, the LSTM's metric rows
# labelled by its version. 2: microsecond timestamps, `backtest_window`, `model` a label (`lstm`,
# `seasonal_naive`) with the version in `model_version`.
OUTPUT_SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
LEASE = "lease.json"
FOLDERS = (*TABLES, "runs", "models", "_scratch")  # what a run writes under the output root


def run_scratch(scratch_root: str, run_id: str) -> str:
    """A run's own scratch folder under a scratch root (removed when the run ends)."""
    return join(scratch_root, f"run={run_id}")


@dataclass(frozen=True)
class OutputLayout:
    """The output contract's paths under `root` (an output URL, or the path a filesystem gives for it)."""

    root: str
    scratch_root: str | None = None  # default: <root>/_scratch

    def partition(self, table: str, run_id: str) -> str:
        """`<table>/run=<run_id>`: one run's part files of a table."""
        return join(self.root, table, f"run={run_id}")

    def part(self, table: str, run_id: str, part: int | str = 0) -> str:
        """`<table>/run=<run_id>/part-<part>.parquet`: one part file of a run's table."""
        return join(self.partition(table, run_id), f"part-{part}.parquet")

    def runs(self) -> str:
        """`runs/`: the folder of every run's manifest and files."""
        return join(self.root, "runs")

    def run_dir(self, run_id: str) -> str:
        """`runs/<run_id>`: one run's folder."""
        return join(self.root, "runs", run_id)

    def manifest(self, run_id: str) -> str:
        """`runs/<run_id>/manifest.json`: the run's commit marker."""
        return join(self.run_dir(run_id), MANIFEST)

    def lease(self, run_id: str) -> str:
        """`runs/<run_id>/lease.json`: who holds the run id (lstm_core.lease)."""
        return join(self.run_dir(run_id), LEASE)

    def run_file(self, run_id: str, name: str) -> str:
        """A file of the run under `runs/<run_id>/`; `name` must be relative and not the manifest."""
        if name.startswith("/") or ".." in name.split("/") or name == MANIFEST:
            raise ValueError(f"run file name {name!r} must be a relative path other than the manifest")
        return join(self.run_dir(run_id), name)

    def models(self) -> str:
        """`models/`: the model store."""
        return join(self.root, "models")

    def study(self, name: str) -> str:
        """`tuning/study=<name>`: a tuning study's results."""
        return join(self.root, "tuning", f"study={name}")

    def scratch(self) -> str:
        """The scratch root: `scratch_root` if set, else `<root>/_scratch`."""
        return self.scratch_root or join(self.root, "_scratch")

    def run_scratch(self, run_id: str) -> str:
        """A run's own scratch folder, `run=<run_id>` under the scratch root."""
        return run_scratch(self.scratch(), run_id)
