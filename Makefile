# All set-up happens here: a fresh machine needs only python3 (3.11 or 3.12) and network access to PyPI.
PYTHON ?= python3
VENV := .venv
UV := $(PYTHON) -m uv
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup demo lint test test-fast clean

$(VENV)/.installed: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check uv
	$(UV) sync --locked --extra cpu --compile-bytecode --python $(PYTHON)
	@touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/lstm-forecast demo

# ruff (lint, import order) and mypy (types) on the product code; configured in pyproject.toml
lint: setup
	$(VENV)/bin/ruff check lstm_core tasks flows
	$(VENV)/bin/mypy lstm_core tasks flows

# CI's command (.ci/run): the checks first, so a lint or type error fails before the suite starts
test: lint
	$(VENV)/bin/python -m pytest -q

test-fast: setup
	$(VENV)/bin/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) data/demo .pytest_cache .mypy_cache .ruff_cache
