"""Helpers shared by tests and by the processes tests start (importable as ``helpers``)."""

from __future__ import annotations

import os
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = TESTS_DIR.parent
SRC_DIR = REPO_ROOT / "src"


def subprocess_env() -> dict[str, str]:
    """A copy of os.environ for worker/CLI subprocesses started by tests.

    PYTHONPATH starts with ``<repo>/tests`` and ``<repo>/src`` so the child can import
    ``helpers.handlers`` and this checkout of redbatch (installed or not). Every
    ``REDBATCH_*`` and ``OTEL_*`` variable is dropped so a developer's shell settings never
    leak into a test (a worker would start exporting traces); tests pass what they need
    explicitly.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDBATCH_", "OTEL_"))}
    paths = [str(TESTS_DIR), str(SRC_DIR)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env
