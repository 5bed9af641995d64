"""Keep credentials out of everything a run prints or writes, and give a process the ones it may use.

`redact` removes secrets from the structures we write on purpose (manifest, model metadata). The
second line: the secret *values* a run knows about (storage options, credentials embedded in URLs, the
standard credential variables of the environment) are collected and scrubbed from free text such as
exception messages and log records, where a library may have quoted them. Storage options travel to
other processes without their secrets (`without_secrets`); the receiving process takes them from its
own memory or environment (`hold_storage_options`, `with_environment_secrets`). Below storage and the
configuration: imports only the leaf modules `errors` and `merging`.
"""
from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

from lstm_core.errors import ConfigError, LstmForecastError
from lstm_core.merging import merge_settings

MASK = "***"
# Storage options (JSON) the workers of an existing Dask cluster set for themselves: never sent with a task.
STORAGE_OPTIONS_VARIABLE = "LSTM_FORECAST_STORAGE_OPTIONS"
# Names whose values are credentials: storage option keys and environment variables.
SECRET_NAME_PARTS = ("secret", "token", "password", "passwd", "key", "credential", "session", "signature")
NOT_SECRET_NAMES = {"key_prefix", "keep_alive"}
# Shorter values are not scrubbed from free text: they would mask ordinary words.
MIN_SECRET_LENGTH = 8
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
# The same without a scheme, as libraries quote paths (`user:pass@bucket/key`): a password is required,
# so e-mail addresses and `host@...` stay readable.
_BARE_USERINFO = re.compile(r"(?<![\w.+%~*-])(?P<userinfo>[\w.~%+!$&*,;=-]+:[^\s/@:'\"]+)@(?=[\w\[])")
# Query-string parameters (pre-signed S3/GCS URLs, Azure SAS, tokens): `?X-Amz-Signature=...&sig=...`.
_QUERY_PARAM = re.compile(r"(?P<lead>[?&;](?P<name>[A-Za-z0-9_.\-]+)=)(?P<value>[^&#\s'\"<>]*)")
# Credential parameters whose names is_secret_name does not catch (Azure SAS `sig`, OAuth `code`...).
SECRET_QUERY_NAMES = {"sig", "code", "pwd", "pass", "auth", "authorization"}


def is_secret_name(name: str) -> bool:
    """True when a storage option or environment variable of this name holds a credential (key, secret,
    token, password...; `key_prefix` and `keep_alive` do not)."""
    low = str(name).lower()
    return low not in NOT_SECRET_NAMES and any(p in low for p in SECRET_NAME_PARTS)


def is_secret_query_name(name: str) -> bool:
    """A query parameter carrying a credential: X-Amz-Signature, X-Amz-Credential, X-Amz-Security-Token,
    AWSAccessKeyId, X-Goog-Signature, sig (Azure SAS), token, access_token, key, code..."""
    return is_secret_name(name) or str(name).lower() in SECRET_QUERY_NAMES


def url_userinfo(url: str) -> list[str]:
    """Credentials embedded in a URL (`scheme://user:password@host/...`): ['user', 'password']."""
    out: list[str] = []
    for m in _URL_USERINFO.finditer(url or ""):
        user, _, password = m.group("userinfo").partition(":")
        out.extend(v for v in (user, password) if v)
    return out


def url_credentials(url: str) -> list[str]:
    """Every credential a URL carries: its user-info and the values of its credential query parameters
    (as written and URL-decoded, since libraries quote either)."""
    out = url_userinfo(url)
    for m in _QUERY_PARAM.finditer(url or ""):
        if is_secret_query_name(m.group("name")) and m.group("value"):
            out.extend({m.group("value"), unquote(m.group("value"))})
    return out


def has_credentials(url: str | None) -> bool:
    """True when `url` carries a credential (user-info or a credential query parameter)."""
    return url is not None and bool(url_credentials(url))


def _walk(options: Any, into: set[str]) -> None:
    if isinstance(options, Mapping):
        for k, v in options.items():
            if isinstance(v, (Mapping, list, tuple)):
                _walk(v, into)
            elif isinstance(v, str):
                if is_secret_name(k):
                    into.add(v)
                into.update(url_credentials(v))
    elif isinstance(options, (list, tuple)):
        for v in options:
            _walk(v, into)
    elif isinstance(options, str):
        into.update(url_credentials(options))


def without_secrets(options: Any) -> Any:
    """Storage options without their credentials: secret-named keys and values carrying URL credentials are
    dropped (not masked: a masked value would be used as a key). What may travel to other processes."""
    if isinstance(options, Mapping):
        return {k: without_secrets(v) for k, v in options.items()
                if not (is_secret_name(k) and not isinstance(v, Mapping))
                and not (isinstance(v, str) and url_credentials(v))}
    if isinstance(options, list):
        return [without_secrets(v) for v in options if not (isinstance(v, str) and url_credentials(v))]
    return options


def secret_values(storage_options: Mapping[str, Any] | None = None, urls: Iterable[str] = (),
                  environ: Mapping[str, str] | None = None) -> set[str]:
    """Every credential value this run can see, long enough to scrub safely."""
    environ = os.environ if environ is None else environ
    found: set[str] = set()
    _walk(storage_options or {}, found)
    for url in urls:
        found.update(url_credentials(url))
    for name, value in environ.items():
        if is_secret_name(name) and name.upper().startswith(("AWS_", "LSTM_FORECAST_", "AZURE_", "GOOGLE_", "GCS_",
                                                              "R2_", "MINIO_", "PREFECT_API_KEY")):
            found.add(value)
    return {v for v in found if isinstance(v, str) and len(v) >= MIN_SECRET_LENGTH}


def scrub(text: str, values: Iterable[str] = ()) -> str:
    """`text` with every known secret value, any URL user-info (with or without a scheme) and the values
    of credential query parameters replaced by ***."""
    if not text:
        return text
    for v in sorted(set(values), key=len, reverse=True):
        if v in text:
            text = text.replace(v, MASK)
    text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    text = _BARE_USERINFO.sub(f"{MASK}@", text)
    return _QUERY_PARAM.sub(lambda m: m.group("lead") + MASK if is_secret_query_name(m.group("name"))
                            and m.group("value") else m.group(0), text)


class ScrubFilter(logging.Filter):
    """A handler filter that scrubs secrets from each record's final message."""

    def __init__(self) -> None:
        super().__init__("lstm-forecast-scrub")
        self.values: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace every secret in the record's message and arguments; always keeps the record."""
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is not ours to fix
            return True
        clean = scrub(message, self.values)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            clean_exc = scrub(text, self.values)
            if clean_exc != text:
                record.exc_info, record.exc_text = None, clean_exc
        return True


_FILTER = ScrubFilter()


def install_log_scrubber(values: Iterable[str]) -> ScrubFilter:
    """Scrub `values` from every record that any current handler emits (console, file, Prefect API)."""
    _FILTER.values.update(values)
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for handler in lg.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
    return _FILTER


def scrubbed_exception(exc: BaseException, values: Iterable[str] = ()) -> BaseException:
    """`exc` itself when its message carries no credential; otherwise a copy of the same type (ConfigError
    stays a ConfigError: the CLI's exit code follows the type) whose message is scrubbed, or, for a type
    that cannot be rebuilt from a message, an LstmForecastError naming the type."""
    text = str(exc)
    clean = scrub(text, values)
    if clean == text:
        return exc
    if isinstance(exc, LstmForecastError):
        try:
            copy = type(exc).__new__(type(exc))
            Exception.__init__(copy, clean)
            copy.__dict__.update({k: scrub(v, values) if isinstance(v, str) else v for k, v in vars(exc).items()})
            return copy
        except Exception:  # noqa: BLE001 - fall back to the base type below
            pass
    return LstmForecastError(f"{type(exc).__name__}: {clean.splitlines()[0] if clean else ''}")


@contextmanager
def scrubbing(values: Iterable[str] = ()) -> Iterator[ScrubFilter]:
    """Scrub credentials from every log record from here on, and from the exception that leaves the block.

    The first line of every flow: before any setting is read, the patterns alone (URL user-info, credential
    query parameters) are scrubbed; add the run's own secret values to the filter it yields
    (`scrubber.values.update(...)`) once they are known. An exception whose message carried a credential
    leaves as a scrubbed copy without its chain (`from None`), so the flow run's state message, its
    failure artifact and its events never hold one.
    """
    scrubber = install_log_scrubber(values)
    try:
        yield scrubber
    except BaseException as exc:
        safe = scrubbed_exception(exc, scrubber.values)
        if safe is exc:
            raise
        raise safe from None


def redact(options: Any) -> Any:
    """Replace values whose key looks secret with '***' and credentials inside URLs, recursively."""
    if isinstance(options, Mapping):
        return {
            k: (MASK if is_secret_name(k) and not isinstance(v, Mapping) else redact(v))
            for k, v in options.items()
        }
    if isinstance(options, list):
        return [redact(v) for v in options]
    if isinstance(options, str):
        return redact_url(options)
    return options


def redact_url(url: str) -> str:
    """Drop credentials embedded in a URL: user-info (`scheme://user:pass@host/...`, with or without the
    scheme) and credential query parameters (`X-Amz-Signature`, `X-Amz-Credential`, `sig`, `token`...)."""
    return scrub(url) if isinstance(url, str) else url


# Storage options (credentials included) handed to this process in memory: a LocalCluster's workers get the
# run's from the flow through a worker plugin over the cluster's TLS connections (flows/runners.py), never
# through their environment, which their child processes would inherit.
_HELD_STORAGE_OPTIONS: dict[str, object] = {}


def hold_storage_options(options: Mapping[str, object]) -> None:
    """Keep `options` in this process's memory: every configuration or Location unpickled here from now on
    gets them back (merged over what travelled), as from LSTM_FORECAST_STORAGE_OPTIONS."""
    _HELD_STORAGE_OPTIONS.clear()
    _HELD_STORAGE_OPTIONS.update(dict(options))


def with_environment_secrets(options: Mapping[str, object], environ: Mapping[str, str] | None = None
                             ) -> dict[str, object]:
    """`options` with the storage options of this process merged over them: those of its environment
    (LSTM_FORECAST_STORAGE_OPTIONS, JSON: the workers of an existing cluster set it themselves), then those
    held in memory (`hold_storage_options`: a LocalCluster's workers). How a worker gets the credentials a
    pickled configuration left behind."""
    raw = (os.environ if environ is None else environ).get(STORAGE_OPTIONS_VARIABLE)
    merged = dict(options)
    if raw:
        try:
            extra = json.loads(raw)
        except ValueError:
            raise ConfigError(f"{STORAGE_OPTIONS_VARIABLE} is not JSON") from None
        if isinstance(extra, Mapping):
            merged = merge_settings(merged, extra)
    if _HELD_STORAGE_OPTIONS and environ is None:
        merged = merge_settings(merged, _HELD_STORAGE_OPTIONS)
    return merged
