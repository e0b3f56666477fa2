"""Start and stop a private ``redis-server`` process, for tests and ``redbatch demo``.

The server listens on 127.0.0.1 only, on a free port by default, with its data and log in
a directory of its own. Nothing here is global: each :class:`EmbeddedRedis` owns exactly
one child process and (optionally) one temporary directory, and ``stop()`` releases both.

Usage::

    with EmbeddedRedis(appendonly=True) as server:
        client = redis.Redis.from_url(server.url)
        ...
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from redbatch.errors import RedbatchError
from redbatch.transport.connection import connection_name

__all__ = ["EmbeddedRedis", "find_redis_server"]

_HOST = "127.0.0.1"
_READY_TIMEOUT_S = 10.0
_POLL_INTERVAL_S = 0.02
_STOP_GRACE_S = 5.0
_LOG_TAIL_LINES = 20
# What redis-server logs when it cannot bind; the only failure worth a retry on a new port.
_ADDRESS_IN_USE = "Address already in use"


def find_redis_server(binary: str = "redis-server") -> str | None:
    """Return the full path of ``binary`` on PATH (or as given), or None when absent."""
    return shutil.which(binary)


def _free_port() -> int:
    """Ask the kernel for a free TCP port on 127.0.0.1.

    The port is released before redis-server binds it, so another process may take it in
    between; :meth:`EmbeddedRedis.start` retries once on a new port when that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class _PortInUse(RedbatchError):
    """redis-server exited because its port was taken.

    ``start()`` retries once on a new port when it picked the port itself.
    """


class EmbeddedRedis:
    """One private redis-server child process.

    ``port=None`` picks a free port at the first ``start()`` and keeps it for ``restart()``.
    ``directory=None`` uses a temporary directory that this object creates and removes on
    ``stop()``; a given directory is never removed. ``appendonly=True`` keeps data across
    ``kill()`` + ``restart()``. RDB snapshots are always off (``--save ""``). ``command``
    is the argv that runs the server (``redbatch.servers.server_build(name).command``).
    """

    def __init__(
        self,
        port: int | None = None,
        directory: Path | None = None,
        *,
        appendonly: bool = False,
        extra_args: Sequence[str] = (),
        binary: str = "redis-server",
        command: Sequence[str] = (),
    ) -> None:
        self._requested_port = port
        self._port = port
        self._given_dir = directory
        self._dir: Path | None = directory
        self._appendonly = appendonly
        self._extra_args = tuple(extra_args)
        self._binary = binary
        # The argv that runs the server (redbatch.servers: Redis 8 / Valkey 8 through their
        # root filesystem's loader); empty = ``binary`` found on PATH.
        self._launcher = tuple(command)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0  # size of redis.log when the current process was launched

    # -- properties -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port; known once started (or when given to the constructor)."""
        if self._port is None:
            raise RedbatchError("EmbeddedRedis has no port yet: call start() first")
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{_HOST}:{self.port}/0"

    @property
    def dir(self) -> Path:
        """The server's working directory (data files and ``redis.log``)."""
        if self._dir is None:
            raise RedbatchError("EmbeddedRedis has no directory yet: call start() first")
        return self._dir

    @property
    def pid(self) -> int | None:
        """The pid of the running server process, or None when not running."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the child process exists and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.dir / "redis.log"

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> EmbeddedRedis:
        """Launch the server and wait until it answers PING; no-op when already running."""
        if self.running:
            return self
        path = self._launcher[-1] if self._launcher else find_redis_server(self._binary)
        if path is None:
            raise RedbatchError(f"{self._binary!r} not found on PATH; install redis-server")
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="redbatch-redis-"))
        try:
            if self._port is None:
                self._port = _free_port()
                try:
                    self._launch(path)
                except _PortInUse:
                    # Lost the race between _free_port() closing its socket and redis binding.
                    self._port = _free_port()
                    self._launch(path)
            else:
                self._launch(path)
        except BaseException:
            # The error message already carries the log tail; release an owned directory
            # (a failed start inside `with` never reaches __exit__).
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM, wait up to 5 s, then SIGKILL; remove an owned directory. Idempotent."""
        self._terminate()
        if self._given_dir is None and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
            # A later start() gets a fresh directory and, if none was given, a fresh port.
            self._port = self._requested_port

    def kill(self) -> None:
        """SIGKILL the server at once (simulates a crash); keeps port and directory."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        self._proc = None

    def restart(self) -> EmbeddedRedis:
        """Stop (gracefully, if running) and start again on the same port and directory.

        With ``appendonly=True`` the data survives, also after :meth:`kill`: redis writes
        the AOF buffer to the file before it replies, so only an OS crash could lose it.
        """
        self._terminate()
        return self.start()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self._proc.pid}" if self.running and self._proc else "stopped"
        return f"EmbeddedRedis(port={self._port}, dir={self._dir}, {state})"

    # -- internals ------------------------------------------------------------------------

    def _command(self, path: str) -> list[str]:
        return [
            *(self._launcher or (path,)),
            "--port", str(self.port),
            "--bind", _HOST,
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes" if self._appendonly else "no",
            "--daemonize", "no",
            "--logfile", str(self.log_path),
            *self._extra_args,
        ]  # fmt: skip

    def _launch(self, path: str) -> None:
        """Start the process and wait for PING; on failure leave no process behind."""
        # The log is appended to across restarts; error messages show only this run's part.
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        # Config errors go to stderr before the logfile is opened; keep them for the message.
        with (self.dir / "redis.stderr").open("wb") as stderr:
            self._proc = subprocess.Popen(
                self._command(path),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            self._wait_ready(self._proc)
        except BaseException:
            self._terminate()
            raise

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while not self._answers_ping(proc.pid):
            # Poll after the PING attempt, so a process that died meanwhile is reported
            # as such rather than as a timeout.
            code = proc.poll()
            if code is not None:
                tail = self._log_tail()
                message = f"redis-server exited with code {code} on port {self.port}; log:\n{tail}"
                raise (_PortInUse if _ADDRESS_IN_USE in tail else RedbatchError)(message)
            if time.monotonic() > deadline:
                raise RedbatchError(
                    f"redis-server on port {self.port} did not answer PING within "
                    f"{_READY_TIMEOUT_S:g} s; log:\n{self._log_tail()}"
                )
            time.sleep(_POLL_INTERVAL_S)

    def _answers_ping(self, pid: int) -> bool:
        """True when *our* process answers PING on the port.

        Checking ``process_id`` guards against a foreign server that grabbed the port in
        the race window: it would answer PING while our process is about to exit.
        """
        # No retries: redis-py >= 6 retries timeouts by default, which would stretch one
        # probe of a port held by a non-redis listener to many seconds.
        client = redis.Redis(
            host=_HOST,
            port=self.port,
            client_name=connection_name("embedded", str(self.port)),
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            client.ping()
            info = client.info("server")
        except redis.RedisError:
            # ConnectionError while not yet listening; BusyLoadingError while loading AOF.
            return False
        finally:
            client.close()
        return bool(info.get("process_id") == pid)

    def _terminate(self) -> None:
        """End the process (SIGTERM, grace period, SIGKILL) and reap it."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait()
        self._proc = None

    def _log_tail(self) -> str:
        lines: list[str] = []
        for name, offset in (("redis.stderr", 0), ("redis.log", self._log_offset)):
            try:
                with (self.dir / name).open("rb") as f:
                    f.seek(offset)
                    text = f.read().decode(errors="replace")
            except OSError:
                continue
            lines.extend(text.splitlines()[-_LOG_TAIL_LINES:])
        return "\n".join(lines) if lines else "(no log output)"
