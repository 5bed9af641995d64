"""Fixtures of the security tests: the reliability tests' Prefect API URL for CLI subprocesses."""
from tests.reliability.conftest import prefect_api_url  # noqa: F401 - a fixture, shared
