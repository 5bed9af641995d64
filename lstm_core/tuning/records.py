"""Typed records of tuning: the values a search space draws, `best.json` (what `tuned: latest` applies) and the
tune summary (what a `tune` call reports).

Light on purpose (pydantic only): the nightly run reads `best.json` through `BestRecord` without importing the
study code (Optuna, Keras).
"""
from __future__ import annotations

import json
from typing import Any, TypedDict

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from lstm_core.config import ConfigError

Scalar = str | int | float | bool | None  # one tuned value: a choice, a drawn number (trials.parquet's cells)
Params = dict[str, Scalar]  # dotted setting name (`model.layers` included) -> a trial's value
Settings = dict[str, JsonValue]  # nested settings, as a configuration file spells them

BEST_METRIC = "pooled backtest MASE"  # the objective every study minimises


class RangeSpec(TypedDict, total=False):
    """One entry of a search space as `tuning.space` spells it: `choices`, or `low`..`high` with `log`/`step`."""

    choices: list[Scalar]
    low: float | int
    high: float | int
    log: bool
    step: float | int


class BestRecord(BaseModel):
    """`best.json`: the best trial's settings and where they came from (JSON keys exactly these fields).

    A tune writes every field; a file read back may lack some (a hand-written one), read as null/empty, as
    the nightly run always did. `settings` are nested (as best.yaml); `tuned` names the dotted settings a
    run with `tuned: latest` applies from them (each must be a tunable setting: `lstm_core.tuning.apply`).
    """

    model_config = ConfigDict(extra="ignore")

    study: str | None = Field(None, description="the study's name")
    trial: int | None = Field(None, description="the best trial's number")
    objective: float | None = Field(None, description="its objective (pooled backtest MASE)")
    metric: str | None = Field(None, description="the objective's metric")
    settings: Settings = Field(default_factory=dict, description="nested settings: tuned and data settings")
    tuned: list[str] = Field(default_factory=list, description="the dotted settings that were tuned")
    written_at: str | None = Field(None, description="when it was written (ISO 8601, UTC)")
    trials: int | None = Field(None, description="trials in the study when it was written")
    series: int | None = Field(None, description="series the study tuned on")

    @field_validator("settings", "tuned", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any, info: ValidationInfo) -> Any:
        # null read as empty, as `best.get("settings") or {}` always read it
        if value is None:
            return {} if info.field_name == "settings" else []
        return value

    def to_json(self) -> dict[str, JsonValue]:
        """The file's JSON object: every field, unset ones as null."""
        return self.model_dump(mode="json")

    @classmethod
    def parse(cls, data: bytes | str, where: str) -> BestRecord:
        """Read a best.json's text. Raises ConfigError naming `where` (the file, credentials removed) and the
        field at fault when it is not JSON or a field has the wrong type."""
        try:
            return cls.model_validate(json.loads(data))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not a JSON document ({exc.msg}, line {exc.lineno})") from None
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "(the document)"
            raise ConfigError(f"{where}: field {field!r}: {err['msg']}") from None


class BestTrial(BaseModel):
    """The best complete trial of a study, as the tune summary shows it."""

    trial: int = Field(description="its number")
    objective: float = Field(description="its pooled backtest MASE")
    params: Params = Field(description="its tuned values by dotted setting name")


class TuneSummary(BaseModel):
    """What a `tune` call did (the tune flow's result, the CLI's lines and the Prefect summary page)."""

    study: str = Field(description="the study's name")
    trials: int = Field(description="trials in the study (earlier calls' included)")
    new_trials: list[int] = Field(description="the numbers of this call's trials")
    states: dict[str, int] = Field(description="trial state (`complete`, `pruned`, `fail`) -> count")
    stopped_by: str = Field(description="the budget that stopped this call: `trials` or `minutes`")
    seconds: float = Field(description="this call's wall time, seconds (one decimal)")
    best: BestTrial | None = Field(description="the best complete trial; null when none completed")
    urls: dict[str, str] = Field(description="what was written (journal, trials, plot, best_yaml, best_json) -> "
                                             "its URL, credentials removed")
