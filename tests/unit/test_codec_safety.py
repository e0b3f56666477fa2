"""The payload decoder against hostile input: it returns data or raises PayloadError with a
reason, never runs code, never anything else (issue 6)."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redbatch.errors import PayloadError
from redbatch.protocol.codec import JSON, MSGPACK, MSGPACK_MAX_DEPTH, NDARRAY_EXT, decode, encode

SRC = Path(__file__).resolve().parents[2] / "src" / "redbatch"


def _ext(dtype: Any, shape: Any, raw: Any, code: int = NDARRAY_EXT) -> bytes:
    body = msgpack.packb([dtype, shape, raw], use_bin_type=True)
    return msgpack.packb(msgpack.ExtType(code, body), use_bin_type=True)


# --- no code execution -----------------------------------------------------------------------


def test_no_module_of_redbatch_mentions_pickle() -> None:
    offenders = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if re.search(r"pickle", path.read_text(encoding="utf-8"), re.IGNORECASE)
    ]
    assert offenders == []


def test_a_pickle_stream_is_not_read_as_an_object() -> None:
    # The opening of a pickle protocol 4 stream; a decoder that unpickled would build an object.
    pickled = b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93."
    with pytest.raises(PayloadError, match="cannot decode"):
        decode(pickled, MSGPACK)
    with pytest.raises(PayloadError, match="cannot decode"):
        decode(pickled, JSON)


def test_object_dtype_array_is_refused_with_a_reason() -> None:
    with pytest.raises(PayloadError, match="not allowed"):
        decode(_ext("|O8", [1], b"\0" * 8))


# --- nesting -------------------------------------------------------------------------------


def test_msgpack_nesting_up_to_the_limit_decodes() -> None:
    value = decode(b"\x91" * MSGPACK_MAX_DEPTH + b"\x2a")
    for _ in range(MSGPACK_MAX_DEPTH):
        value = value[0]
    assert value == 42


@pytest.mark.parametrize("opener", [b"\x91", b"\x81\x00"])  # one-element arrays, maps {0: ...}
def test_msgpack_nested_past_the_limit_says_so(opener: bytes) -> None:
    with pytest.raises(PayloadError, match=f"nested deeper than {MSGPACK_MAX_DEPTH} levels"):
        decode(opener * (MSGPACK_MAX_DEPTH + 1) + b"\xc0")


def test_deep_nesting_inside_an_array_extension_is_refused() -> None:
    body = b"\x91" * 5000 + b"\xc0"
    with pytest.raises(PayloadError, match="malformed numpy array"):
        decode(msgpack.packb(msgpack.ExtType(NDARRAY_EXT, body)))


@pytest.mark.parametrize("pair", [(b"[", b"]"), (b'{"a":', b"}")])
def test_json_nested_too_deeply_says_so(pair: tuple[bytes, bytes]) -> None:
    opener, closer = pair
    with pytest.raises(PayloadError, match="nested too deeply"):
        decode(opener * 50_000 + b"1" + closer * 50_000, JSON)


# --- sizes and odd values --------------------------------------------------------------------


def test_json_integer_with_too_many_digits_is_refused() -> None:
    with pytest.raises(PayloadError, match="cannot decode json"):
        decode(b"1" * 5000, JSON)


def test_msgpack_map_with_unhashable_key_is_refused() -> None:
    # {[1]: 2}: a map whose key is an array.
    with pytest.raises(PayloadError, match="unhashable"):
        decode(b"\x81\x91\x01\x02")


def test_empty_array_claiming_impossible_dimensions_is_refused() -> None:
    with pytest.raises(PayloadError, match="not possible"):
        decode(_ext("<f4", [0, 2**63], b""))


def test_array_shape_past_the_size_of_its_bytes_is_refused() -> None:
    with pytest.raises(PayloadError, match="wrong size"):
        decode(_ext("<f8", [2**40], b"\0" * 8))


def test_hostile_dtype_text_is_echoed_cut_short() -> None:
    hostile = "x" * 100_000
    with pytest.raises(PayloadError, match="not allowed") as caught:
        decode(_ext(hostile, [1], b"\0"))
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize(
    "dtype",
    ["float64", "int", "i4,i4", "(2,)<i4", "[('a', '<i4')]", "<f4 ", "<U4", "|S4", "<M8[s]"],
)
def test_only_plain_numeric_dtype_strings_are_read(dtype: str) -> None:
    with pytest.raises(PayloadError, match="not allowed"):
        decode(_ext(dtype, [1], b"\0" * 8))


@pytest.mark.parametrize("dtype", ["|b1", "|i1", "<u2", ">i4", "<f8", "<c8", "=f4"])
def test_plain_numeric_dtypes_of_any_byte_order_decode(dtype: str) -> None:
    expected = np.arange(3).astype(np.dtype(dtype))
    out = decode(_ext(dtype, [3], expected.tobytes()))
    assert out.dtype == expected.dtype
    np.testing.assert_array_equal(out, expected)


# --- extension codes -------------------------------------------------------------------------


@pytest.mark.parametrize("code", [c for c in range(-128, 128) if c not in (-1, NDARRAY_EXT)])
def test_every_foreign_extension_code_is_refused(code: int) -> None:
    data = b"\xd7" + code.to_bytes(1, "big", signed=True) + b"\0" * 8  # fixext 8
    with pytest.raises(PayloadError, match=f"unknown msgpack extension type {code}"):
        decode(data)


def test_msgpack_timestamp_extension_decodes_to_plain_data() -> None:
    # Type -1 is msgpack's own (the unpacker handles it before any ext hook): a value object.
    stamp = msgpack.Timestamp(1_700_000_000, 5)
    assert decode(msgpack.packb(stamp)) == stamp


def test_malformed_timestamp_extension_is_refused() -> None:
    with pytest.raises(PayloadError, match="cannot decode msgpack"):
        decode(b"\xc7\x03\xff" + b"\0" * 3)  # ext 8 of 3 bytes, type -1


# --- property: anything in, data or PayloadError out ------------------------------------------

_samples = [
    encode({"text": "hello", "ids": [1, 2, 3], "w": 0.5}),
    encode([np.arange(6, dtype=np.float32).reshape(2, 3), {"k": b"\x00\x01"}]),
    encode({"nested": [[[{"a": None}]]]}, JSON),
]


@settings(max_examples=400)
@given(st.binary(max_size=256), st.sampled_from([MSGPACK, JSON]))
def test_random_bytes_decode_or_raise_payload_error(data: bytes, ct: str) -> None:
    with contextlib.suppress(PayloadError):
        decode(data, ct)


@settings(max_examples=400)
@given(
    st.sampled_from(_samples),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=8),
    st.sampled_from([MSGPACK, JSON]),
)
def test_corrupted_valid_payloads_decode_or_raise_payload_error(
    sample: bytes, flips: list[tuple[int, int]], ct: str
) -> None:
    """Near-valid input reaches deeper into the decoder than random bytes do."""
    data = bytearray(sample)
    for position, value in flips:
        data[position % len(data)] = value
    with contextlib.suppress(PayloadError):
        decode(bytes(data), ct)


_msgpack_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what msgpack can carry


@settings(max_examples=300)
@given(
    st.one_of(st.text(max_size=12), _msgpack_ints, st.none(), st.binary(max_size=4)),
    st.lists(_msgpack_ints, max_size=40),
    st.binary(max_size=64),
)
def test_crafted_array_extensions_decode_or_raise_payload_error(
    dtype: Any, shape: list[int], raw: bytes
) -> None:
    with contextlib.suppress(PayloadError):
        out = decode(_ext(dtype, shape, raw))
        assert out.dtype.kind in "biufc"
        assert out.nbytes == len(raw)
