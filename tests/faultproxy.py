"""A fault-injecting HTTP reverse proxy for tests: put it between s3fs and the moto server.

    proxy = FaultProxy(upstream="http://127.0.0.1:5000", rate=0.1, seed=7).start()
    storage_options = {"endpoint_url": proxy.url}
    ...
    proxy.faults_injected, proxy.requests, proxy.stop()

It forwards every request to the upstream (keeping the Host header, so SigV4 and moto's
path-style addressing are unaffected) and, instead, injects a fault

- for a chosen share of requests (`rate`, decided by `random.Random(seed)` in arrival order,
  so the same seed gives the same sequence of decisions), choosing among `kinds`;
- or for requests matching a `Rule` (method and path regexes, matched against the URL-decoded
  path and query; `times` bounds how many).

Fault kinds:
    "500"         an S3 `InternalError` reply (the request never reaches the upstream)
    "503"         an S3 `SlowDown` reply
    "reset"       the connection is closed without a reply (the request never reaches the upstream)
    "lost_reply"  the request IS forwarded and applied, then the connection is closed without the
                  reply: the client cannot know it succeeded (tests idempotent retries)
    "403"         an S3 `AccessDenied` reply: a permanent failure
    "hold"        the request waits, unforwarded, until `release()`; then its connection is closed
                  (to freeze a client mid-write, e.g. to kill it there)

`max_faults` bounds the faults injected in all. Counters: `requests`, `faults_injected`,
`by_kind`, and `log` (method, path, kind) of each fault. Thread-safe; daemon threads.

`record` (a regex on the decoded path and query) keeps each matching request, in arrival order,
as a `Seen` (method, path, headers, body) in `seen`, before any fault is decided: tests observe
what a client really sent (the order of deletes and writes, conditional-write headers, bodies).
"""
from __future__ import annotations

import http.client
import random
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import unescape

KINDS = ("500", "503", "reset", "lost_reply", "403", "hold")
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}
_ERRORS = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again. (injected)"),
    "503": (503, "SlowDown", "Please reduce your request rate. (injected)"),
    "403": (403, "AccessDenied", "Access Denied (injected)"),
}


@dataclass
class Rule:
    """Fault `kind` for requests whose method and path (with query) match; `times` None = always."""

    kind: str
    method: str = ".*"
    path: str = ".*"
    times: int | None = None
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (self.times is None or self.hits < self.times) and re.fullmatch(self.method, method) is not None \
            and re.search(self.path, path) is not None


@dataclass(frozen=True)
class Seen:
    """One request as the proxy received it."""

    method: str
    path: str  # URL-decoded path and query
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        """A header's value, whatever its case."""
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)

    def deleted_keys(self) -> list[str]:
        """The keys this request deletes: a DELETE's own key, or those a DeleteObjects POST lists."""
        path = self.path.split("?", 1)[0].lstrip("/")
        if self.method == "DELETE":
            return [path]
        if self.method == "POST" and re.search(r"[?&]delete(=|&|$)", self.path):
            bucket = path.split("/", 1)[0]
            return [f"{bucket}/{unescape(k)}" for k in re.findall(r"<Key>(.*?)</Key>", self.body.decode())]
        return []


@dataclass
class FaultProxy:
    upstream: str
    rate: float = 0.0
    seed: int = 0
    kinds: tuple[str, ...] = ("500", "503", "reset", "lost_reply")
    rules: list[Rule] = field(default_factory=list)
    max_faults: int | None = None
    # Only requests matching this are eligible for random faults (rules always apply).
    eligible: str = ".*"
    # Requests matching this are kept in `seen` (None: none are).
    record: str | None = None

    def __post_init__(self) -> None:
        for k in (*self.kinds, *(r.kind for r in self.rules)):
            if k not in KINDS:
                raise ValueError(f"unknown fault kind {k!r}; known: {KINDS}")
        up = urlsplit(self.upstream)
        self._up_host, self._up_port = up.hostname, up.port or 80
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._released = threading.Event()
        self.held = threading.Event()  # set when a request is being held
        self.requests = 0
        self.faults_injected = 0
        self.by_kind: dict[str, int] = {}
        self.log: list[tuple[str, str, str]] = []
        self.seen: list[Seen] = []
        self._server: ThreadingHTTPServer | None = None

    # --- control -----------------------------------------------------------
    def start(self) -> "FaultProxy":
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True).start()
        return self

    def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def release(self) -> None:
        """Let held requests go (their connections are closed without a reply)."""
        self._released.set()

    def set(self, *, rate: float | None = None, rules: list[Rule] | None = None) -> None:
        with self._lock:
            if rate is not None:
                self.rate = rate
            if rules is not None:
                self.rules = rules

    def seen_requests(self) -> list[Seen]:
        """A copy of the recorded requests, in arrival order."""
        with self._lock:
            return list(self.seen)

    def observe(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        if self.record is None or re.search(self.record, path) is None:
            return
        with self._lock:
            self.seen.append(Seen(method, path, headers, body))

    # --- decisions ---------------------------------------------------------
    def decide(self, method: str, path: str) -> str | None:
        with self._lock:
            self.requests += 1
            kind = None
            for rule in self.rules:
                if rule.matches(method, path):
                    rule.hits += 1
                    kind = rule.kind
                    break
            else:
                draw = self._rng.random()  # drawn for every request: the sequence depends only on the seed
                pick = self._rng.choice(self.kinds) if self.kinds else None
                if (draw < self.rate and pick and re.search(self.eligible, path)
                        and (self.max_faults is None or self.faults_injected < self.max_faults)):
                    kind = pick
            if kind is not None:
                self.faults_injected += 1
                self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
                self.log.append((method, path, kind))
            return kind

    def summary(self) -> dict:
        with self._lock:
            return {"requests": self.requests, "faults_injected": self.faults_injected, "by_kind": dict(self.by_kind)}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pools expect
    owner: FaultProxy

    def log_message(self, format, *args) -> None:  # noqa: A002 - quiet
        pass

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _error(self, kind: str) -> None:
        status, code, message = _ERRORS[kind]
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
                f"<RequestId>faultproxy</RequestId></Error>").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.owner._up_host, self.owner._up_port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, resp.getheaders(), data
        finally:
            conn.close()

    def _handle(self) -> None:
        body = self._body()
        path = unquote(self.path)
        self.owner.observe(self.command, path, dict(self.headers.items()), body)
        kind = self.owner.decide(self.command, path)
        if kind in _ERRORS:
            return self._error(kind)
        if kind == "reset":
            return self._drop()
        if kind == "hold":
            self.owner.held.set()
            self.owner._released.wait()
            return self._drop()
        try:
            status, reason, headers, data = self._forward(body)
        except OSError:
            return self._drop()
        if kind == "lost_reply":
            return self._drop()
        self.send_response(status, reason)
        for k, v in headers:
            if k.lower() not in _HOP and k.lower() not in ("server", "date") \
                    and not (k.lower() == "content-length" and self.command != "HEAD"):
                self.send_header(k, v)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle
