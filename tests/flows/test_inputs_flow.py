"""Issue 12 through the flow (moto S3 + Prefect test server) and the CLI: covariates declared by role,
inputs as users have them, defaults from the frequency, exit codes, and finding a model again."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import numpy as np
import pandas as pd
import pytest
import s3fs

from flows.batch_forecast import batch_forecast
from lstm_core.errors import ArtifactError, DataValidationError, NoValidSeriesError
from tests.conftest import make_frame

pytestmark = pytest.mark.usefixtures("prefect_server")

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).with_name("lstm-forecast"))
H = 12
FAST = {
    "freq": "h", "horizon": H, "season_length": 24, "window": 24,
    "model": {"units": [8]},
    "training": {"epochs": 3, "patience": 2, "windows_per_series": 16, "batch_size": 64, "snapshots": 1},
}


def _fs(endpoint: str) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True, use_listings_cache=False)


def _put(fs, url: str, frame: pd.DataFrame, kind: str = "parquet", **kw) -> str:
    buf = io.BytesIO()
    if kind == "csv":
        buf.write(frame.to_csv(index=False).encode())
    else:
        frame.to_parquet(buf, **({"index": False} | kw))
    fs.pipe_file(url, buf.getvalue())
    return url


def _read(fs, url: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(fs.cat_file(url)))


def _preds(fs, out: str, run_id: str) -> pd.DataFrame:
    p = _read(fs, f"{out}/predictions/run={run_id}/part-0.parquet")
    return p.sort_values(["series_id", "step"]).reset_index(drop=True)


def _logs(flow_run_id: str, needle: str, timeout: float = 60) -> list[str]:
    """Messages of a flow run's logs (from the Prefect API) that contain `needle`; waits for the log batches."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)])))
        found = [log.message for log in logs if needle in log.message]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(1)


# --- known future covariates --------------------------------------------------------------------
EFFECT = 8.0
PROMO = {**FAST, "future_covariates": ["promo"], "model": {"units": [32]},
         # a small, fast training needs a larger step to learn the effect in its 150 batches
         "training": {"epochs": 25, "patience": 6, "windows_per_series": 64, "batch_size": 64, "snapshots": 1,
                      "learning_rate": 0.01}}


def promo_panel(future_promo: float, n: int = 6, length: int = 200, seed: int = 1) -> pd.DataFrame:
    """y = base + EFFECT x promo (+ noise); promo on at random 30% of the hours; H future rows per series
    with y empty and promo = `future_promo`. Series s5 has only H - 3 future rows; two undeclared columns."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        t = np.arange(length)
        promo = (rng.random(length) < 0.3).astype(float)
        y = 20 + 3 * np.sin(2 * np.pi * t / 24 + i) + EFFECT * promo + rng.normal(0, 0.3, length)
        steps = H - 3 if i == n - 1 else H
        ds = pd.date_range("2026-01-01", periods=length + steps, freq="h")
        frames.append(pd.DataFrame({
            "series_id": f"s{i}", "ds": ds, "y": np.r_[y, np.full(steps, np.nan)],
            "promo": np.r_[promo, np.full(steps, future_promo)], "note": "free text", "noise": rng.random(length + steps),
        }))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def promo_runs(s3_endpoint, prefect_server):
    fs = _fs(s3_endpoint)
    bucket = "issue12-promo"
    fs.mkdir(bucket)
    out = f"s3://{bucket}/out"
    runs = {}
    for name, value in (("on", 1.0), ("off", 0.0)):
        url = _put(fs, f"s3://{bucket}/in/{name}.parquet", promo_panel(value))
        runs[name] = batch_forecast(settings={**PROMO, "input_url": url, "output_url": out, "run_id": f"promo-{name}"})
    return fs, out, runs


def test_future_covariates_change_the_published_forecast_in_the_right_direction(promo_runs):
    fs, out, runs = promo_runs
    assert runs["on"]["retrain"]["action"] == "train"
    assert runs["off"]["retrain"]["action"] == "load"  # the same model: only the future promo differs
    assert runs["off"]["model_version"] == runs["on"]["model_version"]
    on, off = _preds(fs, out, "promo-on"), _preds(fs, out, "promo-off")
    assert (on[["series_id", "step", "ds"]] == off[["series_id", "step", "ds"]]).all().all()
    diff = on["yhat"].to_numpy() - off["yhat"].to_numpy()
    assert (diff > 0).all(), diff  # every series, every step: promo raises the forecast
    assert diff.mean() > EFFECT / 4, diff.mean()
    # the holdout used the true promo values of the last H points: the same in both runs
    m_on = _read(fs, f"{out}/metrics/run=promo-on/part-0.parquet")
    m_off = _read(fs, f"{out}/metrics/run=promo-off/part-0.parquet")
    pd.testing.assert_frame_equal(m_on.drop(columns="run_id"), m_off.drop(columns="run_id"))


def test_a_series_missing_future_values_is_quarantined_with_the_reason(promo_runs):
    fs, out, runs = promo_runs
    quarantine = _read(fs, f"{out}/quarantine/run=promo-on/part-0.parquet")
    assert quarantine["series_id"].tolist() == ["s5"] and quarantine["field"].tolist() == ["promo"]
    assert f"no value for step {H - 2} of {H}" in quarantine["reason"].iloc[0]
    assert runs["on"]["counts"]["series_forecast"] == 5 and runs["on"]["skipped"][0]["series_id"] == "s5"
    assert "s5" not in set(_preds(fs, out, "promo-on")["series_id"])


def test_undeclared_columns_are_ignored_and_named_in_the_log(promo_runs):
    _, _, runs = promo_runs
    manifest = runs["on"]
    assert manifest["ignored_columns"] == ["note", "noise"]
    lines = _logs(manifest["flow_run_id"], "ignoring input columns")
    assert len(lines) == 1 and "note, noise" in lines[0], lines
    model = manifest["models"][0]
    assert model["model_key"] and "promo" in json.dumps(manifest["config"]["future_covariates"])


# --- inputs as they come: CSV, other names, the default frequency -----------------------------
@pytest.fixture(scope="module")
def input_runs(s3_endpoint, prefect_server):
    """The same panel as Parquet, as CSV, and as Parquet with other column names, into one output: the first
    run trains, the others load its model (the input's format and names are not part of the model), so the
    predictions can differ only by what was read."""
    fs = _fs(s3_endpoint)
    bucket = "issue12-inputs"
    fs.mkdir(bucket)
    frame = make_frame(n_series=4, length=100)
    urls = {
        "parquet": _put(fs, f"s3://{bucket}/in/series.parquet", frame),
        "csv": _put(fs, f"s3://{bucket}/in/series.csv", frame, "csv"),
        "renamed": _put(fs, f"s3://{bucket}/in/renamed.parquet",
                        frame.rename(columns={"series_id": "store", "ds": "hour", "y": "sales"})),
    }
    extra = {"renamed": {"id_column": "store", "time_column": "hour", "target_column": "sales"}}
    manifests = {}
    for name, url in urls.items():
        manifests[name] = batch_forecast(settings={**FAST, **extra.get(name, {}), "input_url": url,
                                                   "output_url": f"s3://{bucket}/out", "run_id": name})
    return fs, bucket, manifests


def test_csv_and_renamed_columns_give_the_same_predictions_as_parquet(input_runs):
    fs, bucket, manifests = input_runs
    base = _preds(fs, f"s3://{bucket}/out", "parquet")
    assert len(base) == 4 * H and manifests["parquet"]["retrain"]["action"] == "train"
    for name in ("csv", "renamed"):
        assert manifests[name]["status"] == "succeeded" and manifests[name]["retrain"]["action"] == "load"
        assert manifests[name]["input_fingerprint"] == manifests["parquet"]["input_fingerprint"]  # the same panel
        got = _preds(fs, f"s3://{bucket}/out", name)
        assert list(got.columns) == list(base.columns)  # output columns keep the standard names
        pd.testing.assert_frame_equal(got.drop(columns=["run_id"]), base.drop(columns=["run_id"]))


def test_a_pinned_model_version_is_used(input_runs):
    fs, bucket, manifests = input_runs
    version = manifests["parquet"]["model_version"]
    # other training settings would retrain under 'auto'; the pin loads the named version anyway
    settings = {**FAST, "training": {**FAST["training"], "snapshots": 2}, "horizon": 6,
                "input_url": f"s3://{bucket}/in/series.parquet", "output_url": f"s3://{bucket}/out",
                "model_version": version, "run_id": "pinned"}
    manifest = batch_forecast(settings=settings)
    assert manifest["model_version"] == version and manifest["retrain"]["action"] == "load"
    assert manifest["model_key"] == manifests["parquet"]["model_key"]  # where the pinned version was saved
    assert f"pinned model_version {version}" in manifest["retrain"]["reason"]
    preds = _preds(fs, f"s3://{bucket}/out", "pinned")
    assert len(preds) == 4 * 6 and (preds["model_version"] == version).all()


def test_never_without_a_match_names_the_saved_key_and_the_setting_that_differs(input_runs):
    _, bucket, manifests = input_runs
    with pytest.raises(ArtifactError) as exc:
        batch_forecast(settings={**FAST, "model": {"units": [6]}, "retrain": "never",
                                 "input_url": f"s3://{bucket}/in/series.parquet",
                                 "output_url": f"s3://{bucket}/out", "run_id": "never"})
    message = str(exc.value)
    assert manifests["parquet"]["model_key"] in message and "model.units: saved [8], requested [6]" in message


def test_a_daily_panel_without_freq_or_season_is_inferred_and_uses_7(s3_bucket, s3_endpoint):
    fs = _fs(s3_endpoint)
    url = _put(fs, f"{s3_bucket}/in/daily.parquet", make_frame(n_series=3, length=120, freq="D", season=7))
    settings = {k: v for k, v in FAST.items() if k not in ("freq", "season_length", "window")}
    manifest = batch_forecast(settings={**settings, "horizon": 14, "input_url": url,
                                        "output_url": f"{s3_bucket}/out", "run_id": "daily"})
    assert manifest["status"] == "succeeded"
    assert manifest["config"]["freq"] == "D" and manifest["config"]["season_length"] == 7
    # three horizons of 14 days in patches of 7 (the chunk)
    assert manifest["config"]["window"] == 42 and manifest["frequency"]["source"] == "inferred"
    preds = _preds(fs, f"{s3_bucket}/out", "daily")
    assert len(preds) == 3 * 14 and (preds.groupby("series_id")["ds"].diff().dropna() == pd.Timedelta("1D")).all()


def test_mixed_encodings_read_the_same_sharded_or_not(s3_bucket, s3_endpoint):
    """Files as different tools write them: y int64 in one, float64 in another, ds as the pandas index in a
    third, one series with a 9999-12-31 placeholder; shard_size=2 splits them into shards."""
    fs = _fs(s3_endpoint)
    frame = make_frame(n_series=6, length=80)
    parts = [g.reset_index(drop=True) for _, g in frame.groupby("series_id")]
    _put(fs, f"{s3_bucket}/in/p/a.parquet", pd.concat(parts[:2]).assign(y=lambda f: f["y"].round().astype("int64")))
    _put(fs, f"{s3_bucket}/in/p/b.parquet", pd.concat(parts[2:4]).assign(y=lambda f: f["y"] + 0.5))
    last = pd.concat(parts[4:]).assign(ds=lambda f: f["ds"].astype("datetime64[us]")).reset_index(drop=True)
    last.loc[3, "ds"] = pd.Timestamp("9999-12-31")  # series s04
    _put(fs, f"{s3_bucket}/in/p/c.parquet", last.set_index("ds"), index=True)
    results = {}
    for name, shard_size in (("whole", 5000), ("sharded", 2)):  # the sharded run loads the whole run's model
        results[name] = batch_forecast(settings={**FAST, "shard_size": shard_size, "input_url": f"{s3_bucket}/in/p",
                                                 "output_url": f"{s3_bucket}/o", "run_id": name})
    assert results["sharded"]["shards"]["count"] > 1 and results["whole"]["shards"]["count"] == 1
    assert results["sharded"]["retrain"]["action"] == "load"
    for manifest in results.values():
        assert manifest["counts"]["series_forecast"] == 5
        (skipped,) = manifest["skipped"]
        assert skipped["series_id"] == "s04" and skipped["field"] == "ds" and "9999-12-31" in skipped["reason"]
    from lstm_core.outputs import read_committed

    preds = read_committed(f"{s3_bucket}/o", "predictions")
    whole = preds[preds["run_id"] == "whole"].sort_values(["series_id", "step"])
    sharded = preds[preds["run_id"] == "sharded"].sort_values(["series_id", "step"])
    np.testing.assert_array_equal(whole["yhat"].to_numpy(), sharded["yhat"].to_numpy())


# --- exit codes and failed runs ------------------------------------------------------------
def test_the_issues_short_series_are_forecast_as_validation_accepts_them(s3_bucket, s3_endpoint):
    """The issue's case: 3 series x 90 hourly points, H 24, season 24. Validation and training apply one rule
    (a patch of history + a chunk + validation + horizon = 12 + 12 + 24 + 24 = 72 points; shorter windows are
    padded at the front), so what validation accepts is trained on and forecast."""
    fs = _fs(s3_endpoint)
    url = _put(fs, f"{s3_bucket}/in/short.parquet", make_frame(n_series=3, length=90))
    settings = {**FAST, "horizon": 24, "window": None, "input_url": url, "output_url": f"{s3_bucket}/out",
                "run_id": "short90"}
    manifest = batch_forecast(settings=settings)
    assert manifest["status"] == "succeeded" and manifest["counts"]["series_forecast"] == 3
    assert manifest["config"]["window"] == 168 and manifest["skipped"] == []


def test_series_all_too_short_for_the_network_are_served_by_the_statistical_fallback(s3_bucket, s3_endpoint):
    """3 series x 10 hourly points, H 24: fewer than the network needs to learn a series (an input patch and
    a chunk of targets), so it trains on none; every series is still forecast, by a named statistical model."""
    fs = _fs(s3_endpoint)
    url = _put(fs, f"{s3_bucket}/in/short.parquet", make_frame(n_series=3, length=10))
    settings = {**FAST, "horizon": 24, "window": None, "input_url": url, "output_url": f"{s3_bucket}/out",
                "run_id": "tooshort"}
    manifest = batch_forecast(settings=settings)
    assert manifest["status"] == "succeeded" and manifest["skipped"] == []
    assert manifest["counts"]["series_forecast"] == 3 and manifest["models"] == []
    assert sum(manifest["counts"]["series_by_model"].values()) == 3
    assert not any("lstm" in k for k in manifest["counts"]["series_by_model"])
    preds = _preds(fs, f"{s3_bucket}/out", "tooshort")
    assert len(preds) == 3 * 24 and np.isfinite(preds["yhat"]).all() and preds["model"].notna().all()
    # no series has a backtest window to calibrate on: a random walk's spread, never a bound on the forecast
    assert np.isfinite(preds[["yhat_lo_95", "yhat_lo_80", "yhat_hi_80", "yhat_hi_95"]].to_numpy()).all()
    assert (preds["yhat_lo_95"] < preds["yhat_lo_80"]).all() and (preds["yhat_lo_80"] < preds["yhat"]).all()
    assert (preds["yhat"] < preds["yhat_hi_80"]).all() and (preds["yhat_hi_80"] < preds["yhat_hi_95"]).all()


def test_no_valid_series_fails_with_the_reasons_and_a_quarantine_table(s3_bucket, s3_endpoint):
    """3 series whose every value is missing: a data fault, so nothing is left to forecast."""
    fs = _fs(s3_endpoint)
    url = _put(fs, f"{s3_bucket}/in/short.parquet", make_frame(n_series=3, length=60).assign(y=np.nan))
    settings = {**FAST, "horizon": 24, "window": None, "input_url": url, "output_url": f"{s3_bucket}/out",
                "run_id": "short"}
    with pytest.raises(NoValidSeriesError) as exc:
        batch_forecast(settings=settings)
    assert "all 3 were skipped" in str(exc.value)
    assert "all values missing" in str(exc.value)
    manifest = json.loads(fs.cat_file(f"{s3_bucket}/out/runs/short/manifest.json"))
    assert manifest["status"] == "failed" and manifest["error"].startswith("NoValidSeriesError")
    assert [s["series_id"] for s in manifest["skipped"]] == ["s00", "s01", "s02"]
    assert all("all values missing" in s["reason"] for s in manifest["skipped"])
    quarantine = _read(fs, f"{s3_bucket}/out/quarantine/run=short/part-0.parquet")
    assert sorted(quarantine["series_id"]) == ["s00", "s01", "s02"] and (quarantine["field"] == "y").all()
    assert not fs.exists(f"{s3_bucket}/out/predictions/run=short")
    # The failed flow run carries the reason as a markdown artifact (its on_failure hook).
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    from tasks.reporting import FAILURE_KEY

    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[FAILURE_KEY])),
                                           sort=ArtifactSort.CREATED_DESC, limit=1)
        flow_run = client.read_flow_run(artifact.flow_run_id)
    assert flow_run.state.is_failed() and flow_run.parameters["settings"]["run_id"] == "short"
    assert "# Run failed" in artifact.data and "NoValidSeriesError" in artifact.data
    assert "all 3 were skipped" in artifact.data


def test_a_wrong_freq_names_a_series_and_the_frequency_the_data_have(s3_bucket, s3_endpoint):
    fs = _fs(s3_endpoint)
    url = _put(fs, f"{s3_bucket}/in/daily.parquet", make_frame(n_series=2, length=100, freq="D"))
    with pytest.raises(DataValidationError) as exc:
        batch_forecast(settings={**FAST, "input_url": url, "output_url": f"{s3_bucket}/out", "run_id": "wrong"})
    assert "frequency 'h' matches no series: series 's00' appears to be 'D'" in str(exc.value)


# --- on the command line -------------------------------------------------------------------
@pytest.fixture(scope="module")
def prefect_api_url(prefect_server) -> str:
    import prefect.settings

    return prefect.settings.PREFECT_API_URL.value()


def _cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full.pop("LSTM_FORECAST_DEBUG", None)
    return subprocess.run([CLI, *args], env=full, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("lstm-forecast: error:")]


def test_a_missing_input_exits_2_before_tensorflow_is_imported(tmp_path):
    """Measured as 'TensorFlow not in sys.modules when the error is raised', not with a timer."""
    code = ("import sys\n"
            "from flows.cli import main\n"
            f"rc = main(['run', '--input', {str(tmp_path / 'nope.parquet')!r}, '--output', {str(tmp_path / 'out')!r}])\n"
            "print('tensorflow loaded:', 'tensorflow' in sys.modules, 'prefect server:',"
            " 'prefect.server.api.server' in sys.modules)\n"
            "sys.exit(rc)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PREFECT_API_URL": ""})
    assert out.returncode == 2, out.stderr[-2000:]
    assert "tensorflow loaded: False prefect server: False" in out.stdout
    lines = _error_lines(out.stderr)
    assert len(lines) == 1 and "nope.parquet" in lines[0] and "input path does not exist" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_wrong_freq_exits_2_with_the_inferred_frequency(tmp_path, prefect_api_url):
    make_frame(n_series=2, length=100, freq="D").to_parquet(tmp_path / "daily.parquet", index=False)
    out = _cli("run", "--input", str(tmp_path / "daily.parquet"), "--output", str(tmp_path / "out"),
               "--freq", "h", "--horizon", "12", env={"PREFECT_API_URL": prefect_api_url})
    assert out.returncode == 2, out.stderr[-3000:]
    lines = _error_lines(out.stderr)
    assert len(lines) == 1 and "series 's00' appears to be 'D'" in lines[0], out.stderr[-3000:]
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_cli_temporary_api_that_does_not_start_is_said_plainly(tmp_path):
    """Prefect's wait for its temporary API, set to 0 s here to fail for certain, is reported in one line."""
    make_frame(n_series=2, length=80).to_parquet(tmp_path / "in.parquet", index=False)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update({"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "0", "PREFECT_HOME": str(tmp_path / "home")})
    out = subprocess.run([CLI, "run", "--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out"),
                          "--freq", "h", "--horizon", "12"], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 2, out.stderr[-3000:]
    lines = _error_lines(out.stderr)
    assert len(lines) == 1 and "temporary local Prefect API did not start within 0 s" in lines[0]
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in lines[0]


def test_the_temporary_api_waits_longer_than_prefects_default():
    code = ("import flows, prefect.settings as s\n"
            "print(s.PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())\n")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip().splitlines()[-1]) == 120


# --- issue 25: a daily CSV as users write it, and a zone no reader could name ---------------------------
@pytest.mark.slow
def test_daily_csv_in_a_fixed_offset_commits_outputs_every_reader_takes_and_realised_accuracy_follows(tmp_path):
    """`store,date,sales` with dates `2023-01-02T00:00:00+05:30` as CSV text, then as the Parquet column in the
    fixed offset +05:30 that pandas makes of them: predictions, backtest and metrics read back with
    pd.read_parquet, their dates are local midnights continuing each series' days, and the later run
    scores the first one (realised accuracy not skipped)."""
    frame = make_frame(n_series=3, length=90, freq="D", season=7, start="2023-01-02")
    data = pd.DataFrame({"store": frame["series_id"].str.replace("s", "0"),  # '000', '001', '002'
                         "date": frame["ds"].dt.strftime("%Y-%m-%dT00:00:00+05:30"), "sales": frame["y"].round(3)})
    early = data.groupby("store").head(76)
    early.to_csv(tmp_path / "early.csv", index=False)
    # the later input as pandas makes it of those strings: a Parquet column in the fixed offset +05:30
    parsed = data.assign(date=pd.to_datetime(data["date"]))
    assert str(parsed["date"].dt.tz) == "UTC+05:30"
    parsed.to_parquet(tmp_path / "late.parquet", index=False)
    settings = {k: v for k, v in FAST.items() if k not in ("freq", "season_length", "window")}
    common = {**settings, "horizon": 14, "output_url": str(tmp_path / "out"), "id_column": "store",
              "time_column": "date", "target_column": "sales"}
    first = batch_forecast(settings={**common, "input_url": str(tmp_path / "early.csv"), "run_id": "early"})
    assert first["status"] == "succeeded" and first["config"]["freq"] == "D"
    out = tmp_path / "out"
    for table in ("predictions", "backtest", "metrics"):
        read = pd.read_parquet(out / table / "run=early")  # no UnknownTimeZoneError
        assert len(read)
    preds = pd.read_parquet(out / "predictions" / "run=early").sort_values(["series_id", "ds"])
    assert sorted(preds["series_id"].unique()) == ["000", "001", "002"]
    assert getattr(preds["ds"].dt, "tz", None) is None  # the data's wall clock, written without a zone
    assert list(preds.loc[preds["series_id"] == "000", "ds"]) == list(pd.date_range("2023-03-19", periods=14))
    second = batch_forecast(settings={**common, "input_url": str(tmp_path / "late.parquet"), "run_id": "late",
                                      "retrain": "never"})
    assert second["status"] == "succeeded"
    for table in ("predictions", "backtest", "metrics"):
        assert getattr(pd.read_parquet(out / table / "run=late")["cutoff"].dt, "tz", None) is None
    realised = pd.read_parquet(out / "realised" / "run=late")
    assert set(realised["forecast_run_id"]) == {"early"} and realised["value"].notna().any()
