"""The container engine tests/compose runs on: Docker with Docker Compose when a Docker engine
answers, else podman with podman-compose (tests/compose/containers.conf selected through
CONTAINERS_CONF). Both CLIs take the same arguments for everything the tests do (run, exec,
inspect, stop, kill, start, network connect/disconnect, image inspect, ps, volume ls).

When neither can run a container the suite skips with the reason, except under CI where podman
can be installed (.ci/run installs it): there it fails, so CI never passes by skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import REPO_ROOT

CONTAINERS_CONF = REPO_ROOT / "tests" / "compose" / "containers.conf"


class Unavailable(Exception):
    """No engine can run the suite here; the message says why."""


@dataclass(frozen=True)
class Engine:
    name: str  # "docker" | "podman"
    compose_cli: tuple[str, ...]  # ("docker", "compose") | ("/path/to/podman-compose",)
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return _run([self.name, *args], self.env, timeout)

    def compose(
        self, project: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """The compose tool on the repository's compose.yaml as project ``project``."""
        command = [*self.compose_cli, "-f", str(REPO_ROOT / "compose.yaml"), "-p", project]
        return _run([*command, *args], {**self.env, **(env or {})}, timeout)

    def versions(self) -> str:
        """One line for reports: engine and compose tool versions."""
        side = "Server" if self.name == "docker" else "Client"  # podman has no server part
        template = f"{{{{.{side}.Version}}}}"
        engine = self.run("version", "--format", template, timeout=30).stdout.strip()
        tool = _run([*self.compose_cli, "version"], self.env, 30).stdout.strip()
        tool = " / ".join(line for line in tool.splitlines() if line.strip())
        return f"{self.name} {engine}; {tool}"


def _run(
    command: list[str], env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        errors="replace",  # redis-cli prints payloads (msgpack bytes) as they are
        timeout=timeout,
        check=False,
    )


def _answers(command: list[str], env: dict[str, str]) -> str | None:
    """None when ``command`` exits 0 within 30 s, else why not (one line)."""
    try:
        done = _run(command, env, 30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`{' '.join(command)}`: {exc}"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return f"`{' '.join(command)}` exits {done.returncode}: {lines[-1] if lines else ''}"
    return None


def _docker() -> Engine | str:
    if shutil.which("docker") is None:
        return "no docker client"
    why = _answers(["docker", "info", "--format", "{{.ServerVersion}}"], {})
    if why:
        return f"no Docker engine answers ({why})"
    why = _answers(["docker", "compose", "version"], {})
    return Engine("docker", ("docker", "compose")) if why is None else why


def _podman() -> Engine | str:
    if shutil.which("podman") is None:
        return "no podman (apt-get install podman runc)"
    env = {
        "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF") or str(CONTAINERS_CONF),
        # podman builds OCI images by default, which have no HEALTHCHECK: keep Docker's format
        "BUILDAH_FORMAT": "docker",
    }
    # next to this interpreter first: .ci/run pip-installs it for the python that runs pytest
    here = Path(sys.executable).with_name("podman-compose")
    tool = str(here) if here.exists() else shutil.which("podman-compose")
    if tool is None:
        return "no podman-compose (pip install podman-compose)"
    compose_cli = (tool,)
    why = _answers([*compose_cli, "version"], env)
    if why:
        return why
    why = _answers(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"], env)
    return Engine("podman", compose_cli, env) if why is None else why


def find_engine() -> Engine:
    """Docker when it answers, else podman; raises Unavailable with both reasons."""
    docker = _docker()
    if isinstance(docker, Engine):
        return docker
    podman = _podman()
    if isinstance(podman, Engine):
        return podman
    raise Unavailable(f"{docker}; {podman}")


def podman_installable() -> bool:
    """podman is here, or apt can install it (what .ci/run does)."""
    if shutil.which("podman"):
        return True
    if shutil.which("apt-cache") is None:
        return False
    policy = _run(["apt-cache", "policy", "podman"], {}, 60).stdout
    return "Candidate:" in policy and "Candidate: (none)" not in policy


def skip_or_fail(reason: str) -> None:
    """Skip with ``reason``; under CI, where podman can be installed, fail instead."""
    if os.environ.get("CI") and podman_installable():
        pytest.fail(f"{reason} (CI can install podman: .ci/run)")
    pytest.skip(reason)


def cache_dir() -> Path:
    """Where stand-in root filesystems and wheels are kept between runs on this machine."""
    configured = os.environ.get("REDBATCH_TEST_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "redbatch-tests"
