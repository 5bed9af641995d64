"""The weights file is checked against the network before Keras or h5py reads a value (issue 26, finding 9).

Unsigned loads parse the store's weights with h5py's bundled HDF5. A few-KB archive whose weights file
declares huge datasets (chunked, never written: HDF5 fills them on read) passed `max_model_bytes` and
allocated gigabytes while loading. Each crafted file here is made with h5py from a really trained
model's weights, re-zipped into its real `.keras` member, checksum forged (no signing key).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from lstm_core import artifacts
from lstm_core.engine import fit
from lstm_core.model_guard import UnsafeArchive, check_archive
from tests.conftest import fast_config, make_frame, prepare
from tests.security.gadgets import entries_of, zip_bytes

ROOT = Path(__file__).resolve().parents[2]
KERNEL = "layers/lstm/cell/vars/0"  # the LSTM's input kernel in the weights file Keras writes
HUGE = (100_000, 4_000)  # 1.6 GB of float32, declared in a few hundred bytes


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = fast_config()
    panel, _ = prepare(make_frame(n_series=3, length=80), cfg)
    store = tmp_path_factory.mktemp("store")
    mp = pytest.MonkeyPatch()
    mp.delenv(artifacts.SIGNING_KEY_ENV, raising=False)
    version = artifacts.save(fit(panel.drop_last(cfg.horizon), cfg), str(store), cfg.model_key(),
                             config=cfg.public_dict(), fingerprint="test")
    mp.undo()
    return cfg, store, version


def _craft(member: bytes, tmp_path: Path, edit) -> bytes:
    """`member` with its weights file changed by `edit(h5py.File)`."""
    entries = entries_of(member)
    weights = tmp_path / "w.h5"
    weights.write_bytes(dict(entries)["model.weights.h5"])
    with h5py.File(weights, "r+", libver="latest") as f:
        edit(f)
    data = weights.read_bytes()
    return zip_bytes([(n, data if n == "model.weights.h5" else b) for n, b in entries])


def _huge(f):
    del f[KERNEL]
    f.create_dataset(KERNEL, shape=HUGE, dtype="f4", chunks=(1000, 1000), compression="gzip")


def _huge_optimizer_slot(f):
    f.create_dataset("optimizer/vars/99", shape=HUGE, dtype="f4", chunks=(1000, 1000))


def _extra_dataset(f):
    f.create_dataset("layers/lstm/cell/vars/3", shape=(6, 32), dtype="f4")


def _soft_link(f):
    data = f[KERNEL][()]
    del f[KERNEL]
    f.create_dataset("elsewhere", data=data)
    f[KERNEL] = h5py.SoftLink("/elsewhere")


def _external_link(f):
    del f[KERNEL]
    f[KERNEL] = h5py.ExternalLink("/etc/passwd", "/x")


def _wrong_dtype(f):
    data = f[KERNEL][()]
    del f[KERNEL]
    f.create_dataset(KERNEL, data=data.astype("f8"))


def _string_dataset(f):
    del f[KERNEL]
    f.create_dataset(KERNEL, data=["a" * 10] * 6)


def _missing(f):
    del f[KERNEL]


def _big_attribute(f):
    # 8 MB: past the 64 KiB an attribute may hold (dense attribute storage, as HDF5 1.8+ writes it)
    f.create_group("layers/lstm/cell/extra").attrs.create("blob", data=np.zeros(1_000_000))


CASES = {
    "huge kernel": (_huge, (r"dataset layers/lstm/cell/vars/0 declares shape \(100000, 4000\) <f4; the network "
                            r"config.json describes has \(6, 32\) <f4")),
    "huge optimizer slot": (_huge_optimizer_slot, (r"optimizer dataset optimizer/vars/99 declares shape \(100000, "
                                                   r"4000\), which no variable of the network has")),
    "extra dataset": (_extra_dataset, r"dataset layers/lstm/cell/vars/3 .* is not a variable of the network"),
    "soft link": (_soft_link, r"layers/lstm/cell/vars/0 is a SoftLink"),
    "external link": (_external_link, r"layers/lstm/cell/vars/0 is a ExternalLink"),
    "wrong dtype": (_wrong_dtype, r"declares shape \(6, 32\) <f8; the network config.json describes has \(6, 32\) <f4"),
    "string dataset": (_string_dataset, r"dataset layers/lstm/cell/vars/0 has dtype object"),
    "missing variable": (_missing, r"the network's variables \['layers/lstm/cell/vars/0'\] are missing"),
    "big attribute": (_big_attribute, r"layers/lstm/cell/extra has an attribute 'blob' of 8,000,000 bytes"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_weights_that_are_not_the_networks_are_refused(trained, tmp_path, case, monkeypatch):
    monkeypatch.delenv(artifacts.SIGNING_KEY_ENV, raising=False)
    cfg, store, version = trained
    edit, pattern = CASES[case]
    member = (store / cfg.model_key() / version / "member-0.keras").read_bytes()
    crafted = _craft(member, tmp_path, edit)
    with pytest.raises(UnsafeArchive, match=pattern):
        check_archive(crafted, 10_000_000)
    # And through the model store: the version is refused with the reason.
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    _plant(copy / cfg.model_key() / version, crafted)
    with pytest.raises(artifacts.ArtifactError, match="member-0.keras is corrupt or unsafe: model.weights.h5: "):
        artifacts.load(str(copy), cfg.model_key(), version, max_bytes=10_000_000)


def _plant(version_dir: Path, data: bytes) -> None:
    (version_dir / "member-0.keras").write_bytes(data)
    meta = json.loads((version_dir / "metadata.json").read_text())
    meta["sha256"]["member-0.keras"] = hashlib.sha256(data).hexdigest()
    (version_dir / "metadata.json").write_text(json.dumps(meta))


_PEAK = """
import json, resource, sys
from lstm_core import artifacts
from lstm_core.model_guard import check_archive
store, key, version, legit = sys.argv[1:5]
check_archive(open(legit, "rb").read(), 10_000_000)  # imports, and the network's layout, done once
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    {load}
    outcome = "loaded"
except Exception as exc:
    outcome = type(exc).__name__ + ": " + str(exc)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RESULT " + json.dumps({{"outcome": outcome, "grew_mb": (after - before) / 1024}}))
"""


def _peak(load: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PEAK.format(load=load), *args], check=False, cwd=ROOT,
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", artifacts.SIGNING_KEY_ENV: ""})
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, (out.stdout, out.stderr[-3000:])
    return json.loads(line[0][7:])


def test_a_small_archive_declaring_gigabytes_is_refused_without_allocating_them(trained, tmp_path):
    cfg, store, version = trained
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    version_dir = copy / cfg.model_key() / version
    legit = tmp_path / "legit.keras"
    shutil.copy(version_dir / "member-0.keras", legit)
    crafted = _craft(legit.read_bytes(), tmp_path, _huge)
    assert len(crafted) < 100_000  # far under the 10 MB cap on the member
    _plant(version_dir, crafted)
    args = (str(copy), cfg.model_key(), version, str(legit))
    # Keras alone (the stored file, as loads read it before the check) allocates what the file declares.
    alone = _peak(f"import keras, lstm_core.model; keras.saving.load_model({str(version_dir / 'member-0.keras')!r}, "
                  f"compile=False, safe_mode=True)", *args)
    assert alone["grew_mb"] > 1000, alone
    # Through the model store: refused with the reason, before anything allocates the datasets.
    checked = _peak("artifacts.load(store, key, version, max_bytes=10_000_000)", *args)
    assert checked["outcome"].startswith("ArtifactError: ") and "declares shape (100000, 4000)" in checked["outcome"]
    assert checked["grew_mb"] < 400, checked
