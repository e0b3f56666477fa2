"""Running a command under a pseudo-terminal, for tests of what it draws on a real screen."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time
from collections.abc import Callable


class PtyProcess:
    """A subprocess whose stdin, stdout and stderr are one pseudo-terminal of a given size."""

    def __init__(self, args: list[str], env: dict[str, str], rows: int = 50, cols: int = 160):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        try:
            self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env)
        finally:
            os.close(slave)  # the child holds it now; EOF on master once the child exits
        self._master = master
        self._output = bytearray()

    @property
    def text(self) -> str:
        return self._output.decode("utf-8", "replace")

    def _read(self, timeout: float) -> bool:
        """Append what arrives within ``timeout``; False at end of output."""
        ready, _, _ = select.select([self._master], [], [], max(0.0, timeout))
        if not ready:
            return True
        try:
            chunk = os.read(self._master, 65536)
        except OSError:  # EIO: every process holding the terminal has exited
            return False
        self._output += chunk
        return bool(chunk)

    def read_until(self, condition: Callable[[str], bool], timeout: float, what: str) -> str:
        """Read output until ``condition(text)`` holds; AssertionError past ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition(self.text):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}; output:\n{self.text}")
            if not self._read(remaining):
                raise AssertionError(f"output ended before {what}; output:\n{self.text}")
        return self.text

    def finish(self, timeout: float) -> int:
        """Read the rest of the output (a full terminal would block the child) and wait."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(deadline - time.monotonic()):
            if self.proc.poll() is not None and not select.select([self._master], [], [], 0)[0]:
                break
        try:
            return self.proc.wait(max(0.1, deadline - time.monotonic()))
        finally:
            os.close(self._master)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
