"""The ``redbatch`` command as users run it: exit codes, one-line errors, submit, SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import pytest
import redis

from helpers import subprocess_env
from helpers.workers import WorkerFactory, assert_drained, wait_until
from redbatch import Producer
from redbatch.protocol.keys import KeySpace

RUN_TIMEOUT_S = 60.0  # a bound for a hung command, far above what any of them takes


def redbatch(
    *args: str, env_extra: dict[str, str] | None = None, timeout: float = RUN_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    env = subprocess_env()
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "redbatch", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("redbatch: error:"), lines[0]
    return lines[0]


def free_port() -> int:
    """A local port nothing listens on (bound and released: nothing else should take it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- bad configuration: exit 2 -----------------------------------------------------------------

ECHO = "redbatch.handlers:echo"


@pytest.mark.parametrize(
    ("args", "env", "mentions"),
    [
        (["{q}", "--handler", ECHO, "--max-batch-size", "-1"], {}, "max_batch_size"),
        (["{q}", "--handler", ECHO, "--redis-url", "notaurl://x"], {}, "notaurl://x"),
        (["{q}", "--handler", "nosuchmodule:fn"], {}, "nosuchmodule"),
        (["{q}", "--handler", "redbatch.handlers:nosuchfn"], {}, "nosuchfn"),
        (["{q}", "--handler", ECHO], {"REDBATCH_MAX_BATCH_SZE": "4"}, "REDBATCH_MAX_BATCH_SZE"),
        (["{q} x", "--handler", ECHO], {}, "queue name"),
        (["{q}"], {}, "handler"),
    ],
    ids=[
        "negative-batch-size",
        "bad-url-scheme",
        "no-such-module",
        "no-such-function",
        "unknown-env-var",
        "queue-with-space",
        "missing-handler",
    ],
)
def test_worker_bad_config_exits_2_with_one_line(
    args: list[str],
    env: dict[str, str],
    mentions: str,
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
) -> None:
    argv = [a.format(q=queue) for a in args]
    if "--redis-url" not in argv:
        argv += ["--redis-url", redis_url]  # the private server, never the machine's 6379
    result = redbatch("worker", *argv, "--namespace", namespace, env_extra=env)
    line = assert_one_error_line(result, 2)
    assert mentions in line
    # Refused before touching Redis: nothing of the queue was created.
    assert redis_client.exists(KeySpace(namespace).queue(queue).stream) == 0


def test_worker_unreachable_redis_exits_3_fast() -> None:
    port = free_port()
    began = time.monotonic()
    result = redbatch(
        "worker", "q", "--handler", ECHO, "--redis-url", f"redis://127.0.0.1:{port}/0"
    )
    took = time.monotonic() - began
    line = assert_one_error_line(result, 3)
    assert f"127.0.0.1:{port}" in line
    # The start-up check fails fast (about 1 s); it used to ride out 10 retries (8-13 s).
    assert took < 10.0


def test_submit_unreachable_redis_exits_3() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = redbatch("submit", "q", '{"x": 1}', "--redis-url", url, "--timeout", "5")
    assert_one_error_line(result, 3)


# -- submit ---------------------------------------------------------------------------------------


def test_submit_prints_the_result_as_json(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    worker_factory([queue])
    result = redbatch(
        "submit", queue, '{"x": 1}', "--redis-url", redis_url, "--namespace", namespace,
        "--timeout", "30", "--id", "cli-1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == '{"x": 1}\n'
    assert json.loads(result.stdout) == {"x": 1}
    stored = redis_client.hgetall(KeySpace(namespace).queue(queue).result("cli-1"))
    assert stored[b"status"] == b"ok"
    assert_drained(redis_client, KeySpace(namespace).queue(queue).stream)


def test_submit_to_the_high_lane(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    keys = KeySpace(namespace).queue(queue)
    proc = subprocess.Popen(
        [sys.executable, "-m", "redbatch", "submit", queue, '"urgent"', "--redis-url", redis_url,
         "--namespace", namespace, "--priority", "high"],
        env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    # No worker yet: the request waits in the high lane, not the normal stream.
    wait_until(lambda: redis_client.exists(keys.stream_for("high")) and
               redis_client.xlen(keys.stream_for("high")) == 1, what="the high lane")  # fmt: skip
    assert redis_client.xlen(keys.stream) == 0
    worker_factory([queue])
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out == b'"urgent"\n'


def test_submit_reads_the_url_from_the_environment(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    worker_factory([queue])
    result = redbatch(
        "submit", queue, "[1, 2.5, null]",
        env_extra={"REDBATCH_REDIS_URL": redis_url, "REDBATCH_NAMESPACE": namespace},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [1, 2.5, None]
    assert_drained(redis_client, KeySpace(namespace).queue(queue).stream)


def test_submit_invalid_json_exits_2(
    redis_url: str, redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    result = redbatch(
        "submit", queue, "{x: 1", "--redis-url", redis_url, "--namespace", namespace
    )  # fmt: skip
    line = assert_one_error_line(result, 2)
    assert "JSON" in line
    assert redis_client.exists(KeySpace(namespace).queue(queue).stream) == 0


# -- stopping -------------------------------------------------------------------------------------


def test_idle_worker_stops_on_sigterm(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    worker = worker_factory([queue])
    stream = KeySpace(namespace).queue(queue).stream
    # One answered request shows the worker is serving; then it is idle in its blocking read.
    # (wait_serving cannot tell on Redis 7.0: a blocked XREADGROUP that got nothing has not
    # created its consumer yet.)
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        assert producer.call(queue, "ready?", timeout=30) == "ready?"
    began = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=30) == 0
    assert time.monotonic() - began < 5.0
    log = worker.log()
    assert f"worker {worker.name} stopped" in log
    assert "Traceback" not in log
    assert_drained(redis_client, stream)


def test_sigterm_while_the_handler_module_loads_exits_0(
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    """Seed 002 (termination): a stop request during a slow model load is a clean stop."""
    worker = worker_factory([queue], "helpers.slow_import:echo")
    wait_until(lambda: "slow_import: loading" in worker.log(), what="the handler import")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=30) == 0
    log = worker.log()
    assert "Traceback" not in log
    assert f"worker {worker.name} stopped" in log
    assert redis_client.xlen(KeySpace(namespace).queue(queue).stream) == 0


# -- help -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["--help"], ["worker", "--help"]], ids=["main", "worker"])
def test_help_mentions_the_redis_url_variable(args: list[str]) -> None:
    result = redbatch(*args)
    assert result.returncode == 0, result.stderr
    assert "REDBATCH_REDIS_URL" in result.stdout
    assert result.stderr == ""
