"""Scale-out: shards read alone, model groups, and the same outputs on a Dask LocalCluster as in process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.batch_forecast import batch_forecast
from lstm_core.config import ConfigError, load_config
from lstm_core.errors import DataValidationError
from lstm_core.shard_plan import shard_of
from tests.conftest import make_frame

pytestmark = pytest.mark.usefixtures("prefect_server")

H = 12
FAST = {
    "freq": "h", "horizon": H, "season_length": 24, "window": 24,
    "model": {"units": [8]},
    "training": {"epochs": 3, "patience": 2, "windows_per_series": 16, "batch_size": 64},
}


def _dataset(tmp_path: Path, n_series: int, groups: bool = False, seed: int = 0) -> tuple[pd.DataFrame, str]:
    frame = make_frame(n_series=n_series, length=110, seed=seed)
    frame["series_id"] = frame["series_id"].str.replace("s", "series-", regex=False)
    if groups:
        frame["line"] = np.where(frame["series_id"].str[-1].astype(int) % 2 == 0, "even", "odd")
    # Rows of all series interleaved across row groups, as a real export would be.
    frame = frame.sample(frac=1.0, random_state=1).reset_index(drop=True)
    path = tmp_path / "series.parquet"
    frame.to_parquet(path, index=False, row_group_size=400)
    return frame, str(path)


def _table(out: str, table: str, run_id: str) -> pd.DataFrame:
    df = pd.read_parquet(Path(out) / table / f"run={run_id}")
    return df.drop(columns=["run"], errors="ignore")


def _sorted(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return df.sort_values(keys, na_position="first").reset_index(drop=True)


def _by_group(df: pd.DataFrame, manifest: dict) -> pd.DataFrame:
    """Model versions are timestamps; name each run's models by their group to compare two runs."""
    names = {m["model_version"]: f"lstm[{m['group']}]" for m in manifest["models"]}
    column = "model_version" if "model_version" in df.columns else "model"
    return df.assign(**{column: df[column].map(lambda v: names.get(v, v)).astype(df[column].dtype)})


def test_each_shard_reads_only_its_own_series(tmp_path):
    frame, input_url = _dataset(tmp_path, n_series=24)
    out = str(tmp_path / "out")
    base = {**FAST, "input_url": input_url, "output_url": out}
    whole = batch_forecast(settings={**base, "run_id": "whole"})
    assert whole["shards"]["count"] == 1 and not whole["plan"]["split"]

    sharded = batch_forecast(settings={**base, "run_id": "sharded", "shard_size": 7, "retrain": "never"})
    shards = sharded["shards"]
    n = -(-24 // 7)
    assert shards["split"] and shards["count"] == len(shards["items"]) >= 3
    ids = np.array(sorted(frame["series_id"].unique()), dtype=object)
    expected = {k: set(ids[shard_of(ids, n) == k]) for k in range(n)}
    rows_per_series = frame.groupby("series_id").size()
    preds = _table(out, "predictions", "sharded")
    sources = set()
    for item in shards["items"]:
        k = item["shard"]
        # What this shard's tasks were given: its own scratch file, with exactly its own series and rows.
        assert item["source"].endswith(f"shard-{k}")
        sources.add(item["source"])
        assert item["series_read"] == item["series_planned"] == len(expected[k])
        assert item["rows_read"] == int(rows_per_series[list(expected[k])].sum())
        part = pd.read_parquet(Path(out) / "predictions" / "run=sharded" / f"part-{k}.parquet")
        assert set(part["series_id"]) == expected[k]
    assert len(sources) == len(shards["items"])
    assert sharded["counts"]["series_read"] == 24 and sharded["counts"]["rows_read"] == len(frame)
    assert not (Path(out) / "_scratch").exists()  # scratch files go when the run ends

    # Same model: the network's own forecast is the unsharded run's.
    assert sharded["model_version"] == whole["model_version"]
    keys = ["series_id", "step"]
    a, b = _sorted(_table(out, "predictions", "whole"), keys), _sorted(preds, keys)
    assert (a["series_id"] == b["series_id"]).all() and (a["ds"] == b["ds"]).all()
    np.testing.assert_array_equal(b["yhat_lstm"], a["yhat_lstm"])
    # The served forecast is chosen per shard (README: Scaling out, Which model serves a series): each shard
    # serves exactly what a run over only its series serves with the same model version.
    served_cols = ["yhat", "model", "yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95"]
    alone_metrics = []
    for k in range(n):
        path = tmp_path / f"shard-{k}-alone.parquet"
        frame[frame["series_id"].isin(expected[k])].to_parquet(path, index=False)
        run = batch_forecast(settings={**base, "input_url": str(path), "run_id": f"alone-{k}", "retrain": "never"})
        assert run["model_version"] == whole["model_version"] and run["backtest"]["intervals"] == "model"
        own = _sorted(_table(out, "predictions", f"alone-{k}"), keys)
        part = b[b["series_id"].isin(expected[k])].reset_index(drop=True)
        assert (own["series_id"] == part["series_id"]).all()
        assert (own["model"] == part["model"]).all()
        for col in served_cols[:1] + served_cols[2:]:
            np.testing.assert_allclose(part[col], own[col], rtol=1e-12, err_msg=f"shard {k}: {col}")
        alone_metrics.append(_table(out, "metrics", f"alone-{k}"))
    # Where the network serves a series alone in both runs, the published intervals are the network's own,
    # saved beside the model by the whole run: the same whatever the sharding.
    both = ((a["model"] == "lstm") & (b["model"] == "lstm")).to_numpy()
    assert both.any()
    np.testing.assert_array_equal(b["yhat"][both], a["yhat"][both])
    for col in served_cols[2:]:
        np.testing.assert_allclose(b[col][both], a[col][both], rtol=1e-12)
    # Point metrics of every candidate per series equal the unsharded run's; the served rows the per-shard rule's.
    point = ["mae", "rmse", "smape", "mase"]
    mkeys = ["series_id", "backtest_window", "model", "metric"]
    ma, mb = (_sorted(m[m["metric"].isin(point)], mkeys)
              for m in (_table(out, "metrics", "whole"), _table(out, "metrics", "sharded")))
    assert len(ma) == len(mb)
    models = set(ma["model"].astype(str))
    assert {"lstm", "seasonal_naive", "naive", "served"} <= models  # the statistical ones: not fitted on long series
    assert (ma["backtest_window"].isna() & ma["metric"].isin(point)).sum() == len(models) * 4 * (24 + 1)
    per_series = ma["series_id"].notna().to_numpy()
    candidate = (ma["model"] != "served").to_numpy()
    assert (mb["model"] != "served").to_numpy().tolist() == candidate.tolist()
    np.testing.assert_array_equal(mb["value"][per_series & candidate], ma["value"][per_series & candidate])
    mc = pd.concat(alone_metrics, ignore_index=True)
    mc = _sorted(mc[mc["metric"].isin(point) & mc["series_id"].notna() & (mc["model"] == "served")], mkeys)
    mb_served = mb[per_series & ~candidate].reset_index(drop=True)
    assert len(mc) == len(mb_served) > 0
    np.testing.assert_allclose(mb_served["value"], mc["value"], rtol=1e-12)
    # Overall rows pool the shards' sums: the same mean for every candidate, summed in another order.
    np.testing.assert_allclose(mb["value"][~per_series & candidate], ma["value"][~per_series & candidate], rtol=1e-12)
    for model, values in whole["overall_metrics"].items():
        for metric, v in values.items():
            if metric in point and model != "served":
                assert sharded["overall_metrics"][model][metric] == pytest.approx(v, rel=1e-12)
    assert sharded["backtest"]["intervals"] == "model"


def test_groups_train_one_model_each(tmp_path):
    frame, input_url = _dataset(tmp_path, n_series=8, groups=True)
    out = str(tmp_path / "out")
    m = batch_forecast(settings={**FAST, "input_url": input_url, "output_url": out, "group_column": "line"})
    models = {e["group"]: e for e in m["models"]}
    assert set(models) == {"even", "odd"} and m["model_version"] is None
    assert models["even"]["model_key"] != models["odd"]["model_key"]
    assert all(e["retrain"]["action"] == "train" for e in models.values())
    assert all((Path(out) / "models" / e["model_key"] / e["model_version"]).is_dir() for e in models.values())
    preds = _table(out, "predictions", m["run_id"])
    group_of = frame.drop_duplicates("series_id").set_index("series_id")["line"]
    for sid, g in preds.groupby("series_id"):
        assert set(g["model_version"]) == {models[group_of[sid]]["model_version"]}
    assert "line" not in preds.columns and len(preds) == 8 * H
    # The group column names the model; it is not a covariate.
    assert all(e["training"]["series"] == 4 for e in models.values())


def test_refit_shards_open_the_refit_model_and_score_the_backtest_with_the_one_before_the_cutoff(tmp_path):
    """Under refit, shards get the group's model by reference as always (no Keras objects cross): the stored
    version is the model refit on all data, and the model trained before the earliest cutoff, which scores the
    backtest, is kept inside it. The backtest rows the shards wrote are that model's, not the refit one's."""
    from dataclasses import replace

    from lstm_core.model_store import BACKTEST_MODEL, ModelRef, ModelStore
    from lstm_core.modelling import prepare_data, run_backtest
    from lstm_core.validation import validate_for

    frame, input_url = _dataset(tmp_path, n_series=10)
    out = str(tmp_path / "out")
    settings = {**FAST, "input_url": input_url, "output_url": out, "shard_size": 4, "refit": True}
    m = batch_forecast(settings={**settings, "run_id": "refit"})
    assert m["shards"]["count"] >= 2 and m["status"] == "succeeded"
    (model,) = m["models"]
    key, version = model["model_key"], model["model_version"]
    assert (Path(out) / "models" / key / version / BACKTEST_MODEL / version / "metadata.json").is_file()

    config = load_config(None, overrides=settings)
    data = prepare_data(validate_for(frame.drop(columns=[]), config), config)
    opened = ModelStore.of(config).open(ModelRef(key, version, None, 0, model["retrain"], {}, refit=True), config)
    keys = ["series_id", "cutoff", "step"]
    written = _sorted(_table(out, "backtest", "refit"), keys)
    scored_by = {name: _sorted(run_backtest(choice, data, config).frame, keys)
                 for name, choice in (("before the cutoff", opened),
                                      ("refit", replace(opened, forecaster=opened.final)))}
    for expected in scored_by.values():
        assert list(expected["series_id"]) == list(written["series_id"])
    np.testing.assert_allclose(written["yhat"], scored_by["before the cutoff"]["yhat"], rtol=1e-5)
    assert not np.allclose(written["yhat"], scored_by["refit"]["yhat"], rtol=1e-3)


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_outputs_as_in_process(tmp_path):
    """Two worker processes (spawned), groups trained in parallel, shards mapped: same rows as in process."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    frame, input_url = _dataset(tmp_path, n_series=16, groups=True)
    settings = {**FAST, "input_url": input_url, "shard_size": 3, "group_column": "line", "retrain": "always",
                "training": {**FAST["training"], "max_series": 5}}
    local = batch_forecast(settings={**settings, "output_url": str(tmp_path / "local"), "run_id": "r"})
    dask = batch_forecast(settings={**settings, "output_url": str(tmp_path / "dask"), "run_id": "r",
                                    "workers": 2})
    assert local["execution"] == {"runner": "in-process"}
    assert dask["execution"]["runner"] == "dask" and dask["execution"]["workers"] == 2
    assert dask["shards"]["count"] == local["shards"]["count"] >= 4
    assert dask["counts"] == local["counts"]

    for table, keys in (("predictions", ["series_id", "step"]),
                        ("metrics", ["series_id", "backtest_window", "model", "model_version", "metric"])):
        a = _sorted(_by_group(_table(str(tmp_path / "local"), table, "r"), local), keys)
        b = _sorted(_by_group(_table(str(tmp_path / "dask"), table, "r"), dask), keys)
        assert len(a) == len(b) > 0
        pd.testing.assert_frame_equal(a, b, check_exact=True)  # row for row, bit for bit
    for model_l, model_d in zip(local["models"], dask["models"]):
        assert model_l["group"] == model_d["group"] and model_l["model_key"] == model_d["model_key"]
        assert model_l["training"]["best_val_loss"] == model_d["training"]["best_val_loss"]

    # The workers reported to the flow's own Prefect API: every shard task is under this flow run. In process
    # and on Dask the graph is the same: one train_group per group and one forecast_shard per shard, each
    # step a nested task run of its unit.
    for where, manifest in (("dask", dask), ("local", local)):
        flow_run_id = json.loads((tmp_path / where / "runs" / "r" / "manifest.json").read_text())["flow_run_id"]
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                                         limit=200)
        name_of = {r.id: r.name.rsplit("-", 1)[0] for r in runs}
        names = list(name_of.values())
        assert names.count("forecast_shard") == names.count("write_outputs") == manifest["shards"]["count"], where
        assert names.count("train_group") == names.count("train_or_load_model") == 2, where  # one per group
        assert all(r.state.is_completed() for r in runs), where
        for r in runs:
            parents = [name_of.get(p.id) for p in r.task_inputs.get("__parents__", [])]
            unit = {"write_outputs": "forecast_shard", "forecast": "forecast_shard", "evaluate": "forecast_shard",
                    "train_or_load_model": "train_group"}.get(name_of[r.id])
            if unit is not None:
                assert parents == [unit], (where, name_of[r.id], parents)


@pytest.fixture(scope="module")
def dask_scheduler(prefect_server):
    """An existing cluster, as a user would run one: 2 spawned worker processes that know the Prefect API."""
    import dask
    from distributed import LocalCluster
    from prefect.settings import PREFECT_API_URL

    env = {"PREFECT_API_URL": PREFECT_API_URL.value(), "TF_NUM_INTRAOP_THREADS": "1", "OMP_NUM_THREADS": "1",
           "TF_CPP_MIN_LOG_LEVEL": "2", "DASK_LOGGING__DISTRIBUTED": "warning"}
    with dask.config.set({"distributed.worker.multiprocessing-method": "spawn"}):
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                          env=env) as cluster:
            yield cluster.scheduler_address


@pytest.mark.slow
def test_existing_cluster_by_address_and_a_failing_shard_names_its_error(tmp_path, dask_scheduler):
    frame, input_url = _dataset(tmp_path, n_series=10)
    out = str(tmp_path / "out")
    settings = {**FAST, "input_url": input_url, "output_url": out, "shard_size": 4, "dask_address": dask_scheduler}
    ok = batch_forecast(settings={**settings, "run_id": "ok"})
    assert ok["execution"]["address"] == dask_scheduler and ok["execution"]["workers"] == 2
    assert ok["shards"]["count"] >= 2 and ok["counts"]["series_forecast"] == 10
    assert len(_table(out, "predictions", "ok")) == 10 * H

    # Every shard's validate_series fails on a worker: the flow raises that error, not "upstream failed".
    with pytest.raises(DataValidationError, match="frequency 'D' matches no series"):
        batch_forecast(settings={**settings, "run_id": "bad", "freq": "D", "season_length": 7, "window": 14,
                                 "retrain": "always"})
    manifest = json.loads((Path(out) / "runs" / "bad" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "matches no series" in manifest["error"]
    assert not (Path(out) / "_scratch").exists()


@pytest.mark.slow
def test_cli_workers_flag_runs_on_a_local_cluster_without_a_configured_api(tmp_path):
    """`--workers 2` with no PREFECT_API_URL: the run's temporary API is handed to the spawned workers."""
    frame, input_url = _dataset(tmp_path, n_series=8)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    cli = str(Path(sys.executable).with_name("lstm-forecast"))
    out = subprocess.run([cli, "run", "--input", input_url, "--output", str(tmp_path / "out"), "--freq", "h",
                          "--horizon", str(H), "--season", "24", "--workers", "2", "--set", "window=24",
                          "--set", "model.units=[8]", "--set", "training.epochs=2", "--set", "shard_size=3",
                          "--set", "run_id=cli"], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    manifest = json.loads((tmp_path / "out" / "runs" / "cli" / "manifest.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["execution"]["workers"] == 2
    assert manifest["config"]["workers"] == 2 and manifest["shards"]["count"] >= 3
    assert len(_table(str(tmp_path / "out"), "predictions", "cli")) == 8 * H
    # Step timings come back with each unit (group or shard) from the workers.
    assert manifest["timings_s"]["write_outputs"] > 0 and manifest["timings_s"]["forecast"] > 0
    # The spawned workers load TensorFlow quietly, as the CLI's own process does.
    assert "absl::InitializeLog" not in out.stderr and "oneDNN custom operations" not in out.stderr, out.stderr[-3000:]
    # Nor does Dask's scheduler and nanny chatter reach the console (its warnings would).
    assert "INFO distributed." not in out.stderr + out.stdout, (out.stderr + out.stdout)[-3000:]


def test_scale_settings_are_validated_and_reach_the_cli():
    assert load_config(overrides={"workers": 2}).workers == 2
    for bad, message in (({"workers": 0}, "'workers'"), ({"dask_address": "localhost"}, "'dask_address'"),
                         ({"workers": 2, "dask_address": "tcp://h:8786"}, "either workers"),
                         ({"shard_size": 0}, "'shard_size'"), ({"group_column": "y"}, "group_column")):
        with pytest.raises(ConfigError, match=message):
            load_config(overrides=bad)
    from flows.cli import build_parser, settings_from_args

    args = build_parser().parse_args(["run", "--workers", "3"])
    assert settings_from_args(args)["workers"] == 3
    args = build_parser().parse_args(["run", "--dask-address", "tcp://10.0.0.5:8786"])
    assert settings_from_args(args)["dask_address"] == "tcp://10.0.0.5:8786"


def test_sharded_run_with_input_output_and_scratch_on_s3(s3_bucket, s3_endpoint, tmp_path):
    import s3fs

    frame, local = _dataset(tmp_path, n_series=9)
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)
    fs.put(local, f"{s3_bucket}/in/series.parquet")
    out = f"{s3_bucket}/out"
    m = batch_forecast(settings={**FAST, "input_url": f"{s3_bucket}/in/series.parquet", "output_url": out,
                                 "shard_size": 4, "run_id": "s3"})
    assert m["shards"]["split"] and m["shards"]["count"] >= 2
    assert all(i["source"].startswith(f"{s3_bucket}/out/_scratch/run=s3/") for i in m["shards"]["items"])
    parts = fs.ls(f"{out}/predictions/run=s3")
    assert len(parts) == m["shards"]["count"]
    preds = pd.concat([pd.read_parquet(fs.open(p, "rb")) for p in parts])
    assert len(preds) == 9 * H and preds["series_id"].nunique() == 9
    fs.invalidate_cache()
    assert not fs.exists(f"{out}/_scratch/run=s3")
    assert json.loads(fs.cat(f"{out}/runs/s3/manifest.json"))["status"] == "succeeded"
