"""``redbatch dashboard`` as a real process (uvicorn on a free port), and plain HTTP to it."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from helpers import subprocess_env

START_TIMEOUT_S = 60.0  # imports and the first Redis round trip, on a loaded machine
STOP_TIMEOUT_S = 15.0
_ANNOUNCE = "redbatch dashboard on "


@dataclass
class DashboardProcess:
    proc: subprocess.Popen[str]
    url: str  # http://127.0.0.1:PORT/
    lines: list[str] = field(default_factory=list)  # stdout so far
    reader: threading.Thread | None = None

    def stop(self) -> int:
        """SIGTERM; the exit code (0: a clean shutdown)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(STOP_TIMEOUT_S)
        self._release()
        return code

    def kill(self) -> None:
        """A test's clean-up after a failure: SIGKILL if still running, and the pipe closed
        (left open, it is collected in a later test as a ResourceWarning that fails it)."""
        _kill(self.proc)
        self._release()

    def _release(self) -> None:
        if self.reader is not None:
            self.reader.join(STOP_TIMEOUT_S)  # it ends at the pipe's end of file
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def token(self) -> str:
        """The token a ``--allow-writes`` dashboard without ``--token-file`` printed."""
        line = next(line for line in self.lines if line.startswith(_ANNOUNCE))
        return line.split("with token ", 1)[1].split(";", 1)[0]


def _kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(STOP_TIMEOUT_S)


def _read(stream: Any, into: queue.Queue[str | None], lines: list[str]) -> None:
    """Every line into ``lines``, and into ``into`` for the start-up wait; None at the end."""
    for line in stream:
        lines.append(line.rstrip("\n"))
        into.put(lines[-1])
    into.put(None)


def start_dashboard(*args: str) -> DashboardProcess:
    """``redbatch dashboard --port 0 ARGS``, once it printed where it listens (the socket is
    bound before that line, so the URL answers from then on)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "redbatch", "dashboard", "--port", "0", *args],
        env=subprocess_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: queue.Queue[str | None] = queue.Queue()
    lines: list[str] = []
    reader = threading.Thread(target=_read, args=(proc.stdout, seen, lines), daemon=True)
    reader.start()
    while True:
        try:
            line = seen.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            DashboardProcess(proc, "", lines, reader).kill()
            raise AssertionError(f"no start-up line in {START_TIMEOUT_S} s: {lines}") from None
        if line is None:
            code = proc.wait()
            reader.join()
            assert proc.stdout is not None
            proc.stdout.close()
            raise AssertionError(f"the dashboard exited {code}: {lines}")
        if line.startswith(_ANNOUNCE):
            url = line[len(_ANNOUNCE) :].split(" ", 1)[0]
            return DashboardProcess(proc, url, lines, reader)


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


def http(
    url: str,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
    method: str | None = None,
    raw: bytes | None = None,
) -> Answer:
    """One request; JSON in and out (``raw``: send these bytes as they are)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    sent = dict(headers or {})
    if body is not None:
        sent.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, headers=sent, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = response.read()
            status, got = response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        payload, status, got = error.read(), error.code, dict(error.headers)
    try:
        parsed: Any = json.loads(payload)
    except ValueError:
        parsed = payload.decode("utf-8", "replace")
    return Answer(status, parsed, {k.lower(): v for k, v in got.items()})
