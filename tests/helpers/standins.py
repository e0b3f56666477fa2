"""Base images and wheels for building the stack where there is no registry and no direct
package index (tests/compose).

Stand-ins: when the images the files name (the Dockerfile's PYTHON_IMAGE default and
compose.yaml's REDIS_IMAGE default) are absent, one Debian root filesystem is made with
debootstrap and imported twice, tagged with those names. It keeps what the Dockerfile and
compose.yaml rely on in the official images:

- python:3.11-slim: ``python``, ``python3`` and a ``pip`` that installs into the image, first on
  PATH in /usr/local (a venv over Debian's python3, so PEP 668 does not refuse pip), ``useradd``.
- redis:7.2: ``redis-server`` and ``redis-cli`` on PATH, WORKDIR /data, and protected mode off
  by default (the official image is built that way; Debian's is not: its entry point adds
  ``--protected-mode no``). It is Debian 12's Redis 7.0, runs as root, and carries the tag
  only so the files run unchanged.

The root filesystem is kept as a tar file under cache_dir(), named after a hash of its recipe,
and imported again whenever the engine lacks the images; wheels are kept there too.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import ssl
import subprocess
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from helpers import REPO_ROOT
from helpers.engines import Engine, Unavailable, cache_dir

SUITE = "bookworm"
MIRROR = os.environ.get("REDBATCH_DEBIAN_MIRROR") or "http://deb.debian.org/debian"
PACKAGES = "python3,python3-venv,redis-server"
WHEELHOUSE = REPO_ROOT / "wheelhouse"
STANDIN_LABEL = "org.redbatch.stand-in"

# Run in the debootstrapped tree (chroot) before it is packed.
_FINISH = r"""
set -eu
python3 -m venv /usr/local
mkdir -p /data
cat > /usr/local/bin/docker-entrypoint.sh <<'EOF'
#!/bin/sh
# redis-server as the official image runs it: protected mode off unless configured.
if [ "${1:-}" = redis-server ]; then
    shift
    case "${1:-}" in
        ""|-*) set -- redis-server --protected-mode no "$@" ;;
        *) conf=$1; shift; set -- redis-server "$conf" --protected-mode no "$@" ;;
    esac
fi
exec "$@"
EOF
chmod 755 /usr/local/bin/docker-entrypoint.sh
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log
"""

_PATH = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"


def image_names() -> tuple[str, str]:
    """(python image, redis image): the defaults the Dockerfile and compose.yaml name."""
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    compose = (REPO_ROOT / "compose.yaml").read_text()
    python = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    also = re.search(r"\$\{PYTHON_IMAGE:-([^}]+)\}", compose)
    redis = re.search(r"image: \$\{REDIS_IMAGE:-([^}]+)\}", compose)
    assert python and also and redis, "PYTHON_IMAGE / REDIS_IMAGE defaults not found"
    assert python[1] == also[1], "compose.yaml's PYTHON_IMAGE default differs from Dockerfile's"
    return python[1], redis[1]


def recipe_key() -> str:
    text = "\n".join((SUITE, MIRROR, PACKAGES, _FINISH, _PATH))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One builder at a time per cache directory (parallel test runs share it)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _check(command: list[str], timeout: float, stdout: IO[bytes] | int = subprocess.PIPE) -> None:
    done = subprocess.run(
        command, stdout=stdout, stderr=subprocess.PIPE, timeout=timeout, check=False
    )
    if done.returncode != 0:
        output = (done.stdout or b"") + done.stderr
        tail = "\n".join(output.decode(errors="replace").strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(command[:4])} ... exited {done.returncode}:\n{tail}")


def rootfs_tarball() -> Path:
    """The cached root filesystem (tar), built on the first call on this machine."""
    cache = cache_dir()
    tarball = cache / f"rootfs-{SUITE}-{recipe_key()}.tar"
    if tarball.exists():
        return tarball
    if os.geteuid() != 0:
        raise Unavailable("building the stand-in base images needs root (debootstrap, chroot)")
    if shutil.which("debootstrap") is None:
        raise Unavailable("no debootstrap to build the stand-in base images (apt-get install)")
    with _locked(cache):
        if tarball.exists():  # another run built it meanwhile
            return tarball
        root = cache / f"build-{os.getpid()}"
        shutil.rmtree(root, ignore_errors=True)
        started = time.monotonic()
        try:
            _check(
                ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(root),
                 MIRROR],
                timeout=1200,
            )  # fmt: skip
            _check(["chroot", str(root), "/bin/sh", "-c", _FINISH], timeout=300)
            partial = tarball.with_suffix(".partial")
            with partial.open("wb") as out:
                _check(["tar", "-C", str(root), "--numeric-owner", "-c", "."], 600, stdout=out)
            partial.rename(tarball)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(f"\nstand-in root filesystem built in {time.monotonic() - started:.0f} s: {tarball}")
    return tarball


def _changes(image: str, key: str) -> list[str]:
    common = [f"LABEL {STANDIN_LABEL}={key}", f"ENV PATH={_PATH}", "ENV LANG=C.UTF-8"]
    if "redis" in image.rsplit("/", 1)[-1]:
        return [*common, "WORKDIR /data", "VOLUME /data", "EXPOSE 6379",
                'ENTRYPOINT ["docker-entrypoint.sh"]', 'CMD ["redis-server"]']  # fmt: skip
    return [*common, 'CMD ["python3"]']


def ensure_base_images(engine: Engine) -> list[str]:
    """Import stand-ins for the base images the engine lacks; returns the names imported."""
    imported = []
    for image in image_names():
        if engine.run("image", "inspect", image, timeout=60).returncode == 0:
            continue  # the official image, or a stand-in from an earlier run
        tarball = rootfs_tarball()
        args = [item for change in _changes(image, recipe_key()) for item in ("--change", change)]
        done = engine.run("import", *args, str(tarball), _full_name(image), timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"{engine.name} import {image}: {done.stderr.strip()}")
        imported.append(image)
    return imported


def _full_name(image: str) -> str:
    """docker.io/library/redis:7.2 for redis:7.2: the name a short FROM/image resolves to."""
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image}" if "/" in image else f"docker.io/library/{image}"


# -- wheels ------------------------------------------------------------------------------


def _requirements(extras: str) -> list[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    build = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["build-system"]
    wanted = [e for e in extras.replace(",", " ").split() if e]
    optional = [r for e in wanted for r in project["optional-dependencies"][e]]
    return [*project["dependencies"], *optional, *build["requires"], "wheel"]


def _host_ca_bundle() -> str | None:
    """The host's CA bundle: the index may be reachable only through a TLS proxy it trusts."""
    candidates = [
        os.environ.get("PIP_CERT"),
        os.environ.get("SSL_CERT_FILE"),
        ssl.get_default_verify_paths().cafile,
        "/etc/ssl/certs/ca-certificates.crt",
    ]
    return next((c for c in candidates if c and Path(c).is_file()), None)


def fill_wheelhouse(engine: Engine, python_image: str, extras: str = "") -> int:
    """Put the wheels an offline build needs into <repo>/wheelhouse: the project's dependencies
    and build backend, downloaded once per base image and requirement set into the cache.

    The download runs in ``python_image`` with its own pip, so environment markers (e.g.
    redis's ``async-timeout; python_full_version < "3.11.3"``) are those of the image's
    Python, and with the host's CA bundle mounted for that one download (the build itself
    gets no CA and no index). Returns the number of wheels."""
    requirements = _requirements(extras)
    image_id = engine.run("image", "inspect", "--format", "{{.Id}}", python_image).stdout.strip()
    assert image_id, f"no image {python_image}"
    key = hashlib.sha256("\n".join([image_id, *requirements]).encode()).hexdigest()[:12]
    cached = cache_dir() / f"wheels-{key}"
    with _locked(cache_dir()):
        if not cached.exists():
            partial = cached.with_name(cached.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            mounts = ["--volume", f"{partial}:/wheelhouse"]
            ca = _host_ca_bundle()
            if ca:
                mounts += ["--volume", f"{ca}:/etc/host-ca.crt:ro"]
                mounts += ["--env", "PIP_CERT=/etc/host-ca.crt"]
            done = engine.run(
                "run", "--rm", *mounts, "--env", "PIP_DISABLE_PIP_VERSION_CHECK=1",
                "--entrypoint", "python", python_image, "-m", "pip", "download", "--quiet",
                "--dest", "/wheelhouse", "--only-binary=:all:", *requirements,
                timeout=900,
            )  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"pip download in {python_image}: {done.stderr.strip()[-2000:]}")
            partial.rename(cached)
    empty_wheelhouse()
    wheels = sorted(cached.glob("*.whl"))
    for wheel in wheels:
        shutil.copy2(wheel, WHEELHOUSE / wheel.name)
    return len(wheels)


def empty_wheelhouse() -> None:
    for wheel in WHEELHOUSE.glob("*.whl"):
        wheel.unlink()
