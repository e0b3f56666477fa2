"""A worker pool: one parent supervising N ``redbatch worker`` child processes on one host
(``--processes N``, or ``--gpus 0,1,2,3`` for one child per device with
``CUDA_VISIBLE_DEVICES`` set), as rq's worker-pool, Celery's ``-c`` or Triton's instance
groups do.

The parent runs no handler and touches no Redis. It restarts a child that exits 4 (a hung
batch), dies of a signal or exits at all while the pool is not stopping, within a restart
budget (``RestartBudget``: 5 in 60 s); past it the pool stops the others and exits
``EXIT_GAVE_UP`` for its orchestrator, since a pool that keeps losing children has a cause a
restart does not mend. SIGTERM is passed to every child once: each drains within the drain
timeout and exits 0. Each child is a worker of its own (heartbeat, consumer, ``status``
line) named ``<pool name>-<index>``; with ``--metrics-port P`` child i serves on P+1+i and
the parent on P (``pool_http``: its probes reflect the children, its /metrics merges
theirs). A pool killed with SIGKILL leaves its children to drain on their own: in a
container it is process 1, and its end ends them.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from redbatch.errors import ConfigError

log = logging.getLogger(__name__)

EXIT_GAVE_UP = 6
# Seconds past the drain timeout a child gets to hand back, leave its group and exit
# before the pool kills it.
EXIT_MARGIN_S = 10.0
_POLL_S = 0.1
# Options the parent decides for each child; removed from the argv the children get.
POOL_OPTIONS = ("--processes", "--gpus", "--metrics-port", "--name", "--check")
# Variables a child must not inherit: it would become a pool itself, or share a name/port.
POOL_VARIABLES = (
    "REDBATCH_PROCESSES", "REDBATCH_GPUS", "REDBATCH_WORKER_NAME", "REDBATCH_METRICS_PORT",
)  # fmt: skip
_FLAGS_WITHOUT_VALUE = ("--check",)


@dataclass
class RestartBudget:
    """At most ``restarts`` restarts within any ``window_s`` seconds (pure: the caller gives
    the time)."""

    restarts: int = 5
    window_s: float = 60.0
    _times: deque[float] = field(default_factory=deque)

    def allow(self, now: float) -> bool:
        """Record a restart at ``now`` if the budget has room; False once it is spent."""
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()
        if len(self._times) >= self.restarts:
            return False
        self._times.append(now)
        return True


def parse_gpus(text: str, count_devices: Callable[[], int] | None = None) -> tuple[str, ...]:
    """``"0,1,2,3"`` -> ("0", "1", "2", "3"); ``"all"`` -> every device torch sees."""
    text = text.strip()
    if text.lower() == "all":
        count = (count_devices or _cuda_device_count)()
        if count < 1:
            raise ConfigError("--gpus all: no CUDA device found (torch.cuda.device_count() is 0)")
        return tuple(str(i) for i in range(count))
    devices = tuple(part for part in text.replace(",", " ").split())
    if not devices or len(set(devices)) != len(devices):
        raise ConfigError(f"--gpus must list distinct devices like 0,1,2,3 (or all), got {text!r}")
    for device in devices:
        if not (device.isdigit() or device.startswith(("GPU-", "MIG-"))):
            raise ConfigError(
                f"--gpus: {device!r} is not a device index or UUID (GPU-..., MIG-...)"
            )
    return devices


def _cuda_device_count() -> int:
    try:
        import torch  # noqa: PLC0415 - optional, and heavy
    except ImportError:
        raise ConfigError(
            "--gpus all counts devices with torch, which is not installed; list them: --gpus 0,1"
        ) from None
    return int(torch.cuda.device_count())


def plan(processes: int, devices: Sequence[str]) -> list[str | None]:
    """The device of each child (None: no CUDA_VISIBLE_DEVICES): one per device, or
    ``processes`` spread round-robin over the devices (a multiple of their number)."""
    if processes < 1:
        raise ConfigError(f"--processes must be at least 1, got {processes}")
    if not devices:
        return [None] * processes
    if processes == 1:
        processes = len(devices)
    if processes % len(devices):
        raise ConfigError(
            f"--processes {processes} does not spread evenly over {len(devices)} GPUs: "
            "give a multiple of their number"
        )
    return [devices[i % len(devices)] for i in range(processes)]


def child_argv(argv: Sequence[str], name: str, metrics_port: int) -> list[str]:
    """The pool's own ``worker`` arguments without the options it decides per child, plus the
    child's name and port."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        option = arg.split("=", 1)[0]
        if option in POOL_OPTIONS:
            skip = "=" not in arg and option not in _FLAGS_WITHOUT_VALUE
            continue
        kept.append(arg)
    kept += ["--name", name]
    if metrics_port:
        kept += ["--metrics-port", str(metrics_port)]
    return kept


@dataclass
class Child:
    index: int
    device: str | None
    name: str
    port: int
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0


class Pool:
    """Starts and supervises the children until stopped or out of restart budget."""

    def __init__(
        self,
        argv: Sequence[str],
        devices: Sequence[str | None],
        *,
        name: str,
        metrics_port: int,
        drain_timeout_s: float,
        stop: threading.Event,
        budget: RestartBudget | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._argv = list(argv)
        self._stop = stop
        self._drain_timeout_s = drain_timeout_s
        self._budget = budget or RestartBudget()
        self._clock = clock
        self.children = [
            Child(i, device, f"{name}-{i}", metrics_port + 1 + i if metrics_port else 0)
            for i, device in enumerate(devices)
        ]
        self.on_restart: Callable[[Child], None] = lambda child: None

    def run(self) -> int:
        """Supervise until stopped (then drain: 0 when every child exited 0) or out of
        budget (``EXIT_GAVE_UP``)."""
        for child in self.children:
            self._start(child)
        log.info(
            "pool of %d workers: %s", len(self.children),
            ", ".join(f"{c.name} (pid {self._pid(c)}{self._on(c)})" for c in self.children),
            extra={"event": "pool_started"},
        )  # fmt: skip
        gave_up = False
        while not self._stop.wait(_POLL_S):
            if not self._supervise():
                gave_up = True
                break
        code = self._drain()
        return EXIT_GAVE_UP if gave_up else code

    def _supervise(self) -> bool:
        """Restart children that exited; False once the budget is spent."""
        for child in self.children:
            assert child.proc is not None
            code = child.proc.poll()
            if code is None or self._stop.is_set():
                continue
            why = _describe(code)
            if not self._budget.allow(self._clock()):
                log.error(
                    "pool: worker %s %s; restart budget spent (%d in %g s): the pool exits %d",
                    child.name, why, self._budget.restarts, self._budget.window_s, EXIT_GAVE_UP,
                    extra={"event": "pool_gave_up", "worker": child.name},
                )  # fmt: skip
                return False
            child.restarts += 1
            self._start(child)
            self.on_restart(child)
            log.warning(
                "pool: worker %s %s; restarted (pid %d)", child.name, why, self._pid(child),
                extra={"event": "pool_restarted", "worker": child.name},
            )  # fmt: skip
        return True

    def _start(self, child: Child) -> None:
        env = {k: v for k, v in os.environ.items() if k not in POOL_VARIABLES}
        if child.device is not None:
            env["CUDA_VISIBLE_DEVICES"] = child.device
        args = [sys.executable, "-m", "redbatch", "worker"]
        args += child_argv(self._argv, child.name, child.port)
        # A session of its own: Ctrl-C reaches the pool only, which passes one SIGTERM on
        # (a second signal would make a child exit at once).
        child.proc = subprocess.Popen(args, env=env, start_new_session=True)

    def _drain(self) -> int:
        """SIGTERM every child once; wait for the drain; kill what outlives it."""
        running = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        for child in running:
            assert child.proc is not None
            child.proc.send_signal(signal.SIGTERM)
        deadline = self._clock() + self._drain_timeout_s + EXIT_MARGIN_S
        worst = 0
        for child in self.children:
            assert child.proc is not None
            try:
                code = child.proc.wait(max(0.0, deadline - self._clock()))
            except subprocess.TimeoutExpired:
                log.error(
                    "pool: worker %s outlived its drain; killing it", child.name,
                    extra={"event": "pool_killed_child", "worker": child.name},
                )  # fmt: skip
                child.proc.kill()
                code = child.proc.wait()
            if code == -signal.SIGTERM:
                # Ended by our SIGTERM before it could catch it: still starting (Python's
                # own start-up), so it held nothing. A clean stop.
                code = 0
            if code != 0:
                log.warning(
                    "pool: worker %s %s", child.name, _describe(code),
                    extra={"event": "pool_child_failed", "worker": child.name},
                )  # fmt: skip
                worst = worst or (code if code > 0 else 1)
        log.info("pool stopped", extra={"event": "pool_stopped"})
        return worst

    def kill(self) -> None:
        """A second signal: end every child at once (the scheduler re-queues their work)."""
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.kill()

    @staticmethod
    def _pid(child: Child) -> int:
        return child.proc.pid if child.proc is not None else 0

    @staticmethod
    def _on(child: Child) -> str:
        parts = []
        if child.device is not None:
            parts.append(f"CUDA_VISIBLE_DEVICES={child.device}")
        if child.port:
            parts.append(f"port {child.port}")
        return ", " + ", ".join(parts) if parts else ""


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"died of {signal.Signals(-code).name}"
        except ValueError:
            return f"died of signal {-code}"
    if code == 4:
        return "exited 4 (a batch outlived batch_timeout)"
    return f"exited {code}"
