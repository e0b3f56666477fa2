"""A fault-injecting TCP proxy between a client and a private redis-server, for tests.

It forwards bytes both ways until told to misbehave:

- ``hold()``: forward nothing (bytes wait in the proxy) until ``release()``: a stalled network
  or a stalled server, as a client sees it;
- ``drop()``: black-hole every byte both ways, connections left open: a silent network (the
  client waits for a reply that never comes);
- ``cut()``: close every connection at once (the client sees a reset);
- ``swallow(command, count)``: the reply to the next ``count`` commands named ``command``
  (e.g. ``EVALSHA``) is discarded and that connection cut, so the command ran but its reply
  was lost; redis-py then reconnects and re-sends it;
- ``stall_new()``: connections opened from now on forward nothing (the connections already
  open go on as before): a client's new connection hangs, as when the server's name stops
  resolving. ``accepted`` counts every connection opened.

RESP is parsed just enough: command names from the client's arrays, reply boundaries from
the server's stream (RESP2 and RESP3 types). One selector thread runs every connection.
"""

from __future__ import annotations

import collections
import contextlib
import selectors
import socket
import struct
import threading
from types import TracebackType

_LINE_TYPES = b"+-:_,#("  # one line: simple string, error, integer, null, double, bool, big
_BULK_TYPES = b"$=!"  # length line then that many bytes + CRLF
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset
_AGGREGATE_TYPES = {b"*": 1, b"~": 1, b">": 1, b"%": 2, b"|": 2}  # elements per count


def resp_length(buf: bytes | bytearray, pos: int = 0) -> int | None:  # noqa: PLR0911
    """Length of the one complete RESP value at ``buf[pos:]``, None while incomplete."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return None
    kind = buf[pos : pos + 1]
    after = end + 2
    if kind in (b"", b"\r") or kind[0] in _LINE_TYPES:
        return after - pos
    count = int(buf[pos + 1 : end])
    if kind[0] in _BULK_TYPES:
        if count < 0:
            return after - pos
        return after + count + 2 - pos if len(buf) >= after + count + 2 else None
    per = _AGGREGATE_TYPES.get(bytes(kind))
    if per is None:  # inline command (the client side): one line
        return after - pos
    at = after
    for _ in range(max(0, count) * per):
        size = resp_length(buf, at)
        if size is None:
            return None
        at += size
    return at - pos


def command_name(raw: bytes | bytearray) -> str:
    """The upper-case name of one RESP command array (or an inline command)."""
    if raw[:1] != b"*":
        return bytes(raw).split(None, 1)[0].decode().upper() if raw.strip() else ""
    first = raw.find(b"\r\n") + 2
    length_end = raw.find(b"\r\n", first)
    size = int(raw[first + 1 : length_end])
    return bytes(raw[length_end + 2 : length_end + 2 + size]).decode().upper()


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.from_client = bytearray()  # not yet parsed into commands
        self.from_server = bytearray()  # not yet parsed into replies
        self.to_server = bytearray()  # held while the proxy holds
        self.to_client = bytearray()
        self.commands: collections.deque[str] = collections.deque()
        self.closed = False
        self.stalled = False  # opened after stall_new(): forwards nothing


class FaultProxy:
    """``with FaultProxy(port) as proxy:`` then connect clients to ``proxy.url``."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self._upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._mode = "pass"
        self._swallow: dict[str, int] = {}
        self.swallowed = 0  # replies discarded so far
        self.accepted = 0  # connections opened so far
        self._stall_new = False
        self.commands_seen: collections.Counter[str] = collections.Counter()
        self._waker_r, self._waker_w = socket.socketpair()
        self._selector.register(self._waker_r, selectors.EVENT_READ, "wake")
        self._cuts: list[threading.Event] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="faultproxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    # -- faults --------------------------------------------------------------------------

    def hold(self) -> None:
        self._set_mode("hold")

    def drop(self) -> None:
        self._set_mode("drop")

    def release(self) -> None:
        """Back to forwarding; bytes held meanwhile go on now (dropped ones are gone)."""
        self._set_mode("pass")

    def cut(self) -> None:
        """Reset every connection (done by the proxy's thread; returns when done)."""
        done = threading.Event()
        with self._lock:
            self._cuts.append(done)
        self._wake()
        done.wait(5)

    def stall_new(self) -> None:
        with self._lock:
            self._stall_new = True

    def swallow(self, command: str, count: int = 1) -> None:
        with self._lock:
            self._swallow[command.upper()] = self._swallow.get(command.upper(), 0) + count

    def connections(self) -> int:
        with self._lock:
            return sum(1 for link in self._links if not link.closed)

    def close(self) -> None:
        self._stop = True
        self._wake()
        self._thread.join(5)
        for link in list(self._links):
            self._close(link)
        self._listener.close()
        self._waker_r.close()
        self._waker_w.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.close()

    # -- the loop ------------------------------------------------------------------------

    def _set_mode(self, mode: str) -> None:
        with self._lock:
            self._mode = mode
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._waker_w.send(b"x")

    def _run(self) -> None:
        while not self._stop:
            for key, _ in self._selector.select(0.05):
                if key.data is None:
                    self._accept()
                elif key.data == "wake":
                    self._waker_r.recv(4096)
                else:
                    link, from_client = key.data
                    self._read(link, from_client)
            self._flush_all()
            with self._lock:
                cuts, self._cuts = self._cuts, []
            if cuts:
                for link in list(self._links):
                    self._close(link)
                for done in cuts:
                    done.set()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        server = socket.create_connection(self._upstream)
        link = _Link(client, server)
        for sock, from_client in ((client, True), (server, False)):
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ, (link, from_client))
        with self._lock:
            link.stalled = self._stall_new
            self.accepted += 1
            self._links.append(link)

    def _read(self, link: _Link, from_client: bool) -> None:
        sock = link.client if from_client else link.server
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(link)
            return
        with self._lock:
            mode = self._mode
        if mode == "drop":
            return
        if from_client:
            self._client_bytes(link, data)
        else:
            self._server_bytes(link, data)

    def _client_bytes(self, link: _Link, data: bytes) -> None:
        link.from_client += data
        while True:
            size = resp_length(link.from_client)
            if size is None:
                break
            raw = link.from_client[:size]
            del link.from_client[:size]
            name = command_name(raw)
            link.commands.append(name)
            with self._lock:
                self.commands_seen[name] += 1
            link.to_server += raw

    def _server_bytes(self, link: _Link, data: bytes) -> None:
        link.from_server += data
        while True:
            size = resp_length(link.from_server)
            if size is None:
                return
            raw = link.from_server[:size]
            del link.from_server[:size]
            name = link.commands.popleft() if link.commands else ""
            with self._lock:
                swallow = self._swallow.get(name, 0) > 0
                if swallow:
                    self._swallow[name] -= 1
                    self.swallowed += 1
            if swallow:
                # Everything before this reply still reaches the client; then the line dies.
                self._flush(link, force=True)
                self._close(link)
                return
            link.to_client += raw

    def _flush_all(self) -> None:
        with self._lock:
            links = list(self._links)
        for link in links:
            self._flush(link)

    def _flush(self, link: _Link, force: bool = False) -> None:
        with self._lock:
            holding = self._mode == "hold"
        if link.closed or link.stalled or (holding and not force):
            return
        for sock, buf in ((link.server, link.to_server), (link.client, link.to_client)):
            while buf:
                try:
                    sent = sock.send(buf)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    self._close(link)
                    return
                del buf[:sent]

    def _close(self, link: _Link) -> None:
        with self._lock:
            if link.closed:
                return
            link.closed = True
            self._links.remove(link)
        for sock in (link.client, link.server):
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(sock)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            sock.close()
