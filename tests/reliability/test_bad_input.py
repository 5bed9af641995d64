"""Bad input through the whole flow (moto S3 + Prefect test server).

Dataset-level problems stop the run before anything is written, with a message naming the
file, column, series or row; series-level problems quarantine that series (quarantine/ and the
manifest, with the reason) while the rest are forecast; hostile series ids never reach a path
and come back unchanged; bad configuration is refused before any work.
"""
from __future__ import annotations

import re

import io
import json

import numpy as np
import pandas as pd
import pytest

from flows.batch_forecast import batch_forecast
from lstm_core.config import ConfigError
from lstm_core.errors import DataValidationError
from lstm_core.outputs import read_committed
from tests.conftest import make_frame
from tests.reliability.conftest import (FAST, FAST_FLAGS, H, assert_nothing_committed, cli_env, direct_fs,
                                        error_lines, keys_under, put_frame, read_parquet, run_cli)

pytestmark = pytest.mark.usefixtures("prefect_server")


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def _good(n: int = 3, length: int = 60) -> pd.DataFrame:
    return make_frame(n_series=n, length=length)


def _ds_strings(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.assign(ds=frame["ds"].dt.strftime("%Y-%m-%dT%H:%M:%S"))
    out.loc[65, "ds"] = "next tuesday"  # series s01, row 65
    return out


# Each case: objects to upload (relative key -> bytes or None for "nothing"), the input to read
# (relative), extra settings, and the message fragments expected.
DATASET_CASES = {
    "path does not exist": ({}, "in/nope.parquet", {}, ["in/nope.parquet", "input path does not exist"]),
    "empty folder": ({"in/folder/_SUCCESS": b""}, "in/folder", {}, ["in/folder", "dataset is empty"]),
    "dataset with no rows": ({"in/x.parquet": _parquet_bytes(_good().iloc[:0])}, "in/x.parquet", {},
                             ["in/x.parquet", "dataset has no rows"]),
    # found by a user: without `freq` this said 'cannot infer the frequency'
    "dataset with no rows, frequency inferred": ({"in/x.parquet": _parquet_bytes(_good().iloc[:0])}, "in/x.parquet",
                                                 {"freq": None}, ["in/x.parquet", "dataset has no rows"]),
    "not parquet": ({"in/x.parquet": b"series_id,ds,y\ns0,2026-01-01,1\n"}, "in/x.parquet", {},
                    ["in/x.parquet", "not a readable Parquet", "magic bytes"]),
    "truncated parquet": ({"in/x.parquet": _parquet_bytes(_good())[:700]}, "in/x.parquet", {},
                          ["in/x.parquet", "not a readable Parquet"]),
    "truncated file in a folder": ({"in/d/a.parquet": _parquet_bytes(_good()),
                                    "in/d/b.parquet": _parquet_bytes(_good())[:-30]}, "in/d", {},
                                   ["in/d/b.parquet", "not a readable Parquet file"]),
    "missing series_id": ({"in/x.parquet": _parquet_bytes(_good().drop(columns="series_id"))}, "in/x.parquet", {},
                          ["in/x.parquet", "column 'series_id'", "missing required column"]),
    "missing ds": ({"in/x.parquet": _parquet_bytes(_good().drop(columns="ds"))}, "in/x.parquet", {},
                   ["column 'ds'", "missing required column"]),
    "missing y": ({"in/x.parquet": _parquet_bytes(_good().drop(columns="y"))}, "in/x.parquet", {},
                  ["column 'y'", "missing required column"]),
    # numbers written as text read as numbers (issue 25); text that is no number names its row
    "y not numeric": ({"in/x.parquet": _parquet_bytes(_good().assign(y=lambda f: f["y"].round(2).astype(str)
                                                                     .where(f.index != 5, "#VALUE!")))},
                      "in/x.parquet", {}, ["column 'y'", "row 5: not a number: '#VALUE!'"]),
    "ds not a timestamp": ({"in/x.parquet": _parquet_bytes(_good().assign(ds=np.arange(180)))}, "in/x.parquet", {},
                           ["column 'ds'", "must be a timestamp, got int64"]),
    "ds strings that do not parse": ({"in/x.parquet": _parquet_bytes(_ds_strings(_good()))}, "in/x.parquet", {},
                                     ["column 'ds'", "series 's01'", "row 65", "not a timestamp: 'next tuesday'"]),
    "partitions disagree on a type": ({
        "in/p/region=a/part.parquet": _parquet_bytes(_good().iloc[:60]),
        "in/p/region=b/part.parquet": _parquet_bytes(_good().iloc[60:].assign(y=lambda f: f["y"].astype(str)))},
        "in/p", {}, ["partitions' schemas disagree", "region=a/part.parquet has y: double",
                     "region=b/part.parquet has y: ", "string", "column 'y'"]),
    "partition missing a column": ({
        "in/p/a.parquet": _parquet_bytes(_good().iloc[:60]),
        "in/p/b.parquet": _parquet_bytes(_good().iloc[60:].drop(columns="y"))},
        "in/p", {}, ["partitions' schemas disagree", "has column 'y'", "b.parquet does not"]),
    "frequency does not match the data": ({"in/x.parquet": _parquet_bytes(_good())}, "in/x.parquet", {"freq": "D"},
                                          ["frequency 'D' matches no series", "column 'ds'", "off the grid"]),
}


@pytest.mark.parametrize("case", list(DATASET_CASES))
def test_dataset_level_problem_stops_the_run_before_anything_is_written(case, s3_bucket, s3_endpoint):
    objects, rel, extra, fragments = DATASET_CASES[case]
    fs = direct_fs(s3_endpoint)
    for key, data in objects.items():
        fs.pipe_file(f"{s3_bucket}/{key}", data)
    out = f"{s3_bucket}/out"
    with pytest.raises(DataValidationError) as exc:
        batch_forecast(settings={**FAST, **extra, "input_url": f"{s3_bucket}/{rel}", "output_url": out,
                                 "run_id": "bad"})
    message = str(exc.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    manifest = assert_nothing_committed(fs, out, "bad")
    assert manifest["error"] == f"DataValidationError: {message}"
    assert read_committed(out, "predictions", {"endpoint_url": s3_endpoint}).empty


def test_compatible_partition_types_are_unified(s3_bucket, s3_endpoint):
    """int64 in one partition and float64 in another is not a disagreement: both read as float64."""
    from lstm_core.inputs import read_series

    fs = direct_fs(s3_endpoint)
    ints = _good().iloc[:60].assign(y=lambda f: f["y"].round().astype("int64"))
    put_frame(fs, f"{s3_bucket}/in/p/a.parquet", ints)
    put_frame(fs, f"{s3_bucket}/in/p/b.parquet", _good().iloc[60:])
    frame = read_series(f"{s3_bucket}/in/p")
    assert len(frame) == 180 and frame["y"].dtype == "float64"


# --- series level ------------------------------------------------------------------------------
LENGTH = 60
HOSTILE = ["../../etc", "a/b", "", "ü" * 300 + "/\u202e..\\x"]


def _series(sid: str, seed: int, length: int = LENGTH) -> pd.DataFrame:
    return make_frame(n_series=1, length=length, seed=seed).assign(series_id=sid)


def _bad_series() -> dict[str, tuple[pd.DataFrame, str, str]]:
    """series id -> (its rows, field, reason fragment)."""
    out = {}
    s = _series("dup", 1)
    out["dup"] = (pd.concat([s, s.iloc[[10]]]), "ds", "duplicate timestamp 2026-01-01 10:00:00")
    for sid, value, kind in (("nan", np.nan, "NaN"), ("pinf", np.inf, "+inf"), ("ninf", -np.inf, "-inf")):
        s = _series(sid, 2)
        s.loc[20, "y"] = value
        out[sid] = (s, "y", f"non-finite value {kind} at 2026-01-01 20:00:00")
    out["all-missing"] = (_series("all-missing", 4).assign(y=np.nan), "y", "all values missing")
    out["huge"] = (_series("huge", 6).assign(y=lambda f: f["y"] * 1e305), "y", "values too large to scale (overflow)")
    s = _series("gap", 7)
    out["gap"] = (s.drop(index=range(20, 26)), "ds", "gap of 6 missing steps before 2026-01-02 02:00:00")
    s = _series("offgrid", 8)
    s.loc[15, "ds"] += pd.Timedelta("20min")
    out["offgrid"] = (s, "ds", "off frequency 'h'")
    out["mixed-tz"] = (_series("mixed-tz", 9), "ds", "timestamps mix values with and without a UTC offset")
    s = _series("sentinel", 11)
    s["ds"] = s["ds"].astype(object)
    s.loc[12, "ds"] = "9999-12-31T00:00:00+00:00"  # a placeholder some systems write; only this series goes
    out["sentinel"] = (s, "ds", "is outside the range a run can represent")
    # A hostile id can be quarantined too: it must come back unchanged in quarantine/ and the manifest.
    s = _series("../quarantine/../../x", 10)
    s.loc[5, "y"] = np.inf
    out["../quarantine/../../x"] = (s, "y", "non-finite value +inf")
    return out


def _with_string_ds(frame: pd.DataFrame, sid_mixed: str) -> pd.DataFrame:
    """ds as ISO strings with offsets, which may change within a series (valid: the instants are clear);
    one series also has values without an offset (invalid: no one clock for it)."""
    strings = frame["ds"].map(lambda v: v if isinstance(v, str) else None)
    utc = pd.to_datetime(frame["ds"].where(strings.isna()), errors="coerce").dt.tz_localize("UTC")
    text = utc.dt.strftime("%Y-%m-%dT%H:%M:%S+00:00").where(strings.isna(), strings)
    odd = np.arange(len(frame)) % 2 == 1
    tokyo = odd & (frame["series_id"] == "good-1").to_numpy()
    text[tokyo] = utc[tokyo].dt.tz_convert("Asia/Tokyo").dt.strftime("%Y-%m-%dT%H:%M:%S%z")
    mixed = (frame["series_id"] == sid_mixed).to_numpy() & odd
    text[mixed] = utc[mixed].dt.strftime("%Y-%m-%dT%H:%M:%S")
    return frame.assign(ds=text)


@pytest.fixture(scope="module")
def series_level_run(s3_endpoint, prefect_server):
    """One run over good series (some with hostile ids) and one series per series-level problem."""
    fs = direct_fs(s3_endpoint)
    bucket = "series-level-run"
    fs.mkdir(bucket)
    good = [_series(sid, 20 + i) for i, sid in enumerate(["good-0", "good-1", *HOSTILE])]
    # too short for the network and constant: no data fault, a statistical fallback forecasts them (issue 22)
    good += [_series("short", 3, length=30), _series("constant", 5).assign(y=7.0)]
    bad = _bad_series()
    frame = pd.concat([*good, *(rows for rows, _, _ in bad.values())], ignore_index=True)
    frame = _with_string_ds(frame, "mixed-tz").astype({"series_id": "string"})
    put_frame(fs, f"s3://{bucket}/in/series.parquet", frame)
    out = f"s3://{bucket}/out"
    manifest = batch_forecast(settings={**FAST, "input_url": f"s3://{bucket}/in/series.parquet", "output_url": out,
                                        "run_id": "mixed"})
    return {"fs": fs, "out": out, "bucket": bucket, "manifest": manifest, "bad": bad,
            "good": ["good-0", "good-1", *HOSTILE, "short", "constant"]}


def test_series_level_problems_quarantine_only_those_series(series_level_run):
    r = series_level_run
    fs, out, manifest = r["fs"], r["out"], r["manifest"]
    assert manifest["status"] == "succeeded"
    stored = json.loads(fs.cat_file(f"{out}/runs/mixed/manifest.json"))
    assert stored["status"] == "succeeded"
    assert stored["counts"]["series_forecast"] == len(r["good"])
    assert stored["counts"]["series_skipped"] == len(r["bad"])
    preds = read_parquet(fs, f"{out}/predictions/run=mixed/part-0.parquet")
    assert sorted(preds["series_id"].unique()) == sorted(r["good"])
    assert len(preds) == len(r["good"]) * H and np.isfinite(preds["yhat"]).all()


@pytest.mark.parametrize("sid", list(_bad_series()))
def test_each_series_level_problem_is_in_quarantine_and_manifest_with_its_reason(series_level_run, sid):
    r = series_level_run
    _, field, fragment = r["bad"][sid]
    quarantine = read_parquet(r["fs"], f"{r['out']}/quarantine/run=mixed/part-0.parquet")
    rows = quarantine[quarantine["series_id"] == sid]
    assert len(rows) == 1, quarantine
    assert rows["field"].iloc[0] == field and fragment in rows["reason"].iloc[0], rows.to_dict("records")
    assert (quarantine["run_id"] == "mixed").all()
    listed = [s for s in r["manifest"]["skipped"] if s["series_id"] == sid]
    assert listed == [{"series_id": sid, "field": field, "reason": rows["reason"].iloc[0]}]


def test_hostile_series_ids_never_reach_a_path_and_come_back_unchanged(series_level_run):
    r = series_level_run
    fs, out = r["fs"], r["out"]
    preds = read_parquet(fs, f"{out}/predictions/run=mixed/part-0.parquet")
    metrics = read_parquet(fs, f"{out}/metrics/run=mixed/part-0.parquet")
    for sid in HOSTILE:
        assert (preds["series_id"] == sid).sum() == H, sid
        assert sorted(preds.loc[preds["series_id"] == sid, "step"]) == list(range(1, H + 1))
        run_rows = metrics[(metrics["series_id"] == sid) & metrics["backtest_window"].isna()]  # over all backtest windows
        # 4 metrics x 7 models: the LSTM, seasonal naive, AutoETS, AutoTheta, DynamicOptimizedTheta, naive and the
        # served forecast
        assert run_rows["metric"].isin(["mae", "rmse", "smape", "mase"]).sum() == 4 * 7, sid
    # Every object the run wrote is one of the contract's paths, under the output URL.
    allowed = ("predictions/run=mixed/part-0.parquet", "metrics/run=mixed/part-0.parquet",
               "quarantine/run=mixed/part-0.parquet", "backtest/run=mixed/part-0.parquet", "runs/mixed/manifest.json",
               "runs/mixed/plots/loss.png", "runs/mixed/plots/holdout.png", "runs/mixed/plots/error_distribution.png",
               "runs/mixed/plots/forecast_intervals.png", "runs/mixed/plots/backtest.png")
    bucket = r["bucket"]
    keys = keys_under(fs, f"s3://{bucket}")
    for key in keys:
        rel = key.removeprefix(f"{bucket}/")
        assert rel == "in/series.parquet" or rel.removeprefix("out/") in allowed or \
            rel.startswith("out/models/"), key
        assert "etc" not in rel and "\u202e" not in rel and "ü" not in rel, key
    models = [k for k in keys if "/models/" in k]
    assert models and all(re.fullmatch(r"member-\d+\.keras|scaler\.json|metadata\.json|intervals\.json", k.rsplit("/", 1)[-1])
                          for k in models)


# --- configuration ------------------------------------------------------------------------------
@pytest.mark.parametrize("settings, fragment", [
    ({"nonsense": 1}, "setting 'nonsense': unknown setting"),
    ({"training": {"epochs": 3, "learning_rte": 0.1}}, "setting 'training.learning_rte': unknown setting"),
    ({"horizon": 0}, "setting 'horizon'"),
    ({"horizon": -3}, "setting 'horizon'"),
    ({"window": 1}, "setting 'window'"),
    ({"freq": "fortnightly"}, "setting 'freq': Value error, unknown pandas frequency 'fortnightly'"),
    ({"lease_ttl": 0}, "setting 'lease_ttl'"),
])
def test_bad_configuration_is_refused_before_any_work(settings, fragment, s3_bucket, s3_endpoint):
    fs = direct_fs(s3_endpoint)
    put_frame(fs, f"{s3_bucket}/in/x.parquet", _good())
    with pytest.raises(ConfigError) as exc:
        batch_forecast(settings={**FAST, "input_url": f"{s3_bucket}/in/x.parquet", "output_url": f"{s3_bucket}/out",
                                 **settings})
    assert fragment in str(exc.value) and "\n" not in str(exc.value)
    assert keys_under(fs, f"{s3_bucket}/out") == []


# --- on the command line: one line, no traceback ------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("case", ["truncated parquet", "partitions disagree on a type"])
def test_cli_reports_a_dataset_problem_in_one_line(case, s3_bucket, s3_endpoint, prefect_api_url):
    objects, rel, extra, fragments = DATASET_CASES[case]
    fs = direct_fs(s3_endpoint)
    for key, data in objects.items():
        fs.pipe_file(f"{s3_bucket}/{key}", data)
    out = run_cli("run", "--input", f"{s3_bucket}/{rel}", "--output", f"{s3_bucket}/out", *FAST_FLAGS,
                  "--set", "run_id=cli-bad", env=cli_env(prefect_api_url))
    assert out.returncode == 2, out.stderr[-3000:]
    lines = error_lines(out.stderr)
    assert len(lines) == 1, out.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
    # The CLI checks the input (listing, first file's schema) before a run starts: a first file that is not
    # readable is refused like a bad setting, with no run and no manifest; other problems fail the run.
    refused_early = case == "truncated parquet"
    assert_nothing_committed(fs, f"{s3_bucket}/out", "cli-bad", manifest="absent" if refused_early else "failed")
