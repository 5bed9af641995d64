"""Atomic writes: each object put whole, removals that never follow links, and the write check up front.

Split from `lstm_core/storage.py` (issue 24 step 4; the map of the pieces is in `lstm_core.location`).
A write puts each object whole: a temp file, fsynced and renamed over the final name locally, one PUT on
object stores, so no reader sees half a file (a run's commit protocol, `lstm_core.outputs`, builds on
this: partitions first, the manifest last). `read_json` reads back what `write_json` wrote.
`check_output` tells, before any work, whether the run could write under its output root.
"""
from __future__ import annotations

import errno
import io
import json
import os
import tempfile
import uuid
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lstm_core.errors import ConfigError, StorageError
from lstm_core.location import Location, is_local, is_storage_failure, storage_error
from lstm_core.secrets import scrub, url_credentials

# Locally, the job never writes through a symbolic link planted under the root it writes to: each
# folder below the root is opened with O_NOFOLLOW (a link there refuses the write), and each file is
# created as a fresh temp file (O_EXCL | O_NOFOLLOW) and renamed over the final name, which replaces a
# link at that name instead of following it. Links above the root are the user's own layout.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class LinkRefused(StorageError):
    """A folder the job would write into is a symbolic link (never retried)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


def open_dir(root: str, path: str, create: bool = True) -> int:
    """A file descriptor of the local folder `path` (created as needed) under `root`.

    No folder between `root` and `path` may be a symbolic link: LinkRefused names the first one.
    With `create` False a missing folder raises FileNotFoundError. The caller closes the descriptor.
    """
    root_abs, path_abs = os.path.abspath(root), os.path.abspath(path)
    rel = os.path.relpath(path_abs, root_abs)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise ValueError(f"{path} is not under {root}")
    if create:
        os.makedirs(root_abs, exist_ok=True)
    fd = os.open(root_abs, _DIR_FLAGS)
    walked = root_abs
    try:
        for part in [] if rel == os.curdir else rel.split(os.sep):
            walked = os.path.join(walked, part)
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                child = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    kind = "a symbolic link" if os.path.islink(walked) else "not a folder"
                    raise LinkRefused(
                        f"{scrub(walked)} is {kind}: refusing to write through it "
                        f"(remove it; the job writes only real folders under {scrub(root_abs)})") from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _put_local(path: str, data: bytes, root: str | None) -> None:
    folder, name = os.path.split(os.path.abspath(path))
    dfd = open_dir(root if root is not None else folder, folder)
    tmp = f".{name}.tmp-{uuid.uuid4().hex}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dfd)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)  # replaces a link at `name`, never follows it
        finally:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except FileNotFoundError:
                pass
    finally:
        os.close(dfd)


def put_bytes(fs: fsspec.AbstractFileSystem, path: str, data: bytes, *, root: str | None = None) -> None:
    """Write one object whole (temp + rename locally; a single PUT on object stores).

    Locally, `root` is the folder the job owns (the output root, the model store, the run's scratch):
    no folder below it is followed if it is a symbolic link, and a link at `path` itself is replaced.
    A failure raises StorageError naming the object (permanent for permission problems and links).
    """
    try:
        if is_local(fs):
            _put_local(path, data, root)
        else:
            fs.pipe_file(path, data)
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001 - name the object whatever the library raised
        raise storage_error(f"cannot write {scrub(path)}", exc) from None


def parquet_bytes(df: pd.DataFrame, schema: pa.Schema | None = None) -> bytes:
    """`df` as one Parquet file (zstd), in `schema` when given. Timestamps are written in microseconds
    whatever `df` holds (pandas' are nanoseconds, which Spark 3 refuses); a sub-microsecond part is dropped."""
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", coerce_timestamps="us", allow_truncated_timestamps=True)
    return buf.getvalue()


def write_parquet(fs: fsspec.AbstractFileSystem, path: str, df: pd.DataFrame, schema: pa.Schema | None = None,
                  *, root: str | None = None) -> None:
    """`df` written whole as one Parquet file at `path` (`parquet_bytes`, then `put_bytes`)."""
    put_bytes(fs, path, parquet_bytes(df, schema), root=root)


def write_json(fs: fsspec.AbstractFileSystem, path: str, obj: Any, *, root: str | None = None) -> None:
    """`obj` written whole as indented JSON with sorted keys (what JSON cannot hold, as `str`), via `put_bytes`."""
    put_bytes(fs, path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode(), root=root)


def read_json(fs: fsspec.AbstractFileSystem, path: str) -> Any:
    """Parse a JSON object; FileNotFoundError when it is absent."""
    return json.loads(fs.cat_file(path))


def _local_parents_ok(path: str, root: str | None) -> bool:
    """Locally under `root`: False when `path` is itself a symbolic link (the caller removes only the link);
    LinkRefused when a folder between `root` and `path` is one."""
    if root is None:
        return not os.path.islink(path)
    os.close(open_dir(root, os.path.dirname(os.path.abspath(path)), create=False))
    return not os.path.islink(path)


def remove_tree(fs: fsspec.AbstractFileSystem, path: str, *, root: str | None = None) -> None:
    """Delete `path` and everything under it, if present.

    Locally a symbolic link at `path` is removed itself (what it points to is left alone), and under
    `root` a link in a folder above `path` refuses the removal (LinkRefused).
    """
    fs.invalidate_cache(path)
    try:
        if is_local(fs) and not _local_parents_ok(path, root):
            os.unlink(path)
        elif fs.exists(path):
            fs.rm(path, recursive=True)
    except FileNotFoundError:
        pass
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise storage_error(f"cannot delete {scrub(path)}", exc) from None
    fs.invalidate_cache(path)


def remove_file(fs: fsspec.AbstractFileSystem, path: str, *, root: str | None = None) -> None:
    """Delete one object, if present (locally, a link is removed itself; see remove_tree)."""
    try:
        if is_local(fs):
            _local_parents_ok(path, root)
        fs.rm_file(path)
    except FileNotFoundError:
        pass
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise storage_error(f"cannot delete {scrub(path)}", exc) from None
    fs.invalidate_cache(path)


def check_output(target: Location | str, setting: str = "output_url") -> None:
    """Cheap check, before any work, that the run can write under `target` (the output root): refuses a
    path that is a file (or lies under one) and, locally, a folder this process cannot write (ConfigError
    naming `setting`); raises StorageError when the storage cannot be reached (transient: retry later).
    Nothing is left written. On object stores a write permission shows only at the first write (a refused PUT
    fails the run then: StorageError, permanent)."""
    target = Location.of(target)
    hide = url_credentials(target.url)  # what a library may quote without the URL around it
    try:
        fs, path = target.fs, target.path
    except Exception as exc:  # a filesystem that cannot even be set up (re-raised unless storage failed)
        if is_storage_failure(exc):
            raise storage_error(f"output {target.shown}: cannot reach storage", exc, hide) from None
        raise
    shown = target.shown
    if is_local(fs):
        where = os.path.abspath(path)
        if os.path.exists(where) and not os.path.isdir(where):
            raise ConfigError(f"setting {setting!r}: {shown} is a file, not a folder: give a folder (the run writes "
                              f"predictions/, metrics/, runs/ ... under it)")
        probe = where
        while not os.path.lexists(probe) and os.path.dirname(probe) != probe:
            probe = os.path.dirname(probe)
        if not os.path.isdir(probe):
            raise ConfigError(f"setting {setting!r}: {shown} cannot be created: {probe} is a file, not a folder")
        # Try it: a folder made and removed at once where the output (or its first missing parent) would be
        # created. Permission bits alone do not say it (root, ACLs, read-only or special file systems).
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".lstm-forecast-write-check-", dir=probe))
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise ConfigError(f"setting {setting!r}: {shown} is not writable ({probe}: {why})") from None
        return
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return  # not there yet: the run creates it
    except Exception as exc:  # re-raised unless storage failed
        if is_storage_failure(exc):
            raise storage_error(f"output {shown}: cannot reach storage", exc, hide) from None
        raise
    if info.get("type") == "file":
        raise ConfigError(f"setting {setting!r}: {shown} is a file (an object), not a folder: give a prefix the run "
                          f"can write predictions/, metrics/, runs/ ... under")
