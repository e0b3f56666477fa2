"""``redbatch status`` (being written)."""

from __future__ import annotations

import click


@click.command("status")
def command() -> None:
    """(being written)"""
    raise click.UsageError("redbatch status is not available yet")
