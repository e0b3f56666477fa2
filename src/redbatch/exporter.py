"""The HTTP endpoint of a worker or scheduler process (``--metrics-port``): ``/metrics`` for
Prometheus, ``/healthz`` and ``/readyz`` for Kubernetes probes, 404 for anything else.

Each process (and each Worker or Scheduler object, so tests can run several in one process)
exposes its own ``CollectorRegistry``, never prometheus_client's global one: the endpoint
shows redbatch's metrics only, and two objects never register the same name twice.

A probe answers 200 "ok" or 503 with the reason on one line; the reasons come from the
process's ``Health`` (pure decisions over what its loops last recorded, so a probe costs no
Redis round trip and cannot block behind the main loop).
"""

from __future__ import annotations

import logging
import platform
import socketserver
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Info, make_wsgi_app

from redbatch.errors import ConfigError

log = logging.getLogger(__name__)

# Where the endpoint listens: every interface, as Prometheus exporters do; the scraper
# decides which host it reaches.
ADDRESS = "0.0.0.0"
METRICS, HEALTHZ, READYZ = "/metrics", "/healthz", "/readyz"

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class Health(Protocol):
    """Why the process is not live / not ready, or "" when it is."""

    def live(self) -> str: ...

    def ready(self) -> str: ...


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    # A slow scrape must not hold up a probe; daemon threads are not gathered at close.
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would flood the log."""


def app(registry: CollectorRegistry, health: Health) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def route(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == METRICS:
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        if path in (HEALTHZ, READYZ):
            try:
                reason = health.live() if path == HEALTHZ else health.ready()
            except Exception as exc:  # a probe must answer, whatever broke
                reason = f"the probe failed: {type(exc).__name__}: {exc}"
            status = "503 Service Unavailable" if reason else "200 OK"
            return _text(start_response, status, reason or "ok")
        return _text(start_response, "404 Not Found", f"not found: {path} (try {METRICS}, "
                     f"{HEALTHZ}, {READYZ})")  # fmt: skip

    return route


def _text(start_response: StartResponse, status: str, body: str) -> list[bytes]:
    data = (body + "\n").encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))]
    start_response(status, headers)
    return [data]


def build_info(registry: CollectorRegistry) -> None:
    """``redbatch_build_info{version,python} 1``: which release each process runs."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        release = version("redbatch")
    except PackageNotFoundError:  # a source tree on sys.path, not installed
        release = "unknown"
    Info("redbatch_build", "The redbatch release this process runs", registry=registry).info(
        {"version": release, "python": platform.python_version()}
    )


@dataclass
class Endpoint:
    """A running HTTP server; ``close()`` frees its port."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve(port: int, registry: CollectorRegistry, health: Health) -> Endpoint:
    """Serve ``registry`` and ``health`` on ``port`` (a daemon thread); ConfigError, one line,
    when the port cannot be had (in use, or privileged): a start-up mistake, like any other
    bad setting."""
    try:
        server = make_server(ADDRESS, port, app(registry, health), _Server, handler_class=_Quiet)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            f"cannot serve metrics on port {port}: {reason} "
            "(--metrics-port / REDBATCH_METRICS_PORT)"
        ) from None
    thread = threading.Thread(target=server.serve_forever, name="redbatch-http", daemon=True)
    thread.start()
    return Endpoint(server, thread)


class _AlwaysWell:
    """For an endpoint with nothing to judge (an embedded worker's tests)."""

    def live(self) -> str:
        return ""

    def ready(self) -> str:
        return ""


ALWAYS_WELL: Health = _AlwaysWell()
