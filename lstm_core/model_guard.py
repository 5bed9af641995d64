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

No parser differential: an archive that names a file twice (exactly, or after the case-folding and
path normalisation a reader might apply: `./config.json`, `a/../config.json`, backslashes, trailing or
leading slashes) is refused, and Keras is never handed the stored archive: the entries that were
checked are re-packed into a fresh archive in a private temporary folder (`checked_copy`), so what
Keras reads is byte for byte what was checked.

The weights file (`model.weights.h5`) is parsed by h5py's bundled HDF5 library. Before Keras reads
it, every object it declares is compared, reading metadata only (no data), with what the checked
config's network holds: each dataset the network loads must have the variable's exact shape and
dtype, nothing else may sit beside them (no links, no other objects; the optimizer's slots, which
`load_model(compile=False)` never reads, are bounded in number and size), so a file declaring huge
datasets is refused before anything allocates them. HDF5's own parsing of the file's metadata remains:
see README "Security" (a signing key means only files this project wrote are parsed at all).
"""
from __future__ import annotations

import functools
import inspect
import io
import json
import os
import posixpath
import tempfile
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

CONFIG_ENTRY = "config.json"
WEIGHTS_ENTRY = "model.weights.h5"
MAX_ATTRIBUTE_BYTES = 64 * 2**10  # an HDF5 attribute the saver writes holds a short name
OPTIMIZER_GROUP = "optimizer"  # the saved optimizer's slots: never read under load_model(compile=False)
MAX_CONFIG_BYTES = 4 * 2**20  # a stacked LSTM's config is tens of KB
NEVER = {"function", "__lambda__"}  # code by reference or by value: refused even if the builder used them

Triple = tuple[Any, Any, Any]  # (module, class_name, registered_name) as serialized


class UnsafeArchive(ValueError):
    """The archive holds something the builder never produces (the message says what and where)."""


@dataclass(frozen=True)
class Vocabulary:
    """What the model builder's saved models hold: top-level and inner class triples, and archive entry names."""

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


@dataclass(frozen=True)
class CheckedArchive:
    """The entries of an archive that passed the checks, as read (name -> bytes, archive order)."""

    entries: dict[str, bytes]
    config: dict[str, Any]


def canonical_name(name: str) -> str:
    """The one name a zip entry could be taken for by any reader: Unicode NFKC, backslashes as slashes,
    `.`/`..`/repeated and leading/trailing slashes resolved, case folded. Two entries with the same
    canonical name are the same file to some reader."""
    text = unicodedata.normalize("NFKC", name).replace("\\", "/")
    return posixpath.normpath("/" + text).lstrip("/").rstrip("/").casefold()


def read_archive(source: str | bytes, max_bytes: int) -> CheckedArchive:
    """Read and check a `.keras` archive (a local path or its bytes) without running any of it.

    Checks: each entry named once (after `canonical_name`), only the names the builder's archives have,
    declared sizes together at most `max_bytes` (`config.json` at most MAX_CONFIG_BYTES), then every
    serialized object of `config.json` against the builder's vocabulary. Raises UnsafeArchive.
    """
    vocab = builder_vocabulary()
    try:
        with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source) as z:
            infos = z.infolist()
            seen: dict[str, str] = {}
            for entry in infos:
                key = canonical_name(entry.filename)
                if key in seen:
                    raise UnsafeArchive(f"the entry {entry.filename!r} repeats {seen[key]!r}: an archive names each "
                                        f"file once (readers differ on which copy they take)")
                seen[key] = entry.filename
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
            # zipfile stops at each entry's declared size and checks its CRC; the local header must name
            # the same file as the central directory.
            entries = {i.filename: z.read(i) for i in infos}
    except UnsafeArchive:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError, OSError, ValueError) as exc:
        raise UnsafeArchive(f"not a readable .keras (zip) archive: {type(exc).__name__}: {exc}") from None
    return CheckedArchive(entries, _checked_config(entries[CONFIG_ENTRY]))


def _checked_config(raw: bytes) -> dict[str, Any]:
    vocab = builder_vocabulary()
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
    return config


# --- the weights file ------------------------------------------------------------------------------------
Layout = dict[str, tuple[tuple[int, ...], str]]  # dataset path -> (shape, dtype)


@functools.lru_cache(maxsize=8)
def _network_layout(config_json: str) -> Layout:
    """The datasets Keras writes for the network a (checked) config builds: built for real, weights saved.

    Cached by the config's text: an ensemble's members share one architecture."""
    import h5py
    import keras

    config = dict(json.loads(config_json), compile_config=None)  # as load_model(compile=False) builds it
    model = keras.saving.deserialize_keras_object(config, safe_mode=True)
    with tempfile.TemporaryDirectory(prefix="lstm-guard-") as tmp:
        path = os.path.join(tmp, "reference.weights.h5")
        model.save_weights(path)
        with h5py.File(path, "r") as f:
            layout: Layout = {}
            f.visititems(lambda name, obj: layout.__setitem__(name, (tuple(obj.shape), obj.dtype.str))
                         if isinstance(obj, h5py.Dataset) else None)
    return layout


def _nbytes(shape: tuple[int, ...], itemsize: int) -> int:
    n = itemsize
    for d in shape:
        n *= int(d)
    return n


def check_weights(archive: CheckedArchive, max_bytes: int) -> None:
    """Refuse (UnsafeArchive) a weights file that declares anything but the checked config's network.

    Reads HDF5 metadata only, never a dataset's values: hard links only (no soft or external links, no
    external or virtual storage), groups and datasets only, attributes of at most MAX_ATTRIBUTE_BYTES;
    every dataset the network loads present with its variable's exact shape and dtype and nothing else
    beside them; the optimizer's slots (never read here) at most 2 per variable plus 8 scalars, each of a
    variable's shape or a scalar; all declared bytes together at most `max_bytes`.
    """
    import h5py

    raw = archive.entries.get(WEIGHTS_ENTRY)
    if raw is None:
        raise UnsafeArchive(f"{WEIGHTS_ENTRY} is missing")
    expected = _network_layout(json.dumps(archive.config, sort_keys=True))
    shapes = {shape for shape, _ in expected.values()} | {()}
    problems: list[str] = []
    found: Layout = {}
    optimizer = 0

    def visit(name: str, link: Any) -> None:
        if problems:
            return
        if not isinstance(link, h5py.HardLink):
            problems.append(f"{name} is a {type(link).__name__} (a saved model holds hard links only)")
            return
        obj = f[name]
        for attr in obj.attrs:
            size = obj.attrs.get_id(attr).get_storage_size()
            if size > MAX_ATTRIBUTE_BYTES:
                problems.append(f"{name} has an attribute {attr!r} of {size:,} bytes")
                return
        if isinstance(obj, h5py.Group):
            return
        if not isinstance(obj, h5py.Dataset):
            problems.append(f"{name} is a {type(obj).__name__} (a saved model holds groups and datasets)")
            return
        if obj.is_virtual or obj.external:
            problems.append(f"dataset {name} keeps its values outside the file")
            return
        if obj.dtype.kind not in "fiub" or obj.dtype.itemsize > 8:
            problems.append(f"dataset {name} has dtype {obj.dtype}")
            return
        found[name] = (tuple(int(d) for d in obj.shape), obj.dtype.str)

    try:
        with h5py.File(io.BytesIO(raw), "r") as f:
            for attr in f.attrs:
                if f.attrs.get_id(attr).get_storage_size() > MAX_ATTRIBUTE_BYTES:
                    problems.append(f"the file has an attribute {attr!r} larger than {MAX_ATTRIBUTE_BYTES:,} bytes")
            f.visititems_links(visit)
    except Exception as exc:  # noqa: BLE001 - h5py raises many types for a damaged file
        raise UnsafeArchive(f"{WEIGHTS_ENTRY} is not a readable weights file: {type(exc).__name__}: {exc}") from None
    if problems:
        raise UnsafeArchive(f"{WEIGHTS_ENTRY}: {problems[0]}")
    total = 0
    for name, (shape, dtype) in sorted(found.items()):
        total += _nbytes(shape, np.dtype(dtype).itemsize)
        if name.split("/", 1)[0] == OPTIMIZER_GROUP:
            optimizer += 1
            if shape not in shapes:
                raise UnsafeArchive(f"{WEIGHTS_ENTRY}: optimizer dataset {name} declares shape {shape}, which no "
                                    f"variable of the network has")
        elif name not in expected:
            raise UnsafeArchive(f"{WEIGHTS_ENTRY}: dataset {name} ({shape}, {dtype}) is not a variable of the network "
                                f"config.json describes")
        elif expected[name] != (shape, dtype):
            raise UnsafeArchive(f"{WEIGHTS_ENTRY}: dataset {name} declares shape {shape} {dtype}; the network "
                                f"config.json describes has {expected[name][0]} {expected[name][1]}")
    missing = sorted(set(expected) - set(found))
    if missing:
        raise UnsafeArchive(f"{WEIGHTS_ENTRY}: the network's variables {missing[:3]} are missing")
    if optimizer > 2 * len(expected) + 8:
        raise UnsafeArchive(f"{WEIGHTS_ENTRY}: {optimizer} optimizer datasets for {len(expected)} variables")
    if total > max_bytes:
        raise UnsafeArchive(f"{WEIGHTS_ENTRY}: its datasets declare {total:,} bytes, more than max_model_bytes "
                            f"{max_bytes:,}")


def check_archive(source: str | bytes, max_bytes: int) -> CheckedArchive:
    """Refuse (UnsafeArchive) an archive (a local path or its bytes) holding anything the builder never
    produces: `read_archive`, then `check_weights`. Returns what was checked."""
    archive = read_archive(source, max_bytes)
    check_weights(archive, max_bytes)
    return archive


def repack(archive: CheckedArchive, folder: str) -> str:
    """Write the checked entries, and nothing else, into a fresh archive in `folder`; returns its path."""
    path = os.path.join(folder, "checked.keras")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in archive.entries.items():
            z.writestr(name, data)
    return path


def checked_copy(source: str | bytes, max_bytes: int, folder: str) -> str:
    """`check_archive`, then `repack` into `folder` (private: made by the caller with tempfile): the path
    Keras may load. Raises UnsafeArchive."""
    return repack(check_archive(source, max_bytes), folder)
