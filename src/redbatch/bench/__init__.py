"""``redbatch bench``: a load generator that sizes a deployment (see ``command``)."""

from redbatch.bench.command import command

__all__ = ["command"]
