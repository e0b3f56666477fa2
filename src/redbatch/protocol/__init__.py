"""The wire contract: key names, entry and result fields, payload codecs and Lua scripts."""

from redbatch.protocol.codec import JSON, MSGPACK, Limits, decode, encode
from redbatch.protocol.fields import Outcome, Request, build_entry, parse_entry
from redbatch.protocol.keys import GROUP, KeySpace, QueueKeys

__all__ = [
    "GROUP",
    "JSON",
    "MSGPACK",
    "KeySpace",
    "Limits",
    "Outcome",
    "QueueKeys",
    "Request",
    "build_entry",
    "decode",
    "encode",
    "parse_entry",
]
