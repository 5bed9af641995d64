"""Through the flow, on S3 (moto): a tampered model store never fails a run and never runs its payload.

Run 1 trains and saves. Then its member is replaced by a crafted one (a Lambda calling
`keras.config.set_epsilon`, checksum forged), a newer version with malformed metadata
(`members: "x"`) is added, and a newer one still whose member carries a second `config.json` holding
the Lambda after the checked one (issue 26, finding 1; default settings, no signing key): run 2
retrains, records the three reasons, commits no forecast from any of them, and no payload ran.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile

import keras
import pytest

from tests.conftest import make_frame
from tests.security.gadgets import epsilon_gadget, with_second_config
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
    settings = {**FAST, "input_url": f"{s3_bucket}/in/series.parquet", "output_url": f"{s3_bucket}/out"}
    first = batch_forecast(settings={**settings, "run_id": "first"})
    models = f"{out}/models/{first['model_key']}"
    saved = f"{models}/{first['model_version']}"

    # A newer version with malformed metadata, and the saved one's member replaced by the crafted Lambda.
    newer = f"{models}/{first['model_version'][:-1]}z"
    for name in ("member-0.keras", "scaler.json"):
        fs.pipe_file(f"{newer}/{name}", fs.cat_file(f"{saved}/{name}"))
    meta = json.loads(fs.cat_file(f"{saved}/metadata.json"))
    fs.pipe_file(f"{newer}/metadata.json", json.dumps({**meta, "version": newer.rsplit("/", 1)[1],
                                                       "members": "x"}).encode())
    # Newest: the saved member with a second config.json (the gadget) after the checked one.
    duplicate = f"{models}/{first['model_version'][:-1]}zz"
    crafted = with_second_config(fs.cat_file(f"{saved}/member-0.keras"), epsilon_gadget)
    fs.pipe_file(f"{duplicate}/member-0.keras", crafted)
    fs.pipe_file(f"{duplicate}/scaler.json", fs.cat_file(f"{saved}/scaler.json"))
    fs.pipe_file(f"{duplicate}/metadata.json", json.dumps({
        **meta, "version": duplicate.rsplit("/", 1)[1],
        "sha256": {**meta["sha256"], "member-0.keras": hashlib.sha256(crafted).hexdigest()}}).encode())
    _plant_lambda(fs, saved)

    second = batch_forecast(settings={**settings, "run_id": "second"})
    stored = _manifest(fs, out, "second")
    assert stored["status"] == "succeeded" and stored["retrain"]["action"] == "train"
    reason = stored["retrain"]["reason"]
    # The champion pointer names the saved version: the two planted newer versions are never candidates (a
    # version becomes champion only through the gate or `promote`), and the champion's Lambda is refused.
    assert "member-0.keras is corrupt or unsafe: a function entry" in reason and "keras.config.set_epsilon" in reason
    assert newer.rsplit("/", 1)[1] not in reason and duplicate.rsplit("/", 1)[1] not in reason, reason
    assert keras.config.epsilon() == 1e-7, "the planted Lambda ran"
    assert second["model_version"] not in (first["model_version"], newer.rsplit("/", 1)[1],
                                           duplicate.rsplit("/", 1)[1])
    assert stored["model_version"] == second["model_version"]  # the forecasts committed are the new model's
    # Nothing but the run's own outputs and models appeared in the bucket.
    fs.invalidate_cache()
    tops = {k.split("/", 2)[1] for k in fs.find(s3_bucket)}
    assert tops == {"in", "out"}
