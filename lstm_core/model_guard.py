"""What a saved `.keras` archive may contain before Keras is allowed to read it.

Keras safe mode refuses Python lambdas and pickles, but it still builds any exported Keras
class or function an archive names, and a `Lambda` layer wrapping such a function runs it while
the model loads. So before `keras.saving.load_model`, the archive's `config.json` is read as
plain JSON and every serialized object in it (each dict with a `class_name`) must be one that
`lstm_core.model.build_lstm` itself produces: same `module`, `class_name` and `registered_name`.

The allowlist is derived from the builder (reference models built with each of its options),
not written by hand, so it follows the builder when the network changes. The model's own
class (`Functional`) is allowed only at the top: a model nested inside a model is refused.
Function and lambda entries are refused whatever the builder does. Sizes are capped: the
archive's entries (names the builder's archives have, declared sizes) and `config.json`.
"""
from __future__ import annotations

import functools
import inspect
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from typing import Any, Iterator

CONFIG_ENTRY = "config.json"
MAX_CONFIG_BYTES = 4 * 2**20  # a stacked LSTM's config is tens of KB
NEVER = {"function", "__lambda__"}  # code by reference or by value: refused even if the builder used them

Triple = tuple[Any, Any, Any]  # (module, class_name, registered_name) as serialized


class UnsafeArchive(ValueError):
    """The archive holds something the builder never produces (the message says what and where)."""


@dataclass(frozen=True)
class Vocabulary:
    top: frozenset[Triple]  # the model's own class
    inner: frozenset[Triple]  # layers, initializers, dtype policies, tensors... below it
    entries: frozenset[str]  # file names inside a saved archive


def _triple(obj: dict) -> Triple:
    return obj.get("module"), obj.get("class_name"), obj.get("registered_name")


def serialized_objects(node: Any, depth: int = 0, path: str = "") -> Iterator[tuple[str, int, dict]]:
    """Every serialized object (a dict with `class_name`) in a Keras config: (path, depth, object).

    The top object's `compile_config` is skipped: `load_model(compile=False)` discards it unread.
    """
    if isinstance(node, dict):
        inner = depth
        if "class_name" in node:
            yield path or "/", depth, node
            inner = depth + 1
        for key, value in node.items():
            if key == "compile_config" and depth == 0 and "class_name" in node:
                continue
            yield from serialized_objects(value, inner, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from serialized_objects(value, depth, f"{path}/{i}")


def _reference_kwargs() -> list[dict[str, Any]]:
    """Builder options that change which classes a model holds: its boolean options at their defaults and all
    flipped, dropout on and off, seeded and unseeded. Options the builder lacks are left out."""
    from lstm_core.model import build_lstm

    params = inspect.signature(build_lstm).parameters
    base = {"input_size": 4, "n_features": 2, "units": (2, 2), "chunk": 2, "patch": 2, "n_future": 1,
            "dropout": 0.1, "seed": 1}
    flags = [name for name, p in params.items() if isinstance(p.default, bool)]
    variants: list[dict[str, Any]] = [{}, {f: not params[f].default for f in flags},
                                      {"dropout": 0.0, "seed": None, "n_features": 1, "units": (2,), "chunk": 1,
                                       "patch": 1, "n_future": 0}]
    return [{k: v for k, v in {**base, **v}.items() if k in params} for v in variants]


@functools.lru_cache(maxsize=1)
def builder_vocabulary() -> Vocabulary:
    """What `build_lstm` produces, from real reference models (built once per process)."""
    import keras

    from lstm_core.model import build_lstm

    top: set[Triple] = set()
    inner: set[Triple] = set()
    for kwargs in _reference_kwargs():
        model = build_lstm(**kwargs)
        # The same serialization `model.save` writes to config.json, through JSON as on disk.
        config = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
        for _, depth, obj in serialized_objects(config):
            (top if depth == 0 else inner).add(_triple(obj))
    with tempfile.TemporaryDirectory(prefix="lstm-vocab-") as tmp:
        path = os.path.join(tmp, "reference.keras")
        model.save(path)
        with zipfile.ZipFile(path) as z:
            entries = frozenset(z.namelist())
    return Vocabulary(frozenset(top), frozenset(inner), entries)


def _describe(triple: Triple) -> str:
    module, class_name, registered = triple
    name = f"{module}.{class_name}" if module else str(class_name)
    return f"{name} (registered as {registered!r})" if registered else name


def _owner(objects: list[tuple[str, int, dict]], where: str) -> str:
    """' in <class> <name>' of the object holding the entry at `where`, for the message."""
    holders = [(p, o) for p, _, o in objects if p != where and where.startswith(p.rstrip("/") + "/")]
    if not holders:
        return ""
    _, owner = max(holders, key=lambda h: len(h[0]))
    name = owner.get("config", {}).get("name") if isinstance(owner.get("config"), dict) else None
    return f" in {owner.get('class_name')}" + (f" {name!r}" if isinstance(name, str) else "")


def check_archive(path: str, max_bytes: int) -> None:
    """Refuse (UnsafeArchive) an archive at the local `path` that holds anything the builder never produces.

    Checks, without running any of it: the zip's entry names and declared sizes (all together at most
    `max_bytes`, `config.json` at most MAX_CONFIG_BYTES), then every serialized object of `config.json`.
    """
    vocab = builder_vocabulary()
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            unknown = sorted({i.filename for i in infos} - vocab.entries)
            if unknown:
                raise UnsafeArchive(f"unexpected entries {unknown[:5]} (a saved model holds only "
                                    f"{sorted(vocab.entries)})")
            total = sum(i.file_size for i in infos)
            if total > max_bytes:
                raise UnsafeArchive(f"its entries unpack to {total:,} bytes, more than max_model_bytes "
                                    f"{max_bytes:,}")
            info = next((i for i in infos if i.filename == CONFIG_ENTRY), None)
            if info is None:
                raise UnsafeArchive("config.json is missing")
            if info.file_size > MAX_CONFIG_BYTES:
                raise UnsafeArchive(f"config.json is {info.file_size:,} bytes (at most {MAX_CONFIG_BYTES:,})")
            raw = z.read(info)  # the declared size bounds what zipfile returns
    except zipfile.BadZipFile as exc:
        raise UnsafeArchive(f"not a readable .keras (zip) archive: {exc}") from None
    try:
        config = json.loads(raw)
        if not isinstance(config, dict) or "class_name" not in config:
            raise UnsafeArchive("config.json does not describe a model")
        objects = list(serialized_objects(config))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        if isinstance(exc, UnsafeArchive):
            raise
        raise UnsafeArchive(f"config.json is not a plain model config: {type(exc).__name__}") from None
    for where, _, obj in objects:  # code references first: the most telling reason
        if obj.get("class_name") in NEVER:
            target = obj.get("config")
            named = f"{obj.get('module')}.{target}" if isinstance(target, str) else _describe(_triple(obj))
            raise UnsafeArchive(f"a {obj.get('class_name')} entry at {where} ({named}){_owner(objects, where)}: "
                                f"saved models never reference code")
    for where, depth, obj in objects:
        triple = _triple(obj)
        if not all(v is None or isinstance(v, str) for v in triple):
            raise UnsafeArchive(f"a malformed object at {where}")
        if depth == 0:
            if triple not in vocab.top:
                raise UnsafeArchive(f"the model is a {_describe(triple)}, not what the model builder makes")
        elif triple not in vocab.inner:
            kind = "a nested model" if triple in vocab.top else "a class the model builder never uses"
            raise UnsafeArchive(f"{kind} at {where}: {_describe(triple)}")
