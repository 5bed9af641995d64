"""Storage faults between the job and S3: a fault-injecting proxy in front of the moto server.

Transient faults (500, 503, dropped connections, replies lost after the write happened) are
absorbed by retries and the outputs equal a fault-free run's; a permanent write failure fails
the run, names the cause, and no manifest marks partial outputs as succeeded.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest

import flows.batch_forecast as bf
from lstm_core import shard_plan
from lstm_core.errors import StorageError
from lstm_core.inputs import read_series
from lstm_core.location import Location
from lstm_core.outputs import read_committed
from tests.conftest import make_frame
from tests.faultproxy import Rule
from tests.reliability.conftest import FAST, H, direct_fs, keys_under, put_frame, read_parquet

pytestmark = pytest.mark.usefixtures("prefect_server")
N_SERIES = 4


@pytest.fixture
def s3_input(s3_bucket, s3_endpoint):
    fs = direct_fs(s3_endpoint)
    return put_frame(fs, f"{s3_bucket}/input/series.parquet", make_frame(n_series=N_SERIES, length=120))


def _outputs(fs, output_url: str, run_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    preds = read_parquet(fs, f"{output_url}/predictions/run={run_id}/part-0.parquet")
    metrics = read_parquet(fs, f"{output_url}/metrics/run={run_id}/part-0.parquet")
    preds = preds.drop(columns=["run_id", "model_version"]).sort_values(["series_id", "step"]).reset_index(drop=True)
    metrics = metrics[metrics["model"] == "seasonal_naive"].drop(columns=["run_id"]) \
        .sort_values(["series_id", "backtest_window", "metric"], na_position="first").reset_index(drop=True), \
        metrics[metrics["model"] != "seasonal_naive"].drop(columns=["run_id", "model_version"]) \
        .sort_values(["series_id", "backtest_window", "metric"], na_position="first").reset_index(drop=True)
    return preds, metrics


@pytest.mark.slow
def test_transient_faults_are_retried_and_outputs_equal_a_fault_free_run(s3_input, s3_bucket, s3_endpoint, make_proxy):
    fs = direct_fs(s3_endpoint)
    clean = bf.batch_forecast(settings={**FAST, "input_url": s3_input, "output_url": f"{s3_bucket}/clean",
                                        "run_id": "clean"})
    # Every request to the proxy, reads and writes, fails with probability 0.15: 500, 503 SlowDown,
    # a reset connection, or a reply lost after S3 applied the write.
    proxy = make_proxy(rate=0.15, seed=11, kinds=("500", "503", "reset", "lost_reply"))
    faulty = bf.batch_forecast(settings={**FAST, "input_url": s3_input, "output_url": f"{s3_bucket}/faulty",
                                         "run_id": "faulty", "storage_options": {"endpoint_url": proxy.url}})
    stats = proxy.summary()
    assert stats["faults_injected"] >= 5, stats
    assert len(stats["by_kind"]) >= 3, stats
    assert faulty["status"] == "succeeded"
    stored = json.loads(fs.cat_file(f"{s3_bucket}/faulty/runs/faulty/manifest.json"))
    assert stored["status"] == "succeeded" and stored["counts"] == clean["counts"]

    (p_clean, (naive_clean, lstm_clean)) = _outputs(fs, f"{s3_bucket}/clean", "clean")
    (p_faulty, (naive_faulty, lstm_faulty)) = _outputs(fs, f"{s3_bucket}/faulty", "faulty")
    assert len(p_faulty) == N_SERIES * H
    # Same data, configuration and seed: the same predictions and scores, faults or not.
    pd.testing.assert_frame_equal(p_faulty, p_clean)
    pd.testing.assert_frame_equal(naive_faulty, naive_clean)
    pd.testing.assert_frame_equal(lstm_faulty, lstm_clean)
    # Exactly one committed copy of every row, and no stray objects (no leftover lease).
    committed = read_committed(f"{s3_bucket}/faulty", "predictions", {"endpoint_url": s3_endpoint})
    assert len(committed) == N_SERIES * H and not committed.duplicated(["series_id", "step"]).any()
    keys = keys_under(fs, f"{s3_bucket}/faulty")
    assert not [k for k in keys if "lease" in k], keys


@pytest.fixture
def fast_commit_retries(monkeypatch):
    """Keep commit_run's retry count but not its backoff delays (this test waits on them otherwise).

    The manifest's PUT is what fails there, and commit_run (the task writing it) is what retries.
    """
    fast = bf.commit_run.with_options(retry_delay_seconds=0)
    assert fast.retries == bf.commit_run.retries > 0
    monkeypatch.setattr(bf, "commit_run", fast)


@pytest.mark.slow
def test_permanent_write_failure_fails_the_run_and_never_marks_partial_outputs_succeeded(
        s3_input, s3_bucket, s3_endpoint, make_proxy):
    fs = direct_fs(s3_endpoint)
    out = f"{s3_bucket}/out"
    settings = {**FAST, "input_url": s3_input, "output_url": out, "run_id": "nightly"}
    first = bf.batch_forecast(settings=settings)  # an earlier attempt of this run id committed
    assert first["status"] == "succeeded"
    # The re-run may write predictions but is denied writing its metrics: a permanent failure.
    proxy = make_proxy(rules=[Rule("403", method="PUT", path=r"/metrics/run=nightly/")])
    with pytest.raises(StorageError) as exc:
        bf.batch_forecast(settings={**settings, "storage_options": {"endpoint_url": proxy.url}})
    message = str(exc.value)
    assert "cannot write" in message and "metrics/run=nightly/part-0.parquet" in message
    assert "permission denied" in message
    assert proxy.by_kind == {"403": 1}  # permanent: not retried
    stored = json.loads(fs.cat_file(f"{out}/runs/nightly/manifest.json"))
    assert stored["status"] == "failed" and "metrics/run=nightly" in stored["error"]
    # The earlier committed attempt's manifest went first, so no manifest vouches for the mix
    # of new predictions and missing metrics; readers see no trusted run.
    assert read_committed(out, "predictions", {"endpoint_url": s3_endpoint}).empty
    assert not fs.exists(f"{out}/metrics/run=nightly/part-0.parquet")


@pytest.mark.slow
def test_write_failing_past_all_retries_leaves_no_manifest(s3_input, s3_bucket, s3_endpoint, make_proxy,
                                                           fast_commit_retries):
    fs = direct_fs(s3_endpoint)
    out = f"{s3_bucket}/out"
    # Every PUT of the manifest answers 500: the commit can never happen, nor the failure record.
    proxy = make_proxy(rules=[Rule("500", method="PUT", path=r"/runs/down/manifest\.json")])
    storage = {"endpoint_url": proxy.url, "config_kwargs": {"retries": {"mode": "standard", "total_max_attempts": 2}}}
    with pytest.raises(StorageError, match=r"cannot write .*runs/down/manifest\.json: OSError"):
        bf.batch_forecast(settings={**FAST, "input_url": s3_input, "output_url": out, "run_id": "down",
                                    "storage_options": storage})
    # botocore tried twice per PUT; commit_run ran 1 + 4 times; then the failure record tried once.
    assert proxy.by_kind["500"] == 2 * (1 + bf.commit_run.retries) + 2
    assert not fs.exists(f"{out}/runs/down/manifest.json")
    assert read_committed(out, "predictions", {"endpoint_url": s3_endpoint}).empty
    # The data partitions were written whole; without a manifest no reader trusts them.
    assert len(read_parquet(fs, f"{out}/predictions/run=down/part-0.parquet")) == N_SERIES * H
    assert not fs.exists(f"{out}/runs/down/lease.json")


def test_denied_listing_is_a_storage_error_when_planning_shards_as_when_reading(s3_bucket, s3_endpoint, make_proxy):
    """Planning and reading open the input the same way: a listing S3 refuses is a storage failure
    (permanent, naming the input), never a 'not a readable Parquet dataset' data error."""
    fs = direct_fs(s3_endpoint)
    frame = make_frame(n_series=4, length=50)
    put_frame(fs, f"{s3_bucket}/in/part-0.parquet", frame.iloc[:100])
    put_frame(fs, f"{s3_bucket}/in/part-1.parquet", frame.iloc[100:])
    # The existence check (a listing of one key) passes; listing the dataset's files is denied.
    proxy = make_proxy(rate=0.0, rules=[Rule("403", "GET", r"(?!.*max-keys=1).*list-type=2.*")])
    url = f"{s3_bucket}/in"
    source = Location(url, {"endpoint_url": proxy.url})
    with pytest.raises(StorageError) as planned:
        shard_plan.plan_shards(source, columns=None, filters=None, shard_size=2, shard_rows=10**6,
                             group_column=None, max_train_series=None, scratch=f"{s3_bucket}/scratch")
    with pytest.raises(StorageError) as read:
        read_series(source)
    for err in (planned.value, read.value):
        assert f"input {url}: cannot list the dataset: permission denied" in str(err)
        assert not err.transient
    assert proxy.faults_injected >= 2


def test_a_failed_model_save_is_retried_in_place_not_by_training_again(s3_input, s3_bucket, s3_endpoint, make_proxy):
    """The save after training retries by itself: same version, same objects, the training not repeated."""
    out = f"{s3_bucket}/out"
    # The first save's metadata.json fails all of botocore's attempts; the next try of the save goes through.
    proxy = make_proxy(record=r"/models/", rules=[Rule("500", method="PUT", path=r"/models/.*/metadata\.json",
                                                       times=5)])
    manifest = bf.batch_forecast(settings={**FAST, "training": {**FAST["training"], "snapshots": 1},
                                           "input_url": s3_input, "output_url": out, "run_id": "save",
                                           "storage_options": {"endpoint_url": proxy.url}})
    assert manifest["status"] == "succeeded" and manifest["retrain"]["action"] == "train"
    assert proxy.by_kind == {"500": 5}
    fs = direct_fs(s3_endpoint)
    names = [p.rsplit("/", 1)[-1] for p in fs.ls(f"{out}/models/{manifest['model_key']}", detail=False)]
    versions = [n for n in names if n not in ("champion.json", ".holds")]  # the store's pointer and read-markers
    assert versions == [manifest["model_version"]]  # a task retry would have trained a second version
    puts = [r.path.split("?")[0] for r in proxy.seen_requests() if r.method == "PUT"]
    member = [p for p in puts if p.endswith("/member-0.keras")]
    assert len(member) == 2 and len(set(member)) == 1 and manifest["model_version"] in member[0]
    # 5 refused PUTs, the save's own, then the one that records intervals.json's checksum (issue 26)
    assert sum(p.endswith("/metadata.json") for p in puts) == 5 + 1 + 1
    assert sum(p.endswith("/intervals.json") for p in puts) == 1
