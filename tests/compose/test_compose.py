"""The stack on real containers built from the real Dockerfile and compose.yaml: Docker Compose
when a Docker engine answers, else podman-compose (tests/helpers/engines.py); skipped with the
reason only when neither can run a container, and failed instead under CI.

Where no registry answers, the base images are local stand-ins (tests/helpers/standins.py,
cached under ~/.cache/redbatch-tests); the build installs from a wheelhouse prepared on the
host. podman-compose does not wait for ``service_healthy`` and podman runs no scheduled health
checks without systemd, so these tests wait on the real conditions themselves (Redis answers
PING, each worker's health check passes) on both engines.

The scenario: ``up --scale worker=3``, then the `producer` service sends 10,000 requests while
one worker container is stopped (drain), another killed, Redis killed and started again (it
reloads its AOF), and one worker cut off the network (``network disconnect``) for at least
5 s: every request ends ok or is lost to Redis's crash window, none hangs; what the cut-off
worker held is re-queued by the scheduler and ends ok once; the stopped worker drains at once
(an echo batch to finish), not in anything near its drain timeout. ``down -v`` leaves nothing.

Under podman 4.3 (Debian 12's aardvark-dns 1.4) the network's names can stop resolving for
tens of seconds after a container leaves or joins it (the cut, the reconnect), so whatever
opens a connection then waits on the resolver (5 s a server and attempt) before it reaches
``redis``. The drained worker's stop fell into that window and once took 30 s: its drain
connected again (tests/integration/test_drain_connections.py). Each step's duration and the
drained worker's log are printed, and in the failure message of a late step.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from helpers.compose_stack import ENV_FILE, Stack, compose_value, env_value, seconds, wait_for
from helpers.engines import Engine, Unavailable, find_engine, skip_or_fail
from helpers.standins import empty_wheelhouse, ensure_base_images, fill_wheelhouse, image_names
from redbatch.protocol.keys import KeySpace

pytestmark = [pytest.mark.compose, pytest.mark.timeout(900)]

WORKERS = 3
REQUESTS = 10_000
# Submits per second: the load runs ~50 s, so every step below happens while it runs, also
# when each look into Redis (an exec in the redis container) takes a second or two.
RATE = 200
REQUEST_TIMEOUT_S = 60
CUT_S = 5.0  # the cut-off worker stays off the network at least this long
LOSS_WINDOW_S = 2.5  # appendfsync everysec: a crash loses at most ~the last second or two
QUEUE = KeySpace("rb").queue("echo")  # .env.example: namespace rb, queue echo
STREAM = QUEUE.stream
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "make")


@pytest.fixture(scope="module")
def engine() -> Engine:
    try:
        engine = find_engine()
        started = time.monotonic()
        imported = ensure_base_images(engine)
    except Unavailable as exc:
        skip_or_fail(str(exc))
        raise  # not reached
    python_image, _ = image_names()
    probe = engine.run("run", "--rm", python_image, "python", "-c", "pass")
    if probe.returncode != 0:
        skip_or_fail(f"{engine.name} cannot run a container: {probe.stderr.strip()[-300:]}")
    print(f"\n{engine.versions()}; stand-ins imported: {imported or 'none needed'} "
          f"({time.monotonic() - started:.0f} s)")  # fmt: skip
    return engine


@pytest.fixture(scope="module")
def stack(engine: Engine) -> Iterator[Stack]:
    project = f"rbt{uuid.uuid4().hex[:8]}"
    stack = Stack(engine, project, f"localhost/redbatch-compose-test:{project}")
    python_image, _ = image_names()
    started = time.monotonic()
    untagged_before = untagged_images(engine)
    try:
        print(f"wheelhouse: {fill_wheelhouse(engine, python_image)} wheels")
        up = stack.compose("up", "-d", "--build", "--scale", f"worker={WORKERS}", timeout=900)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        empty_wheelhouse()
        wait_for(stack.ping, 120, "redis to answer PING")
        wait_for(lambda: len(stack.containers("worker")) == WORKERS, 60, f"{WORKERS} workers")
        for worker in stack.containers("worker"):
            wait_for(lambda w=worker: stack.healthy(w), 120, f"worker {worker} to be healthy")
        print(f"stack up in {time.monotonic() - started:.0f} s")
        yield stack
    finally:
        empty_wheelhouse()
        stack.down()
        engine.run("rmi", "--force", stack.image)
        # The build's own untagged images, not ones that were there before it: podman keeps
        # each stage's and step's, 218 MB on disk a run, and no later build reuses them.
        built = untagged_images(engine) - untagged_before
        if built:
            engine.run("rmi", *sorted(built))


def untagged_images(engine: Engine) -> set[str]:
    listed = engine.run("images", "--quiet", "--no-trunc", "--filter", "dangling=true")
    return set(listed.stdout.split())


def test_the_image_is_small_non_root_without_compilers_and_answers(stack: Stack) -> None:
    run = ("run", "--rm")
    version = stack.engine.run(*run, stack.image, "--version")
    assert version.returncode == 0 and "version" in version.stdout, version.stderr
    worker_help = stack.engine.run(*run, stack.image, "worker", "--help")
    assert worker_help.returncode == 0 and "Usage: redbatch worker" in worker_help.stdout
    user = stack.engine.run(*run, "--entrypoint", "id", stack.image, "-u")
    assert user.stdout.strip() == "10001", user.stdout + user.stderr
    script = f"for c in {' '.join(COMPILERS)}; do command -v $c; done; true"
    found = stack.engine.run(*run, "--entrypoint", "sh", stack.image, "-c", script)
    assert found.returncode == 0 and found.stdout.strip() == "", found.stdout
    size = stack.engine.run("image", "inspect", "--format", "{{.Size}}", stack.image).stdout
    print(f"\nimage {stack.image}: {int(size) / 1e6:.0f} MB ({version.stdout.strip()})")


def test_health_check_passes_for_a_live_worker_and_fails_once_it_stopped(stack: Stack) -> None:
    worker = stack.containers("worker")[0]
    assert stack.healthy(worker)
    grace = seconds(compose_value("stop_grace_period"))
    stopped = stack.engine.run("stop", "--time", str(grace), worker, timeout=grace + 60)
    assert stopped.returncode == 0, stopped.stderr
    assert stack.inspect(worker, "{{.State.ExitCode}}") == "0"  # drained
    # The same check from a container with the stopped worker's hostname: no live worker of
    # that name is left in Redis, so it reports unhealthy.
    impostor = f"{stack.project}-health-probe"
    created = stack.engine.run(
        "run", "-d", "--name", impostor, "--hostname", stack.hostname(worker),
        "--network", stack.network(stack.containers("scheduler")[0]),
        "--env-file", str(ENV_FILE), "--entrypoint", "sleep", stack.image, "300",
    )  # fmt: skip
    try:
        assert created.returncode == 0, created.stderr
        assert not stack.healthy(impostor)
    finally:
        stack.engine.run("rm", "--force", impostor)
    assert stack.engine.run("start", worker).returncode == 0
    wait_for(lambda: stack.healthy(worker), 120, "the restarted worker to be healthy")


class Chaos(threading.Thread):
    """Stop, kill, Redis crash and a network cut, each once the load has reached a point."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.workers = stack.containers("worker")
        self.failures: list[str] = []
        self.done: list[str] = []
        self.cut_requests: set[str] = set()  # request ids the cut-off worker held
        # Looked up now: a lookup once the load runs would come seconds late.
        self.cut_consumer = stack.consumer(self.workers[2], QUEUE.worker("")) or ""
        self.network = stack.network(self.workers[2])
        self.held_last = 0
        self.steps: list[tuple[str, float, int]] = []  # (step, seconds into the load, added)
        self.took: list[tuple[str, float]] = []  # (command, seconds it took)
        self.stopped_log = ""  # the drained worker's state and log tail, once it is stopped
        self.started = 0.0

    def _do(self, *args: str, timeout: float = 120.0) -> None:
        began = time.monotonic()
        result = self.stack.engine.run(*args, timeout=timeout)
        self.took.append((args[0], round(time.monotonic() - began, 1)))
        if result.returncode != 0:
            self.failures.append(f"{' '.join(args)}: {result.stderr.strip()}")
        self.done.append(args[0])

    def _note_stopped(self, container: str) -> None:
        """How the drained worker ended, in its own words: when a step comes late, this says
        whether the stop waited for the worker (its drain lines' times) or for the engine."""
        state = "{{.State.ExitCode}} {{.State.StartedAt}} {{.State.FinishedAt}}"
        logs = self.stack.engine.run("logs", "--timestamps", "--tail", "15", container)
        self.stopped_log = (
            f"exit code, started, finished: {self.stack.inspect(container, state)}\n"
            f"{logs.stdout}{logs.stderr}"
        )

    def _after(self, added: int, step: str) -> None:
        """Wait until the load has submitted ``added`` requests; note when and how far."""
        seen = [0]

        def reached() -> bool:
            seen[0] = self.stack.stream_added(STREAM)
            return seen[0] >= added

        wait_for(reached, 120, f"{added} requests")
        self.steps.append((step, round(time.monotonic() - self.started, 1), seen[0]))

    def run(self) -> None:
        self.started = time.monotonic()
        try:
            self._chaos()
        except Exception as exc:  # reported by the test, not lost in this thread
            self.failures.append(
                f"chaos: {exc!r} after {self.steps}; cut-off consumer {self.cut_consumer!r} "
                f"held {len(self.cut_requests)} ({self.held_last} at the end)"
            )

    def _chaos(self) -> None:
        stack, (drained, killed, cut) = self.stack, self.workers
        # The cut first, while all workers serve and the load surely runs: whatever the
        # cut-off worker was given (its blocked read is still served by Redis) stays pending
        # to it until its heartbeat expires and the scheduler re-queues it.
        self._after(1_000, "cut")
        self._do("network", "disconnect", self.network, cut)
        cut_at = time.monotonic()
        seen: set[str] = set()

        def gone() -> bool:
            """Until its heartbeat has expired, collect what it holds (its blocked read may
            still be served by Redis after the cut): all that must be re-queued."""
            held = stack.pending_of(STREAM, self.cut_consumer)
            self.held_last = len(held)
            for entry in set(held) - seen:
                seen.add(entry)
                if request := stack.request_id(STREAM, entry):
                    self.cut_requests.add(request)
            heartbeat = stack.redis_cli("EXISTS", QUEUE.worker(self.cut_consumer)).stdout
            return heartbeat.strip() == "0" and time.monotonic() - cut_at >= CUT_S

        wait_for(gone, 60, "the cut-off worker's heartbeat to expire", every=0.25)
        # the scheduler's next pass re-queues what it holds
        wait_for(lambda: not stack.pending_of(STREAM, self.cut_consumer), 30, "the re-queue")
        self._do("network", "connect", self.network, cut)
        self.steps.append(("reconnect", round(time.monotonic() - self.started, 1), -1))
        grace = seconds(compose_value("stop_grace_period"))
        self._after(4_000, "stop")
        self._do("stop", "--time", str(grace), drained, timeout=grace + 60)
        self._note_stopped(drained)
        self._after(5_500, "kill")
        self._do("kill", killed)
        self._after(7_000, "redis")
        self._do("kill", stack.containers("redis")[0])
        self._do("start", stack.containers("redis", every=True)[0])
        wait_for(stack.ping, 60, "redis back from its AOF")


def test_every_request_ends_through_drain_kill_redis_crash_and_a_network_cut(
    stack: Stack,
) -> None:
    assert len(stack.containers("worker")) == WORKERS
    chaos = Chaos(stack)
    assert chaos.cut_consumer, "the worker to cut off has no heartbeat in Redis"
    chaos.start()
    load = stack.compose(
        "--profile", "bench", "run", "--rm", "--no-deps", "-T", "producer",
        "--requests", str(REQUESTS), "--timeout", str(REQUEST_TIMEOUT_S), "--rate", str(RATE),
        timeout=REQUESTS / RATE + 3 * REQUEST_TIMEOUT_S,
    )  # fmt: skip
    chaos.join(timeout=120)
    assert not chaos.failures, chaos.failures
    assert chaos.done == ["network", "network", "stop", "kill", "kill", "start"], chaos.done
    # every step happened while the load was still submitting
    timings = f"steps {chaos.steps}; took {chaos.took}; drained worker: {chaos.stopped_log}"
    print(f"\nchaos: {timings}")
    assert all(added < REQUESTS for _, _, added in chaos.steps), timings
    # Its running batch is an echo: a stop that takes the drain timeout waited on something else.
    [stop_s] = [s for command, s in chaos.took if command == "stop"]
    assert stop_s < int(env_value("REDBATCH_DRAIN_TIMEOUT")), timings
    lines = [line for line in load.stdout.splitlines() if line.startswith("{")]
    assert lines, load.stdout[-3000:] + load.stderr[-3000:]
    counts = json.loads(lines[-1])
    print(
        f"\ncompose scenario: {counts}; cut-off worker held {len(chaos.cut_requests)}; "
        f"chaos (step, s, submitted): {chaos.steps}"
    )
    assert counts["sent"] + counts["refused"] == REQUESTS
    assert counts["wrong"] == 0 and counts["errors"] == {}, counts
    assert counts["ok"] + counts["lost"] == counts["sent"], counts
    assert counts["lost"] <= RATE * LOSS_WINDOW_S, counts  # only Redis's crash window
    assert counts["late_s"] <= 1.0, counts  # no handle waited past its bound
    assert load.returncode == 0, load.stderr[-3000:]
    drained = chaos.workers[0]
    assert stack.inspect(drained, "{{.State.ExitCode}}") == "0", "the stopped worker did not drain"
    # What the cut-off worker held was re-queued by the scheduler and ended ok, once.
    # The cut-off worker is back: serving, with a live heartbeat.
    wait_for(lambda: stack.healthy(chaos.workers[2]), 120, "the cut-off worker to be healthy")
    if chaos.cut_requests:  # re-queued by the scheduler (its log says so)
        [scheduler] = stack.containers("scheduler")
        logs = stack.engine.run("logs", scheduler)
        logs_text = logs.stdout + logs.stderr
        assert f"held by {chaos.cut_consumer}" in logs_text, logs_text[-3000:]
    for request in chaos.cut_requests:
        status = stack.redis_cli("HGET", QUEUE.result(request), "status").stdout
        assert status.strip() == "ok", (request, status)
    assert stack.pending_of(STREAM, chaos.cut_consumer) == []


def test_down_removes_every_container_network_and_volume(stack: Stack) -> None:
    stack.down()
    left = {}
    for kind, listing in (("container", ("ps", "-a")), ("network", ("network", "ls")),
                          ("volume", ("volume", "ls"))):  # fmt: skip
        names = stack.engine.run(*listing, "--format", "{{.Names}}" if kind == "container"
                                 else "{{.Name}}").stdout.split()  # fmt: skip
        left[kind] = [n for n in names if n.startswith(stack.project)]
    assert left == {"container": [], "network": [], "volume": []}
