"""tests/README.md maps each README promise to tests, and benchmarks/mutations.py names tests too:
every test either names must exist, so the map cannot silently point at a renamed or deleted test."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _defined(path: Path, name: str) -> bool:
    return path.is_file() and re.search(rf"^\s*def {re.escape(name)}\(", path.read_text(), re.M) is not None


def test_every_test_in_the_promise_map_exists():
    text = (ROOT / "tests" / "README.md").read_text()
    refs = re.findall(r"`([\w/]+\.py)::(\w+)`", text)
    assert len(refs) > 80, len(refs)
    missing = sorted({f"{p}::{n}" for p, n in refs if not _defined(ROOT / "tests" / p, n)})
    assert not missing, f"tests/README.md names tests that do not exist: {missing}"


def _mutations_module():
    spec = importlib.util.spec_from_file_location("mutations", ROOT / "benchmarks" / "mutations.py")
    mutations = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mutations  # dataclasses look their module up there
    try:
        spec.loader.exec_module(mutations)
    finally:
        del sys.modules[spec.name]
    return mutations


def test_a_mutant_is_classified_by_what_pytest_reports():
    classify = _mutations_module().classify
    # xdist's -x: a named test failed, the other workers were interrupted, pytest exits 2
    interrupted = ["FAILED tests/a.py::test_x - assert 1 == 2",
                   "!!!!!!!!!!!!!! xdist.dsession.Interrupted: stopping after 1 failures !!!!!!!!!!!!!!",
                   "1 failed, 3 passed in 4.20s"]
    assert classify(2, interrupted) == "failed"
    assert classify(1, ["ERROR tests/a.py::test_x - RuntimeError: fixture broke", "1 error in 0.5s"]) == "failed"
    assert classify(0, ["4 passed in 3.00s"]) == "passed"
    # never tested: a collection error, a missing file, no test run
    assert classify(2, ["ERROR tests/a.py - ImportError: cannot import name", "1 error in 0.3s"]) == "error"
    assert classify(4, ["ERROR: file or directory not found: tests/gone.py", "no tests ran in 0.01s"]) == "error"
    assert classify(0, ["no tests ran in 0.01s"]) == "error"


def test_every_test_a_mutation_names_exists_and_its_code_is_there_once():
    mutations = _mutations_module()
    assert len(mutations.MUTATIONS) >= 13 and len({m.name for m in mutations.MUTATIONS}) == len(mutations.MUTATIONS)
    for m in mutations.MUTATIONS:
        assert (ROOT / m.file).is_file(), (m.name, m.file)
        # A refactor that moves the mutated line makes the mutant stale: caught here, not at the next check.
        assert (ROOT / m.file).read_text().count(m.old) == 1, (m.name, m.file, m.old)
        for test in m.tests:
            path, name = test.split("::")
            assert _defined(ROOT / path, name), (m.name, test)
