"""``redbatch dlq`` (being written)."""

from __future__ import annotations

import click


@click.command("dlq")
def command() -> None:
    """(being written)"""
    raise click.UsageError("redbatch dlq is not available yet")
