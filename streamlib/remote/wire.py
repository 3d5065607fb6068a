"""The wire format between runtimes, version 1: records on a data link, and messages in them.

Nothing here unpickles: a peer can only make us build numbers, strings, lists, dicts, bytes,
numpy arrays of plain dtypes, streamlib's messages and dataclasses of importable modules.

Records
=======
A data link (a TCP connection, see :mod:`.link`) carries *records*. Each is a 16-byte header,
then ``meta_len`` bytes of UTF-8 JSON (an object), then ``payload_len`` bytes of payload::

    offset size field
    0      4    magic        b"SLNK"
    4      1    version      1
    5      1    kind         a Kind below
    6      2    flags        0 (reserved)
    8      4    meta_len     <= MAX_META (1 MiB)
    12     4    payload_len  <= the receiver's max_payload (256 MiB by default)

All integers are big-endian (network order). A record with a wrong magic, an unknown
version or kind, a length over its limit, meta that is not a JSON object, or a payload
that does not match its description is *malformed*: the receiver logs why, counts it and
closes that connection.

Messages (a ``FRAME`` record)
=============================
The meta of a frame is seed 003's chunk::

    {"type": "VideoFrame",          # the class: a built-in message's name, or "module:QualName"
     "timestamp": 12.5, "frame_number": 375, "clock_id": "clock:/cam", "clock_rate": 30.0,
     "format": "rgb24", "width": 1920, "height": 1080,
     "metadata": {...},             # what the format needs beyond those (see below)
     "dropped": 0}                  # messages the sender's queue dropped since the last frame

and the payload is the data. Formats:

``rgb24`` / ``rgba`` / ``gray8``
    a ``VideoFrame`` of uint8 pixels, rows packed, ``height * width * channels`` bytes.
``ndarray``
    a ``VideoFrame`` whose array is of another shape or dtype: ``metadata`` has ``dtype``
    (numpy's ``dtype.str``, e.g. ``"<f4"``) and ``shape``.
``f32le``
    an ``AudioBuffer``: ``width`` channels, ``height`` samples of little-endian float32,
    interleaved; ``metadata`` has ``sample_rate`` and ``shape``.
``h264``
    a ``VideoFrame`` (RGB, even size) compressed with H.264 on a link that agreed to it
    (``compress="h264"``, see :mod:`.link`): the payload is the encoded access unit;
    ``metadata`` has ``keyframe``.
``fields``
    any other message or dataclass: ``metadata["fields"]`` is a *value* (below) holding its
    fields other than the clock metadata.
``value``
    an object that is not a message (a dict, a list, an array ...): ``metadata["value"]``.

A *value* is JSON, with bulk data moved into the payload and referenced by offset:
``{"$bytes": [offset, length]}``, ``{"$nd": [dtype, shape, offset, length]}``,
``{"$tuple": [...]}``, ``{"$dict": [[key, value], ...]}`` (a dict whose keys are not all
plain strings, or that has a ``$`` key), ``{"$dc": "module:QualName", "f": {...}}`` (a
dataclass). What none of these can express (a set, a lambda, an open file, a GPU texture)
cannot cross: :class:`NotSerializable` says which field holds what.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib
import json
import math
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from streamlib.messages import AudioBuffer, DataMessage, KeyEvent, Message, MouseEvent, VideoFrame

__all__ = [
    "HEADER",
    "MAGIC",
    "MAX_META",
    "MAX_PAYLOAD",
    "VERSION",
    "Kind",
    "NotSerializable",
    "WireError",
    "check_sendable",
    "decode_message",
    "encode_message",
    "pack_header",
    "pack_record",
    "parse_header",
    "parse_meta",
]

MAGIC = b"SLNK"
VERSION = 1
HEADER = struct.Struct("!4sBBHII")
MAX_META = 1 << 20
"""Largest JSON meta a record may carry (1 MiB)."""
MAX_PAYLOAD = 256 << 20
"""Default largest payload a receiver accepts (256 MiB: a 4K RGBA frame is 33 MB)."""
MAX_DEPTH = 32
"""Deepest nesting a value may have."""


class Kind(enum.IntEnum):
    """What a record is. The connecting side speaks first after ``CHALLENGE``."""

    CHALLENGE = 1  # accepting side -> connecting side: {"nonce", "node", "host_id", "token": bool}
    HELLO = 2  # connecting side: {"mac", "op": "push"|"pull", ...} (see link.py)
    WELCOME = 3  # accepting side: the link is open {"maxsize", "overflow", "window", "shm", ...}
    REFUSED = 4  # accepting side: {"reason"}, then it closes
    FRAME = 5  # a message (the chunk above)
    CREDIT = 6  # receiver -> sender: {"n": frames it has room for again, "released": [shm slot ids]}
    END = 7  # sender -> receiver: end of stream (a control signal: never dropped)
    PING = 8  # connecting side, when idle
    PONG = 9
    BYE = 10  # either side: closing on purpose (not a failure: do not reconnect)


class WireError(ValueError):
    """Malformed input from a peer: the connection that carried it is closed."""


class NotSerializable(TypeError):
    """A message that cannot cross to another runtime (the text says which field and why)."""


_BUILTIN: dict[str, type] = {
    "VideoFrame": VideoFrame,
    "AudioBuffer": AudioBuffer,
    "KeyEvent": KeyEvent,
    "MouseEvent": MouseEvent,
    "DataMessage": DataMessage,
}
_CLOCK_FIELDS = ("timestamp", "frame_number", "clock_source_id", "clock_rate")
_VIDEO_FORMATS = {1: "gray8", 3: "rgb24", 4: "rgba"}
_CHANNELS = {v: k for k, v in _VIDEO_FORMATS.items()}


# -- records ------------------------------------------------------------------------------------


def pack_header(kind: Kind, meta_len: int, payload_len: int) -> bytes:
    return HEADER.pack(MAGIC, VERSION, int(kind), 0, meta_len, payload_len)


def pack_record(kind: Kind, meta: dict[str, Any] | None = None, payload: list[Any] | None = None) -> list[Any]:
    """A record as a list of buffers for ``writelines`` (the payload buffers are not copied)."""
    meta_bytes = json.dumps(meta or {}, separators=(",", ":"), allow_nan=False).encode()
    if len(meta_bytes) > MAX_META:
        raise NotSerializable(f"a record's description is {len(meta_bytes)} bytes, over the {MAX_META}-byte limit")
    parts = payload or []
    size = sum(memoryview(p).nbytes for p in parts)
    return [pack_header(kind, len(meta_bytes), size), meta_bytes, *parts]


def parse_header(data: bytes, max_payload: int = MAX_PAYLOAD) -> tuple[Kind, int, int]:
    """Check a 16-byte header; returns ``(kind, meta_len, payload_len)`` or raises :class:`WireError`."""
    if len(data) != HEADER.size:
        raise WireError(f"short header ({len(data)} bytes)")
    magic, version, kind, _flags, meta_len, payload_len = HEADER.unpack(data)
    if magic != MAGIC:
        raise WireError(f"bad magic {magic!r} (not a streamlib data link)")
    if version != VERSION:
        raise WireError(f"wire version {version}, this runtime speaks {VERSION}")
    try:
        found = Kind(kind)
    except ValueError:
        raise WireError(f"unknown record kind {kind}") from None
    if meta_len > MAX_META:
        raise WireError(f"meta of {meta_len} bytes is over the {MAX_META}-byte limit")
    if payload_len > max_payload:
        raise WireError(f"payload of {payload_len} bytes is over the {max_payload}-byte limit")
    return found, meta_len, payload_len


def parse_meta(data: bytes) -> dict[str, Any]:
    """A record's meta: a JSON object, or :class:`WireError`."""
    try:
        meta = json.loads(data) if data else {}
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireError(f"meta is not JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise WireError(f"meta must be a JSON object, got {type(meta).__name__}")
    return meta


# -- values -------------------------------------------------------------------------------------


class _Out:
    """Collects the payload buffers of one message while its value tree is built."""

    __slots__ = ("buffers", "size")

    def __init__(self) -> None:
        self.buffers: list[Any] = []
        self.size = 0

    def add(self, buffer: Any) -> tuple[int, int]:
        view = memoryview(buffer).cast("B")
        offset = self.size
        self.buffers.append(view)
        self.size += view.nbytes
        return offset, view.nbytes


def _class_name(cls: type) -> str:
    if _BUILTIN.get(cls.__name__) is cls:
        return cls.__name__
    return f"{cls.__module__}:{cls.__qualname__}"


def _encode_value(value: Any, out: _Out, where: str, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise NotSerializable(f"{where} is nested more than {MAX_DEPTH} levels deep")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {"$float": repr(value)}
    if isinstance(value, np.generic) and not isinstance(value, np.object_):
        return _encode_value(value.item(), out, where, depth)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": list(out.add(value))}
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject or value.dtype.fields is not None:
            raise NotSerializable(f"{where} is an array of dtype {value.dtype}: only plain numeric arrays can cross")
        array = np.ascontiguousarray(value)
        offset, size = out.add(array.reshape(-1).view(np.uint8) if array.size else b"")
        return {"$nd": [array.dtype.str, list(array.shape), offset, size]}
    if isinstance(value, list):
        return [_encode_value(v, out, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {"$tuple": [_encode_value(v, out, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: _encode_value(v, out, f"{where}[{k!r}]", depth + 1) for k, v in value.items()}
        return {
            "$dict": [
                [_encode_value(k, out, f"{where} key", depth + 1), _encode_value(v, out, f"{where}[{k!r}]", depth + 1)]
                for k, v in value.items()
            ]
        }
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"$dc": _class_name(type(value)), "f": _encode_fields(value, out, where, depth + 1, ())}
    kind = "a GPU texture (download it to a numpy frame first)" if getattr(value, "memory", None) == "gpu" else None
    raise NotSerializable(
        f"{where} holds {kind or 'a ' + type(value).__qualname__}, which cannot cross to another runtime; "
        "send numbers, strings, lists, dicts, bytes, numpy arrays, streamlib messages or dataclasses"
    )


def _encode_fields(obj: Any, out: _Out, where: str, depth: int, skip: tuple[str, ...]) -> dict[str, Any]:
    return {
        f.name: _encode_value(getattr(obj, f.name), out, f"{where}.{f.name}", depth)
        for f in dataclasses.fields(obj)
        if f.init and f.name not in skip
    }


def _need(cond: bool, why: str) -> None:
    if not cond:
        raise WireError(why)


def _decode_value(value: Any, payload: memoryview, depth: int = 0) -> Any:
    _need(depth <= MAX_DEPTH + 2, "value nested too deep")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_decode_value(v, payload, depth + 1) for v in value]
    _need(isinstance(value, dict), f"unexpected JSON {type(value).__name__}")
    if len(value) == 1:
        ((key, arg),) = value.items()
        if key == "$bytes":
            offset, size = _span(arg, payload)
            return bytes(payload[offset : offset + size])
        if key == "$nd":
            return _decode_array(arg, payload)
        if key == "$tuple":
            _need(isinstance(arg, list), "$tuple wants a list")
            return tuple(_decode_value(v, payload, depth + 1) for v in arg)
        if key == "$float":
            _need(arg in ("nan", "inf", "-inf"), f"bad $float {arg!r}")
            return float(arg)
        if key == "$dict":
            _need(isinstance(arg, list) and all(isinstance(p, list) and len(p) == 2 for p in arg), "bad $dict")
            found: dict[Any, Any] = {}
            for k, v in arg:
                key_value = _decode_value(k, payload, depth + 1)
                try:
                    found[key_value] = _decode_value(v, payload, depth + 1)
                except TypeError:
                    raise WireError(f"unhashable dict key {type(key_value).__name__}") from None
            return found
    if set(value) == {"$dc", "f"}:
        cls = resolve_class(value["$dc"])
        fields = _decode_value(value["f"], payload, depth + 1)
        return _build(cls, fields, {})
    _need(not any(isinstance(k, str) and k.startswith("$") for k in value), f"unknown tag in {sorted(value)[:3]}")
    return {k: _decode_value(v, payload, depth + 1) for k, v in value.items()}


def _span(arg: Any, payload: memoryview) -> tuple[int, int]:
    _need(
        isinstance(arg, list) and len(arg) == 2 and all(type(x) is int and x >= 0 for x in arg),
        "a buffer reference wants [offset, length]",
    )
    offset, size = arg
    _need(offset + size <= payload.nbytes, f"buffer [{offset}, {size}] runs past the {payload.nbytes}-byte payload")
    return offset, size


def _dtype(text: Any) -> np.dtype[Any]:
    _need(isinstance(text, str) and len(text) <= 8, f"bad dtype {text!r}")
    try:
        dtype = np.dtype(text)
    except (TypeError, ValueError):
        raise WireError(f"bad dtype {text!r}") from None
    _need(not dtype.hasobject and dtype.fields is None and dtype.itemsize > 0, f"dtype {text!r} cannot cross")
    found: np.dtype[Any] = dtype
    return found


def _shape(shape: Any) -> tuple[int, ...]:
    _need(
        isinstance(shape, list) and len(shape) <= 8 and all(type(d) is int and 0 <= d < 1 << 31 for d in shape),
        f"bad shape {shape!r}",
    )
    return tuple(shape)


def _decode_array(arg: Any, payload: memoryview) -> np.ndarray[Any, Any]:
    _need(isinstance(arg, list) and len(arg) == 4, "$nd wants [dtype, shape, offset, length]")
    dtype, shape = _dtype(arg[0]), _shape(arg[1])
    offset, size = _span(arg[2:], payload)
    _need(math.prod(shape) * dtype.itemsize == size, f"array {shape} of {dtype} does not fill {size} bytes")
    return np.frombuffer(payload, dtype, math.prod(shape), offset).reshape(shape)


# -- classes ------------------------------------------------------------------------------------

_resolved: dict[str, type] = {}


def resolve_class(name: Any) -> type:
    """The message class a type name stands for: a built-in message, or a dataclass that
    ``module:QualName`` imports. Anything else is a :class:`WireError`."""
    _need(isinstance(name, str) and 0 < len(name) <= 300, f"bad type name {name!r}")
    found = _BUILTIN.get(name) or _resolved.get(name)
    if found is not None:
        return found
    module_name, sep, qualname = name.partition(":")
    _need(bool(sep and module_name and qualname), f"type {name!r} is not a built-in message nor module:QualName")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except Exception as exc:  # the peer named something this runtime cannot import
        raise WireError(f"cannot import message type {name!r}: {type(exc).__name__}: {exc}") from None
    _need(
        isinstance(target, type) and dataclasses.is_dataclass(target),
        f"{name!r} is not a dataclass: only dataclasses and streamlib messages cross",
    )
    cls: type = target
    _resolved[name] = cls
    return cls


@functools.cache
def _init_fields(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls) if f.init)


def _build(cls: type, fields: Any, clock: dict[str, Any]) -> Any:
    _need(isinstance(fields, dict) and all(isinstance(k, str) for k in fields), "fields must be an object")
    known = _init_fields(cls)
    extra = set(fields) - known
    _need(not extra, f"{cls.__qualname__} has no field(s) {sorted(extra)[:5]}")
    try:
        return cls(**fields, **{k: v for k, v in clock.items() if k in known})
    except Exception as exc:
        raise WireError(f"cannot build {cls.__qualname__}: {type(exc).__name__}: {exc}") from None


# -- messages -----------------------------------------------------------------------------------


def check_sendable(message: Any) -> None:
    """Raise :class:`NotSerializable` now, in the sender's ``send``, for what could never cross
    (a cheap look at the message's kind; its contents are checked when it is encoded)."""
    if isinstance(message, VideoFrame) and message.is_gpu():
        raise NotSerializable(
            "a GPU VideoFrame cannot cross to another runtime: download it first (streamlib.actors.Download)"
        )


def encode_message(message: Any) -> tuple[dict[str, Any], list[Any]]:
    """``(meta, payload buffers)`` for a FRAME record (see the module docstring). Raises
    :class:`NotSerializable` naming the field that cannot cross."""
    out = _Out()
    meta: dict[str, Any]
    if isinstance(message, Message):
        meta = {
            "type": _class_name(type(message)),
            "timestamp": float(message.timestamp),
            "frame_number": int(message.frame_number),
            "clock_id": message.clock_source_id,
            "clock_rate": message.clock_rate,
        }
    elif dataclasses.is_dataclass(message) and not isinstance(message, type):
        meta = {"type": _class_name(type(message))}
    else:
        meta = {"type": "value", "format": "value", "metadata": {"value": _encode_value(message, out, "the message")}}
        return meta, out.buffers
    check_sendable(message)
    if type(message) is VideoFrame and isinstance(message.data, np.ndarray):
        data = np.ascontiguousarray(message.data)
        channels = 1 if data.ndim == 2 else data.shape[2] if data.ndim == 3 else 0
        if data.dtype == np.uint8 and channels in _VIDEO_FORMATS:
            meta.update(format=_VIDEO_FORMATS[channels], width=int(data.shape[1]), height=int(data.shape[0]))
            meta["metadata"] = {}
        else:
            meta.update(format="ndarray", metadata={"dtype": data.dtype.str, "shape": list(data.shape)})
        out.add(data.reshape(-1).view(np.uint8) if data.size else b"")
        return meta, out.buffers
    if type(message) is AudioBuffer and isinstance(message.data, np.ndarray):
        data = np.ascontiguousarray(message.data, dtype="<f4")
        meta.update(
            format="f32le",
            width=1 if data.ndim == 1 else int(data.shape[1]),
            height=int(data.shape[0]) if data.ndim else 0,
            metadata={"sample_rate": int(message.sample_rate), "shape": list(data.shape)},
        )
        out.add(data.reshape(-1).view(np.uint8) if data.size else b"")
        return meta, out.buffers
    meta["format"] = "fields"
    meta["metadata"] = {"fields": _encode_fields(message, out, type(message).__qualname__, 0, _CLOCK_FIELDS)}
    return meta, out.buffers


def decode_message(meta: dict[str, Any], payload: memoryview | bytes) -> Any:
    """The message a FRAME record carries; :class:`WireError` (only) if it does not add up."""
    try:
        return _decode_message(meta, payload)
    except WireError:
        raise
    except Exception as exc:  # a check this module forgot: still the peer's garbage, not our failure
        raise WireError(f"undecodable frame: {type(exc).__name__}: {exc}") from None


def _decode_message(meta: dict[str, Any], payload: memoryview | bytes) -> Any:
    view = memoryview(payload).cast("B") if not isinstance(payload, memoryview) else payload
    fmt = meta.get("format")
    _need(isinstance(fmt, str), f"bad format {fmt!r}")
    metadata = meta.get("metadata", {})
    _need(isinstance(metadata, dict), "metadata must be an object")
    if meta.get("type") == "value":
        _need(fmt == "value" and "value" in metadata, "a value record needs format 'value'")
        return _decode_value(metadata["value"], view)
    cls = resolve_class(meta.get("type"))
    clock: dict[str, Any] = {}
    if issubclass(cls, Message):
        timestamp, number = meta.get("timestamp", 0.0), meta.get("frame_number", 0)
        clock_id, rate = meta.get("clock_id"), meta.get("clock_rate")
        _need(isinstance(timestamp, (int, float)) and not isinstance(timestamp, bool), "bad timestamp")
        _need(type(number) is int, "bad frame_number")
        _need(clock_id is None or isinstance(clock_id, str), "bad clock_id")
        _need(rate is None or (isinstance(rate, (int, float)) and not isinstance(rate, bool)), "bad clock_rate")
        clock = {"timestamp": float(timestamp), "frame_number": number, "clock_source_id": clock_id, "clock_rate": rate}
    if fmt in _CHANNELS:
        _need(cls is VideoFrame, f"format {fmt} is for VideoFrame, not {cls.__qualname__}")
        width, height = meta.get("width"), meta.get("height")
        if not (isinstance(width, int) and isinstance(height, int) and 0 <= width < 1 << 16 and 0 <= height < 1 << 16):
            raise WireError("bad width/height")
        channels = _CHANNELS[fmt]
        _need(width * height * channels == view.nbytes, f"{width}x{height} {fmt} is not {view.nbytes} bytes")
        pixels = np.frombuffer(view, np.uint8).reshape((height, width) if channels == 1 else (height, width, channels))
        return VideoFrame(pixels, **clock)
    if fmt == "ndarray":
        _need(cls is VideoFrame, "format ndarray is for VideoFrame")
        dtype, shape = _dtype(metadata.get("dtype")), _shape(metadata.get("shape"))
        _need(math.prod(shape) * dtype.itemsize == view.nbytes, "array does not fill the payload")
        return VideoFrame(np.frombuffer(view, dtype).reshape(shape), **clock)
    if fmt == "f32le":
        _need(cls is AudioBuffer, "format f32le is for AudioBuffer")
        rate, shape = metadata.get("sample_rate"), _shape(metadata.get("shape"))
        _need(type(rate) is int and 0 < rate < 1 << 24, "bad sample_rate")
        _need(math.prod(shape) * 4 == view.nbytes, "samples do not fill the payload")
        return AudioBuffer(np.frombuffer(view, "<f4").reshape(shape), rate, **clock)
    _need(fmt == "fields", f"unknown format {fmt!r}")
    fields = _decode_value(metadata.get("fields"), view)
    return _build(cls, fields, clock)


def describe_type(t: type) -> str:
    """How a port's message type is named on the wire (``object`` is ``"object"``)."""
    if t is object:
        return "object"
    return f"{t.__module__}:{t.__qualname__}"


def port_type(name: Any, importer: Callable[[str], Any] = importlib.import_module) -> type:
    """The local class for a port type named by :func:`describe_type` (``object`` when this
    process cannot import it: the type check then happens on the remote side only)."""
    if not isinstance(name, str) or name == "object":
        return object
    module_name, _, qualname = name.partition(":")
    try:
        target: Any = importer(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except Exception:
        return object
    return target if isinstance(target, type) else object
