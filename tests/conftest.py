"""Shared fixtures: a real S3-speaking server (moto) on loopback, a Prefect test server, small data."""
from __future__ import annotations

import os
import socket
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Under pytest-xdist (`-n auto`, pyproject's addopts) the workers share the cores: each worker's TensorFlow and
# BLAS get its share of them, as flows.cluster.worker_env does for Dask workers, or N workers each running N
# threads oversubscribe the machine and every step waits on the others. Set before anything imports
# TensorFlow; the CLI subprocesses a test starts inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    _per_worker = str(max(1, (os.cpu_count() or 1) // max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))))
    for _name, _value in (("TF_NUM_INTRAOP_THREADS", _per_worker), ("TF_NUM_INTEROP_THREADS", "1"),
                          ("OMP_NUM_THREADS", _per_worker)):
        os.environ.setdefault(_name, _value)

import numpy as np
import pandas as pd
import pytest

from lstm_core.config import ForecastConfig


SHARED = Path(__file__).resolve().parents[2] / "shared"  # the shared data sets, beside the clone


def in_ci() -> bool:
    """CI sets CI=true (most CI systems do); there a missing data set is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def shared_path(*parts: str, root: Path | None = None) -> Path:
    """A path under `../shared` that a test needs: skipped locally when it is missing, a failure in CI."""
    path = (root or SHARED).joinpath(*parts)
    if not path.exists():
        message = f"{path} is missing: the shared data sets must sit beside the clone ({root or SHARED})"
        if in_ci():
            pytest.fail(f"{message}; CI=true, so this test fails instead of skipping", pytrace=False)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on 127.0.0.1, as s3fs's own test suite uses; AWS_* point at it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                             "AWS_ENDPOINT_URL")}
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint})
    yield endpoint
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_endpoint, request):
    """A fresh, empty bucket per test; returns its s3:// URL."""
    import s3fs

    name = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-") + \
        f"-{os.getpid() % 1000}-{np.random.default_rng().integers(1e6)}"
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    fs.mkdir(name)
    yield f"s3://{name}"
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def prefect_server():
    """A real (temporary) Prefect API for flow runs."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_api_url(prefect_server) -> str:
    """The Prefect test server's API URL, for CLI subprocesses (no temporary server per process)."""
    import prefect.settings

    return prefect.settings.PREFECT_API_URL.value()


def make_frame(n_series: int = 6, length: int = 160, freq: str = "h", season: int = 24, seed: int = 0,
               start: str = "2026-01-01") -> pd.DataFrame:
    """Seasonal series with trend and noise at different levels, long format."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    frames = []
    for i in range(n_series):
        level = 10.0 * (i + 1)
        y = level + 0.3 * level * np.sin(2 * np.pi * t / season + i) + 0.01 * level * t / season \
            + rng.normal(0, 0.03 * level, length)
        frames.append(pd.DataFrame({"series_id": f"s{i:02d}", "ds": pd.date_range(start, periods=length, freq=freq),
                                    "y": y}))
    out = pd.concat(frames, ignore_index=True)
    out["series_id"] = out["series_id"].astype("string")
    return out


@pytest.fixture
def frame() -> pd.DataFrame:
    return make_frame()


def fast_config(**overrides) -> ForecastConfig:
    """A configuration that trains in seconds on 2 CPU cores."""
    base = {
        "freq": "h", "horizon": 12, "season_length": 24, "window": 24,
        "model": {"units": [8]},
        "training": {"epochs": 3, "patience": 2, "windows_per_series": 16, "batch_size": 64, "snapshots": 1},
    }
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return ForecastConfig.model_validate(base)


def prepare(df: pd.DataFrame, cfg: ForecastConfig, **kw):
    """(panel, validation result) of a long frame: the product's validate_for, then panel_of (its frequency
    inferred when the configuration leaves it unset), as prepare_data does before windowing."""
    from lstm_core.engine import panel_of
    from lstm_core.validation import validate_for

    result = validate_for(df, cfg, **kw)
    return panel_of(result, cfg), result


class Holdout:
    """Today's holdout as the product scores it: the backtest's one window of step H (the last H points of
    each series, forecast from what precedes them), for the LSTM and seasonal naive."""

    def __init__(self, forecaster, panel, cfg: ForecastConfig, model_name: str = "lstm") -> None:
        from lstm_core.backtest import backtest

        if not cfg.is_resolved:
            cfg = cfg.resolved(panel.freq)
        h = cfg.horizon
        bt = backtest(panel, forecaster.forecast, horizon=h, season_length=cfg.season_length, windows=1, levels=())
        f = bt.frame
        self.actual = f["y"].to_numpy().reshape(-1, h)  # (S, H)
        self.forecasts = {model_name: f["yhat"].to_numpy().reshape(-1, h),
                          "seasonal_naive": f["seasonal_naive"].to_numpy().reshape(-1, h)}
        self.metrics = bt.metrics(model_name)

    def overall(self, model: str, metric: str) -> float:
        m = self.metrics
        row = m[(m["model"] == model) & (m["metric"] == metric) & m["series_id"].isna() & m["window"].isna()]
        return float(row["value"].iloc[0])


def pytest_collection_modifyitems(config, items) -> None:
    """Under xdist, files holding a `slow` (end-to-end) test go first, each file's tests kept together and in
    order. `--dist loadfile` hands files out in collection order, so the longest start early and the short
    unit-test files fill in at the end instead of a worker running an end-to-end file alone at the tail.
    In one process (`-n 0`) the order is left as collected."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    heavy = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.path not in heavy)  # stable: the order within each group is kept
