"""The Prometheus endpoint of a worker or scheduler process (``--metrics-port``).

Each process (and each Worker or Scheduler object, so tests can run several in one process)
exposes its own ``CollectorRegistry``, never prometheus_client's global one: the endpoint
shows redbatch's metrics only, and two objects never register the same name twice.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from redbatch.errors import ConfigError

log = logging.getLogger(__name__)

# Where the endpoint listens: every interface, as Prometheus exporters do; the scraper
# decides which host it reaches.
ADDRESS = "0.0.0.0"


@dataclass
class Endpoint:
    """A running ``/metrics`` server; ``close()`` frees its port."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve(port: int, registry: CollectorRegistry) -> Endpoint:
    """Serve ``registry`` on ``port`` (a daemon thread); ConfigError, one line, when the port
    cannot be had (in use, or privileged): a start-up mistake, like any other bad setting."""
    try:
        server, thread = start_http_server(port, addr=ADDRESS, registry=registry)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            f"cannot serve metrics on port {port}: {reason} "
            "(--metrics-port / REDBATCH_METRICS_PORT)"
        ) from None
    return Endpoint(server, thread)
