"""Redis ACL users for each redbatch role, and a redis-server that runs with them only.

``ROLE_COMMANDS`` is the minimal command list of each role, found by reading the code and
proved by tests/integration/test_acl.py (a full round trip with ``ACL LOG`` empty after it);
docs/security.md quotes these lines. Commands a Lua script runs are checked
against the user who called the script, so they are in the caller's list.
"""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from helpers.servers import suite_server
from redbatch.embedded import EmbeddedRedis

_HOST = "127.0.0.1"
ADMIN = "admin"

# Every role: PING (start-up check, redis-py's health check of an idle connection), scripts
# run by SHA and loaded on a NOSCRIPT reply, pipelines as MULTI/EXEC transactions, and CLIENT
# SETNAME: every connection names itself (redbatch:<role>:<name>) when it opens.
_COMMON = "+ping +evalsha +script|load +multi +exec +client|setname"
# Redis 7.2+ only: redis-py names itself on connect with CLIENT SETINFO and ignores a refusal,
# which would still fill ACL LOG. Redis 7.0 has no such command (and rejects the rule).
SETINFO = "+client|setinfo"
# Registering a queue and creating its consumer groups (protocol/streams.py).
_QUEUE = "+sadd +xgroup|create"
# Commands the Lua scripts run, per script (checked against the caller's ACL).
# admit, admit_once (TIME: Redis stamps enq and deadline; the sorted set of applied admissions)
_ADMIT = "+xadd +xlen +exists +hmget +pexpire +rpush +sadd +time +zscore +zadd +zremrangebyscore"
_LEAVE = "+exists +srem +scard +sadd +set"
_FINISH = "+del +exists +hmget +hset +pexpire +rpush +smembers +xack +xadd +xdel +zadd +type"
_REQUEUE = "+del +exists +hset +pexpire +rpush +smembers +xack +xadd +xdel +xpending +xrange +type"
_REMOVE_CONSUMER = "+exists +xgroup|delconsumer +xpending"
_PUSH_OUTCOME = "+hmget +pexpire +rpush"
_MOVE_DUE = "+xadd +zrangebyscore +zrem +type"
_REPLAY = "+del +hget +xadd +xdel +xrange"


def _commands(*groups: str) -> str:
    """The groups' commands, each once, in order."""
    return " ".join(dict.fromkeys(" ".join(groups).split()))


ROLE_COMMANDS: dict[str, str] = {
    "producer": _commands(_COMMON, _QUEUE, _ADMIT, _LEAVE, "+blmpop +hgetall +set"),
    "worker": _commands(
        _COMMON,
        _QUEUE,
        _FINISH,
        _REQUEUE,
        _REMOVE_CONSUMER,
        _PUSH_OUTCOME,
        "+xreadgroup +xclaim +mget +hset +hincrby +expire +del +time",
    ),
    "scheduler": _commands(
        _COMMON,
        _MOVE_DUE,
        _REQUEUE,
        _REMOVE_CONSUMER,
        _PUSH_OUTCOME,
        "+exists +hget +xlen +xpending +xrange +smembers +xinfo|consumers +zcard +time "
        # its index of queues holding work (rb:watch) and the sweep of rb:queues
        "+zadd +zremrangebyscore +zrangebyscore +scard +sscan +xinfo|groups",
    ),
    "operator": _commands(
        _COMMON,
        _QUEUE,
        _REPLAY,
        "+scan +zscan +smembers +exists +pttl +hgetall +hmget +xlen +xrange +xrevrange +xtrim "
        "+zcard +xpending +xinfo|groups +xinfo|consumers +zrangebyscore",  # status: rb:watch
    ),
}


def acl_rule(role: str, password: str, namespace: str = "rb", *, setinfo: bool = True) -> str:
    """The ACL SETUSER rule of ``role``: its password, its namespace's keys, no channels."""
    rule = f"on >{password} resetkeys ~{namespace}:* resetchannels -@all {ROLE_COMMANDS[role]}"
    return f"{rule} {SETINFO}" if setinfo else rule


def has_setinfo(client: redis.Redis) -> bool:
    """Whether the server knows CLIENT SETINFO (Redis 7.2+)."""
    version = str(client.info("server")["redis_version"])
    major, minor = (int(part) for part in version.split(".")[:2])
    return (major, minor) >= (7, 2)


def user_url(port: int, user: str, password: str) -> str:
    return f"redis://{user}:{password}@{_HOST}:{port}/0"


class AclRedis(EmbeddedRedis):
    """A private redis-server whose ``default`` user is off: every client must log in.

    ``users`` maps a user name to its ACL rule (as ``acl_rule`` builds); an ``admin`` user
    with every permission exists for the test's own checks (``ACL LOG``, key listings).
    """

    def __init__(self, users: dict[str, str], admin_password: str = "admin-pw") -> None:
        # One argument per ACL token: redis-server quotes an argument holding spaces.
        args = ["--user", "default", "off", "--user", ADMIN, "on", f">{admin_password}"]
        args += ["~*", "&*", "+@all"]
        for name, rule in users.items():
            args += ["--user", name, *rule.split()]
        super().__init__(extra_args=args, command=suite_server().command)
        self.admin_password = admin_password

    def url_for(self, user: str, password: str) -> str:
        return user_url(self.port, user, password)

    def admin(self) -> redis.Redis:
        return redis.Redis.from_url(self.url_for(ADMIN, self.admin_password))

    def _answers_ping(self, pid: int) -> bool:
        client = redis.Redis.from_url(
            self.url_for(ADMIN, self.admin_password),
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            info = client.info("server")
        except redis.RedisError:
            return False
        finally:
            client.close()
        return bool(info.get("process_id") == pid)
