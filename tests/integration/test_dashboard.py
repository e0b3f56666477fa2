"""``redbatch dashboard``'s API over HTTP against the real process (uvicorn) and Redis: the
``status --json`` document, who may write, sharded queues, the operator ACL user, the
embedded Redis, and bad settings in one line. The page itself: test_dashboard_browser.py."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from helpers.acl import AclRedis, acl_rule, has_setinfo
from helpers.cli import one_error_line, run, run_json
from helpers.dashboard import DashboardProcess, http, start_dashboard
from helpers.entries import now_ms, pack, queue_keys, wait_results
from helpers.workers import WorkerProcess, wait_serving, wait_until
from redbatch import Producer
from redbatch.protocol.fields import build_entry
from redbatch.protocol.keys import QueueKeys

TOKEN = "http-test-token-0123456789"
Start = Callable[..., DashboardProcess]


@pytest.fixture
def dashboards() -> Iterator[Start]:
    started: list[DashboardProcess] = []

    def start(*args: str) -> DashboardProcess:
        started.append(start_dashboard(*args))
        return started[-1]

    yield start
    codes = [d.stop() for d in started]
    assert codes == [0] * len(started), [d.lines for d in started]


def token_file(tmp_path: Path) -> str:
    path = tmp_path / "token"
    path.write_text(TOKEN)
    return str(path)


def dead_letter(client: redis.Redis, keys: QueueKeys, request_id: str) -> str:
    """A dead letter as a worker writes one: the request's fields plus ``reason``."""
    fields = build_entry(request_id, pack({"n": request_id}), enq=now_ms())
    fields["reason"] = "max_attempts reached: test"
    return client.xadd(keys.dead, fields).decode()  # type: ignore[arg-type]


def same_shape(a: Any, b: Any, path: str = "") -> None:
    """Two JSON documents have the same schema: the same keys in every object, recursively
    (lists by their first items). A value null or empty ([] or {}) on one side matches
    anything: a map keyed by data (outcomes) or a list may be empty in one snapshot."""
    if any(x is None or x in ([], {}) for x in (a, b)):
        return
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{path or '/'}: {sorted(a)} != {sorted(b)}"
        for key in a:
            same_shape(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, list) and isinstance(b, list):
        same_shape(a[0], b[0], f"{path}[0]")
    else:
        assert type(a) is type(b) or {type(a), type(b)} <= {int, float}, f"{path}: {a!r} ~ {b!r}"


def test_api_status_is_the_status_json_document(
    dashboards: Start,
    worker_factory: Callable[..., WorkerProcess],
    redis_url: str,
    namespace: str,
    queue: str,
) -> None:
    wait_serving(worker_factory([queue]))
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        assert producer.map(queue, list(range(20)), timeout=30) == list(range(20))
    conn = ("--redis-url", redis_url, "--namespace", namespace)

    def flushed() -> bool:
        """The worker's stats slot holds the 20 outcomes (it writes them a moment after the
        results, with its heartbeat): both documents below then describe the same work."""
        [row] = run_json("status", *conn)["queues"]
        return bool(row["last_minute"]["outcomes"].get("ok") == 20)

    wait_until(flushed, 30, "the worker's stats of the 20 requests")
    dashboard = dashboards(*conn)
    got = http(f"{dashboard.url}api/status")
    assert got.status == 200
    expected = run_json("status", *conn)
    same_shape(got.body, expected)
    assert got.body["schema"] == 1 and got.body["namespace"] == namespace
    [row] = got.body["queues"]
    assert (row["name"], row["waiting"], row["dead"]) == (queue, 0, 0)
    assert [w["name"] for w in got.body["workers"]] == [w["name"] for w in expected["workers"]]

    overview = http(f"{dashboard.url}api/overview").body
    [row] = overview["queues"]
    assert row["shards"] == [] and row["parts"] == []
    assert sum(b["batches"] for b in row["batch_sizes"]) == row["last_minute"]["batches"] > 0
    points = overview["history"]["queues"][queue]
    assert sum(p["items"] for p in points) == 20
    assert "busy_ratio" in overview["workers"][0]


def test_many_queues_give_the_summary_and_every_queue_on_demand(
    dashboards: Start, redis_client: redis.Redis, redis_url: str, namespace: str
) -> None:
    """Past 20 queues /api/status is the summary ``status --json`` prints, ``?all=1`` the
    ``--all`` document; the page's ``?q=`` lists the queues whose name holds the text."""
    names = [f"m{i:02d}" for i in range(60)]
    for i, name in enumerate(names):
        keys = queue_keys(redis_client, namespace, name)
        for n in range(i % 4):  # 0-3 entries: the ones holding most come first
            redis_client.xadd(keys.streams[1], build_entry(f"{name}-{n}", pack(n), enq=now_ms()))
    conn = ("--redis-url", redis_url, "--namespace", namespace)
    expected = run_json("status", "--json", *conn)
    assert expected["summary"]["complete"] is False  # the CLI summarizes: the test compares that
    dashboard = dashboards(*conn)

    got = http(f"{dashboard.url}api/status").body
    same_shape(got, expected)
    assert got["summary"] == expected["summary"]
    assert [q["name"] for q in got["queues"]] == [q["name"] for q in expected["queues"]]
    assert got["summary"]["queues"] == 60 and got["summary"]["length"] == sum(
        i % 4 for i in range(60)
    )

    every = http(f"{dashboard.url}api/status?all=1").body
    same_shape(every, run_json("status", "--json", "--all", *conn))
    assert [q["name"] for q in every["queues"]] == names
    assert every["summary"] == {**got["summary"], "shown": 60, "complete": True}

    page = http(f"{dashboard.url}api/overview").body
    assert len(page["queues"]) == got["summary"]["shown"] == 20
    assert len(http(f"{dashboard.url}api/overview?all=1").body["queues"]) == 60
    found = http(f"{dashboard.url}api/overview?q=m1").body
    assert [q["name"] for q in found["queues"]] == [f"m1{d}" for d in range(10)]
    assert found["history"]["queues"].keys() == {f"m1{d}" for d in range(10)}
    too_long = http(f"{dashboard.url}api/overview?q={'x' * 201}")
    assert too_long.status == 400 and "longer than 200" in too_long.body["error"]


def test_writes_need_allow_writes_a_token_and_the_csrf_token(
    dashboards: Start,
    redis_client: redis.Redis,
    redis_url: str,
    namespace: str,
    queue: str,
    tmp_path: Path,
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    conn = ("--redis-url", redis_url, "--namespace", namespace)
    replay = f"api/queues/{queue}/dead/replay"
    dead_letter(redis_client, keys, "a1")

    read_only = dashboards(*conn)
    refused = http(
        read_only.url + replay, body={"ids": ["a1"]}, headers={"X-Redbatch-Token": TOKEN}
    )
    assert refused.status == 403 and refused.body["error"].startswith("read-only")
    assert "content-security-policy" in refused.headers

    site = dashboards(*conn, "--allow-writes", "--token-file", token_file(tmp_path))
    url = site.url + replay
    assert http(url, body={"ids": ["a1"]}).status == 401
    assert http(url, body={"ids": ["a1"]}, headers={"Authorization": "Bearer nope"}).status == 401
    other_site = {"X-Redbatch-Token": TOKEN, "Origin": "http://evil.example"}
    assert http(url, body={"ids": ["a1"]}, headers=other_site).status == 403
    plain = http(url, raw=b'{"ids": ["a1"]}', headers={"X-Redbatch-Token": TOKEN}, method="POST")
    assert plain.status == 415
    assert redis_client.xlen(keys.dead) == 1  # nothing refused was done

    # The login form: a wrong token goes back to it; the right one gives a session cookie,
    # which writes only with the session's CSRF token.
    wrong = http(site.url + "login", raw=b"token=nope", method="POST")
    assert wrong.status == 200 and "Wrong token" in wrong.body  # after the redirect
    cookie = login(site.url)
    assert http(url, body={"ids": ["a1"]}, headers={"Cookie": cookie}).status == 403
    session = http(site.url + "api/session", headers={"Cookie": cookie}).body
    assert session["writable"] and session["logged_in"] and session["csrf"]
    with_csrf = {"Cookie": cookie, "X-CSRF-Token": session["csrf"]}
    done = http(url, body={"ids": ["a1"]}, headers=with_csrf)
    assert done.status == 200 and done.body["replayed"] == 1
    assert redis_client.xlen(keys.dead) == 0 and redis_client.xlen(keys.stream) == 1

    dead_letter(redis_client, keys, "a2")
    purged = http(site.url + f"api/queues/{queue}/dead/purge", body={}, headers=with_csrf)
    assert purged.body == {"queue": queue, "purged": 1}

    # A page of another host name (DNS rebinding) gets nothing from a loopback dashboard.
    assert http(site.url + "api/status", headers={"Host": "evil.example"}).status == 400


def login(base: str) -> str:
    """Log in through the form; the session cookie (``name=value``)."""
    import urllib.request  # noqa: PLC0415

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(base + "login", data=f"token={TOKEN}".encode(), method="POST")
    try:
        opener.open(request, timeout=30)
    except urllib.error.HTTPError as answer:  # the 303 to the page
        assert answer.code == 303
        set_cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie
        return str(set_cookie.split(";", 1)[0])
    raise AssertionError("no redirect after logging in")


def test_a_sharded_queue_is_one_row_with_its_shards_on_demand(
    dashboards: Start, redis_client: redis.Redis, redis_url: str, namespace: str, queue: str
) -> None:
    conn = ("--redis-url", redis_url, "--namespace", namespace)
    assert run_json("queue", queue, "--shards", "3", *conn)["shards"] == 3
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        for i in range(30):
            producer.submit(queue, i)
    dead_letter(redis_client, queue_keys(redis_client, namespace, f"{queue}#1"), "s1")
    dashboard = dashboards(*conn)
    [row] = http(f"{dashboard.url}api/overview").body["queues"]
    assert row["name"] == queue and row["waiting"] == 30 and row["dead"] == 1
    assert {f"{queue}#{k}" for k in range(3)} <= set(row["shards"])
    assert sum(part["waiting"] for part in row["parts"]) == 30
    assert sum(lane["waiting"] for lane in row["lanes"].values()) == 30
    listed = http(f"{dashboard.url}api/queues/{queue}/dead").body
    assert [e["request_id"] for e in listed["entries"]] == ["s1"]
    shown = http(f"{dashboard.url}api/queues/{queue}/dead/s1").body
    size = len(pack({"n": "s1"}))
    assert shown["dead_letters"][0]["payload_lines"] == [
        f'payload (msgpack, {size} bytes): {{"n": "s1"}}'
    ]


def test_the_operator_acl_user_is_enough(
    dashboards: Start, namespace: str, queue: str, tmp_path: Path
) -> None:
    with AclRedis({}) as server:
        admin = server.admin()
        try:
            rule = acl_rule("operator", "pw-op", namespace, setinfo=has_setinfo(admin))
            admin.execute_command("ACL", "SETUSER", "op", "reset", *rule.split())
            admin.execute_command("ACL", "LOG", "RESET")
            keys = queue_keys(admin, namespace, queue)
            dead_letter(admin, keys, "d1")
            dead_letter(admin, keys, "d2")
            dashboard = dashboards(
                "--redis-url", server.url_for("op", "pw-op"), "--namespace", namespace,
                "--allow-writes", "--token-file", token_file(tmp_path),
            )  # fmt: skip
            token = {"X-Redbatch-Token": TOKEN}
            base = f"{dashboard.url}api/"
            answers = [
                http(base + "overview"),
                http(base + "status"),
                http(base + f"queues/{queue}/dead"),
                http(base + f"queues/{queue}/dead/d1"),
                http(base + "requests/d1"),
                http(base + f"queues/{queue}/dead/replay", body={"ids": ["d1"]}, headers=token),
                http(base + f"queues/{queue}/dead/purge", body={}, headers=token),
            ]
            assert [a.status for a in answers] == [200] * len(answers), [a.body for a in answers]
            assert answers[-2].body["replayed"] == 1 and answers[-1].body["purged"] == 1
            assert admin.acl_log() == []
        finally:
            admin.close()


def test_embedded_redis_when_asked(dashboards: Start) -> None:
    dashboard = dashboards("--embedded")
    assert any("started a private redis-server on redis://127.0.0.1:" in x for x in dashboard.lines)
    overview = http(f"{dashboard.url}api/overview").body
    assert overview["queues"] == [] and overview["workers"] == []


def test_a_replayed_request_is_found_where_inspect_finds_it(
    dashboards: Start,
    worker_factory: Callable[..., WorkerProcess],
    redis_client: redis.Redis,
    redis_url: str,
    namespace: str,
    queue: str,
    tmp_path: Path,
) -> None:
    wait_serving(worker_factory([queue]))
    keys = queue_keys(redis_client, namespace, queue)
    dead_letter(redis_client, keys, "r1")
    dashboard = dashboards(
        "--redis-url", redis_url, "--namespace", namespace, "--allow-writes", "--token-file",
        token_file(tmp_path),
    )  # fmt: skip
    done = http(
        f"{dashboard.url}api/queues/{queue}/dead/replay",
        body={"all": True},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert done.body["replayed"] == 1
    assert wait_results(redis_client, keys, ["r1"])["r1"][b"status"] == b"ok"
    found = http(f"{dashboard.url}api/requests/r1").body
    inspected = run_json("inspect", "r1", "--redis-url", redis_url, "--namespace", namespace)
    assert [s["state"] for s in found["found"]] == [s["state"] for s in inspected["found"]]
    assert any(line.startswith("  finished ok by worker") for line in found["lines"])
    assert http(f"{dashboard.url}api/requests/bad%20id").status == 400


def _busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("--interval", "0"), 2, "invalid --interval 0"),
        (("--token-file", "/nonexistent"), 2, "--token-file is for --allow-writes"),
        (("--allow-writes", "--token-file", "/nonexistent"), 2, "cannot read --token-file"),
        (("--embedded", "--redis-url", "redis://127.0.0.1:1/0"), 2, "not both"),
        (("--redis-url", "redis://127.0.0.1:1/0"), 3, "cannot use Redis at"),
    ],
)
def test_bad_settings_fail_in_one_line(args: tuple[str, ...], code: int, says: str) -> None:
    assert says in one_error_line(run("dashboard", "--port", "0", *args), code)


def test_a_port_in_use_is_one_line(redis_url: str) -> None:
    for port in _busy_port():
        result = run("dashboard", "--redis-url", redis_url, "--port", str(port))
        assert f"cannot listen on 127.0.0.1:{port}" in one_error_line(result, 2)
