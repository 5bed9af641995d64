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


def test_every_test_a_mutation_names_exists_and_its_code_is_there_once():
    spec = importlib.util.spec_from_file_location("mutations", ROOT / "benchmarks" / "mutations.py")
    mutations = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mutations  # dataclasses look their module up there
    try:
        spec.loader.exec_module(mutations)
    finally:
        del sys.modules[spec.name]
    assert len(mutations.MUTATIONS) >= 13 and len({m.name for m in mutations.MUTATIONS}) == len(mutations.MUTATIONS)
    for m in mutations.MUTATIONS:
        assert (ROOT / m.file).is_file(), (m.name, m.file)
        # A refactor that moves the mutated line makes the mutant stale: caught here, not at the next check.
        assert (ROOT / m.file).read_text().count(m.old) == 1, (m.name, m.file, m.old)
        for test in m.tests:
            path, name = test.split("::")
            assert _defined(ROOT / path, name), (m.name, test)
