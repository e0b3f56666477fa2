"""The producer's chunk feed: each chunk once, in order, attempts never mixed."""

from __future__ import annotations

from redbatch.producer.chunk_feed import ENDED, RAISE, RESTART, ChunkFeed, Restarted
from redbatch.protocol.chunks import Chunk, decode_record, split_records


def c(attempt: int, seq: int) -> Chunk:
    return Chunk("r1", attempt, seq, f"{attempt}.{seq}".encode())


def drain(feed: ChunkFeed, resume: str = RAISE) -> list[object]:
    out: list[object] = []
    while (item := feed.take(resume)) is not None and item is not ENDED:
        out.append(f"restart {item.attempt}" if isinstance(item, Restarted) else item.seq)
    return out


def test_duplicates_and_out_of_order_chunks_come_out_once_in_order() -> None:
    feed = ChunkFeed()
    feed.offer([c(1, 1), c(1, 0), c(1, 0), c(1, 2)])
    assert drain(feed) == [0, 1, 2]
    feed.offer([c(1, 2), c(1, 3)])  # one already handed out
    assert drain(feed) == [3]


def test_a_newer_attempt_is_announced_once_then_read_from_its_start() -> None:
    feed = ChunkFeed()
    feed.offer([c(1, 0), c(1, 1)])
    assert drain(feed) == [0, 1]
    feed.offer([c(2, 0), c(1, 2), c(2, 1)])  # a late chunk of attempt 1 is dropped
    assert drain(feed) == ["restart 2", 0, 1]


def test_restart_mode_goes_on_with_the_new_attempt() -> None:
    feed = ChunkFeed()
    feed.offer([c(1, 0), c(2, 0)])  # attempt 1's unread chunk goes with it
    assert drain(feed, RESTART) == [0]
    assert feed.seen == (2, 0)


def test_a_reader_resuming_after_a_position_skips_what_it_has() -> None:
    feed = ChunkFeed()
    feed.resume_after((1, 2))
    feed.offer([c(1, 1), c(1, 2), c(1, 3)])
    assert drain(feed) == [3]


def test_a_locally_cancelled_feed_hands_out_nothing_more() -> None:
    feed = ChunkFeed()
    feed.offer([c(1, 0)])
    feed.cancelled = True
    assert drain(feed) == []


def test_chunk_and_final_records_are_told_apart() -> None:
    final = b"\x93\xa2r1\xa2ok\xc4\x01x"
    outcomes, chunks = split_records([c(1, 0).encode_reply(), final, b"\x95garbage"])
    assert [o.id for o in outcomes] == ["r1"]
    assert chunks == {"r1": [c(1, 0)]}
    assert decode_record(c(3, 7).encode_reply()) == c(3, 7)


def test_an_end_mark_ends_the_attempt_and_stays() -> None:
    feed = ChunkFeed()
    feed.offer([c(1, 0), Chunk("r1", 1, 1, b"", end=True)])
    assert feed.take(RAISE) == c(1, 0)
    assert feed.at_end
    assert feed.take(RAISE) is ENDED
    assert feed.take(RAISE) is ENDED
    assert feed.seen == (1, 0)
    feed.offer([c(2, 0)])  # a re-run after the end: announced
    assert drain(feed) == ["restart 2", 0]
