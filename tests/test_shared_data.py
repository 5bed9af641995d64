"""Tests that need `../shared` skip only locally: in CI (CI=true) a missing data set fails them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import shared_path

ROOT = Path(__file__).resolve().parents[1]


def test_present_data_are_returned(tmp_path):
    (tmp_path / "data").mkdir()
    assert shared_path("data", root=tmp_path) == tmp_path / "data"


def test_missing_data_skip_locally(tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="is missing"):
        shared_path("data", "m4-weekly", root=tmp_path)


@pytest.mark.parametrize("value", ["true", "1"])
def test_missing_data_fail_in_ci(tmp_path, monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="CI=true, so this test fails instead of skipping"):
        shared_path("data", "m4-weekly", root=tmp_path)


def test_the_m4_test_fails_in_ci_when_the_shared_data_are_missing(tmp_path):
    """The real test file, run by pytest from a clone with no `../shared` beside it, under CI=true."""
    clone = tmp_path / "clone"
    for rel in ("tests/__init__.py", "tests/conftest.py", "tests/flows/__init__.py",
                "tests/flows/test_m4_subsets.py", "pyproject.toml"):
        if (ROOT / rel).exists():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            (clone / rel).write_bytes((ROOT / rel).read_bytes())
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/flows/test_m4_subsets.py"]
    env_ci = {"CI": "true", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(clone)}
    ci = subprocess.run(args, cwd=clone, env=env_ci, capture_output=True, text=True, timeout=300)
    assert ci.returncode == 1 and "2 failed" in ci.stdout, ci.stdout[-2000:]
    assert "CI=true, so this test fails instead of skipping" in ci.stdout
