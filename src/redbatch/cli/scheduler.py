"""``redbatch scheduler``: reaping, delayed retries and consumer clean-up, until stopped."""

from __future__ import annotations

import sys
import threading
from typing import Any

import click

from redbatch.cli.check import CHECK_SCHEDULER
from redbatch.cli.check import check as check_live
from redbatch.cli.common import fail, on_stop_signals, setting_options
from redbatch.config import SchedulerConfig
from redbatch.errors import RedbatchError
from redbatch.logconfig import setup as setup_logging
from redbatch.scheduler import Scheduler


@click.command("scheduler")
@setting_options(SchedulerConfig)
@click.option("--check", is_flag=True, help=CHECK_SCHEDULER)
def command(check: bool, **options: Any) -> None:
    """Re-queue work of dead or hung workers, dead-letter what ran out of attempts, move due
    retries and remove stale consumers, on every queue, until SIGTERM or Ctrl-C (exit 0).
    Several schedulers may run at once."""
    if check:
        sys.exit(check_live(SchedulerConfig, options))
    stop = threading.Event()
    on_stop_signals(stop.set)
    try:
        config = SchedulerConfig.from_env(**options)
        setup_logging(config.log_level, config.log_format)
        Scheduler(config, stop=stop).run()
    except RedbatchError as exc:
        fail(exc)
