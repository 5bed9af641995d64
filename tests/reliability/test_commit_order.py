"""The commit protocol as S3 sees it: a recording proxy between the flow and the moto server.

README (Output contract, Reliability): a re-run of a run id removes that run's manifest first,
then its partitions, and commits anew; the plots are written before the manifest, which is
written last; each object is written whole by one PUT; a failure before the run's shards start
keeps the earlier committed attempt. The proxy keeps every request in arrival order, so these
are checked on the wire, not by reading the product's code.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest

import flows.batch_forecast as bf
from lstm_core.errors import DataValidationError, StorageError
from lstm_core.outputs import committed_runs, read_committed
from tests.conftest import make_frame
from tests.faultproxy import Rule
from tests.reliability.conftest import FAST, direct_fs, put_frame

pytestmark = pytest.mark.usefixtures("prefect_server")
RUN = "nightly"
SETTINGS = {**FAST, "training": {**FAST["training"], "snapshots": 1}}


def _key(out: str, rel: str) -> str:
    """The object key (bucket/path) of `rel` under the output URL, as the proxy sees it."""
    return f"{out.removeprefix('s3://')}/{rel}"


def _path(request) -> str:
    return request.path.split("?", 1)[0].lstrip("/")


@pytest.fixture
def committed(s3_bucket, s3_endpoint):
    """An output location where run `nightly` committed once (straight to moto, no proxy)."""
    fs = direct_fs(s3_endpoint)
    input_url = put_frame(fs, f"{s3_bucket}/in/series.parquet", make_frame(n_series=3, length=100))
    out = f"{s3_bucket}/out"
    settings = {**SETTINGS, "input_url": input_url, "output_url": out, "run_id": RUN}
    first = bf.batch_forecast(settings=settings)
    assert first["status"] == "succeeded"
    return fs, out, settings, first


def test_a_rerun_deletes_the_old_manifest_first_and_writes_the_new_one_last(committed, make_proxy):
    fs, out, settings, first = committed
    proxy = make_proxy(record=".")
    second = bf.batch_forecast(settings={**settings, "storage_options": {"endpoint_url": proxy.url}})
    assert second["status"] == "succeeded" and second["started_at"] != first["started_at"]
    seen = proxy.seen_requests()
    manifest = _key(out, f"runs/{RUN}/manifest.json")

    # The first object the re-run deletes is the old manifest: from then on no reader trusts the old run.
    deletes = [(i, key) for i, r in enumerate(seen) for key in r.deleted_keys()]
    assert deletes and deletes[0][1] == manifest, deletes[:5]
    # Then the old partitions go (the re-run really clears them, after the manifest).
    for table in ("predictions", "metrics", "quarantine", "backtest"):
        part = _key(out, f"{table}/run={RUN}/part-0.parquet")
        assert part in [key for _, key in deletes[1:]], (table, deletes)
    # Nothing of the new attempt is written before the old manifest is gone.
    run_puts = [i for i, r in enumerate(seen) if r.method == "PUT" and not _path(r).endswith("lease.json")
                and (f"/run={RUN}/" in r.path or f"/runs/{RUN}/" in r.path)]
    assert run_puts and min(run_puts) > deletes[0][0]

    # The manifest is written once, last, after the plots, and says succeeded.
    manifest_puts = [i for i, r in enumerate(seen) if r.method == "PUT" and _path(r) == manifest]
    plot_puts = [i for i, r in enumerate(seen) if r.method == "PUT" and f"/runs/{RUN}/plots/" in r.path]
    assert len(manifest_puts) == 1 and len(plot_puts) == 5, [(r.method, r.path) for r in seen if r.method == "PUT"]
    assert max(run_puts) == manifest_puts[0] and max(plot_puts) < manifest_puts[0]
    assert json.loads(seen[manifest_puts[0]].body)["status"] == "succeeded"

    # Each object is written whole: one PUT per object, never a multipart upload.
    assert not [r for r in seen if r.method == "POST" and "uploads" in r.path]
    written = [_path(r) for r in seen if r.method == "PUT" and not _path(r).endswith("lease.json")]
    assert len(written) == len(set(written)), written
    stored = json.loads(fs.cat_file(f"{out}/runs/{RUN}/manifest.json"))
    assert stored["status"] == "succeeded" and stored["started_at"] == second["started_at"]


def test_a_denied_plot_upload_leaves_no_succeeded_manifest(s3_bucket, s3_endpoint, make_proxy):
    fs = direct_fs(s3_endpoint)
    input_url = put_frame(fs, f"{s3_bucket}/in/series.parquet", make_frame(n_series=3, length=100))
    out = f"{s3_bucket}/out"
    # Writing the plots is denied (a permanent failure); every manifest the run PUTs is kept.
    proxy = make_proxy(record=r"/runs/plotless/manifest\.json",
                       rules=[Rule("403", method="PUT", path=r"/runs/plotless/plots/")])
    with pytest.raises(StorageError) as exc:
        bf.batch_forecast(settings={**SETTINGS, "input_url": input_url, "output_url": out, "run_id": "plotless",
                                    "storage_options": {"endpoint_url": proxy.url}})
    assert "runs/plotless/plots/" in str(exc.value) and "permission denied" in str(exc.value)
    assert proxy.by_kind == {"403": 1}  # permanent: not retried
    # No manifest that says succeeded was ever sent, not even for a moment: only the failure record.
    sent = [json.loads(r.body) for r in proxy.seen_requests() if r.method == "PUT"]
    assert [m["status"] for m in sent] == ["failed"], sent
    stored = json.loads(fs.cat_file(f"{out}/runs/plotless/manifest.json"))
    assert stored["status"] == "failed" and "runs/plotless/plots/" in stored["error"]
    assert committed_runs(out, {"endpoint_url": s3_endpoint}) == []


def test_a_rerun_failing_before_its_shards_start_keeps_the_earlier_committed_attempt(committed, s3_bucket,
                                                                                      s3_endpoint):
    fs, out, settings, first = committed
    opts = {"endpoint_url": s3_endpoint}
    before = read_committed(out, "predictions", opts)
    assert len(before) > 0
    # The input is gone: planning the shards fails, before the re-run clears anything.
    with pytest.raises(DataValidationError, match="input path does not exist"):
        bf.batch_forecast(settings={**settings, "input_url": f"{s3_bucket}/in/gone.parquet"})
    stored = json.loads(fs.cat_file(f"{out}/runs/{RUN}/manifest.json"))
    assert stored["status"] == "succeeded" and stored["started_at"] == first["started_at"]
    assert committed_runs(out, opts) == [RUN]
    pd.testing.assert_frame_equal(read_committed(out, "predictions", opts), before)
