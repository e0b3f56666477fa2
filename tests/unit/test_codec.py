"""Payload codecs: msgpack with a numpy extension type, and JSON (docs/wire-contract.md)."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redbatch.errors import ConfigError, PayloadError, PayloadTooLarge
from redbatch.protocol import codec
from redbatch.protocol.codec import (
    JSON,
    MSGPACK,
    NDARRAY_EXT,
    Limits,
    check_content_type,
    decode,
    encode,
)

# JSON-like values both codecs carry unchanged (finite floats: JSON has no NaN/inf).
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=30,
)


def _ext(dtype: Any, shape: Any, raw: Any, code: int = NDARRAY_EXT) -> bytes:
    body = msgpack.packb([dtype, shape, raw], use_bin_type=True)
    return msgpack.packb(msgpack.ExtType(code, body), use_bin_type=True)


# --- round trips -------------------------------------------------------------------------


@given(json_values)
def test_msgpack_round_trip(value: Any) -> None:
    assert decode(encode(value, MSGPACK), MSGPACK) == value


@given(json_values)
def test_json_round_trip(value: Any) -> None:
    assert decode(encode(value, JSON), JSON) == value


def test_default_content_type_is_msgpack() -> None:
    data = encode({"x": 1})
    assert msgpack.unpackb(data) == {"x": 1}
    assert decode(data) == {"x": 1}


def test_json_encoding_is_plain_compact_json() -> None:
    assert encode({"x": [1, "a"]}, JSON) == b'{"x":[1,"a"]}'
    # A payload added by hand with redis-cli decodes.
    assert decode(b'{"x": 1}', JSON) == {"x": 1}


def test_msgpack_bytes_travel_as_bin() -> None:
    blob = bytes(range(256))
    assert decode(encode({"b": blob})) == {"b": blob}


def test_msgpack_non_string_map_keys_decode() -> None:
    assert decode(encode({1: "a", 2.5: "b"})) == {1: "a", 2.5: "b"}


ARRAYS = [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.arange(10, dtype=np.int64),
    np.array([1.5, -2.25, 3.0], dtype=np.float16),
    np.array([1 + 2j, -3.5j], dtype=np.complex128),
    np.array([1 + 2j], dtype=np.complex64),
    np.array([True, False, True]),
    np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
    np.array([-1, 0, 127], dtype=np.int8),
    np.array(3.5, dtype=np.float64),  # 0-d
    np.array(7, dtype=np.int32),  # 0-d
    np.zeros((0,), dtype=np.float32),  # empty
    np.zeros((3, 0, 2), dtype=np.int16),  # empty with other dims
    np.arange(5, dtype=">f8"),  # non-native byte order
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype.str}{a.shape}")
def test_ndarray_round_trip(array: np.ndarray) -> None:
    out = decode(encode(array))
    assert isinstance(out, np.ndarray)
    assert out.dtype == array.dtype
    assert out.shape == array.shape
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize(
    "view",
    [
        np.arange(20, dtype=np.float64)[::3],
        np.arange(24, dtype=np.int32).reshape(4, 6)[:, 1::2],
        np.arange(24, dtype=np.int32).reshape(4, 6).T,
        np.arange(12, dtype=np.float32).reshape(3, 4)[::-1],
    ],
)
def test_non_contiguous_array_round_trip(view: np.ndarray) -> None:
    assert not view.flags.c_contiguous
    out = decode(encode(view))
    assert out.shape == view.shape
    np.testing.assert_array_equal(out, view)


def test_array_inside_structure_round_trip() -> None:
    emb = np.linspace(0, 1, 8, dtype=np.float32)
    out = decode(encode({"id": 1, "emb": [emb, emb * 2]}))
    assert out["id"] == 1
    np.testing.assert_array_equal(out["emb"][0], emb)
    np.testing.assert_array_equal(out["emb"][1], emb * 2)


def test_decoded_array_shares_the_buffer_and_is_read_only() -> None:
    out = decode(encode(np.arange(1000, dtype=np.float32)))
    assert out.base is not None  # a view on the received bytes, not a copy
    assert not out.flags.writeable
    with pytest.raises(ValueError):
        out[0] = 1.0


@given(
    st.sampled_from(["<f4", "<f8", "<f2", "<i4", "<u2", "|i1", "|b1", "<c8", "<c16", ">i8"]),
    st.lists(st.integers(min_value=0, max_value=4), max_size=4),
    st.randoms(use_true_random=False),
)
def test_ndarray_round_trip_property(dtype: str, shape: list[int], rnd: Any) -> None:
    dt = np.dtype(dtype)
    raw = bytes(rnd.getrandbits(8) for _ in range(math.prod(shape) * dt.itemsize))
    array = np.frombuffer(raw, dtype=dt).reshape(shape)
    out = decode(encode(array))
    assert out.dtype == dt
    assert out.shape == tuple(shape)
    assert out.tobytes() == array.tobytes()


# --- numpy outside arrays ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scalar", "expected"),
    [
        (np.int64(5), 5),
        (np.int8(-3), -3),
        (np.uint32(7), 7),
        (np.float32(1.5), 1.5),
        (np.float64(2.25), 2.25),
        (np.float16(0.5), 0.5),
        (np.bool_(True), True),
    ],
)
@pytest.mark.parametrize("ct", [MSGPACK, JSON])
def test_numpy_scalars_encode_as_plain_numbers(scalar: Any, expected: Any, ct: str) -> None:
    out = decode(encode({"v": scalar}, ct), ct)["v"]
    assert out == expected
    assert type(out) is type(expected)


def test_msgpack_numpy_scalar_is_a_plain_msgpack_number() -> None:
    assert msgpack.unpackb(encode(np.int64(5))) == 5
    assert encode(np.int64(5)) == msgpack.packb(5)


def test_json_encodes_arrays_as_lists() -> None:
    data = encode({"a": np.arange(4, dtype=np.int32).reshape(2, 2)}, JSON)
    assert json.loads(data) == {"a": [[0, 1], [2, 3]]}
    assert decode(data, JSON) == {"a": [[0, 1], [2, 3]]}


# --- refused on encode ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        np.array([{"a": 1}, None], dtype=object),
        np.array(["a", "b"]),
        np.array([b"a"]),
        np.array(["2020-01-01"], dtype="datetime64[D]"),
        np.zeros(2, dtype=[("a", "i4"), ("b", "f4")]),
    ],
    ids=["object", "unicode", "bytes", "datetime", "structured"],
)
def test_non_numeric_arrays_refused(array: np.ndarray) -> None:
    with pytest.raises(PayloadError, match="dtype"):
        encode(array)


@pytest.mark.parametrize("ct", [MSGPACK, JSON])
def test_unencodable_objects_raise_payload_error(ct: str) -> None:
    with pytest.raises(PayloadError):
        encode({"x": object()}, ct)


def test_json_cannot_carry_bytes() -> None:
    with pytest.raises(PayloadError):
        encode(b"raw", JSON)


@pytest.mark.parametrize("ct", [MSGPACK, JSON])
def test_self_referencing_structure_raises_payload_error(ct: str) -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(PayloadError):
        encode(loop, ct)


# --- crafted extension bodies --------------------------------------------------------------


def test_crafted_well_formed_extension_decodes() -> None:
    out = decode(_ext("<i2", [2], b"\x01\x00\x02\x00"))
    np.testing.assert_array_equal(out, np.array([1, 2], dtype=np.int16))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (_ext("|O", [1], b"\0" * 8), "not allowed"),
        (_ext("O", [1], b"\0" * 8), "not allowed"),
        (_ext("<U1", [1], b"\0" * 4), "not allowed"),
        (_ext("|V4", [1], b"\0" * 4), "not allowed"),
        (_ext("<M8[s]", [1], b"\0" * 8), "not allowed"),
        (_ext("i4,i4", [1], b"\0" * 8), "not allowed"),
        (_ext("<f4", [3], b"\0" * 11), "wrong size"),
        (_ext("<f4", [3], b"\0" * 13), "wrong size"),
        (_ext("<f4", [2, 2], b"\0" * 8), "wrong size"),
        (_ext("<f4", [-1], b""), "malformed"),
        (_ext("<f4", [1.0], b"\0" * 4), "malformed"),
        (_ext("<f4", "ab", b"\0" * 4), "malformed"),
        (_ext("<f4", [[1]], b"\0" * 4), "malformed"),
        (_ext("<f4", [0] * 33, b""), "malformed"),
        (_ext("<f4", [1], "text"), "malformed"),
        (_ext(4, [1], b"\0" * 4), "malformed"),
        (_ext("not-a-dtype", [1], b"\0" * 4), "dtype"),
        (_ext("a4", [1], b"\0" * 4), "dtype"),  # deprecated alias: warns in numpy 2
        (_ext("<f4", [1], b"\0" * 4, code=5), "extension type 5"),
        (_ext("<f4", [1], b"\0" * 4, code=127), "extension type 127"),
        (msgpack.packb(msgpack.ExtType(NDARRAY_EXT, b"\xc1")), "malformed"),
        (msgpack.packb(msgpack.ExtType(NDARRAY_EXT, b"")), "malformed"),
        (msgpack.packb(msgpack.ExtType(NDARRAY_EXT, msgpack.packb(7))), "malformed"),
        (msgpack.packb(msgpack.ExtType(NDARRAY_EXT, msgpack.packb([1, 2]))), "malformed"),
    ],
)
def test_crafted_extensions_rejected(data: bytes, match: str) -> None:
    with pytest.raises(PayloadError, match=match):
        decode(data)


# --- size limits ---------------------------------------------------------------------------


def test_limits_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        Limits(max_payload_bytes=0)


@pytest.mark.parametrize("ct", [MSGPACK, JSON])
def test_oversized_payload_refused_on_encode(ct: str) -> None:
    limits = Limits(max_payload_bytes=100)
    assert decode(encode("x" * 50, ct, limits), ct, limits) == "x" * 50
    with pytest.raises(PayloadTooLarge, match="100"):
        encode("x" * 200, ct, limits)


def test_oversized_array_refused_on_encode() -> None:
    with pytest.raises(PayloadTooLarge):
        encode(np.zeros(100, dtype=np.float64), limits=Limits(max_payload_bytes=500))


@pytest.mark.parametrize("ct", [MSGPACK, JSON])
def test_oversized_payload_refused_on_decode(ct: str) -> None:
    data = encode("x" * 200, ct)
    with pytest.raises(PayloadTooLarge):
        decode(data, ct, Limits(max_payload_bytes=100))


def test_payload_exactly_at_limit_passes() -> None:
    data = encode("x" * 90)
    limits = Limits(max_payload_bytes=len(data))
    assert encode("x" * 90, limits=limits) == data
    assert decode(data, limits=limits) == "x" * 90


def test_payload_too_large_is_a_payload_error() -> None:
    assert issubclass(PayloadTooLarge, PayloadError)


def test_length_header_claiming_huge_array_is_refused_cheaply() -> None:
    # array32 header announcing 2**32-1 elements followed by nothing.
    with pytest.raises(PayloadError):
        decode(b"\xdd\xff\xff\xff\xff")
    with pytest.raises(PayloadError):
        decode(b"\xc6\xff\xff\xff\xff")  # bin32 of 4 GiB


# --- garbage in ----------------------------------------------------------------------------


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_msgpack_garbage_raises_only_payload_error(data: bytes) -> None:
    with contextlib.suppress(PayloadError):
        decode(data, MSGPACK)


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_json_garbage_raises_only_payload_error(data: bytes) -> None:
    with contextlib.suppress(PayloadError):
        decode(data, JSON)


@given(st.binary(min_size=1, max_size=32))
def test_msgpack_array_ext_with_random_body_raises_only_payload_error(body: bytes) -> None:
    with contextlib.suppress(PayloadError):
        decode(msgpack.packb(msgpack.ExtType(NDARRAY_EXT, body)))


@pytest.mark.parametrize(
    "data", [b"\xc1", b"\x92\x01", b"\x01\x02", b"\xa3ab", b"\xa2\xff\xfe", b"\x81\x91\x01\x02"]
)
def test_specific_msgpack_garbage_raises_payload_error(data: bytes) -> None:
    with pytest.raises(PayloadError):
        decode(data)


@pytest.mark.parametrize("data", [b"", b"{", b"\xff\xfe", b"[1,]", b"01", b'{"a" 1}'])
def test_specific_json_garbage_raises_payload_error(data: bytes) -> None:
    with pytest.raises(PayloadError):
        decode(data, JSON)


def test_deeply_nested_msgpack_raises_payload_error() -> None:
    with pytest.raises(PayloadError):
        decode(b"\x91" * 100_000 + b"\xc0")


def test_deeply_nested_json_raises_payload_error() -> None:
    with pytest.raises(PayloadError):
        decode(b"[" * 100_000 + b"]" * 100_000, JSON)


def test_deeply_nested_value_refused_on_encode() -> None:
    value: Any = None
    for _ in range(100_000):
        value = [value]
    with pytest.raises(PayloadError):
        encode(value)


# --- content types -------------------------------------------------------------------------


@pytest.mark.parametrize("ct", ["", "pickle", "MSGPACK", "application/json", None])
def test_unknown_content_type_raises_payload_error(ct: Any) -> None:
    with pytest.raises(PayloadError, match="content type"):
        encode(1, ct)
    with pytest.raises(PayloadError, match="content type"):
        decode(b"\x01", ct)
    with pytest.raises(PayloadError):
        check_content_type(ct)


def test_known_content_types() -> None:
    assert check_content_type("msgpack") == MSGPACK
    assert check_content_type("json") == JSON


class _Point:
    def __init__(self, x: int) -> None:
        self.x = x


@pytest.mark.parametrize("ct", [codec.MSGPACK, codec.JSON])
def test_an_encoder_hook_carries_types_the_codec_does_not_know(ct: str) -> None:
    data = codec.encode({"p": _Point(3)}, ct, encoder=lambda obj: {"__point__": obj.x})

    def decoder(mapping: dict[object, object]) -> object:
        return _Point(mapping["__point__"]) if "__point__" in mapping else mapping  # type: ignore[arg-type]

    decoded = codec.decode(data, ct, decoder=decoder)
    assert isinstance(decoded["p"], _Point) and decoded["p"].x == 3


def test_without_a_hook_an_unknown_type_is_still_a_payload_error() -> None:
    with pytest.raises(PayloadError, match="_Point"):
        codec.encode(_Point(1))


def test_encode_many_answers_what_encode_does_each_in_its_place() -> None:
    """One Packer for a batch: a value it cannot pack (or too big) takes only its own place,
    with the error ``encode`` raises, and the Packer goes on cleanly after it."""
    limits = codec.Limits(max_payload_bytes=64)
    objs = [{"a": 1}, object(), "x" * 100, [1, 2], {"b": 2}, 2**70]
    cts = [MSGPACK, MSGPACK, MSGPACK, JSON, MSGPACK, MSGPACK]
    got = codec.encode_many(objs, cts, limits)
    for obj, ct, answer in zip(objs, cts, got, strict=True):
        try:
            expected: bytes | PayloadError = codec.encode(obj, ct, limits)
        except PayloadError as exc:
            expected = exc
        if isinstance(expected, PayloadError):
            assert type(answer) is type(expected) and str(answer) == str(expected)
        else:
            assert answer == expected
