"""One input column at a time: series ids, numbers from any encoding or text, static covariates.

How text becomes numbers when the file cannot say it is set by `TextRules` (settings missing_values, decimal,
thousands, time_format, static_types). Every refusal is a DataValidationError naming the file, column, series
and row (`lstm_core.validation` renames the columns to the user's names).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lstm_core.covariates import is_numeric_column
from lstm_core.errors import DataValidationError
from lstm_core.inputs import DEFAULT_MISSING

if TYPE_CHECKING:
    from lstm_core.config import ForecastConfig


@dataclass(frozen=True)
class TextRules:
    """How text becomes numbers and timestamps when the file cannot say it (settings of the same names).

    `missing_values`: cells read as missing in numeric columns; `decimal`: the decimal mark ('.' or ',');
    `thousands`: a thousands separator to drop (none unless declared); `time_format`: see `timestamps`;
    `static_types`: static covariate -> 'categorical' (text, whatever it looks like) or 'numeric'.
    """

    missing_values: tuple[str, ...] = DEFAULT_MISSING
    decimal: str = "."
    thousands: str | None = None
    time_format: str | None = None
    static_types: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_config(cls, config: ForecastConfig) -> TextRules:
        """The text rules a configuration sets (missing_values, decimal, thousands, time_format, static_types)."""
        return cls(tuple(config.missing_values), config.decimal, config.thousands, config.time_format,
                   tuple(sorted(config.static_types.items())))

    def hint(self) -> str:
        """One sentence naming how cells are read and the settings that change it (appended to a parse error)."""
        return ("read as missing: empty cells and " + ", ".join(repr(v) for v in self.missing_values if v)
                + f" (setting missing_values); decimal mark {self.decimal!r} (setting decimal); "
                + (f"thousands separator {self.thousands!r}" if self.thousands else
                   "no thousands separator unless declared (setting thousands)"))


def _is_numeric(col: pd.Series) -> bool:
    return is_numeric_column(col)


def check_series_id(col: pd.Series, source: str | None) -> pd.Series:
    """The series_id column as pandas strings. Raises DataValidationError (file, column `series_id`, row) for a
    null id or a value that is not text (ids are data: never converted from numbers)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        col = col.astype(object).where(col.notna(), None)
    if not (pd.api.types.is_string_dtype(col) or pd.api.types.is_object_dtype(col)):
        raise DataValidationError(f"must be string, got {col.dtype}", source=source, column="series_id")
    nulls = col.isna().to_numpy()
    if nulls.any():
        raise DataValidationError("null series_id", source=source, column="series_id", row=int(np.argmax(nulls)))
    if isinstance(col.dtype, pd.StringDtype) or pd.api.types.infer_dtype(col, skipna=False) == "string":
        return col.astype("string")  # every value is a str: no per-row check needed
    bad = ~col.map(lambda v: isinstance(v, str)).to_numpy(bool)
    if bad.any():
        r = int(np.argmax(bad))
        raise DataValidationError(f"must be string, got {type(col.iloc[r]).__name__} {col.iloc[r]!r}",
                                  source=source, column="series_id", row=r)
    return col.astype("string")


def check_numeric(col: pd.Series, name: str, source: str | None, rules: TextRules | None = None,
                   series_id: pd.Series | None = None) -> pd.Series:
    """float64 with NaN for missing values, from any numeric encoding (nullable, decimal, mixed int/float) or
    from text (CSV): placeholders (`rules.missing_values`) are missing, `rules.decimal` / `rules.thousands`
    are read as declared, and any other text raises DataValidationError naming the column, series and row."""
    col = col.reset_index(drop=True)
    if pd.api.types.is_object_dtype(col) and len(col) and col.dropna().map(_is_number).all():
        col = pd.to_numeric(col, errors="coerce")  # Decimal and number objects (decimal columns, mixed files)
    if pd.api.types.is_string_dtype(col) or pd.api.types.is_object_dtype(col):
        col = _numbers_from_text(col, name, source, rules or TextRules(), series_id)
    if not _is_numeric(col):
        raise DataValidationError(f"must be numeric, got {col.dtype}", source=source, column=name)
    return pd.Series(col.to_numpy(dtype=np.float64, na_value=np.nan), name=col.name)


def _numbers_from_text(col: pd.Series, name: str, source: str | None, rules: TextRules,
                       series_id: pd.Series | None) -> pd.Series:
    values = col.astype(object)
    is_text = values.map(lambda v: isinstance(v, str)).to_numpy(bool)
    text = values.where(is_text, None).str.strip()
    missing = ~is_text & values.isna().to_numpy() | text.isin(set(rules.missing_values)).to_numpy()
    clean = text
    if rules.thousands:
        clean = clean.str.replace(rules.thousands, "", regex=False)
    if rules.decimal != ".":
        clean = clean.str.replace(rules.decimal, ".", regex=False)
    numbers = pd.to_numeric(clean.where(is_text & ~missing, None), errors="coerce")
    others = ~is_text & ~values.isna().to_numpy()
    if others.any():  # numbers among text (an object column from mixed files)
        numbers = numbers.where(~others, pd.to_numeric(values.where(others, None), errors="coerce"))
    bad = (is_text & ~missing & numbers.isna().to_numpy()) | (others & numbers.isna().to_numpy())
    if bad.any():
        r = int(np.argmax(bad))
        sid = str(series_id.iloc[r]) if series_id is not None else None
        raise DataValidationError(f"not a number: {values.iloc[r]!r}; {rules.hint()}", source=source, column=name,
                                  series_id=sid, row=r)
    return pd.Series(numbers.to_numpy(dtype=np.float64, na_value=np.nan), name=col.name)


def static_column(col: pd.Series, name: str, declared: str | None, source: str | None, rules: TextRules,
                   series_id: pd.Series) -> pd.Series:
    """A static covariate as declared: 'categorical' as text (postcode 01067 stays '01067'; a stored number
    as its text), 'numeric' as float64 (text read like the target), undeclared as stored (CSV: text)."""
    if declared == "numeric":
        return check_numeric(col, name, source, rules, series_id)
    if declared == "categorical" or isinstance(col.dtype, pd.CategoricalDtype):
        from lstm_core.covariates import category_text

        values = col.astype(object)
        return pd.Series([None if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA
                          else category_text(v.item() if hasattr(v, "item") else v) for v in values],
                         dtype=object, name=col.name)
    return col


def _is_number(v: Any) -> bool:
    from decimal import Decimal
    from numbers import Number

    return isinstance(v, (Number, Decimal)) and not isinstance(v, bool)
