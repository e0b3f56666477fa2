"""The redis-cli guide of docs/operations.md, run command by command through ``redis-cli``.

docs/operations.md ("Operating with redis-cli") holds, between
``<!-- redis-cli-guide:start -->`` and ``<!-- redis-cli-guide:end -->``, ``sh`` blocks of
questions (a ``# question`` line) each followed by the ``redis-cli`` commands that answer it,
for the queue ``echo`` in the namespace ``rb``. This test parses them out of that page, so the
guide and the test cannot drift; points them at its own namespace, queue and worker; runs each
through the ``redis-cli`` binary (no shell) against a live system where every question has a
non-trivial answer; and checks what each prints. Every question of the guide has a check here
and every check a question.

The live system is built step by step, so that which worker holds what is decided by the test
rather than by a race:

1. a scheduler, and a worker running ``helpers.handlers:poison`` with ``--retry-on
   builtins.ValueError --retry-delay 3600``. The guide's own "submit one by hand" gives ``r1``
   an ``ok`` result and its "cancel one by hand" cancels ``r2`` before ``r2`` is added (it ends
   ``cancelled``); two malformed entries are dead-lettered; a "poison" payload goes to the
   delayed retries for an hour. That worker then stops (exit 0: it leaves the group).
2. two workers with the sleep handler (an hour per batch, batch size 1), started one after the
   other: each starts one request of the normal lane (``hold-1``, ``hold-2``) and reads one of
   the high lane ahead, which fills its read-ahead in every lane: from then on it reads nothing.
3. requests nobody reads, in all three lanes.
4. ``hold-1`` made to look held for 90 s (``XCLAIM ... IDLE 90000 JUSTID``), without sleeping.

Where an exact number depends on the worker's read-ahead, redis-py is the reference: the check
is that redis-cli prints what Redis holds, and that it is not nothing.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import redis

from helpers import REPO_ROOT
from helpers.entries import WAIT_S, now_ms, queue_keys, wait_results
from helpers.workers import WorkerProcess, wait_serving, wait_until
from redbatch.embedded import EmbeddedRedis
from redbatch.protocol.keys import GROUP, QueueKeys

Factory = Callable[..., WorkerProcess]

PAGE = REPO_ROOT / "docs" / "operations.md"
START = "<!-- redis-cli-guide:start -->"
END = "<!-- redis-cli-guide:end -->"
# What the guide's commands name, and what the test replaces it with.
GUIDE_NAMESPACE = "rb"
GUIDE_QUEUE = "{echo}"
GUIDE_WORKER = "gpu1-4242-9f3c2a"
# A reply redis-cli prints (on stdout, exit code 0 in Redis 7.0) for an error.
ERROR_REPLY = re.compile(r"^(ERR|WRONGTYPE|NOGROUP|BUSYGROUP|NOPERM|NOAUTH|WRONGPASS) ", re.M)
ENTRY_ID = re.compile(r"\d+-\d+")
HOUR_MS = 3_600_000

Guide = dict[str, list[str]]  # question -> its redis-cli command lines, in page order


# -- the guide ----------------------------------------------------------------------------------


def parse_guide(markdown: str) -> Guide:
    """The questions and commands between the markers; anything else inside an ``sh`` block
    there (a comment after a command, a line that is not ``redis-cli ...``) is refused, so the
    guide holds nothing the test does not run."""
    assert markdown.count(START) == 1 and markdown.count(END) == 1, "guide markers"
    section = markdown.split(START, 1)[1].split(END, 1)[0]
    assert section.strip(), "empty guide"
    guide: Guide = {}
    question: str | None = None
    in_block = False
    for number, line in enumerate(section.splitlines(), 1):
        where = f"guide line {number}: {line!r}"
        if line.startswith("```"):
            assert line == ("```" if in_block else "```sh"), where
            in_block = not in_block
        elif not in_block or not line.strip():
            continue
        elif line.startswith("# "):
            question = line[2:].strip()
            assert question not in guide, f"question asked twice: {where}"
            guide[question] = []
        else:
            assert question is not None, f"a command before any question: {where}"
            assert line.startswith("redis-cli "), where
            guide[question].append(line)
    assert not in_block, "an sh block of the guide is not closed"
    unanswered = [q for q, commands in guide.items() if not commands]
    assert not unanswered, f"questions without a command: {unanswered}"
    return guide


def read_guide() -> Guide:
    return parse_guide(PAGE.read_text(encoding="utf-8"))


def localize(command: str, namespace: str, queue: str, worker: str) -> list[str]:
    """A guide command's arguments (after ``redis-cli``), aimed at the test's keys."""
    args = shlex.split(command)
    assert args[0] == "redis-cli", command
    out = []
    for given in args[1:]:
        arg = given
        if arg.startswith(GUIDE_NAMESPACE + ":"):
            arg = namespace + arg[len(GUIDE_NAMESPACE) :]
        arg = arg.replace(GUIDE_QUEUE, "{" + queue + "}").replace(GUIDE_WORKER, worker)
        assert not arg.startswith(GUIDE_NAMESPACE + ":") and GUIDE_QUEUE not in arg, arg
        out.append(arg)
    return out


# -- the live system ----------------------------------------------------------------------------


@dataclass
class Live:
    port: int
    client: redis.Redis
    namespace: str
    queue: str
    keys: QueueKeys
    guide: Guide
    finisher: str = ""  # the worker that wrote r1's result (stopped since)
    scheduler: WorkerProcess | None = None
    holders: list[WorkerProcess] = field(default_factory=list)  # sleep workers: hold-1, hold-2
    entries: dict[str, str] = field(default_factory=dict)  # request id -> stream entry id
    answers: dict[str, list[tuple[list[str], str]]] = field(default_factory=dict)

    def ask(self, question: str) -> list[str]:
        """Run the guide's commands for ``question`` through redis-cli; their outputs."""
        worker = self.holders[0].name if self.holders else GUIDE_WORKER
        answers = []
        for command in self.guide[question]:
            args = localize(command, self.namespace, self.queue, worker)
            done = subprocess.run(
                ["redis-cli", "-p", str(self.port), *args],
                capture_output=True,
                timeout=WAIT_S,
                check=False,
            )
            out = done.stdout.decode("utf-8", "backslashreplace")
            report = f"{command}\n-> {args}\nexit {done.returncode}\n{out}{done.stderr!r}"
            assert done.returncode == 0 and not ERROR_REPLY.search(out), report
            answers.append((args, out))
        self.answers[question] = answers
        return [out for _, out in answers]

    def add(
        self, stream: str, request_id: str, payload: str | None = '"x"', ct: str = "json"
    ) -> str:
        fields = {"id": request_id, "ct": ct}
        if payload is not None:
            fields["payload"] = payload
        entry_id = self.client.xadd(stream, fields).decode()  # type: ignore[arg-type]
        self.entries[request_id] = entry_id
        return entry_id

    def held_by(self, stream: str, request_id: str, started: bool) -> str:
        """Wait until ``request_id``'s entry is pending (delivered twice = started, once = read
        ahead); returns the consumer holding it."""
        entry_id = self.entries[request_id]

        def holder() -> str | None:
            rows = self.client.xpending_range(stream, GROUP, entry_id, entry_id, 1)
            if rows and rows[0]["times_delivered"] == (2 if started else 1):
                return str(rows[0]["consumer"].decode())
            return None

        found: str = wait_until(holder, WAIT_S, f"{request_id} held (started={started})")
        return found


def finish_some(live: Live, worker_factory: Factory) -> None:
    """Step 1: a result, a cancelled request, a dead letter and a delayed retry."""
    keys = live.keys
    retry_in_an_hour = ("--retry-on", "builtins.ValueError", "--retry-delay", "3600")
    worker = wait_serving(
        worker_factory([live.queue], "helpers.handlers:poison", *retry_in_an_hour)
    )
    live.finisher = worker.name
    (submitted,) = live.ask("submit one by hand")
    assert ENTRY_ID.fullmatch(submitted.strip()), submitted
    live.ask("cancel one by hand")
    live.add(keys.stream, "r2")
    live.add(keys.stream, "bad-1", payload=None)
    live.add(keys.stream, "bad-2", ct="yaml")
    live.add(keys.stream, "poison-1", payload='"poison"')
    results = wait_results(live.client, keys, ["r1", "r2", "bad-1", "bad-2"])
    assert results["r1"][b"status"] == b"ok", results["r1"]
    assert results["r2"][b"status"] == b"cancelled", results["r2"]
    assert results["bad-1"][b"status"] == results["bad-2"][b"status"] == b"dead", results
    wait_until(lambda: live.client.zcard(keys.delayed) == 1, WAIT_S, "the delayed retry")
    assert worker.stop() == 0, worker.log()


def hold_some(live: Live, worker_factory: Factory) -> None:
    """Steps 2-4: two workers each in a long batch and full, requests nobody reads, and
    ``hold-1`` looking held for 90 s."""
    keys = live.keys
    high, normal, low = (keys.stream_for(p) for p in ("high", "normal", "low"))
    an_hour_per_item = ("--handler-option", "seconds=3600", "--max-batch-size", "1")
    for n in (1, 2):
        holder = wait_serving(
            worker_factory([live.queue], "redbatch.handlers:sleep", *an_hour_per_item)
        )
        live.holders.append(holder)
        live.add(normal, f"hold-{n}")
        assert live.held_by(normal, f"hold-{n}", started=True) == holder.name
        live.add(high, f"ahead-{n}")
        assert live.held_by(high, f"ahead-{n}", started=False) == holder.name
    for stream, request_id in ((high, "w-high"), (normal, "w-1"), (normal, "w-2"), (low, "w-low")):
        live.add(stream, request_id)
    live.client.xclaim(
        normal, GROUP, live.holders[0].name, 0, [live.entries["hold-1"]],
        idle=90_000, justid=True,
    )  # fmt: skip


# -- reading redis-cli's raw output -------------------------------------------------------------


def pairs(out: str) -> dict[str, str]:
    """A flat field/value reply (HGETALL, XINFO of one group), one item per line."""
    items = out.splitlines()
    assert len(items) % 2 == 0, out
    return dict(zip(items[::2], items[1::2], strict=True))


def records(out: str, first: str) -> list[dict[str, str]]:
    """A list of flat maps whose first field is ``first`` (XINFO CONSUMERS), whatever fields
    the server version adds."""
    found: list[dict[str, str]] = []
    items = out.splitlines()
    for key, value in zip(items[::2], items[1::2], strict=True):
        if key == first:
            found.append({})
        found[-1][key] = value
    return found


def pending_rows(out: str) -> dict[str, tuple[str, int, int]]:
    """XPENDING's extended form: entry id -> (consumer, idle ms, deliveries)."""
    items = out.splitlines()
    assert len(items) % 4 == 0, out
    return {
        items[i]: (items[i + 1], int(items[i + 2]), int(items[i + 3]))
        for i in range(0, len(items), 4)
    }


def stream_entries(out: str) -> list[tuple[str, dict[str, str]]]:
    """Stream entries (XRANGE, XREVRANGE): id and fields of each, in the printed order. An
    entry id stands where a field name would; no field name looks like one."""
    found: list[tuple[str, dict[str, str]]] = []
    items = iter(out.splitlines())
    for item in items:
        if ENTRY_ID.fullmatch(item):
            found.append((item, {}))
        else:
            assert found, out
            found[-1][1][item] = next(items)
    return found


# -- what each answer must say ------------------------------------------------------------------

Answers = list[tuple[list[str], str]]


def check_queues(live: Live, answers: Answers) -> None:
    assert live.queue in answers[0][1].splitlines()


def check_waiting(live: Live, answers: Answers) -> None:
    assert [args[-1] for args, _ in answers] == list(live.keys.streams)  # high, normal, low
    for args, out in answers:
        assert int(out) == live.client.xlen(args[-1]) > 0, (args, out)


def check_oldest(live: Live, answers: Answers) -> None:
    [(entry_id, fields)] = stream_entries(answers[0][1])
    assert entry_id == live.entries["hold-1"]
    assert fields["id"] == "hold-1" and fields["payload"] == '"x"'


def check_groups(live: Live, answers: Answers) -> None:
    group = pairs(answers[0][1])
    assert group["name"] == GROUP and group["consumers"] == "2"
    assert group["pending"] == "2"  # hold-1 and hold-2, started
    assert int(group["lag"]) == live.client.xinfo_groups(live.keys.stream)[0]["lag"] > 0
    assert group["last-delivered-id"] == live.entries["hold-2"]


def check_holders(live: Live, answers: Answers) -> None:
    rows = pending_rows(answers[0][1])
    first, second = (h.name for h in live.holders)
    assert set(rows) == {live.entries["hold-1"], live.entries["hold-2"]}
    consumer, idle_ms, deliveries = rows[live.entries["hold-1"]]
    assert (consumer, deliveries) == (first, 2) and idle_ms >= 90_000
    consumer, idle_ms, deliveries = rows[live.entries["hold-2"]]
    assert (consumer, deliveries) == (second, 2) and idle_ms < 60_000


def check_held_long(live: Live, answers: Answers) -> None:
    rows = pending_rows(answers[0][1])
    assert list(rows) == [live.entries["hold-1"]]
    assert rows[live.entries["hold-1"]][0] == live.holders[0].name


def check_consumers(live: Live, answers: Answers) -> None:
    consumers = {c["name"]: c["pending"] for c in records(answers[0][1], "name")}
    assert consumers == {h.name: "1" for h in live.holders}  # the finisher left the group


def check_alive(live: Live, answers: Answers) -> None:
    assert set(answers[0][1].splitlines()) == {live.keys.worker(h.name) for h in live.holders}


def check_connected(live: Live, answers: Answers) -> None:
    names = re.findall(r" name=(\S*)", answers[0][1])
    assert live.scheduler is not None
    for part in (
        *(f"redbatch:worker:{h.name}" for h in live.holders),
        f"redbatch:scheduler:{socket.gethostname()}-{live.scheduler.proc.pid}",
    ):
        assert part in names, (part, names)
    assert f"redbatch:worker:{live.finisher}" not in names  # it stopped: its connections closed


def check_heartbeat(live: Live, answers: Answers) -> None:
    (hgetall_args, hgetall), (ttl_args, ttl) = answers
    assert hgetall_args[-1] == ttl_args[-1] == live.keys.worker(live.holders[0].name)
    beat = pairs(hgetall)
    assert beat["pid"] == str(live.holders[0].proc.pid)
    assert beat["state"] == "serving" and beat["queues"] == live.queue
    assert 0 < int(ttl) <= 5  # --heartbeat-ttl 5 by default


def check_delayed(live: Live, answers: Answers) -> None:
    out = answers[0][1]
    assert "poison-1" in out and '"poison"' in out, out  # readable inside the msgpack member
    [(_, due)] = live.client.zrange(live.keys.delayed, 0, -1, withscores=True)
    assert out.splitlines()[-1] == str(int(due))
    assert due > now_ms() + HOUR_MS // 2  # --retry-delay 3600


def check_dead_count(live: Live, answers: Answers) -> None:
    assert answers[0][1].strip() == "2"


def check_dead(live: Live, answers: Answers) -> None:
    letters = stream_entries(answers[0][1])
    newest_first = [e.decode() for e, _ in live.client.xrevrange(live.keys.dead)]
    assert [entry_id for entry_id, _ in letters] == newest_first
    reasons = {fields["id"]: fields["reason"] for _, fields in letters}
    assert reasons == {
        "bad-1": "missing field 'payload'",
        "bad-2": "invalid field 'ct': 'yaml' (use msgpack or json)",
    }


def check_result(live: Live, answers: Answers) -> None:
    result = pairs(answers[0][1])
    assert result["status"] == "ok" and result["ct"] == "json"
    assert json.loads(result["payload"]) == {"x": 1}
    assert result["worker"] == live.finisher and result["attempt"] == "1"


def check_cancelled(live: Live, answers: Answers) -> None:
    assert answers[0][1].strip() == "1"
    assert live.client.hget(live.keys.result("r2"), "status") == b"cancelled"


def check_cancel(live: Live, answers: Answers) -> None:
    assert answers[0][1].strip() == "OK"
    assert 0 < live.client.ttl(live.keys.cancel("r2")) <= 3600


def check_submit(live: Live, answers: Answers) -> None:
    assert answers[0][0][0] == "XADD" and answers[0][0][1] == live.keys.stream
    assert ENTRY_ID.fullmatch(answers[0][1].strip())


CHECKS: dict[str, Callable[[Live, Answers], None]] = {
    "what queues exist": check_queues,
    "how many are waiting (per lane: high, normal, low)": check_waiting,
    "what is the oldest waiting request": check_oldest,
    "is a group lagging, how many are delivered but not finished": check_groups,
    "who holds what and for how long": check_holders,
    "what has been held for over a minute": check_held_long,
    "how much each worker holds": check_consumers,
    "which workers are alive": check_alive,
    "who is connected": check_connected,
    "what a worker says about itself, and how long its heartbeat lives unless renewed": (
        check_heartbeat
    ),
    "what is delayed and until when": check_delayed,
    "how many died": check_dead_count,
    "what died and why": check_dead,
    "read a result": check_result,
    "is it cancelled": check_cancelled,
    "cancel one by hand": check_cancel,
    "submit one by hand": check_submit,
}


# -- the tests ----------------------------------------------------------------------------------


def test_every_question_of_the_guide_is_checked_and_every_check_is_in_the_guide() -> None:
    guide = read_guide()
    assert set(guide) == set(CHECKS)
    assert any(GUIDE_WORKER in c for commands in guide.values() for c in commands)


def test_the_guide_parser_refuses_what_it_would_not_run() -> None:
    def guide(body: str) -> str:
        return f"prose\n{START}\nmore prose\n```sh\n{body}\n```\n{END}\n"

    assert parse_guide(guide("# q\nredis-cli PING\n\n# r\nredis-cli A\nredis-cli B")) == {
        "q": ["redis-cli PING"],
        "r": ["redis-cli A", "redis-cli B"],
    }
    for bad in ("redis-cli PING", "# q", "# q\nredis-cli A\n# q\nredis-cli B", "# q\nls"):
        with pytest.raises(AssertionError):
            parse_guide(guide(bad))


@pytest.fixture
def holders_killed() -> Iterator[list[WorkerProcess]]:
    """Sleep workers in an hour-long batch would outlive a SIGTERM's drain: killed after."""
    holders: list[WorkerProcess] = []
    yield holders
    for holder in holders:
        holder.kill()


def test_every_guide_command_answers_its_question_on_a_live_system(
    redis_server: EmbeddedRedis,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: Factory,
    scheduler_factory: Factory,
    holders_killed: list[WorkerProcess],
) -> None:
    live = Live(
        port=redis_server.port,
        client=redis_client,
        namespace=namespace,
        queue=queue,
        keys=queue_keys(redis_client, namespace, queue),
        guide=read_guide(),
        holders=holders_killed,
    )
    assert set(live.guide) == set(CHECKS)
    live.scheduler = scheduler_factory()
    finish_some(live, worker_factory)
    hold_some(live, worker_factory)
    for question in live.guide:
        if question not in live.answers:
            live.ask(question)
    assert all(h.proc.poll() is None for h in live.holders)
    for question, check in CHECKS.items():
        check(live, live.answers[question])
    assert set(live.answers) == set(CHECKS)
