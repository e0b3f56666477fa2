"""Running the ``redbatch`` command as users do: a subprocess with a clean environment."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from typing import Any

from helpers import subprocess_env

RUN_TIMEOUT_S = 60.0  # a bound for a hung command, far above what any of them takes


def run(*args: str, stdin: Any = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    """``redbatch ARGS`` with stdin not a terminal (DEVNULL) unless told otherwise."""
    return subprocess.run(
        [sys.executable, "-m", "redbatch", *args],
        env=subprocess_env(),
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def run_json(*args: str, code: int = 0) -> Any:
    """``redbatch ARGS --json``: the exit code must be ``code``; returns the parsed stdout."""
    result = run(*args, "--json")
    assert result.returncode == code, result.stdout + result.stderr
    return json.loads(result.stdout)


def run_on_terminal(*args: str, answer: str) -> subprocess.CompletedProcess[str]:
    """``redbatch ARGS`` with stdin a pseudo-terminal on which ``answer`` is already typed
    (the terminal holds it until the command reads its confirmation)."""
    main, child = pty.openpty()
    try:
        os.write(main, answer.encode())
        return run(*args, stdin=child)
    finally:
        os.close(child)
        os.close(main)


def one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The command failed with ``code`` and said why in one line, without a traceback."""
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("redbatch: "), lines[0]
    return lines[0]
