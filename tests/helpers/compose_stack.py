"""A compose project of the repository's compose.yaml, driven through the engine's CLI for what
tests/compose checks: containers by service, redis-cli in the redis container, the image's
health check run on demand, a worker's consumer in Redis."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from helpers import REPO_ROOT
from helpers.engines import Engine

ENV_FILE = REPO_ROOT / ".env.example"


def compose_value(key: str, service: str = "worker") -> str:
    """A scalar of one service in compose.yaml, read as text (e.g. stop_grace_period)."""
    text = (REPO_ROOT / "compose.yaml").read_text()
    block = re.search(rf"^  {service}:\n((?:    .*\n|\n)+)", text, re.MULTILINE)
    assert block, f"no service {service}"
    found = re.search(rf"^    {key}: *(\S+)", block[1], re.MULTILINE)
    assert found, f"no {key} in {service}"
    return found[1].strip("\"'")


def env_value(key: str) -> str:
    """A setting's value in .env.example (what the stack's containers get)."""
    found = re.search(rf"^{re.escape(key)}=(.*)$", ENV_FILE.read_text(), re.MULTILINE)
    assert found, f"no {key} in {ENV_FILE.name}"
    return found[1].strip()


def seconds(duration: str) -> int:
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+)([hms])", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * units[u] for n, u in parts)


def wait_for(check: Callable[[], bool], timeout: float, what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@dataclass
class Stack:
    engine: Engine
    project: str
    image: str

    def down(self) -> None:
        """``down -v --remove-orphans``, as a user would after ``up --scale``. podman-compose
        1.6 needs more: its down stops the replicas it does not know (orphans) only after
        Redis, with podman's 10 s instead of stop_grace_period, and its volume removal runs
        while Redis's container still exists (the orphans depend on it). So, under podman:
        workers and scheduler are stopped first (draining, Redis still up), and a second
        down removes the volume (docs/deploying.md)."""
        if self.engine.name == "podman":
            grace = seconds(compose_value("stop_grace_period"))
            for service in ("worker", "scheduler"):
                for container in self.containers(service):
                    self.engine.run("stop", "--time", str(grace), container, timeout=grace + 60)
        rounds = 2 if self.engine.name == "podman" else 1
        for _ in range(rounds):
            down = self.compose("down", "-v", "--remove-orphans", "--timeout", "60", timeout=300)
            assert down.returncode == 0, down.stderr[-3000:]

    def compose(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return self.engine.compose(
            self.project, *args, env={"REDBATCH_IMAGE": self.image}, timeout=timeout
        )

    def containers(self, service: str, every: bool = False) -> list[str]:
        """Ids of the service's containers (running only unless ``every``), oldest first."""
        done = self.engine.run(
            "ps", *(["-a"] if every else []), "--format", "{{.ID}} {{.Names}}",
            "--filter", f"label=com.docker.compose.project={self.project}",
            "--filter", f"label=com.docker.compose.service={service}",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        rows = [line.split() for line in done.stdout.splitlines() if line.strip()]
        return [cid for cid, _name in sorted(rows, key=lambda row: row[1])]

    def inspect(self, container: str, template: str) -> str:
        done = self.engine.run("inspect", "--format", template, container)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def network(self, container: str) -> str:
        template = "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}"
        names = self.inspect(container, template)
        assert len(names.split()) == 1, names
        return names.split()[0]

    def redis_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        [redis] = self.containers("redis")
        return self.engine.run("exec", redis, "redis-cli", "--raw", *args, timeout=30)

    def ping(self) -> bool:
        try:
            return self.redis_cli("PING").stdout.strip() == "PONG"
        except (AssertionError, ValueError, subprocess.TimeoutExpired):
            return False  # no running redis container (restarting)

    def health_test(self) -> list[str]:
        """The image's HEALTHCHECK command (exec form, without "CMD")."""
        raw = self.engine.run("image", "inspect", "--format", "{{json .Config.Healthcheck}}",
                              self.image).stdout  # fmt: skip
        test: list[str] = json.loads(raw)["Test"]
        assert test[0] == "CMD", test
        return test[1:]

    def healthy(self, container: str) -> bool:
        """The image's health check, run now: ``podman healthcheck run`` (podman does not
        schedule checks without systemd), or the same command through exec under Docker."""
        if self.engine.name == "podman":
            done = self.engine.run("healthcheck", "run", container, timeout=60)
        else:
            done = self.engine.run("exec", container, *self.health_test(), timeout=60)
        # 1: unhealthy; podman's 125 also when the check outlived the image's --timeout (10 s,
        # a Python start on a crowded machine can take that long), which Docker counts as a
        # failed check too: not healthy (yet); callers wait with a bound.
        return done.returncode == 0

    def hostname(self, container: str) -> str:
        return self.inspect(container, "{{.Config.Hostname}}")

    def consumer(self, container: str, heartbeat_prefix: str) -> str | None:
        """The consumer name of the live worker in ``container`` (<hostname>-<pid>-<random>),
        from its heartbeat key ``<heartbeat_prefix><name>`` (a consumer appears in the
        group only once it has been served an entry)."""
        pattern = f"{heartbeat_prefix}{self.hostname(container)}-*"
        keys = self.redis_cli("--scan", "--pattern", pattern).stdout.split()
        return keys[0].removeprefix(heartbeat_prefix) if len(keys) == 1 else None

    def pending_of(self, stream: str, consumer: str) -> list[str]:
        """Entry ids pending to ``consumer``."""
        done = self.redis_cli("XPENDING", stream, "workers", "-", "+", "10000", consumer)
        lines = done.stdout.split()
        return [lines[i] for i in range(0, len(lines), 4)] if done.returncode == 0 else []

    def request_id(self, stream: str, entry_id: str) -> str | None:
        lines = self.redis_cli("XRANGE", stream, entry_id, entry_id).stdout.splitlines()
        return next((lines[i + 1] for i, v in enumerate(lines[:-1]) if v == "id"), None)

    def stream_added(self, stream: str) -> int:
        """entries-added of the stream (every XADD ever), -1 while Redis does not answer."""
        try:
            lines = self.redis_cli("XINFO", "STREAM", stream).stdout.splitlines()
        except (AssertionError, ValueError, subprocess.TimeoutExpired):
            return -1
        values = [lines[i + 1] for i, v in enumerate(lines[:-1]) if v == "entries-added"]
        return int(values[0]) if values else -1
