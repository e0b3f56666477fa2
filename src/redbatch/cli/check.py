"""``--check`` of ``redbatch worker`` and ``redbatch scheduler``: an exec probe (the work is
``redbatch.ops.check``)."""

from __future__ import annotations

import os
from typing import Any

from redbatch.cli.common import fail
from redbatch.config import ENV_NAMES, SchedulerConfig, WorkerConfig
from redbatch.errors import RedbatchError
from redbatch.ops.check import run_check

CHECK_WORKER = (
    "exit 0 if a worker of this host serving QUEUE... has a live heartbeat, else 1 "
    "(an exec probe, like arq --check)"
)
CHECK_SCHEDULER = "exit 0 if a scheduler of this host has reached Redis lately, else 1"


def check(cls: type[WorkerConfig] | type[SchedulerConfig], options: dict[str, Any]) -> int:
    """0 when this host's worker/scheduler has a live heartbeat, else 1 and the reason on
    one line (2 or 3 for a bad setting or an unreachable Redis, as ever)."""
    try:
        if cls is WorkerConfig and not (
            options.get("handler") or os.environ.get(ENV_NAMES["handler"])
        ):
            options["handler"] = ("redbatch.handlers:echo",)  # --check serves nothing
        return run_check(cls.from_env(**options))
    except RedbatchError as exc:
        fail(exc)
