"""Through the flow, on S3 (moto): a tampered model store never fails a run and never runs its payload.

Run 1 trains and saves. Then the newest saved model is replaced by a crafted one (a Lambda calling
`keras.config.set_epsilon`, checksum forged): run 2 retrains and records why. Then the newest
model's metadata is malformed (`members: "x"`): run 3 retrains and records why.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile

import keras
import pytest

from tests.conftest import make_frame
from tests.reliability.conftest import FAST, direct_fs, put_frame

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def _manifest(fs, out: str, run_id: str) -> dict:
    return json.loads(fs.cat_file(f"{out}/runs/{run_id}/manifest.json"))


def _plant_lambda(fs, version_url: str) -> None:
    member = f"{version_url}/member-0.keras"
    with zipfile.ZipFile(io.BytesIO(fs.cat_file(member))) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    config = json.loads(entries["config.json"])
    window = config["config"]["layers"][0]
    config["config"]["layers"].append({
        "module": "keras.layers", "class_name": "Lambda", "registered_name": None, "name": "payload",
        "config": {"name": "payload", "function": {"module": "keras.config", "class_name": "function",
                                                   "config": "set_epsilon", "registered_name": "set_epsilon"}},
        "inbound_nodes": [{"args": [{"class_name": "__keras_tensor__", "config": {
            "shape": window["config"]["batch_shape"], "dtype": "float32",
            "keras_history": [window["name"], 0, 0]}}], "kwargs": {}}]})
    entries["config.json"] = json.dumps(config).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    fs.pipe_file(member, buf.getvalue())
    meta = json.loads(fs.cat_file(f"{version_url}/metadata.json"))
    meta["sha256"]["member-0.keras"] = hashlib.sha256(buf.getvalue()).hexdigest()
    fs.pipe_file(f"{version_url}/metadata.json", json.dumps(meta).encode())


def test_tampered_store_retrains_and_records_why(s3_bucket, s3_endpoint, monkeypatch):
    from flows.batch_forecast import batch_forecast

    monkeypatch.delenv("LSTM_FORECAST_MODEL_SIGNING_KEY", raising=False)
    fs = direct_fs(s3_endpoint)
    put_frame(fs, f"{s3_bucket}/in/series.parquet", make_frame(n_series=4, length=100))
    out = f"{s3_bucket}/out"
    settings = {**FAST, "input_url": f"{s3_bucket}/in/series.parquet", "output_url": out}
    first = batch_forecast(settings={**settings, "run_id": "first"})
    models = f"{out}/models/{first['model_key']}"

    _plant_lambda(fs, f"{models}/{first['model_version']}")
    second = batch_forecast(settings={**settings, "run_id": "second"})
    stored = _manifest(fs, out, "second")
    assert stored["status"] == "succeeded" and stored["retrain"]["action"] == "train"
    assert "member-0.keras is corrupt or unsafe: a function entry" in stored["retrain"]["reason"]
    assert "keras.config.set_epsilon" in stored["retrain"]["reason"]
    assert keras.config.epsilon() == 1e-7, "the planted Lambda ran"
    assert second["model_version"] != first["model_version"]

    meta_url = f"{models}/{second['model_version']}/metadata.json"
    fs.pipe_file(meta_url, json.dumps({**json.loads(fs.cat_file(meta_url)), "members": "x"}).encode())
    batch_forecast(settings={**settings, "run_id": "third"})
    stored = _manifest(fs, out, "third")
    assert stored["status"] == "succeeded" and stored["retrain"]["action"] == "train"
    assert "metadata.json is corrupt: field 'members'" in stored["retrain"]["reason"]
    # Nothing but the run's own outputs and models appeared in the bucket.
    fs.invalidate_cache()
    tops = {k.split("/", 2)[1] for k in fs.find(s3_bucket)}
    assert tops == {"in", "out"}
