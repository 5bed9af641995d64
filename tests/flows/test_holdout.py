"""The holdout, checked from outside the model code: through the flow, its saved model and its metrics.

README (What a run does): the holdout is the last `horizon` points of each series; training uses
per-series scaling fitted on the training part only; the holdout forecast runs from T - H;
evaluate scores it and seasonal naive (MAE, RMSE, sMAPE, MASE). So two inputs that differ only in
their last H points must give the same saved scaler, the same weights and the same holdout
forecasts. The reference forecast here is computed by hand from the saved artifact (the members,
`scaler.json`, `metadata.json`): scaling, windowing, recursion and unscaling are this file's own.
"""
from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

import lstm_core.model  # noqa: F401 - registers the custom layer for loading the saved members
from flows.batch_forecast import batch_forecast
from tests.conftest import make_frame

pytestmark = pytest.mark.usefixtures("prefect_server")

H, M = 12, 24
SETTINGS = {
    "freq": "h", "horizon": H, "season_length": M, "window": 24, "target_transform": "none",
    "retrain": "always", "model": {"units": [8], "deseasonalize": "off"},
    "backtest": {"windows": 1},  # one backtest window of step H is the holdout these tests check by hand
    "training": {"epochs": 3, "patience": 2, "windows_per_series": 16, "batch_size": 64, "snapshots": 1},
}


# --- by hand ---------------------------------------------------------------------------------
def _model_dir(out: Path, manifest: dict) -> Path:
    return out / "models" / manifest["model_key"] / manifest["model_version"]


def reference_holdout(model_dir: Path, frame: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """(series ids, (S, H) holdout forecasts) made by hand from a saved model and the input frame.

    The network sees each series' training part (all but its last H observed points) scaled with the
    saved per-series loc/scale (z = (v - loc) / scale, covariates alike), the last `window` steps of it.
    Each call forecasts a chunk; the chunk is fed back with the known-ahead covariates of its steps, scaled
    the same way (they are also the model's second input), historic ones carried; members' trajectories
    are averaged and unscaled.
    """
    meta = json.loads((model_dir / "metadata.json").read_text())
    scaler = json.loads((model_dir / "scaler.json").read_text())
    members = [keras.saving.load_model(model_dir / f"member-{i}.keras", compile=False, safe_mode=True)
               for i in range(meta["members"])]
    features, window, known = meta["feature_names"], meta["window"], list(meta["known"])
    ids = scaler["series_ids"]
    loc = np.asarray(scaler["loc"], dtype=np.float64).reshape(len(ids), -1)
    scale = np.asarray(scaler["scale"], dtype=np.float64).reshape(len(ids), -1)
    history, future = [], []
    for i, sid in enumerate(ids):
        rows = frame[(frame["series_id"] == sid) & frame["y"].notna()].sort_values("ds")
        z = (rows[features].to_numpy(np.float64) - loc[i]) / scale[i]
        history.append(z[:-H][-window:])
        future.append(z[-H:][:, known])
    x0, fut = np.asarray(history, np.float32), np.asarray(future, np.float32)
    trajectories = []
    for member in members:
        chunk = member.output_shape[-1]
        n_steps = -(-H // chunk)
        ahead_all = np.concatenate([fut, np.repeat(fut[:, -1:], n_steps * chunk - H, axis=1)], axis=1)
        x, steps = x0, []
        for j in range(n_steps):
            ahead = ahead_all[:, j * chunk:(j + 1) * chunk]
            inputs = [x, ahead] if len(member.inputs) > 1 else x
            yhat = np.asarray(member(inputs, training=False), dtype=np.float32)  # (S, chunk)
            steps.append(yhat)
            rows = np.repeat(x[:, -1:, :], chunk, axis=1)
            rows[:, :, 0] = yhat
            rows[:, :, known] = ahead
            x = np.concatenate([x, rows], axis=1)[:, -window:]
        trajectories.append(np.concatenate(steps, axis=1)[:, :H])
    z = np.mean(trajectories, axis=0).astype(np.float64)
    return ids, z * scale[:, :1] + loc[:, :1]


def hand_metrics(frame: pd.DataFrame, ids: list[str], forecast: np.ndarray) -> dict[str, np.ndarray]:
    """MAE, RMSE, sMAPE and MASE of (S, H) holdout forecasts; the MASE scale is the mean absolute
    seasonal difference of the training part."""
    out: dict[str, list[float]] = {"mae": [], "rmse": [], "smape": [], "mase": []}
    for i, sid in enumerate(ids):
        y = frame[frame["series_id"] == sid].sort_values("ds")["y"].dropna().to_numpy(np.float64)
        train, actual, f = y[:-H], y[-H:], forecast[i]
        err = actual - f
        out["mae"].append(np.mean(np.abs(err)))
        out["rmse"].append(np.sqrt(np.mean(err ** 2)))
        out["smape"].append(np.mean(200 * np.abs(err) / (np.abs(actual) + np.abs(f))))
        out["mase"].append(np.mean(np.abs(err)) / np.mean(np.abs(train[M:] - train[:-M])))
    return {k: np.asarray(v) for k, v in out.items()}


def seasonal_naive_by_hand(frame: pd.DataFrame, ids: list[str]) -> np.ndarray:
    """The training part's last season, repeated over the holdout."""
    rows = []
    for sid in ids:
        train = frame[frame["series_id"] == sid].sort_values("ds")["y"].to_numpy(np.float64)[:-H]
        rows.append([train[len(train) - M + (h % M)] for h in range(H)])
    return np.asarray(rows)


def _model_key(m: pd.DataFrame) -> pd.Series:
    """The LSTM's rows by their `model_version`, a baseline's by its `model` label (as the manifest keys them)."""
    return m["model_version"].astype(object).where(m["model_version"].notna(), m["model"].astype(object))


def stored_metrics(out: Path, run_id: str, model: str, ids: list[str]) -> dict[str, np.ndarray]:
    m = pd.read_parquet(out / "metrics" / f"run={run_id}")
    m = m[(_model_key(m) == model) & m["series_id"].notna() & m["backtest_window"].isna()]  # over all (one) windows
    m = m[m["metric"].isin(["mae", "rmse", "smape", "mase"])]
    return {metric: g.set_index("series_id")["value"].reindex(ids).to_numpy(np.float64)
            for metric, g in m.groupby("metric")}


def assert_metrics_match(stored: dict[str, np.ndarray], expected: dict[str, np.ndarray], rtol: float) -> None:
    assert set(stored) == set(expected)
    for metric, values in expected.items():
        np.testing.assert_allclose(stored[metric], values, rtol=rtol, err_msg=metric)


# --- runs --------------------------------------------------------------------------------------
def _run(tmp: Path, name: str, frame: pd.DataFrame, out: Path, **extra) -> dict:
    path = tmp / f"{name}.parquet"
    frame.to_parquet(path, index=False)
    return batch_forecast(settings={**SETTINGS, **extra, "input_url": str(path), "output_url": str(out),
                                    "run_id": name})


@pytest.fixture(scope="module")
def twin_runs(tmp_path_factory):
    """Input A, and input B: A with the last H points of every series changed (and nothing else)."""
    tmp = tmp_path_factory.mktemp("twins")
    out = tmp / "out"
    a = make_frame(n_series=4, length=120)
    last = a.groupby("series_id").cumcount(ascending=False).to_numpy() < H
    b = a.copy()
    b.loc[last, "y"] = b.loc[last, "y"] * 1.7 + 25.0
    return {"out": out, "frames": {"a": a, "b": b},
            "manifests": {name: _run(tmp, name, f, out) for name, f in (("a", a), ("b", b))}}


def test_the_last_h_points_never_reach_training(twin_runs):
    out, frames, runs = twin_runs["out"], twin_runs["frames"], twin_runs["manifests"]
    assert [runs[n]["retrain"]["action"] for n in "ab"] == ["train", "train"]
    assert runs["a"]["model_version"] != runs["b"]["model_version"]
    dirs = {n: _model_dir(out, runs[n]) for n in "ab"}
    # The saved per-series scaling is the same: it was fitted on the training part only.
    scalers = {n: json.loads((dirs[n] / "scaler.json").read_text()) for n in "ab"}
    assert scalers["a"] == scalers["b"]
    # So are the trained weights, member by member.
    meta = {n: json.loads((dirs[n] / "metadata.json").read_text()) for n in "ab"}
    assert meta["a"]["members"] == meta["b"]["members"] >= 1
    for i in range(meta["a"]["members"]):
        wa, wb = (keras.saving.load_model(dirs[n] / f"member-{i}.keras", compile=False, safe_mode=True).get_weights()
                  for n in "ab")
        assert len(wa) == len(wb) and all(np.array_equal(x, y) for x, y in zip(wa, wb)), f"member {i}"
    # And the holdout forecasts: each run's LSTM scores are those of the hand-made forecast from T - H,
    # which is the same for both inputs.
    ids, fa = reference_holdout(dirs["a"], frames["a"])
    ids_b, fb = reference_holdout(dirs["b"], frames["b"])
    assert ids == ids_b
    np.testing.assert_array_equal(fa, fb)
    for n, f in (("a", fa), ("b", fb)):
        assert_metrics_match(stored_metrics(out, n, runs[n]["model_version"], ids), hand_metrics(frames[n], ids, f),
                             rtol=1e-5)
    # The inputs' holdouts really differ: the scores do.
    assert not np.allclose(stored_metrics(out, "a", "seasonal_naive", ids)["mae"],
                           stored_metrics(out, "b", "seasonal_naive", ids)["mae"])


def naive_by_hand(frame: pd.DataFrame, ids: list[str]) -> np.ndarray:
    """The training part's last value, repeated over the holdout."""
    return np.asarray([[frame[frame["series_id"] == sid].sort_values("ds")["y"].to_numpy(np.float64)[:-H][-1]] * H
                       for sid in ids])


def test_holdout_scores_of_both_models_equal_a_hand_computation(twin_runs):
    out, frame, run = twin_runs["out"], twin_runs["frames"]["a"], twin_runs["manifests"]["a"]
    ids, lstm = reference_holdout(_model_dir(out, run), frame)
    naive = hand_metrics(frame, ids, seasonal_naive_by_hand(frame, ids))
    assert_metrics_match(stored_metrics(out, "a", "seasonal_naive", ids), naive, rtol=1e-12)
    expected = {run["model_version"]: hand_metrics(frame, ids, lstm), "seasonal_naive": naive}
    assert_metrics_match(stored_metrics(out, "a", run["model_version"], ids), expected[run["model_version"]],
                         rtol=1e-5)
    # Long series (README, Which model serves a series): the statistical models are not fitted; the candidates
    # are the network, seasonal naive and naive, and the served forecast is the equal-weight mean of those the
    # backtest's `model` names per series. Both are recomputed here from the hand-made forecasts.
    by_hand = {"lstm": lstm, "seasonal_naive": seasonal_naive_by_hand(frame, ids), "naive": naive_by_hand(frame, ids)}
    expected["naive"] = hand_metrics(frame, ids, by_hand["naive"])
    assert_metrics_match(stored_metrics(out, "a", "naive", ids), expected["naive"], rtol=1e-12)
    backtest = pd.read_parquet(out / "backtest" / "run=a")
    served_by = backtest.groupby("series_id")["model"].agg(set)
    assert all(len(labels) == 1 for labels in served_by), served_by  # one window: one choice per series
    chosen = [next(iter(served_by[sid])).split("+") for sid in ids]
    assert set().union(*chosen) <= set(by_hand), chosen
    served = np.asarray([np.mean([by_hand[c][i] for c in cands], axis=0) for i, cands in enumerate(chosen)])
    expected["served"] = hand_metrics(frame, ids, served)
    assert_metrics_match(stored_metrics(out, "a", "served", ids), expected["served"], rtol=1e-5)
    # The overall rows (series_id null) and the manifest hold the mean over series, for each of the four models.
    metrics = pd.read_parquet(out / "metrics" / "run=a")
    overall = metrics[metrics["series_id"].isna() & metrics["backtest_window"].isna()]
    overall = overall[overall["metric"].isin(["mae", "rmse", "smape", "mase"])]
    overall = overall.assign(key=_model_key(overall))
    assert set(overall["model"]) == {"lstm", "seasonal_naive", "naive", "served"}
    assert set(overall["key"]) == set(expected)
    assert len(overall) == len(expected) * 4 and not overall.duplicated(["key", "metric"]).any()
    for _, row in overall.iterrows():
        mean = float(np.mean(expected[row["key"]][row["metric"]]))
        assert row["value"] == pytest.approx(mean, rel=1e-5), (row["key"], row["metric"])
        assert run["overall_metrics"][row["key"]][row["metric"]] == row["value"]


def test_known_covariates_of_the_holdout_are_scaled_like_the_history(tmp_path):
    frame = make_frame(n_series=4, length=120, seed=3)
    t = frame.groupby("series_id").cumcount().to_numpy()
    level = frame.groupby("series_id")["y"].transform("mean").to_numpy()
    # A covariate on its own scale (around 100), which moves the target.
    frame["price"] = 100.0 + 20.0 * np.sin(2 * np.pi * t / 30.0) + np.random.default_rng(5).normal(0, 2, len(t))
    frame["y"] = frame["y"] + 0.01 * level * (frame["price"] - 100.0)
    # known ahead: the input holds its values for the H steps after each series' last target
    ahead = frame.groupby("series_id").tail(H).copy()
    ahead["ds"] = ahead["ds"] + pd.Timedelta(hours=H)
    ahead["y"] = np.nan
    frame = pd.concat([frame, ahead], ignore_index=True).sort_values(["series_id", "ds"], ignore_index=True)
    out = tmp_path / "out"
    run = _run(tmp_path, "cov", frame, out, future_covariates=["price"])
    model_dir = _model_dir(out, run)
    meta = json.loads((model_dir / "metadata.json").read_text())
    assert meta["feature_names"] == ["y", "price"] and meta["known"] == [1]
    ids, forecast = reference_holdout(model_dir, frame)
    assert_metrics_match(stored_metrics(out, "cov", run["model_version"], ids), hand_metrics(frame, ids, forecast),
                         rtol=1e-5)
