"""redbatch.servers without building anything: a cached root filesystem is reused, the
command runs its binary through its own loader, and what cannot work says so in one line."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from redbatch import servers
from redbatch.errors import RedbatchError
from redbatch.servers import server_build


def fake_root(cache: Path) -> Path:
    """The files of a built trixie root filesystem that server_build looks at."""
    root = cache / "trixie"
    for path in ("lib64/ld-linux-x86-64.so.2", "usr/lib/x86_64-linux-gnu/libc.so.6",
                 "usr/bin/redis-server", "usr/bin/valkey-server"):  # fmt: skip
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).touch()
    return root


def test_a_cached_root_filesystem_is_reused_and_run_through_its_loader(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    build = server_build("valkey8", tmp_path)
    assert build.command == (
        str(root / "lib64/ld-linux-x86-64.so.2"),
        "--library-path", str(root / "usr/lib/x86_64-linux-gnu"),
        str(root / "usr/bin/valkey-server"),
    )  # fmt: skip
    assert build.cli[-1] == str(root / "usr/bin/valkey-cli")
    assert server_build("redis8", tmp_path).command[-1] == str(root / "usr/bin/redis-server")


def test_an_unknown_server_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(RedbatchError, match="redis7, redis8, valkey8"):
        server_build("redis6", tmp_path)


def test_without_debootstrap_the_build_fails_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servers.shutil, "which", lambda _name: None)
    with pytest.raises(RedbatchError, match="apt-get install debootstrap"):
        server_build("redis8", tmp_path)
    assert not (tmp_path / "trixie").exists()


def test_a_second_caller_waits_for_the_build_under_way_and_reuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    building, release, second_waits = threading.Event(), threading.Event(), threading.Event()
    builds: list[Path] = []
    real_flock = servers.fcntl.flock

    def build(root: Path) -> None:
        builds.append(root)
        building.set()
        assert release.wait(30)
        fake_root(root.parent)

    def flock(fd: Any, operation: int) -> None:
        if threading.current_thread().name == "second":
            second_waits.set()
        real_flock(fd, operation)

    monkeypatch.setattr(servers, "_build", build)
    monkeypatch.setattr(servers.fcntl, "flock", flock)
    roots: list[Path] = []
    first = threading.Thread(target=lambda: roots.append(servers.trixie_root(tmp_path)))
    second = threading.Thread(
        target=lambda: roots.append(servers.trixie_root(tmp_path)), name="second"
    )
    first.start()
    assert building.wait(30)
    second.start()
    assert second_waits.wait(30)  # it found no root filesystem and queued for the lock
    release.set()
    first.join(30)
    second.join(30)
    assert roots == [tmp_path / "trixie"] * 2
    assert builds == [tmp_path / "trixie"]
