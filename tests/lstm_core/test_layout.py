"""One place holds the output contract's paths (lstm_core.layout), and the run's store opens them once."""
from __future__ import annotations

import pandas as pd
import pytest

from lstm_core.layout import OutputLayout
from lstm_core.model_store import ModelStore
from lstm_core.outputs import OutputStore, committed_runs
from lstm_core.tuning import study_url
from tests.conftest import fast_config


def test_the_layout_is_the_documented_contract():
    layout = OutputLayout("s3://bucket/out")
    assert layout.part("predictions", "r1", 3) == "s3://bucket/out/predictions/run=r1/part-3.parquet"
    assert layout.part("metrics", "r1", "overall") == "s3://bucket/out/metrics/run=r1/part-overall.parquet"
    assert layout.manifest("r1") == "s3://bucket/out/runs/r1/manifest.json"
    assert layout.lease("r1") == "s3://bucket/out/runs/r1/lease.json"
    assert layout.run_file("r1", "plots/loss.png") == "s3://bucket/out/runs/r1/plots/loss.png"
    assert layout.models() == "s3://bucket/out/models"
    assert layout.study("nightly") == "s3://bucket/out/tuning/study=nightly"
    assert layout.run_scratch("r1") == "s3://bucket/out/_scratch/run=r1"
    assert OutputLayout("s3://b/out", "s3://other/tmp").run_scratch("r1") == "s3://other/tmp/run=r1"
    for bad in ("/etc/passwd", "../escape", "manifest.json"):
        with pytest.raises(ValueError):
            layout.run_file("r1", bad)


def test_the_configuration_and_its_stores_use_the_one_layout(tmp_path):
    cfg = fast_config(output_url=str(tmp_path / "out"))
    assert cfg.scratch_root == str(tmp_path / "out" / "_scratch")
    assert study_url(cfg, "s") == cfg.layout().study("s")
    store = OutputStore.open(cfg)
    assert ModelStore.of(cfg).url == cfg.layout().models() == str(tmp_path / "out" / "models")
    writer = store.writer("r1")
    frame = pd.DataFrame({"series_id": pd.Series(["a"], dtype="string"), "field": ["y"], "reason": ["constant"]})
    path = writer.write("quarantine", frame, 0)
    assert path == store.layout.part("quarantine", "r1", 0) and (tmp_path / "out/quarantine/run=r1/part-0.parquet").exists()
    assert store.committed_runs() == [] == committed_runs(cfg.output_url)
    writer.commit({"status": "succeeded"})
    assert store.committed_runs() == ["r1"] and (tmp_path / "out/runs/r1/manifest.json").exists()
    assert store.partitions("r1", ["predictions", "metrics"]) == {
        "predictions": store.layout.partition("predictions", "r1"), "metrics": store.layout.partition("metrics", "r1")}
