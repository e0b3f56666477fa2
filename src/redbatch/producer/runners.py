"""Where a plan meets Redis: ``run`` for sync clients, ``run_async`` for asyncio ones. Each
maps a Redis error to ConnectionFailed (or RedisRefused) here, once; the original error
stays reachable as the failure's ``__context__`` (the reply listener reads it to tell a
lost connection from a refusal).
"""

from __future__ import annotations

from typing import Any, TypeVar

import redis

from redbatch.producer.plans import Plan
from redbatch.protocol.scripts import Scripts
from redbatch.transport.connection import redis_failure
from redbatch.transport.deferred import bounded_command

T = TypeVar("T")


def run(client: Any, plan: Plan[T], scripts: Scripts | None = None, at: float | None = None) -> T:
    """Send ``plan`` on ``client``; ``at`` (``time.monotonic``) bounds script calls and
    ``bounded`` commands of a plain sync client."""
    try:
        replies = _send(client, plan, scripts, at)
    except redis.RedisError as exc:
        raise redis_failure(plan.what, exc) from None
    return plan.parse(replies)


def _send(client: Any, plan: Plan[Any], scripts: Scripts | None, at: float | None) -> list[Any]:
    if plan.script is not None:
        assert scripts is not None
        return [plan.call_script(scripts, at)]
    if plan.bounded:
        return [bounded_command(client, plan.commands[0], at)]
    if len(plan.commands) == 1 and plan.raise_on_error and not plan.transaction:
        return [client.execute_command(*plan.commands[0])]
    return list(plan.pipeline(client).execute(raise_on_error=plan.raise_on_error))


async def run_async(client: Any, plan: Plan[T], scripts: Scripts | None = None) -> T:
    """``run`` for an asyncio client; the caller bounds it (``asyncio.timeout``)."""
    try:
        if plan.script is not None:
            assert scripts is not None
            replies = [await plan.call_script(scripts)]
        elif len(plan.commands) == 1 and plan.raise_on_error and not plan.transaction:
            replies = [await client.execute_command(*plan.commands[0])]
        else:
            replies = await plan.pipeline(client).execute(raise_on_error=plan.raise_on_error)
    except redis.RedisError as exc:
        raise redis_failure(plan.what, exc) from None
    return plan.parse(replies)
