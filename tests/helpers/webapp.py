"""examples/fastapi_app.py under a real uvicorn process, on a free port."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from dataclasses import dataclass

from helpers import REPO_ROOT, subprocess_env
from helpers.workers import wait_until

EXAMPLES_DIR = REPO_ROOT / "examples"
START_TIMEOUT_S = 60.0  # imports (FastAPI, pydantic) and the lifespan's ping, on a loaded box
STOP_TIMEOUT_S = 15.0
# uvicorn logs the port it bound (port 0 asks the system for a free one) once it listens.
_LISTENING = re.compile(r"Uvicorn running on (http://[\d.]+:\d+)")


@dataclass
class AppProcess:
    proc: subprocess.Popen[bytes]
    log_path: str
    url: str = ""

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        """SIGTERM; uvicorn finishes its requests, runs the lifespan's exit (closing the
        producer) and then re-raises the signal, so a clean stop dies of SIGTERM."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # a request still running holds the graceful shutdown
            self.proc.wait(STOP_TIMEOUT_S)
            raise AssertionError(f"uvicorn did not stop:\n{self.log()[-3000:]}") from None
        log = self.log()
        assert code in (0, -signal.SIGTERM), log[-3000:]
        assert "Application shutdown complete." in log, log[-3000:]
        assert "Traceback" not in log, log[-3000:]


def start_app(
    redis_url: str, namespace: str, *, log_dir: str, timeout_s: float = 120.0
) -> AppProcess:
    """``uvicorn fastapi_app:app`` from examples/, once it listens (after its lifespan
    started, so the producer has answered a ping). ``timeout_s``: the app's per-call timeout,
    longer than any test waits, so no request is cancelled by its timeout in a test."""
    log_path = f"{log_dir}/fastapi_app.log"
    env = subprocess_env() | {
        "REDBATCH_REDIS_URL": redis_url,
        "REDBATCH_NAMESPACE": namespace,
        "EMBED_TIMEOUT_S": str(timeout_s),
    }
    args = [
        sys.executable, "-m", "uvicorn", "fastapi_app:app", "--app-dir", str(EXAMPLES_DIR),
        "--host", "127.0.0.1", "--port", "0", "--no-access-log",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    app = AppProcess(proc, log_path)
    found = wait_until(
        lambda: _LISTENING.search(app.log()) or proc.poll() is not None,
        START_TIMEOUT_S,
        "uvicorn listening",
    )
    assert proc.poll() is None, app.log()
    app.url = found.group(1)
    return app
