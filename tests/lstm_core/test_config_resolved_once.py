"""The configuration is resolved once, where the frequency becomes known (the flow after planning or
validation, a notebook after `validate_for`), and the layers below take the resolved object: validation
learns the frequency without resolving the configuration, and the engine refuses an unresolved one rather
than resolving it again behind the caller's back."""
from __future__ import annotations

import pandas as pd
import pytest

from lstm_core.config import ConfigError, ForecastConfig
from lstm_core.covariates import CovariateSpec
from lstm_core.engine import fit, panel_of
from lstm_core.validation import validate_for
from tests.conftest import fast_config, make_frame


def _unresolved() -> ForecastConfig:
    config = fast_config(freq=None, season_length=None, window=None, calendar_features="on")
    assert not config.is_resolved
    return config


def test_validation_learns_the_frequency_without_resolving_the_configuration(monkeypatch):
    frame = make_frame(n_series=3, length=60)
    config = _unresolved()
    resolved = config.resolved("h")
    expected = validate_for(frame, resolved)

    def resolving(self, freq):  # a spy: the test fails if anything below the boundary resolves
        raise AssertionError(f"the configuration was resolved again below the boundary (freq {freq!r})")

    monkeypatch.setattr(ForecastConfig, "resolved", resolving)
    result = validate_for(frame, config)
    assert result.freq == "h"
    pd.testing.assert_frame_equal(result.frame, expected.frame)
    assert result.skipped == expected.skipped
    # the covariate spec it checked is the resolved configuration's, calendar features of the learned frequency
    assert result.spec == CovariateSpec.from_config(resolved) and result.spec.calendar


def test_the_engine_takes_a_resolved_configuration():
    frame = make_frame(n_series=2, length=60)
    config = _unresolved()
    result = validate_for(frame, config)
    with pytest.raises(ConfigError, match="panel_of needs the frequency"):
        panel_of(result, config)
    resolved = config.resolved(result.freq)  # the boundary: once, from what the data said
    panel = panel_of(result, resolved)
    assert panel.n_series == 2 and panel.freq == "h"
    with pytest.raises(ConfigError, match="training needs the frequency"):
        fit(panel, config)
