"""The ``redbatch`` command: a group whose commands are loaded when used (click's
lazy-loading group), one module each in this package. What they share (exit codes, the
one-line failure, connection options, JSON output) is in ``redbatch.cli.common``.
"""

from __future__ import annotations

import importlib
from typing import Any

import click
import redis

from redbatch.cli.common import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_UNREACHABLE, fail
from redbatch.errors import ConnectionFailed, RedbatchError
from redbatch.transport.connection import acl_refusal

# Command name -> the module of this package whose ``command`` it is.
COMMANDS = {
    "bench": "redbatch.cli.bench",
    "dashboard": "redbatch.cli.dashboard",
    "demo": "redbatch.cli.demo",
    "dlq": "redbatch.cli.dlq",
    "inspect": "redbatch.cli.inspect",
    "queue": "redbatch.cli.queue",
    "scheduler": "redbatch.cli.scheduler",
    "status": "redbatch.cli.status",
    "submit": "redbatch.cli.submit",
    "worker": "redbatch.cli.worker",
}


class LazyGroup(click.Group):
    """Imports a command's module only when the command runs (or --help lists it), so
    ``redbatch worker`` does not load rich tables, and ``redbatch status`` no model code.
    Every command: a bad option, or a Redis user lacking a permission (ACL), gets one line,
    not a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is None:
            return None
        command = importlib.import_module(module).command
        assert isinstance(command, click.Command), module
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RedbatchError as exc:  # a setting's option could not be read
            fail(exc)
        except redis.ResponseError as exc:
            reason = acl_refusal(exc)
            if reason is None:
                raise
            fail(ConnectionFailed(reason))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="redbatch")
def main() -> None:
    """redbatch: ML inference requests over Redis Streams, run in micro-batches.

    Settings come from options or REDBATCH_* environment variables, e.g. REDBATCH_REDIS_URL
    (default redis://localhost:6379/0); an option wins over its variable. An unknown
    REDBATCH_* variable is an error.
    """


__all__ = ["COMMANDS", "EXIT_CONFIG", "EXIT_INTERRUPTED", "EXIT_UNREACHABLE", "fail", "main"]
