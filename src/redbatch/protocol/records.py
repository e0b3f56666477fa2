"""Field names of the records other processes read besides entries (docs/wire-contract.md):
a request's result hash, a worker's heartbeat hash, and what a dead letter adds to the
entry's own fields. Nothing else spells these names (the Lua scripts list theirs in their
headers)."""

from __future__ import annotations

# The result hash <ns>:{Q}:result:<id>: status, then payload (+ ct unless msgpack) on ok or
# error otherwise, then where and when it ran.
RESULT_STATUS = "status"
RESULT_PAYLOAD = "payload"
RESULT_CT = "ct"
RESULT_ERROR = "error"
RESULT_WORKER = "worker"
RESULT_ATTEMPT = "attempt"
RESULT_ENQ = "enq"
RESULT_START = "start"
RESULT_END = "end"
RESULT_BATCH = "batch"

# The heartbeat hash <ns>:{Q}:worker:<name>, renewed by a live worker.
BEAT_PID = "pid"
BEAT_HOST = "host"
BEAT_QUEUES = "queues"  # space separated
BEAT_STARTED = "started"  # ms
BEAT_BATCHES = "batches"
BEAT_ITEMS = "items"
BEAT_BUSY_US = "busy_us"  # µs its handler ran since it started
BEAT_LAST_BATCH = "last_batch"  # ms
BEAT_BATCH_TIMEOUT = "batch_timeout"  # s: held longer (plus a margin) = hung
BEAT_STATE = "state"
BEAT_BUSY = "busy"  # "1" while a batch runs

# A dead letter: the entry's fields (when it had any) plus these.
DEAD_REASON = "reason"
DEAD_MEMBER = "member"  # a delayed retry that could not be read, raw
DEAD_REPLAYED = "replayed"  # times replayed
DEAD_REPLAYED_AT = "replayed_at"  # ms
