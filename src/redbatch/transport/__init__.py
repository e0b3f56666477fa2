"""Talking to Redis: connections and clients (single node or cluster), what a server can do,
and commands sent on a connection driven here (scripts packed by hiredis, replies read later).

protocol/ says what goes on the wire; this package says how it gets there.
"""
