"""Payload codecs: msgpack (default, with a numpy extension type) and JSON.

Decoding never executes code (data formats only, no object serialization), bounds sizes and
nesting, and turns anything it cannot read into ``PayloadError`` with a reason. numpy is
optional: it is imported only when an array is encoded or decoded. torch tensors are encoded
as numpy arrays (``tensors``: torch itself is never imported here). msgpack's own timestamp
extension (-1) decodes to ``msgpack.Timestamp``, plain data; every other extension code but
ours is refused.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from redbatch.errors import ConfigError, PayloadError, PayloadTooLarge
from redbatch.protocol import tensors

MSGPACK = "msgpack"
JSON = "json"
CONTENT_TYPES = (MSGPACK, JSON)

# msgpack extension type code for numpy arrays: body = msgpack [dtype.str, shape, raw bytes].
NDARRAY_EXT = 1
# Only plain numeric kinds travel as arrays: object, void and datetime dtypes could smuggle
# Python objects or need interpretation we do not want in a decoder.
_ARRAY_KINDS = frozenset("biufc")
# The dtype must be spelled as the encoder spells it (dtype.str: byte order, kind, item size),
# so hostile text never reaches numpy's dtype parser (comma strings, field lists, sub-arrays).
_DTYPE_STR = re.compile(r"[<>|=]?[biufc][0-9]{1,2}")
_MAX_DIMS = 32
# msgpack's C unpacker keeps a fixed stack: input nested deeper raises StackError.
MSGPACK_MAX_DEPTH = 1024
# A user's hook for types the codec does not know: ``encoder(obj)`` returns something the codec
# can carry (msgpack's ``default=``); ``decoder(mapping)`` may replace each decoded map
# (msgpack's ``object_hook``).
Encoder = Callable[[Any], Any]
Decoder = Callable[[dict[Any, Any]], Any]
# Error messages echo at most this much of a hostile value (they reach logs and results).
_ECHO_CHARS = 40
# What json and msgpack raise for an object they cannot carry.
_UNENCODABLE = (TypeError, ValueError, OverflowError, RecursionError)


@dataclass(frozen=True)
class Limits:
    """Size bounds applied when encoding and decoding one payload."""

    max_payload_bytes: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_payload_bytes < 1:
            raise ConfigError("max_payload_bytes must be a positive number of bytes")


DEFAULT_LIMITS = Limits()


def check_content_type(ct: str) -> str:
    if ct not in CONTENT_TYPES:
        raise PayloadError(f"unknown content type {ct!r}: use one of {', '.join(CONTENT_TYPES)}")
    return ct


def encode(
    obj: Any, ct: str = MSGPACK, limits: Limits = DEFAULT_LIMITS, encoder: Encoder | None = None
) -> bytes:
    """Encode one payload; raises PayloadError for what the content type cannot carry.

    ``encoder`` is asked about each object the codec itself cannot carry (after numpy).
    """
    check_content_type(ct)
    try:
        if ct == JSON:
            data = json.dumps(
                obj, default=_with_hook(_json_default, encoder), separators=(",", ":")
            ).encode()
        else:
            data = msgpack.packb(
                obj, default=_with_hook(_msgpack_default, encoder), use_bin_type=True
            )
    except _UNENCODABLE as exc:
        raise PayloadError(f"cannot encode payload as {ct}: {exc}") from None
    _check_size(len(data), limits)
    return bytes(data)


def encode_many(
    objs: Sequence[Any],
    cts: Sequence[str],
    limits: Limits = DEFAULT_LIMITS,
    encoder: Encoder | None = None,
) -> list[bytes | PayloadError]:
    """``encode`` of each (obj, ct), the PayloadError it would raise in place of what cannot
    be encoded. A batch's msgpack payloads share one Packer: ``packb`` builds one per call,
    which costs several times what packing a small result does."""
    pack = msgpack.Packer(default=_with_hook(_msgpack_default, encoder), use_bin_type=True).pack
    out: list[bytes | PayloadError] = []
    for obj, ct in zip(objs, cts, strict=True):
        try:
            if ct != MSGPACK:
                out.append(encode(obj, ct, limits, encoder))
                continue
            try:
                data = pack(obj)  # a Packer that raised has reset itself (msgpack >= 1.0)
            except _UNENCODABLE as exc:
                raise PayloadError(f"cannot encode payload as {ct}: {exc}") from None
            _check_size(len(data), limits)
            out.append(data)
        except PayloadError as exc:
            out.append(exc)
    return out


def decode(
    data: bytes, ct: str = MSGPACK, limits: Limits = DEFAULT_LIMITS, decoder: Decoder | None = None
) -> Any:
    """Decode one payload; raises PayloadError (never anything else) for bad input.

    ``decoder``, when given, is called with each decoded map and its return value replaces it.
    """
    check_content_type(ct)
    _check_size(len(data), limits)
    try:
        if ct == JSON:
            return json.loads(data, object_hook=decoder)
        # unpackb bounds every string, bin, array and map length by len(data), which
        # _check_size already bounded (it takes no max_buffer_size argument).
        return msgpack.unpackb(
            data, raw=False, strict_map_key=False, ext_hook=_ext_hook, object_hook=decoder
        )
    except PayloadError:
        raise
    except msgpack.StackError:
        raise PayloadError(
            f"cannot decode {ct} payload: nested deeper than {MSGPACK_MAX_DEPTH} levels"
        ) from None
    except RecursionError:
        # json's C scanner counts its nesting against Python's recursion limit.
        raise PayloadError(f"cannot decode {ct} payload: nested too deeply") from None
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        # ExtraData, FormatError, UnicodeDecodeError, unhashable map keys, over-long integer
        # literals (Python refuses more than 4300 digits) all land here.
        raise PayloadError(f"cannot decode {ct} payload: {type(exc).__name__}: {exc}") from None


def _check_size(size: int, limits: Limits) -> None:
    if size > limits.max_payload_bytes:
        raise PayloadTooLarge(
            f"payload is {size} bytes, over the limit of {limits.max_payload_bytes} bytes"
        )


def _numpy() -> Any:
    try:
        import numpy  # noqa: PLC0415 - optional dependency, imported on first use
    except ImportError:  # pragma: no cover - exercised only without numpy installed
        raise PayloadError("payload holds a numpy array but numpy is not installed") from None
    return numpy


def _is_numpy(obj: Any) -> bool:
    return type(obj).__module__ == "numpy"


def _msgpack_default(obj: Any) -> Any:
    if tensors.is_tensor(obj):
        obj = tensors.to_numpy(obj)
    if _is_numpy(obj):
        np = _numpy()
        if isinstance(obj, np.ndarray):
            return _pack_ndarray(obj)
        if isinstance(obj, np.generic):
            return obj.item()
    raise TypeError(f"cannot serialize object of type {type(obj).__name__}")


def _with_hook(builtin: Encoder, encoder: Encoder | None) -> Encoder:
    """The codec's own ``default`` first, then the user's hook for what it refuses."""
    if encoder is None:
        return builtin

    def default(obj: Any) -> Any:
        try:
            return builtin(obj)
        except TypeError:
            converted = encoder(obj)
        # msgpack asks default= once per object: a hook that answers with an array or a
        # tensor needs the codec's own conversion applied to that answer here.
        try:
            return builtin(converted)
        except TypeError:
            return converted

    return default


def _json_default(obj: Any) -> Any:
    # JSON has no array type of its own: a JSON client gets lists and plain numbers.
    if tensors.is_tensor(obj):
        obj = tensors.to_numpy(obj)
    if _is_numpy(obj) and hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _pack_ndarray(array: Any) -> msgpack.ExtType:
    if array.dtype.kind not in _ARRAY_KINDS:
        raise TypeError(f"numpy dtype {array.dtype} cannot travel (numeric dtypes only)")
    np = _numpy()
    body = msgpack.packb(
        [array.dtype.str, list(array.shape), np.ascontiguousarray(array).tobytes()],
        use_bin_type=True,
    )
    return msgpack.ExtType(NDARRAY_EXT, body)


def _ext_hook(code: int, data: bytes) -> Any:
    if code != NDARRAY_EXT:
        raise PayloadError(f"unknown msgpack extension type {code}")
    try:
        dtype_str, shape, raw = msgpack.unpackb(data, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise PayloadError("malformed numpy array extension") from None
    return _unpack_ndarray(dtype_str, shape, raw)


def _unpack_ndarray(dtype_str: Any, shape: Any, raw: Any) -> Any:
    np = _numpy()
    shape_ok = (
        isinstance(shape, list)
        and len(shape) <= _MAX_DIMS
        and all(isinstance(n, int) and n >= 0 for n in shape)
    )
    if not (isinstance(dtype_str, str) and shape_ok and isinstance(raw, bytes)):
        raise PayloadError("malformed numpy array extension")
    if not _DTYPE_STR.fullmatch(dtype_str):
        raise PayloadError(
            f"numpy dtype {_echo(dtype_str)} is not allowed (numeric dtypes only, "
            f"spelled like '<f4')"
        )
    try:
        dtype = np.dtype(dtype_str)
    except (TypeError, ValueError, Warning):
        # Warning: deprecated aliases such as 'a4' warn, which is an exception under -W error.
        raise PayloadError(f"unknown numpy dtype {dtype_str!r}") from None
    if dtype.kind not in _ARRAY_KINDS:
        raise PayloadError(f"numpy dtype {dtype_str!r} is not allowed (numeric dtypes only)")
    if math.prod(shape) * dtype.itemsize != len(raw):
        raise PayloadError(f"numpy array of shape {shape} and dtype {dtype_str} has wrong size")
    try:
        # frombuffer shares the bytes object: no copy; the array is read-only.
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    except ValueError as exc:
        # An empty array may claim dimensions numpy cannot index, e.g. (0, 2**63).
        raise PayloadError(f"numpy array of shape {shape} is not possible: {exc}") from None


def _echo(value: str) -> str:
    """``value`` quoted for an error line, cut short: hostile input may be megabytes long."""
    if len(value) <= _ECHO_CHARS:
        return repr(value)
    return repr(value[:_ECHO_CHARS]) + f"... ({len(value)} characters)"
