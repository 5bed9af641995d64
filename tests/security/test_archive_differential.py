"""No parser differential between the guard and Keras (issue 26, finding 1).

The guard checked the first `config.json` of a member and Keras opened the last. Now an archive naming
any file twice (exactly, or after case folding and path normalisation) is refused, and Keras reads a
fresh archive of exactly the entries that were checked. Real archives: a trained model saved to a real
local store, its member re-zipped with `zipfile`, its checksum forged to match (default settings: no
signing key), loaded through the product's retrain decision.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from datetime import timedelta
from pathlib import Path

import keras
import numpy as np
import pytest

from lstm_core import artifacts
from lstm_core.engine import fit
from lstm_core.errors import ArtifactError
from lstm_core.model_guard import (
    UnsafeArchive,
    canonical_name,
    check_archive,
    checked_copy,
)
from lstm_core.retrain import decide
from tests.conftest import fast_config, make_frame, prepare
from tests.security.gadgets import (
    entries_of,
    epsilon_gadget,
    with_second_config,
    writer_gadget,
    zip_bytes,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = fast_config()
    panel, _ = prepare(make_frame(n_series=3, length=80), cfg)
    train = panel.drop_last(cfg.horizon)
    forecaster = fit(train, cfg)
    store = tmp_path_factory.mktemp("store")
    mp = pytest.MonkeyPatch()
    mp.delenv(artifacts.SIGNING_KEY_ENV, raising=False)
    version = artifacts.save(forecaster, str(store), cfg.model_key(), config=cfg.public_dict(), fingerprint="test")
    mp.undo()
    return cfg, panel, train, forecaster, store, version


@pytest.fixture
def store(trained, tmp_path, monkeypatch):
    monkeypatch.delenv(artifacts.SIGNING_KEY_ENV, raising=False)
    cfg, _, train, _, original, version = trained
    copy = tmp_path / "store"
    shutil.copytree(original, copy)
    return cfg, train, copy, copy / cfg.model_key() / version


def _plant(version_dir: Path, data: bytes) -> None:
    """Replace member-0 with `data` and forge its recorded sha256 (what anyone who can write the store can do)."""
    (version_dir / "member-0.keras").write_bytes(data)
    meta = json.loads((version_dir / "metadata.json").read_text())
    meta["sha256"]["member-0.keras"] = hashlib.sha256(data).hexdigest()
    (version_dir / "metadata.json").write_text(json.dumps(meta))


def _decide(cfg, train, root, policy="auto"):
    return decide(policy, str(root), cfg.model_key(), train if policy != "never" else None, window=cfg.window,
                  validation_steps=cfg.validation_steps, loss=cfg.training.loss, max_age=timedelta(days=1),
                  tolerance=10.0)


def test_the_duplicate_entry_gadget_is_live_under_keras_alone(store, tmp_path):
    """Why this matters: Keras itself opens the second config.json and runs its Lambda (in a child process)."""
    _, _, _, version_dir = store
    path = tmp_path / "gadget.keras"
    path.write_bytes(with_second_config((version_dir / "member-0.keras").read_bytes(), epsilon_gadget))
    code = ("import keras, lstm_core.model\n"
            f"try:\n    keras.saving.load_model({str(path)!r}, compile=False, safe_mode=True)\n"
            "except Exception:\n    pass\n"
            "print('EPSILON', type(keras.config.epsilon()).__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert "EPSILON" in out.stdout and "EPSILON float" not in out.stdout, (out.stdout, out.stderr[-2000:])


@pytest.mark.parametrize("gadget", ["epsilon", "writer"])
def test_a_second_config_json_is_refused_and_runs_nothing(store, tmp_path, gadget):
    cfg, train, root, version_dir = store
    target = tmp_path / "payload"
    payload = epsilon_gadget if gadget == "epsilon" else writer_gadget(str(target))
    _plant(version_dir, with_second_config((version_dir / "member-0.keras").read_bytes(), payload))
    decision = _decide(cfg, train, root)
    assert decision.action == "train" and decision.loaded is None  # the run trains: no forecast from it
    assert "member-0.keras is corrupt or unsafe: the entry 'config.json' repeats 'config.json'" in decision.reason, \
        decision.reason
    assert keras.config.epsilon() == 1e-7, "the second config.json ran"
    assert not target.exists(), "the second config.json wrote a file"
    with pytest.raises(ArtifactError, match="retrain policy is 'never' but no saved model can be loaded: .*repeats"):
        _decide(cfg, train, root, policy="never")
    assert keras.config.epsilon() == 1e-7 and not target.exists()


@pytest.mark.parametrize("second", ["./config.json", "a/../config.json", "sub\\..\\config.json", ".\\config.json",
                                    "/config.json", "config.json/", "CONFIG.JSON", "Config.Json", "config.json/.",
                                    "\uff43onfig.json"])  # fullwidth c: NFKC folds it to c
def test_names_a_reader_could_take_for_config_json_are_refused(store, second):
    cfg, train, root, version_dir = store
    member = (version_dir / "member-0.keras").read_bytes()
    crafted = with_second_config(member, epsilon_gadget, name=second)
    assert canonical_name(second) == "config.json"
    with pytest.raises(UnsafeArchive, match=r"repeats 'config.json'"):
        check_archive(crafted, 10**8)
    _plant(version_dir, crafted)
    decision = _decide(cfg, train, root)
    assert decision.action == "train" and "repeats 'config.json'" in decision.reason, decision.reason
    assert keras.config.epsilon() == 1e-7


@pytest.mark.parametrize("name", ["model.weights.h5", "metadata.json", "./model.weights.h5"])
def test_any_repeated_entry_is_refused(store, name):
    _, _, _, version_dir = store
    entries = entries_of((version_dir / "member-0.keras").read_bytes())
    crafted = zip_bytes(entries + [(name, dict(entries)[name.lstrip("./")])])
    with pytest.raises(UnsafeArchive, match=f"repeats '{name.lstrip('./')}'"):
        check_archive(crafted, 10**8)


def test_keras_reads_exactly_the_checked_entries(store, tmp_path):
    _, _, _, version_dir = store
    stored = (version_dir / "member-0.keras").read_bytes()
    copy = checked_copy(stored, 10**8, str(tmp_path))
    assert Path(copy).parent == tmp_path
    assert entries_of(Path(copy).read_bytes()) == entries_of(stored)
    with zipfile.ZipFile(copy) as z:
        assert len(z.namelist()) == len(set(z.namelist())) == 3


def test_an_ordinary_saved_model_loads_and_forecasts_identically(trained, monkeypatch):
    monkeypatch.delenv(artifacts.SIGNING_KEY_ENV, raising=False)
    cfg, panel, train, forecaster, store, version = trained
    loaded = artifacts.load(str(store), cfg.model_key(), version, expect_window=cfg.window)
    np.testing.assert_array_equal(loaded.forecaster.forecast(panel, cfg.horizon), forecaster.forecast(panel, cfg.horizon))
    decision = _decide(cfg, train, store)
    assert decision.action == "load", decision.reason
