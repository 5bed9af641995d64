"""Everything a loaded model version serves is covered by its checksums and signature, and every malformed
sidecar is a refusal with the reason (issue 26, findings 3 and 10).

A version folder holds `member-<i>.keras`, `scaler.json`, `intervals.json` (saved after the model, by
`ModelStore.save_intervals`: its sha256 then added to `metadata.json`, re-signed with the key) and
`metadata.json`; under `refit`, `backtest/<version>/` is a complete version of its own, loaded through the
same checks. `artifacts.load` reads exactly these. Real parts: a trained model saved to a real local
store, intervals fitted by `fit_conformal` on real residuals of that model, files tampered on disk.
"""
from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lstm_core import artifacts
from lstm_core.engine import fit
from lstm_core.errors import ArtifactError
from lstm_core.intervals import (
    ConformalIntervals,
    fit_conformal,
    naive_scales,
    save_intervals,
)
from lstm_core.location import Location
from lstm_core.model_store import ModelStore
from lstm_core.retrain import decide, validation_loss
from lstm_core.records import TrainingSummary
from tests.conftest import fast_config, make_frame, prepare

KEY = "a-signing-key-for-the-tests-" + "k" * 20
LEVELS = (80.0, 95.0)


def _intervals(forecaster, panel, cfg) -> ConformalIntervals:
    """Conformal intervals fitted on the model's own errors over the last horizon of each series."""
    history = panel.drop_last(cfg.horizon)
    yhat = forecaster.forecast(history, cfg.horizon)  # (S, H)
    actual = np.stack([panel.y[panel.offsets[i + 1] - cfg.horizon:panel.offsets[i + 1]]
                       for i in range(panel.n_series)])
    linear, log_scale = naive_scales(history, cfg.season_length)
    ids = np.asarray(panel.series_ids).astype(str)
    table = pd.DataFrame({"series_id": np.repeat(ids, cfg.horizon), "cutoff": 0, "window": 0,
                          "step": np.tile(np.arange(1, cfg.horizon + 1), len(ids)),
                          "y": actual.reshape(-1), "yhat": yhat.reshape(-1),
                          "interval_scale": np.repeat(linear, cfg.horizon), "log_scale": np.repeat(log_scale, cfg.horizon)})
    return fit_conformal(table, levels=LEVELS, horizon=cfg.horizon, season_length=cfg.season_length)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = fast_config()
    panel, _ = prepare(make_frame(n_series=3, length=80), cfg)
    train = panel.drop_last(cfg.horizon)
    forecaster = fit(train, cfg)
    intervals = _intervals(forecaster, panel, cfg)
    stores = {}
    for signed in (False, True):
        root = tmp_path_factory.mktemp("signed" if signed else "plain")
        mp = pytest.MonkeyPatch()
        if signed:
            mp.setenv(artifacts.SIGNING_KEY_ENV, KEY)
        else:
            mp.delenv(artifacts.SIGNING_KEY_ENV, raising=False)
        version = artifacts.save(forecaster, str(root), cfg.model_key(), config=cfg.public_dict(), fingerprint="t")
        ModelStore(Location.of(str(root))).save_intervals(intervals, cfg.model_key(), version)
        mp.undo()
        stores[signed] = (root, version)
    return cfg, panel, train, forecaster, intervals, stores


def _copy(trained, tmp_path, signed):
    cfg, _, train, _, intervals, stores = trained
    original, version = stores[signed]
    root = tmp_path / "store"
    shutil.copytree(original, root)
    return cfg, train, intervals, root, root / cfg.model_key() / version


@pytest.fixture
def plain(trained, tmp_path, monkeypatch):
    monkeypatch.delenv(artifacts.SIGNING_KEY_ENV, raising=False)
    return _copy(trained, tmp_path, signed=False)


@pytest.fixture
def signed(trained, tmp_path, monkeypatch):
    monkeypatch.setenv(artifacts.SIGNING_KEY_ENV, KEY)
    return _copy(trained, tmp_path, signed=True)


def _load(cfg, root, version_dir):
    return artifacts.load(str(root), cfg.model_key(), version_dir.name, expect_window=cfg.window)


def _decide(cfg, train, root, policy="auto"):
    """The retrain decision; under 'never' without data, given the features the model key fixes."""
    return decide(policy, str(root), cfg.model_key(), train if policy != "never" else None, window=cfg.window,
                  validation_steps=cfg.validation_steps, loss=cfg.training.loss, max_age=timedelta(days=1),
                  tolerance=10.0, features=tuple(train.feature_names))


def _widen(version_dir: Path, factor: float = 50.0) -> None:
    """The review's reproduction: every quantile of intervals.json multiplied by 50."""
    path = version_dir / "intervals.json"
    data = json.loads(path.read_text())
    data["quantiles"] = {k: (np.asarray(v) * factor).tolist() for k, v in data["quantiles"].items()}
    path.write_text(json.dumps(data))


def _forge(version_dir: Path, name: str) -> None:
    """Record the tampered file's sha256 in metadata.json (what anyone who can write the store can do)."""
    import hashlib

    meta = json.loads((version_dir / "metadata.json").read_text())
    meta["sha256"][name] = hashlib.sha256((version_dir / name).read_bytes()).hexdigest()
    (version_dir / "metadata.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("which", ["signed", "plain"])
def test_a_version_records_and_serves_its_intervals(request, which):
    cfg, _, intervals, root, version_dir = request.getfixturevalue(which)
    if True:
        meta = json.loads((version_dir / "metadata.json").read_text())
        assert set(meta["sha256"]) == {"member-0.keras", "scaler.json", "intervals.json"}
        assert {p.name for p in version_dir.iterdir()} == {"member-0.keras", "scaler.json", "intervals.json",
                                                           "metadata.json"}
        loaded = _load(cfg, root, version_dir)
        for kind, q in intervals.quantiles.items():
            np.testing.assert_array_equal(loaded.intervals.quantiles[kind], q)
        assert loaded.intervals.levels == LEVELS
        assert ("signature" in meta) == (which == "signed")


def _flip_byte(version_dir: Path, name: str) -> None:
    path = version_dir / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _scale_scaler(version_dir: Path, name: str) -> None:
    path = version_dir / name
    path.write_text(path.read_text().replace("1", "7", 1))


TAMPER = {
    "member-0.keras": _flip_byte,
    "scaler.json": _scale_scaler,
    "intervals.json": lambda d, n: _widen(d),
}


@pytest.mark.parametrize("name", list(TAMPER))
@pytest.mark.parametrize("forged", [False, True], ids=["as-is", "checksum-forged"])
def test_each_served_file_of_a_signed_version_is_covered(signed, name, forged):
    cfg, train, _, root, version_dir = signed
    TAMPER[name](version_dir, name)
    if forged:
        _forge(version_dir, name)
        pattern = "its signature does not match"
    else:
        pattern = f"{name} is corrupt: its sha256 .* differs from the .* recorded when it was saved"
    with pytest.raises(ArtifactError, match=pattern):
        _load(cfg, root, version_dir)
    decision = _decide(cfg, train, root)
    assert decision.action == "train" and decision.loaded is None
    with pytest.raises(ArtifactError, match="retrain policy is 'never' but no saved model can be loaded"):
        _decide(cfg, train, root, policy="never")


@pytest.mark.parametrize("name", list(TAMPER))
def test_without_a_key_checksums_refuse_a_changed_file(plain, name):
    cfg, _, _, root, version_dir = plain
    TAMPER[name](version_dir, name)
    with pytest.raises(ArtifactError, match=f"{name} is corrupt: its sha256"):
        _load(cfg, root, version_dir)


def test_without_a_key_a_forged_checksum_is_not_detected_as_documented(plain):
    """Without a key, whoever writes the store can rewrite the checksums too (README "Security")."""
    cfg, _, intervals, root, version_dir = plain
    _widen(version_dir)
    _forge(version_dir, "intervals.json")
    loaded = _load(cfg, root, version_dir)
    np.testing.assert_allclose(loaded.intervals.quantiles["linear"], intervals.quantiles["linear"] * 50)


def test_signed_intervals_removed_from_the_checksums_are_refused(signed):
    cfg, _, _, root, version_dir = signed
    meta = json.loads((version_dir / "metadata.json").read_text())
    del meta["sha256"]["intervals.json"]
    (version_dir / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="its signature does not match"):
        _load(cfg, root, version_dir)


def test_a_listed_intervals_file_that_is_gone_is_refused(signed):
    cfg, _, _, root, version_dir = signed
    (version_dir / "intervals.json").unlink()
    with pytest.raises(ArtifactError, match=r"intervals.json missing \(its sha256 is recorded\)"):
        _load(cfg, root, version_dir)


def test_intervals_the_signature_never_covered_are_not_served(trained, tmp_path, monkeypatch, caplog):
    """A signed version whose intervals were written beside it without being recorded (as before this fix):
    they are not used; the run calibrates its own."""
    monkeypatch.setenv(artifacts.SIGNING_KEY_ENV, KEY)
    cfg, _, _, forecaster, intervals, _ = trained
    root = tmp_path / "store"
    version = artifacts.save(forecaster, str(root), cfg.model_key(), config=cfg.public_dict(), fingerprint="t")
    save_intervals(ConformalIntervals.from_dict({**intervals.to_dict(), "quantiles": {
        k: (v * 50).tolist() for k, v in intervals.quantiles.items()}}), str(root), cfg.model_key(), version)
    loaded = artifacts.load(str(root), cfg.model_key(), version)
    assert loaded.intervals is None
    assert "intervals.json is not covered by the signature" in caplog.text


# --- finding 10: malformed sidecars are refusals, never another exception --------------------------------
JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True)
                    | st.text(max_size=5),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                                        max_size=4),
                    max_leaves=12)


def _paths(node, prefix=()):
    """Every (path, value) inside a JSON value."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _replace(node, path, value):
    if not path:
        return value
    node = json.loads(json.dumps(node))
    parent = node
    for p in path[:-1]:
        parent = parent[p]
    parent[path[-1]] = value
    return node


def _delete(node, path):
    node = json.loads(json.dumps(node))
    parent = node
    for p in path[:-1]:
        parent = parent[p]
    del parent[path[-1]]
    return node


@st.composite
def malformed(draw, original: dict):
    """`original` with one to three parts replaced by other JSON, or removed; or a targeted shape error."""
    data = original
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p, _ in _paths(data)]
        path = tuple(draw(st.sampled_from(paths)))
        if path and draw(st.booleans()) and draw(st.booleans()):
            data = _delete(data, path)
        else:
            data = _replace(data, path, draw(JSON | st.sampled_from(
                [[], {}, [[]], float("nan"), float("inf"), -1, 0, 10**12, "x", [1, 0], [0.5, 0.2], [[1.0, -1.0]]])))
    return data


MEMBER = st.fixed_dictionaries({}, optional={"best_epoch": JSON, "epochs_run": JSON, "stopped_by": JSON,
                                              "history": st.dictionaries(st.text(max_size=4), JSON, max_size=2)})
# Cross-field shapes: each value is of its field's type, wrong only against another field or the network.
TARGETED = {
    ("known",): st.lists(st.integers(-2, 4), max_size=3),
    ("window",): st.integers(1, 60),
    ("feature_names",): st.lists(st.sampled_from(["y", "x", "price"]), max_size=3),
    ("members",): st.integers(0, 3),
    ("season_length",): st.sampled_from([1, 7, 24, 10**5, 10**7]),
    ("training", "members"): st.lists(MEMBER, max_size=3),
    ("training", "seconds"): JSON,
    ("training", "best_val_loss"): JSON,
    ("training", "device"): JSON,
    ("static_encoder",): JSON,
    ("deseasonalize",): st.sampled_from(["auto", "multiplicative", "additive", "off", "on"]),
}


@st.composite
def malformed_metadata(draw, original: dict):
    """Targeted cross-field changes, generic ones (`malformed`), or both."""
    data = original
    for path in draw(st.lists(st.sampled_from(sorted(TARGETED)), max_size=3, unique=True)):
        data = _replace(data, path, draw(TARGETED[path]))
    if data is original or draw(st.booleans()):
        data = draw(malformed(data))
    return data


@pytest.fixture(scope="module")
def saved_intervals(trained):
    return trained[4].to_dict()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_malformed_intervals_are_refused_with_a_value_error(trained, saved_intervals, data):
    cfg, panel, *_ = trained
    bad = data.draw(malformed(saved_intervals))
    try:
        intervals = ConformalIntervals.from_dict(bad)
    except ValueError as exc:
        assert str(exc).startswith("intervals: "), exc
        return
    # Accepted: it is a usable set of intervals.
    history = panel.drop_last(cfg.horizon)
    bounds = intervals.predict(history, np.ones((history.n_series, min(cfg.horizon, intervals.horizon))))
    assert all(np.isfinite(b).all() for b in bounds.values())


def _write_sidecar(version_dir: Path, name: str, data) -> None:
    (version_dir / name).write_text(json.dumps(data))
    if name != "metadata.json":
        _forge(version_dir, name)  # the checksum matches: what is checked is the file's shape


def _use(loaded, panel, cfg) -> None:
    """What a run does with a loaded model: forecast, score, intervals, its training summary."""
    forecaster = loaded.forecaster
    forecaster.forecast(panel, cfg.horizon)
    validation_loss(forecaster, panel, cfg.validation_steps, cfg.training.loss)
    if loaded.intervals is not None:
        loaded.intervals.predict(panel, np.ones((panel.n_series, min(cfg.horizon, loaded.intervals.horizon))))
    t = forecaster.training or {}
    TrainingSummary(**{k: t.get(k) for k in ("device", "cudnn", "seconds", "best_val_loss", "series")},
                    epochs=[m.get("epochs_run") for m in t.get("members", [])],
                    stopped_by=[m.get("stopped_by") for m in t.get("members", [])])
    for m in t.get("members", []):
        int(m.get("best_epoch", 0))
        for values in (m.get("history") or {}).values():
            np.asarray(values, dtype=float)


@pytest.mark.parametrize("name", ["intervals.json", "metadata.json"])
def test_malformed_sidecars_make_the_model_unloadable_with_the_reason(plain, trained, tmp_path_factory, name):
    """Through the model store, under retrain 'never' (the run would exit 2) and 'auto' (it retrains)."""
    cfg, train, _, root, version_dir = plain
    panel = trained[1]
    original = json.loads((version_dir / name).read_text())
    pristine = tmp_path_factory.mktemp("pristine")
    shutil.copytree(version_dir, pristine, dirs_exist_ok=True)
    outcomes = {"refused": 0, "loaded": 0}

    strategy = malformed_metadata if name == "metadata.json" else malformed

    @settings(max_examples=40 if name == "metadata.json" else 15, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(data=st.data())
    def check(data):
        shutil.copytree(pristine, version_dir, dirs_exist_ok=True)
        _write_sidecar(version_dir, name, data.draw(strategy(original)))
        try:
            decision = _decide(cfg, train, root, policy="never")
        except ArtifactError as exc:
            assert "retrain policy is 'never' but no saved model can be loaded: model " in str(exc)
            outcomes["refused"] += 1
            auto = _decide(cfg, train, root)
            assert auto.action == "train" and auto.reason.startswith("no loadable model: model "), auto.reason
            return
        outcomes["loaded"] += 1
        _use(decision.loaded, panel, cfg)

    check()
    assert outcomes["refused"] > 0, outcomes


@pytest.mark.parametrize("edit, pattern", [
    ({"quantiles": []}, r"intervals.json is corrupt: intervals: field 'quantiles' must be a JSON object, not list"),
    ({"quantiles": {"linear": [[[float("nan")] * 12] * 2] * 2}}, r"quantiles\['linear'\]\S* is not finite"),
    ({"levels": ["80", "95"]}, r"levels\[0\] must be a number, not str"),
    ({"horizon": True}, r"field 'horizon' must be a JSON int, not bool"),
    ({"quantiles": "swap"}, r"has a lower quantile above its upper one"),
])
def test_named_malformed_intervals_are_refused_with_the_reason(plain, edit, pattern):
    cfg, train, _, root, version_dir = plain
    data = json.loads((version_dir / "intervals.json").read_text())
    if edit.get("quantiles") == "swap":
        q = np.asarray(data["quantiles"]["linear"])
        edit = {"quantiles": {"linear": q[:, ::-1, :].tolist()}}
    _write_sidecar(version_dir, "intervals.json", {**data, **edit})
    with pytest.raises(ArtifactError, match=pattern):
        _decide(cfg, train, root, policy="never")
    assert _decide(cfg, train, root).action == "train"


@pytest.mark.parametrize("edit, pattern", [
    ({"known": [5]}, r"field 'metadata': Value error, known \[5\] must be ascending column indexes"),
    ({"window": 12}, r"field 'window' gives input_size 12, member-0.keras takes 24"),
    ({"feature_names": ["y", "extra"]}, r"field 'feature_names' gives n_features 2, member-0.keras takes 1"),
    ({"training": {"members": [{"epochs_run": "three"}]}}, r"field 'training.members.0.epochs_run'"),
    ({"training": {"seconds": "slow"}}, r"field 'training.seconds'"),
    ({"members": 1, "training": {"members": [{}, {}]}}, r"training records 2 members, the model has 1"),
])
def test_named_cross_field_errors_in_metadata_are_refused_with_the_reason(plain, edit, pattern):
    cfg, train, _, root, version_dir = plain
    meta = json.loads((version_dir / "metadata.json").read_text())
    (version_dir / "metadata.json").write_text(json.dumps({**meta, **edit}))
    with pytest.raises(ArtifactError, match=pattern):  # a pinned model is loaded without an expected window
        artifacts.load(str(root), cfg.model_key(), version_dir.name)
    assert _decide(cfg, train, root).action == "train"


def test_widened_intervals_of_a_signed_model_are_never_published(tmp_path, monkeypatch):
    """The review's reproduction through the modelling path a run takes: a signed model trained and calibrated
    (intervals saved beside it), its quantiles then multiplied by 50 with the checksum forged. The next run
    refuses the version and retrains; its published intervals are not the widened ones."""
    from lstm_core.modelling import forecast, get_or_train, prepare_data
    from lstm_core.validation import validate_for

    monkeypatch.setenv(artifacts.SIGNING_KEY_ENV, KEY)
    cfg = fast_config(output_url=str(tmp_path / "out"), retrain="auto")
    data = prepare_data(validate_for(make_frame(n_series=4, length=160), cfg), cfg)
    store, spec = ModelStore.of(cfg), cfg.model_spec()
    first, _ = get_or_train(store, spec, data, calibrate=True)
    version_dir = tmp_path / "out" / "models" / spec.key / first.version
    assert "intervals.json" in json.loads((version_dir / "metadata.json").read_text())["sha256"]
    again, decision = get_or_train(store, spec, data)  # untampered: loaded, with its intervals
    assert decision.action == "load" and forecast(again, data, cfg).intervals_source == "model"
    width = _width(forecast(again, data, cfg).future)

    _widen(version_dir)
    _forge(version_dir, "intervals.json")
    third, decision = get_or_train(store, spec, data)
    assert decision.action == "train" and "its signature does not match" in decision.reason, decision.reason
    published = forecast(third, data, cfg, store=store).future
    assert _width(published) < 5 * width  # not the ×50 quantiles


def _width(frame: pd.DataFrame) -> float:
    return float((frame["yhat_hi_95"] - frame["yhat_lo_95"]).mean())
