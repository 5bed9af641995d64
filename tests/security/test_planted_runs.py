"""A planted or damaged earlier run never fails a later run (issue 26, finding 6).

Realised accuracy reads the predictions of every committed earlier run. A run whose manifest says
"succeeded" but whose predictions cannot be read (a part file that is a folder, a truncated file, a file
that is not Parquet, a wrong schema: missing columns or values of the wrong type) is skipped with a warning;
the readable runs are still scored. Real Parquet files on disk; the flow test runs the real batch flow.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fsspec.implementations.local import LocalFileSystem

from lstm_core.realised import PREDICTION_COLUMNS, earlier_predictions
from tests.conftest import make_frame
from tests.reliability.conftest import FAST, H
from tests.security.prefect_api import api_logs


def _predictions(run_id: str, n_series: int = 3) -> pd.DataFrame:
    rows = []
    for i in range(n_series):
        ds = pd.date_range("2026-01-05", periods=H, freq="h")
        rows.append(pd.DataFrame({"series_id": f"s{i:02d}", "ds": ds, "step": np.arange(1, H + 1),
                                  "yhat": np.linspace(1, 2, H), "model_version": "v1", "run_id": run_id,
                                  "cutoff": pd.Timestamp("2026-01-04 23:00"), "yhat_lo_80": 0.5,
                                  "yhat_hi_80": 2.5}))
    return pd.concat(rows, ignore_index=True)


def _part(root: Path, run_id: str) -> Path:
    folder = root / "predictions" / f"run={run_id}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "part-0.parquet"


def _plant(root: Path, kind: str, run_id: str) -> None:
    """An earlier run's predictions as an attacker (or a crash) might leave them."""
    part = _part(root, run_id)
    good = _predictions(run_id)
    if kind == "folder":
        part.mkdir()
        (part / "inner.parquet").write_bytes(b"x")
    elif kind == "truncated":
        good.to_parquet(part, index=False)
        data = part.read_bytes()
        part.write_bytes(data[: len(data) // 2])
    elif kind == "not-parquet":
        part.write_bytes(b"PAR1 this is not a parquet file at all PAR1")
    elif kind == "missing-columns":
        good.drop(columns=["yhat", "cutoff"]).to_parquet(part, index=False)
    elif kind == "wrong-types":
        good.astype({"yhat": "string", "step": "string"}).to_parquet(part, index=False)
    elif kind == "string-bounds":
        good.astype({"yhat_lo_80": "string"}).to_parquet(part, index=False)
    elif kind == "empty-file":
        part.write_bytes(b"")
    else:
        raise AssertionError(kind)


KINDS = ["folder", "truncated", "not-parquet", "missing-columns", "wrong-types", "string-bounds", "empty-file"]


@pytest.mark.parametrize("kind", KINDS)
def test_an_unreadable_earlier_run_is_skipped_and_the_others_read(tmp_path, kind):
    _predictions("good").to_parquet(_part(tmp_path, "good"), index=False)
    _plant(tmp_path, kind, "planted")
    skipped: list[tuple[str, str]] = []
    frame = earlier_predictions(LocalFileSystem(), str(tmp_path), ["good", "planted"], ["s00", "s01"],
                                skipped=skipped)
    assert set(frame["run_id"]) == {"good"} and set(frame["series_id"]) == {"s00", "s01"}
    assert len(frame) == 2 * H and set(PREDICTION_COLUMNS) <= set(frame.columns)
    assert [rid for rid, _ in skipped] == ["planted"] and skipped[0][1]


def test_every_kind_at_once_still_reads_the_good_runs(tmp_path):
    _predictions("good").to_parquet(_part(tmp_path, "good"), index=False)
    for kind in KINDS:
        _plant(tmp_path, kind, f"bad-{kind}")
    skipped: list[tuple[str, str]] = []
    frame = earlier_predictions(LocalFileSystem(), str(tmp_path), ["good", *(f"bad-{k}" for k in KINDS)],
                                skipped=skipped)
    assert set(frame["run_id"]) == {"good"} and len(frame) == 3 * H
    assert sorted(rid for rid, _ in skipped) == sorted(f"bad-{k}" for k in KINDS)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_planted_earlier_runs_do_not_fail_the_next_run(tmp_path):
    """A committed run, then 'succeeded' runs planted beside it (a part file that is a folder, a truncated
    file, a wrong schema, a manifest that is not JSON): the next run succeeds and scores the real one."""
    from flows.batch_forecast import batch_forecast

    out = tmp_path / "out"
    frame = make_frame(n_series=3, length=120, seed=5)
    last = frame.groupby("series_id").cumcount(ascending=False).to_numpy() < H
    early_in, late_in = tmp_path / "early.parquet", tmp_path / "late.parquet"
    frame[~last].to_parquet(early_in, index=False)
    frame.to_parquet(late_in, index=False)
    base = {**FAST, "output_url": str(out)}
    early = batch_forecast(settings={**base, "input_url": str(early_in), "run_id": "early"})
    assert early["status"] == "succeeded"
    manifest = (out / "runs" / "early" / "manifest.json").read_text()
    for kind in ("folder", "truncated", "wrong-types", "missing-columns"):
        _plant(out, kind, f"planted-{kind}")
        (out / "runs" / f"planted-{kind}").mkdir(parents=True)
        (out / "runs" / f"planted-{kind}" / "manifest.json").write_text(manifest)
    (out / "runs" / "planted-manifest").mkdir(parents=True)
    (out / "runs" / "planted-manifest" / "manifest.json").write_text('{"status": "succeeded"')  # cut short
    shutil.copytree(out / "predictions" / "run=early", out / "predictions" / "run=planted-manifest")

    late = batch_forecast(settings={**base, "input_url": str(late_in), "run_id": "late", "retrain": "never"})
    assert late["status"] == "succeeded"
    realised = pd.read_parquet(out / "realised" / "run=late")
    assert set(realised["forecast_run_id"]) == {"early"}
    assert realised.loc[realised["series_id"].isna() & (realised["metric"] == "mae"), "value"].notna().all()
    expected = [f"earlier run planted-{kind} skipped" for kind in ("folder", "truncated", "wrong-types",
                                                                   "missing-columns")]
    warned = api_logs(late["flow_run_id"], until=expected)  # what the Prefect UI shows
    assert all(e in warned for e in expected), warned[-2000:]
    assert json.loads((out / "runs" / "late" / "manifest.json").read_text())["status"] == "succeeded"
