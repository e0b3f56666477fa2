"""``redbatch inspect`` (being written)."""

from __future__ import annotations

import click


@click.command("inspect")
def command() -> None:
    """(being written)"""
    raise click.UsageError("redbatch inspect is not available yet")
