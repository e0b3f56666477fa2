"""compose.yaml's stack without Docker: its scheduler and worker commands, with its environment
(.env.example through env_file, ``${VAR:-default}`` interpolation), run as local processes
against a private redis-server started with the compose file's redis arguments (AOF on,
appendfsync everysec). Only the Redis URL's host:port changes (the service name ``redis`` ->
the private server). A typo in compose.yaml's commands or REDBATCH_* variables fails here.

The scenario: 10,000 requests from a Producer while one worker is stopped (SIGTERM), another
is killed (SIGKILL) and redis-server is killed and restarted from its AOF. The rule is
benchmarks/stack_load.py's: every handle ends, within its timeout plus a grace, with exactly
one outcome: its result (equal to its payload), or ResultTimeout for a request Redis lost in
its crash (``lost``), which may only be one accepted within the last ~2 s before the kill
(appendfsync everysec; a process kill, unlike an OS crash, normally loses nothing).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import yaml

from helpers import REPO_ROOT, subprocess_env
from helpers.servers import suite_server, suite_server_name
from helpers.workers import wait_until
from redbatch import Producer
from redbatch.config import ENV_NAMES, SchedulerConfig, WorkerConfig
from redbatch.embedded import EmbeddedRedis, find_redis_server
from redbatch.errors import ResultNotFound
from redbatch.protocol.keys import GROUP, KeySpace
from redbatch.servers import SYSTEM

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from stack_load import HANG_SLACK_S, run_load

pytestmark = [pytest.mark.stack, pytest.mark.timeout(120)]

COMPOSE = REPO_ROOT / "compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DOCKERFILE = REPO_ROOT / "Dockerfile"
REQUESTS = 10_000
REQUEST_TIMEOUT_S = 20.0
WORKERS = 3
STOP_MARGIN_S = 5  # stop_grace_period must exceed the drain timeout by at least this
# A lost request (Redis crash) must have been accepted at most this long before the kill.
LOSS_WINDOW_S = 2.5


# -- reading compose.yaml the way compose does ------------------------------------------


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and # comments skipped; quotes around a value removed."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key), f"{path}:{number}: {line}"
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*)|(?P<bad>))"
)


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}`` and ``$$``. Stricter than compose: an unset variable without a default
    fails (compose would substitute "" with a warning), so a misspelt name cannot pass."""

    def one(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        assert m["bad"] is None, f"invalid interpolation in {text!r}"
        name = m["braced"] or m["plain"]
        value, op, arg = variables.get(name), m["op"], m["arg"]
        if op in (":-", ":?") and not value:
            value = None
        if value is not None:
            return value
        assert op in (":-", "-"), f"{name} is not set in {text!r} ({op or 'no default'})"
        return str(arg)

    return _VAR.sub(one, text)


@dataclass
class Service:
    name: str
    command: list[str]
    env: dict[str, str]
    raw: dict[str, Any]


def image_entrypoint() -> list[str]:
    match = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, "Dockerfile has no exec-form ENTRYPOINT"
    entrypoint: list[str] = yaml.safe_load(match.group(1))
    return entrypoint


def image_healthcheck() -> list[str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK\b.*?\bCMD\s+(\[.*\])\s*$", text, re.MULTILINE)
    assert match, "Dockerfile has no exec-form HEALTHCHECK CMD"
    command: list[str] = yaml.safe_load(match.group(1))
    return command


def _words(value: Any) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def load_services(variables: Mapping[str, str]) -> dict[str, Service]:
    """Each service's command (entrypoint + command) and container environment."""
    compose = yaml.safe_load(COMPOSE.read_text())
    services = {}
    for name, spec in compose["services"].items():
        env: dict[str, str] = {}
        env_files = spec.get("env_file", [])
        for item in [env_files] if isinstance(env_files, str | dict) else env_files:
            entry = {"path": item} if isinstance(item, str) else item
            path = REPO_ROOT / interpolate(entry["path"], variables)
            if path.name == ".env":
                continue  # a developer's overrides: this test checks the shipped defaults
            assert path.exists() or entry.get("required") is False, f"{name}: no {path}"
            env.update(read_dotenv(path))
        environment = spec.get("environment", {})
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        env.update({k: interpolate(str(v), variables) for k, v in environment.items()})
        if "entrypoint" in spec:
            entrypoint = _words(spec["entrypoint"])
        else:  # our image's entry point; another image's (redis) runs the command as given
            entrypoint = image_entrypoint() if "build" in spec else []
        command = entrypoint + [interpolate(w, variables) for w in _words(spec.get("command", []))]
        services[name] = Service(name, command, env, spec)
    return services


def local_command(command: list[str]) -> list[str]:
    """The image's ``redbatch`` entry point is this interpreter's ``-m redbatch``."""
    assert command[0] == "redbatch", command
    return [sys.executable, "-m", "redbatch", *command[1:]]


def local_env(service: Service, redis_url: str) -> dict[str, str]:
    """The service's environment with the compose Redis host:port replaced by ``redis_url``."""
    env = dict(service.env)
    url = urlsplit(env["REDBATCH_REDIS_URL"])
    assert url.hostname == "redis" and (url.port or 6379) == 6379, env["REDBATCH_REDIS_URL"]
    local = urlsplit(redis_url)
    env["REDBATCH_REDIS_URL"] = urlunsplit(url._replace(netloc=local.netloc))
    return {**subprocess_env(), **env}


def grace_seconds(value: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, value
    return sum(float(n) * units[u] for n, u in parts)


# -- processes --------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def start(name: str, service: Service, redis_url: str, log_dir: Path) -> Proc:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            local_command(service.command),
            env=local_env(service, redis_url),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Proc(name, proc, log_path)


def wait_log(proc: Proc, marker: str, timeout: float = 30.0) -> None:
    wait_until(lambda: marker in proc.log() or proc.proc.poll() is not None, timeout, marker)
    assert proc.proc.poll() is None, f"{proc.name} exited:\n{proc.log()}"


@pytest.fixture
def variables() -> dict[str, str]:
    return read_dotenv(ENV_EXAMPLE)


@pytest.fixture
def services(variables: dict[str, str]) -> dict[str, Service]:
    return load_services(variables)


@pytest.fixture
def redis_stack(tmp_path: Path, services: dict[str, Service]) -> Iterator[EmbeddedRedis]:
    """A private redis-server with compose's redis arguments (minus what EmbeddedRedis sets)."""
    if suite_server_name() == SYSTEM and find_redis_server() is None:
        message = "redis-server is not on PATH (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    args = services["redis"].command
    assert args[:3] == ["redis-server", "--appendonly", "yes"], args
    assert args[3:] == ["--appendfsync", "everysec"], args
    (tmp_path / "redis").mkdir()
    with EmbeddedRedis(
        directory=tmp_path / "redis",
        appendonly=True,
        extra_args=args[3:],
        command=suite_server().command,
    ) as r:
        yield r


# -- the configuration itself -----------------------------------------------------------


def test_env_example_lists_every_setting_with_its_default(variables: dict[str, str]) -> None:
    listed = {k for k in variables if k.startswith("REDBATCH_")}
    assert listed == set(ENV_NAMES.values())
    defaults: dict[str, Any] = {}
    for cls in (WorkerConfig, SchedulerConfig):
        for f in fields(cls):
            if f.default is not MISSING:
                defaults.setdefault(f.name, f.default)
    # Not defaults but the stack's own values: Redis is the compose service, the workers
    # serve the echo queue; an empty worker name means the built-in host-pid-random.
    stack_values = {"redis_url", "queues", "handler", "name"}
    worker = WorkerConfig.from_env(variables)
    scheduler = SchedulerConfig.from_env(variables)
    for setting in set(ENV_NAMES) - stack_values:
        config = worker if hasattr(worker, setting) else scheduler
        assert getattr(config, setting) == defaults[setting], ENV_NAMES[setting]
    assert worker.redis_url == "redis://redis:6379/0"
    assert variables["REDBATCH_WORKER_NAME"] == ""


def test_compose_services_are_wired_as_documented(services: dict[str, Service]) -> None:
    assert set(services) == {"redis", "scheduler", "worker", "producer"}
    worker = services["worker"].raw
    assert "container_name" not in worker  # --scale worker=N
    assert worker["restart"] == "unless-stopped"
    drain = int(services["worker"].env["REDBATCH_DRAIN_TIMEOUT"])
    assert grace_seconds(worker["stop_grace_period"]) >= drain + STOP_MARGIN_S
    assert services["producer"].raw["profiles"] == ["bench"]
    assert services["producer"].command[:2] == ["python", "/bench/stack_load.py"]
    assert "./benchmarks:/bench:ro" in services["producer"].raw["volumes"]
    for name in ("scheduler", "worker", "producer"):
        assert services[name].raw["depends_on"]["redis"]["condition"] == "service_healthy"


def test_a_misspelt_variable_stops_the_worker(
    services: dict[str, Service], redis_stack: EmbeddedRedis, tmp_path: Path
) -> None:
    service = services["worker"]
    service.env["REDBATCH_MAX_BATCH_SZE"] = "8"
    proc = start("typo", service, redis_stack.url, tmp_path)
    assert proc.proc.wait(30) == 2
    assert "unknown environment variable REDBATCH_MAX_BATCH_SZE" in proc.log()


# -- the scenario -----------------------------------------------------------------------


def test_the_stack_answers_every_request_through_stop_kill_and_a_redis_restart(
    services: dict[str, Service], redis_stack: EmbeddedRedis, tmp_path: Path
) -> None:
    scheduler = start("scheduler", services["scheduler"], redis_stack.url, tmp_path)
    workers = [
        start(f"worker{i}", services["worker"], redis_stack.url, tmp_path) for i in range(WORKERS)
    ]
    env = local_env(services["worker"], redis_stack.url)
    queue = env["REDBATCH_QUEUES"].replace(",", " ").split()[0]
    killed_at: list[float] = []
    try:
        wait_log(scheduler, "scheduler on ")
        for worker in workers:
            wait_log(worker, " serving")
        # The image's HEALTHCHECK one-liner, run here: this host's workers are alive.
        health = subprocess.run(image_healthcheck(), env=env, timeout=30, check=False)
        assert health.returncode == 0

        stream = KeySpace(env["REDBATCH_NAMESPACE"]).queue(queue).stream
        monitor = redis.Redis.from_url(redis_stack.url)
        held_when_killed: list[int] = []

        def held_by(proc: Proc) -> int:
            consumers = monitor.xinfo_consumers(stream, GROUP)
            mine = [c for c in consumers if f"-{proc.proc.pid}-" in c["name"].decode()]
            return int(mine[0]["pending"]) if mine else 0

        def chaos(sent: int) -> None:
            if sent == 2_000:
                workers[0].proc.send_signal(signal.SIGTERM)  # drains and exits 0
            elif 4_000 <= sent <= 5_000 and not held_when_killed:
                # SIGKILL while it holds entries (or at 5,000 in any case): the scheduler
                # must re-queue them once its heartbeat expires.
                held = held_by(workers[1])
                if held or sent == 5_000:
                    workers[1].proc.kill()
                    held_when_killed.append(held)
            elif sent == 6_000:
                killed_at.append(time.monotonic())
                redis_stack.kill()
                redis_stack.start()  # same port and directory: reloads the AOF

        with Producer.from_url(redis_stack.url, namespace=env["REDBATCH_NAMESPACE"]) as producer:
            counts = run_load(
                producer, queue, REQUESTS, timeout=REQUEST_TIMEOUT_S, on_submitted=chaos
            )
            for request_id in counts.lost_ids:  # lost: Redis has no outcome for it either
                with pytest.raises(ResultNotFound):
                    producer.get_result(queue, request_id)
        monitor.close()
        print(f"\nstack scenario: {counts.summary()}, killed worker held {held_when_killed}")
        assert counts.sent + counts.refused == REQUESTS
        assert counts.ended == counts.sent  # exactly one outcome per accepted request
        assert counts.wrong == 0 and counts.errors == {}, counts.summary()
        assert counts.ok + counts.lost == counts.sent
        assert counts.late_s <= HANG_SLACK_S, counts.summary()  # no handle outlived its bound
        assert len(killed_at) == 1 and held_when_killed, "the chaos did not run"
        assert all(killed_at[0] - LOSS_WINDOW_S <= t <= killed_at[0] for t in counts.lost_at)
        assert workers[0].proc.wait(30) == 0, workers[0].log()
    finally:
        codes = {p.name: p.stop() for p in (*workers, scheduler)}
    assert codes == {"worker0": 0, "worker1": -signal.SIGKILL, "worker2": 0, "scheduler": 0}
    for proc in (*workers, scheduler):
        assert "Traceback" not in proc.log(), proc.log()[-3000:]
    # No live worker on this host any more (the killed one's heartbeat expires within its
    # TTL): the healthcheck says unhealthy.
    wait_until(
        lambda: subprocess.run(image_healthcheck(), env=env, timeout=30, check=False).returncode,
        timeout=15,
        what="the healthcheck to fail with no worker alive",
    )


def test_gpu_override_reserves_nvidia_gpus_for_the_worker_service_only() -> None:
    """compose.gpu.yaml is valid YAML that merges onto compose.yaml's worker service."""
    base = yaml.safe_load(COMPOSE.read_text())
    gpu = yaml.safe_load((REPO_ROOT / "compose.gpu.yaml").read_text())
    assert set(gpu["services"]) == {"worker"} <= set(base["services"])
    devices = gpu["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
