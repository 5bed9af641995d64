"""A lease on a run id, so two processes never write the same run's partitions at once.

`runs/<run_id>/lease.json` under the output URL names its holder (host, process, token)
and when it was last renewed.

- Object stores (s3://): the lease is created with a conditional PUT (`If-None-Match: *`),
  so of two processes starting the same run id exactly one gets it. The holder renews it
  every `ttl / 4` with a compare-and-swap (`If-Match: <ETag>`). Another process may take a
  lease over only when it is stale: not renewed for `ttl`, or its holder is a process on
  this same machine that no longer exists (a crash, SIGKILL). The takeover is itself a
  compare-and-swap on the stale lease's ETag, so two re-runs cannot both win.
- Local paths: an exclusive `flock` on the lease file; the kernel releases it when the
  holder exits or dies, so a crashed run never blocks its re-run. The run folder is opened
  without following links (a link there refuses the run) and the file with O_NOFOLLOW: a
  link planted at `lease.json` is replaced by a real file, never written through.
- Other fsspec stores: best effort (check, then write), documented as racy.

The holder checks its lease once more right before committing the manifest; a run that
lost its lease (it stalled past the TTL and another run took over) stops without committing.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import socket
import stat
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypedDict

import fsspec

from lstm_core.atomic import open_dir
from lstm_core.errors import LeaseLostError, RunLockedError, StorageError
from lstm_core.layout import LEASE, OutputLayout
from lstm_core.location import is_local, storage_error
from lstm_core.secrets import scrub

log = logging.getLogger("lstm_core.lease")

MAX_TTL = 86400.0


class ProcessIdentity(TypedDict):
    """A process, as a lease names its holder: enough to tell from the same machine whether it still runs."""

    host: str
    boot_id: str | None  # /proc/sys/kernel/random/boot_id; None where there is no /proc
    pid_namespace: int | None  # inode of /proc/self/ns/pid
    pid: int
    pid_started: str | None  # clock ticks since boot (/proc/<pid>/stat field 22): tells pid reuse apart


class LeaseBody(TypedDict, total=False):
    """`lease.json` as read back: the holder's `ProcessIdentity` fields and these. Written whole by `RunLease`, but
    read from a store another process (or a person) may have written, so any field may be missing or of another
    type: readers check each value they use."""

    host: str
    boot_id: str | None
    pid_namespace: int | None
    pid: int
    pid_started: str | None
    run_id: str
    token: str  # the holder's own random token
    acquired_at: str  # ISO 8601, UTC
    renewed_at: str  # ISO 8601, UTC
    renewed_at_epoch: float  # seconds since the epoch
    ttl_s: float


def _now() -> float:
    return time.time()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _read_text(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22): tells pid reuse apart."""
    stat = _read_text(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    if fields[0] in ("Z", "X"):  # exited, not yet reaped: as good as gone
        return None
    return fields[19]


def process_identity() -> ProcessIdentity:
    """Who holds a lease: enough to tell, from the same machine, whether that process still runs."""
    pid = os.getpid()
    pidns = None
    try:
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        pass
    return ProcessIdentity(host=socket.gethostname(), boot_id=_read_text("/proc/sys/kernel/random/boot_id"),
                           pid_namespace=pidns, pid=pid, pid_started=_proc_start(pid))


def holder_is_dead(holder: LeaseBody) -> bool:
    """True only when the holder certainly ran on this machine (same boot, same pid namespace) and is gone."""
    me = process_identity()
    if not me["boot_id"] or me["pid_namespace"] is None:
        return False
    if (holder.get("host"), holder.get("boot_id"), holder.get("pid_namespace")) != \
            (me["host"], me["boot_id"], me["pid_namespace"]):
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return False
    started = _proc_start(pid)
    return started is None or (holder.get("pid_started") is not None and started != holder.get("pid_started"))


def _precondition_failed(exc: OSError) -> bool:
    """s3fs turns a 412 PreconditionFailed (If-Match) into OSError(EINVAL, 'At least one of the pre-conditions...')."""
    text = str(exc).lower().replace("-", "")
    return exc.errno == errno.EINVAL or "precondition" in text or "412" in text


def _describe(body: LeaseBody) -> str:
    return (f"held by {body.get('host')} pid {body.get('pid')} since {body.get('acquired_at')}, "
            f"renewed {body.get('renewed_at')}")


@dataclass
class RunLease:
    """One process's claim on a run id. Use `acquire`, then `release` (or a `with` block)."""

    fs: fsspec.AbstractFileSystem
    path: str
    run_id: str
    ttl: float
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    acquired_at: float = field(default_factory=_now)
    took_over: str | None = None  # why an earlier lease was taken over, if it was
    _fd: int | None = None
    _lost: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _mutex: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    # --- acquiring -------------------------------------------------------
    @classmethod
    def acquire(cls, fs: fsspec.AbstractFileSystem, root: str, run_id: str, ttl: float,
                heartbeat: bool = True) -> RunLease:
        """Take the lease of `run_id` under the output root `root`, valid `ttl` seconds unless renewed (a background
        thread renews it every ttl / 4 on object stores when `heartbeat`). Raises RunLockedError when a live run
        holds it, StorageError (naming the lease) when the store fails, LinkRefused when the run folder is a link.
        """
        lease = cls(fs, OutputLayout(root).lease(run_id), run_id, float(ttl))
        if is_local(fs):
            lease._acquire_local(root)
        else:
            lease._acquire_store()
        if heartbeat and not is_local(fs):
            lease._thread = threading.Thread(target=lease._heartbeat, name=f"lease-{run_id}", daemon=True)
            lease._thread.start()
        return lease

    def _body(self) -> bytes:
        now = _now()
        return json.dumps({
            "run_id": self.run_id, "token": self.token, **process_identity(),
            "acquired_at": _iso(self.acquired_at), "renewed_at": _iso(now), "renewed_at_epoch": now,
            "ttl_s": self.ttl,
        }, indent=2).encode()

    def _refused(self, body: LeaseBody) -> RunLockedError:
        return RunLockedError(
            f"run {self.run_id} is already running ({_describe(body)}; lease {scrub(self.path)}); "
            f"refusing to start it twice. Wait for it, or use another run_id")

    def _acquire_local(self, root: str) -> None:
        import fcntl

        dfd = open_dir(root, os.path.dirname(self.path))  # LinkRefused if runs/ or runs/<id> is a link
        try:
            fd = self._open_local(dfd)
        finally:
            os.close(dfd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                body = json.loads(os.pread(fd, 1 << 16, 0) or b"{}")
            except ValueError:
                body = {}
            os.close(fd)
            raise self._refused(body) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, self._body(), 0)
        os.fsync(fd)
        self._fd = fd

    def _open_local(self, dfd: int) -> int:
        """The lease file, never through a link. A planted link is replaced by a real file; the swap is
        serialised by a lock on the run folder, so two processes cannot end up locking two files."""
        import fcntl

        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            return os.open(LEASE, flags, 0o644, dir_fd=dfd)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
        fcntl.flock(dfd, fcntl.LOCK_EX)
        try:
            if stat.S_ISLNK(os.lstat(LEASE, dir_fd=dfd).st_mode):
                log.warning("run %s: %s was a symbolic link; replaced by a real lease file (its target is "
                            "untouched)", self.run_id, scrub(self.path))
                os.unlink(LEASE, dir_fd=dfd)
            return os.open(LEASE, flags, 0o644, dir_fd=dfd)
        finally:
            fcntl.flock(dfd, fcntl.LOCK_UN)

    def _read_store(self) -> tuple[LeaseBody | None, str | None]:
        """The current lease body and its ETag; (None, None) when there is none."""
        self.fs.invalidate_cache(self.path)
        try:
            etag = self.fs.info(self.path).get("ETag")
            raw = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None, None
        try:
            return json.loads(raw), etag
        except ValueError:
            return {}, etag

    @property
    def _conditional(self) -> bool:
        protocol = self.fs.protocol
        return bool(set(protocol if isinstance(protocol, (tuple, list)) else [protocol]) & {"s3", "s3a"})

    def _put(self, **condition: str | None) -> bool:
        """Conditional PUT of our body; False when the condition failed.

        Stores without conditional writes (not S3) get check-then-write: best effort, racy. Only they may
        see an `IfMatch` of None (a store that gives no ETag); they do not read it.
        """
        try:
            if not self._conditional:
                if "IfNoneMatch" in condition and self.fs.exists(self.path):
                    return False
                self.fs.pipe_file(self.path, self._body())
            elif "IfNoneMatch" in condition:
                self.fs.pipe_file(self.path, self._body(), mode="create")
            else:
                self.fs.pipe_file(self.path, self._body(), **condition)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if _precondition_failed(exc):
                return False
            raise
        finally:
            self.fs.invalidate_cache(self.path)

    def _acquire_store(self) -> None:
        try:
            for _ in range(5):
                if self._put(IfNoneMatch="*"):
                    return
                body, etag = self._read_store()
                if body is None:
                    continue  # released in between: try to create again
                if body.get("token") == self.token:
                    return  # our own create landed, its reply was lost and the retry saw it
                stale = self._stale_reason(body)
                if not stale:
                    raise self._refused(body)
                if self._put(IfMatch=etag):
                    self.took_over = f"took over a stale lease ({_describe(body)}): {stale}"
                    log.warning("run %s: %s", self.run_id, self.took_over)
                    return
                body, _ = self._read_store()
                if body and body.get("token") == self.token:
                    self.took_over = f"took over a stale lease: {stale}"
                    return
            raise RunLockedError(f"run {self.run_id}: could not acquire lease {scrub(self.path)} "
                                 f"(another process keeps taking it)")
        except (RunLockedError, StorageError):
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the store raised: a StorageError naming the lease
            raise storage_error(f"run {self.run_id}: cannot take lease {scrub(self.path)}", exc) from None

    def _stale_reason(self, body: LeaseBody) -> str | None:
        renewed, ttl = body.get("renewed_at_epoch"), body.get("ttl_s") or self.ttl
        if not isinstance(renewed, (int, float)) or not isinstance(ttl, (int, float)) or isinstance(ttl, bool):
            return "the lease is unreadable"
        # A lease's own ttl counts, but no more than a day (or ours): a lease body cannot hold a run id forever.
        ttl = min(float(ttl), max(self.ttl, MAX_TTL))
        age = _now() - renewed
        if -age > ttl:  # claims a renewal further ahead than the ttl: planted, or a broken clock
            return f"its renewal time ({renewed:.0f} s since the epoch) is in the future"
        if age > ttl:
            return f"not renewed for {age:.0f} s (ttl {ttl:.0f} s)"
        if holder_is_dead(body):
            return f"its holder, pid {body.get('pid')} on this machine, no longer runs"
        return None

    # --- holding ---------------------------------------------------------
    def _heartbeat(self) -> None:
        interval = max(self.ttl / 4, 0.05)
        while not self._stop.wait(interval):
            try:
                self.renew()
            except LeaseLostError:
                return
            except Exception as exc:  # noqa: BLE001 - a missed renewal is retried on the next beat
                log.warning("run %s: lease renewal failed (will retry): %s", self.run_id, scrub(str(exc)))

    def renew(self) -> None:
        """Compare-and-swap a fresh renewal time; LeaseLostError when another process holds it now."""
        if self._lost:
            raise LeaseLostError(self._lost)
        if is_local(self.fs):
            return
        with self._mutex:
            self._renew()

    def _renew(self) -> None:
        body, etag = self._read_store()
        if not body or body.get("token") != self.token:
            self._lose(body)
        if not self._put(IfMatch=etag):
            body, _ = self._read_store()
            if not body or body.get("token") != self.token:
                self._lose(body)

    def _lose(self, body: LeaseBody | None) -> None:
        who = _describe(body) if body else "deleted"
        self._lost = (f"run {self.run_id} lost its lease {scrub(self.path)} (now {who}); "
                      f"another process took the run over, so this one stops without committing")
        raise LeaseLostError(self._lost)

    def check(self) -> None:
        """Raise LeaseLostError unless this process still holds the lease (read from the store)."""
        if self._lost:
            raise LeaseLostError(self._lost)
        if self._fd is not None:
            return
        with self._mutex:
            body, _ = self._read_store()
            if not body or body.get("token") != self.token:
                self._lose(body)

    @property
    def lost(self) -> bool:
        """True once this process found that another one took its lease over."""
        return self._lost is not None

    # --- releasing -------------------------------------------------------
    def release(self) -> None:
        """Give the run id back (delete our lease object; unlock the local file)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._fd is not None:
            import fcntl

            # The file stays (unlinking a flock'ed file lets two processes lock different inodes).
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            return
        if self._lost:
            return
        try:
            with self._mutex:
                body, _ = self._read_store()
                if body and body.get("token") == self.token:
                    self.fs.rm_file(self.path)
                    self.fs.invalidate_cache(self.path)
        except Exception as exc:  # noqa: BLE001 - a left lease expires after its ttl
            log.warning("run %s: could not release lease (it expires after %.0f s): %s", self.run_id, self.ttl,
                        scrub(str(exc)))

    def __enter__(self) -> RunLease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
