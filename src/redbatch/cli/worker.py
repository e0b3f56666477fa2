"""``redbatch worker QUEUE... --handler MODULE:FUNCTION``: serve queues until stopped."""

from __future__ import annotations

import sys
import threading
from typing import Any

import click

from redbatch.cli.check import CHECK_WORKER
from redbatch.cli.check import check as check_live
from redbatch.cli.common import fail, on_stop_signals, setting_options
from redbatch.config import WorkerConfig
from redbatch.errors import RedbatchError
from redbatch.logconfig import setup as setup_logging
from redbatch.worker import Worker
from redbatch.worker.pool_main import run_pool


@click.command("worker")
@setting_options(WorkerConfig)
@click.option("--check", is_flag=True, help=CHECK_WORKER)
def command(check: bool, **options: Any) -> None:
    """Serve QUEUES with a batch handler until SIGTERM or Ctrl-C (then drain and exit 0)."""
    if check:
        sys.exit(check_live(WorkerConfig, options))
    # Signals first: importing a handler may load a model for a minute, and a SIGTERM then
    # must still mean "stop cleanly", not a kill by the default handler.
    stop = threading.Event()
    on_stop_signals(stop.set)
    try:
        config = WorkerConfig.from_env(**options)
        setup_logging(config.log_level, config.log_format, context={"worker": config.name})
        if config.processes > 1 or config.gpus:
            argv = sys.argv[sys.argv.index("worker") + 1 :]
            sys.exit(run_pool(config, argv, config.processes, config.gpus, stop))
        Worker(config, stop=stop).run()
    except RedbatchError as exc:
        fail(exc)
