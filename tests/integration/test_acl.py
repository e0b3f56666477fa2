"""Redis ACL: each role (producer, worker, scheduler, operator) runs as its own user with the
minimal command list of tests/helpers/acl.py and the key pattern ``~<namespace>:*``, against a
redis-server whose ``default`` user is off. ``ACL LOG`` empty afterwards = nothing was denied.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from helpers.acl import ROLE_COMMANDS, AclRedis, acl_rule, has_setinfo
from helpers.cli import one_error_line, run
from helpers.schedulers import start_scheduler, wait_running
from helpers.workers import WorkerProcess, start_worker, wait_serving, wait_until
from redbatch import AsyncProducer, Producer
from redbatch.protocol.keys import KeySpace
from redbatch.protocol.streams import ensure_queue
from redbatch.transport.connection import acl_refusal

EXIT_UNREACHABLE = 3
ROLES = tuple(ROLE_COMMANDS)
HANDLERS = "helpers.handlers"


@pytest.fixture(scope="module")
def acl_server() -> Iterator[AclRedis]:
    with AclRedis({}) as server:
        yield server


@pytest.fixture
def admin(acl_server: AclRedis) -> Iterator[redis.Redis]:
    client = acl_server.admin()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def urls(acl_server: AclRedis, admin: redis.Redis, namespace: str) -> dict[str, str]:
    """One user per role, allowed this test's namespace only; role -> its Redis URL."""
    found = {}
    setinfo = has_setinfo(admin)
    for role in ROLES:
        user, password = f"{role}-{namespace}", f"pw-{role}"
        rule = acl_rule(role, password, namespace, setinfo=setinfo)
        admin.execute_command("ACL", "SETUSER", user, "reset", *rule.split())
        found[role] = acl_server.url_for(user, password)
    admin.execute_command("ACL", "LOG", "RESET")
    return found


def denials(admin: redis.Redis) -> list[str]:
    """What ACL LOG recorded: user, context (toplevel, lua, multi) and what was refused."""
    return [f"{e['username']} {e['context']} {e['reason']} {e['object']}" for e in admin.acl_log()]


def _stop_all(processes: list[WorkerProcess]) -> None:
    for proc in processes:
        if proc.proc.returncode is None:
            proc.stop()


def test_every_role_runs_with_its_minimal_acl(
    urls: dict[str, str], admin: redis.Redis, namespace: str, queue: str, tmp_path: Path
) -> None:
    keys = KeySpace(namespace).queue(queue)
    log_dir = str(tmp_path)
    worker_args = (
        "--handler", f"retry.{queue}={HANDLERS}:retry_always",
        "--heartbeat-ttl", "2", "--max-attempts", "2",
    )  # fmt: skip

    def start_one_worker() -> WorkerProcess:
        worker = start_worker(
            urls["worker"], namespace, [queue, f"retry.{queue}"], log_dir=log_dir,
            handler=f"{HANDLERS}:kill_on_poison", extra=worker_args,
        )  # fmt: skip
        started.append(worker)
        return wait_serving(worker)

    started: list[WorkerProcess] = []
    try:
        started.append(
            wait_running(
                start_scheduler(
                    urls["scheduler"], namespace, log_dir=log_dir, extra=("--max-attempts", "2")
                )
            )
        )
        worker = start_one_worker()

        async def call_async() -> Any:
            async with AsyncProducer.from_url(urls["producer"], namespace=namespace) as aio:
                return await aio.call(queue, "async", timeout=30)

        assert asyncio.run(call_async()) == "async"
        # Producer: plain, idempotent (own id), prioritised and mapped submits.
        with Producer.from_url(urls["producer"], namespace=namespace) as producer:
            assert producer.call(queue, {"a": 1}, timeout=30) == {"a": 1}
            handle = producer.submit(queue, "once", id="fixed-id", priority="high")
            assert handle.result(timeout=30) == "once"
            assert producer.get_result(queue, "fixed-id") == "once"
            assert producer.map(queue, list(range(20)), timeout=30) == list(range(20))
            producer.submit(f"retry.{queue}", "again", id="retried")
            producer.submit(queue, "kill-me", id="doomed")

        # The worker dies on "kill-me"; the scheduler re-queues it after the heartbeat's TTL
        # (2 s); a second worker dies too; at max_attempts 2 the request is dead-lettered.
        assert worker.proc.wait(30) < 0
        assert start_one_worker().proc.wait(60) < 0
        start_one_worker()
        wait_until(lambda: admin.xlen(keys.dead) == 1, 60, "the killed request dead-lettered")
        dead_retry = KeySpace(namespace).queue(f"retry.{queue}").dead
        wait_until(lambda: admin.xlen(dead_retry) == 1, 60, "the retried request dead-lettered")

        # Operator: status, inspect and the dead-letter commands; a replayed request runs
        # (and, retried again, dies) again: a new dead letter.
        conn = ("--redis-url", urls["operator"], "--namespace", namespace)
        first_dead = admin.xrange(dead_retry)[0][0]
        for args in (
            ("status", "--json"),
            ("inspect", "doomed", "--json"),
            ("dlq", queue, "list", "--json"),
            ("dlq", queue, "show", "doomed", "--json"),
            ("dlq", f"retry.{queue}", "replay", "--all", "--json"),
        ):
            result = run(*args, *conn)
            assert result.returncode == 0, f"{args}: {result.stderr}"
        wait_until(
            lambda: [e for e, _ in admin.xrange(dead_retry) if e != first_dead],
            60,
            "the replayed request dead-lettered again",
        )
        purged = run("dlq", f"retry.{queue}", "purge", "--yes", "--json", *conn)
        assert purged.returncode == 0, purged.stderr
        assert admin.xlen(dead_retry) == 0
    finally:
        _stop_all(started)
    # The scheduler wrote the killed request's outcome, a worker the retried one's.
    assert admin.hget(keys.result("doomed"), "status") == b"dead"
    retried_result = KeySpace(namespace).queue(f"retry.{queue}").result("retried")
    assert admin.hget(retried_result, "status") == b"dead"
    assert denials(admin) == []
    for proc in started:
        assert "permissions" not in proc.log(), proc.log()[-2000:]
        assert "can't run this command" not in proc.log(), proc.log()[-2000:]


def _commands(queue: str) -> dict[str, list[str]]:
    return {
        "worker": ["worker", queue, "--handler", "redbatch.handlers:echo"],
        "scheduler": ["scheduler"],
        "submit": ["submit", queue, "1", "--timeout", "5"],
        "status": ["status"],
        "inspect": ["inspect", "some-id"],
        "dlq": ["dlq", queue, "list"],
    }


@pytest.mark.parametrize("command", ["worker", "scheduler", "submit", "status", "inspect", "dlq"])
def test_wrong_password_fails_in_one_line(
    acl_server: AclRedis, urls: dict[str, str], namespace: str, queue: str, command: str
) -> None:
    role = {"worker": "worker", "scheduler": "scheduler", "submit": "producer"}.get(
        command, "operator"
    )
    user = f"{role}-{namespace}"
    url = acl_server.url_for(user, "not-the-password")
    result = run(*_commands(queue)[command], "--redis-url", url, "--namespace", namespace)
    line = one_error_line(result, EXIT_UNREACHABLE)
    assert "cannot use Redis at " in line
    assert f"127.0.0.1:{acl_server.port}" in line
    assert "WRONGPASS" in line or "invalid username-password pair" in line
    assert "not-the-password" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("role", "command", "missing"),
    [
        ("worker", "worker", "+xgroup|create"),
        ("producer", "submit", "+evalsha"),
        ("operator", "status", "+xinfo|groups"),
    ],
)
def test_a_user_missing_a_permission_fails_in_one_line(
    acl_server: AclRedis,
    admin: redis.Redis,
    namespace: str,
    queue: str,
    role: str,
    command: str,
    missing: str,
) -> None:
    user, password = f"short-{role}-{namespace}", "pw"
    rule = acl_rule(role, password, namespace, setinfo=has_setinfo(admin))
    admin.execute_command("ACL", "SETUSER", user, "reset", *rule.split(), f"-{missing[1:]}")
    keyspace = KeySpace(namespace)
    ensure_queue(admin, keyspace, keyspace.queue(queue))  # status has a queue to look at
    url = acl_server.url_for(user, password)
    result = run(*_commands(queue)[command], "--redis-url", url, "--namespace", namespace)
    line = one_error_line(result, EXIT_UNREACHABLE)
    assert f"no permissions to run the '{missing[1:]}' command" in line


# Redis: "No permissions to access one of the keys"; Valkey: "No permissions to access a key".
KEY_REFUSED = "no permissions to access"


def test_a_user_of_one_namespace_cannot_touch_another(
    urls: dict[str, str], namespace: str, queue: str
) -> None:
    """``~<namespace>:*`` is per-tenant isolation: the producer of this test's namespace is
    refused every key of namespace ``rb``."""
    result = run("submit", queue, "1", "--redis-url", urls["producer"], "--namespace", "rb")
    line = one_error_line(result, EXIT_UNREACHABLE)
    assert KEY_REFUSED in line.lower()
    status = run("status", "--redis-url", urls["operator"], "--namespace", "rb")
    assert KEY_REFUSED in one_error_line(status, EXIT_UNREACHABLE).lower()


def test_security_page_quotes_the_tested_acl_lines() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text("utf-8")
    for role in ROLES:
        rule = acl_rule(role, f"{role.upper()}-PASSWORD", "rb", setinfo=False)
        assert f"ACL SETUSER rb-{role} reset {rule}\n" in page, role


def test_acl_refusals_are_told_apart_from_other_errors() -> None:
    in_script = redis.ResponseError(
        "The user executing the script can't run this command or subcommand script: "
        "3f4b98d0cc7b, on @user_script:59."
    )
    line = acl_refusal(in_script)
    assert line is not None
    assert "can't run this command or subcommand" in line
    assert "3f4b98d0cc7b" not in line  # the script's sha means nothing to a user
    assert acl_refusal(redis.exceptions.NoPermissionError("this user has no permissions"))
    assert acl_refusal(redis.ResponseError("WRONGTYPE Operation against a key")) is None
    assert acl_refusal(ValueError("NOPERM")) is None
