"""The one error every agent tool returns: machine-readable, located, never a traceback.

A tool that cannot do what it was asked raises :class:`ToolFailure`; the MCP server turns
it into an ``isError`` result whose ``structuredContent`` is ``{"error": failure.to_dict()}``
(and whose text is the same JSON), so an agent can branch on ``kind`` and jump to
``line``/``column`` of the source it sent. Nothing has changed when a tool fails: the
previous good state keeps running.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

__all__ = ["ErrorKind", "ToolFailure", "source_location"]

ErrorKind = Literal[
    "invalid_argument",  # a tool argument has the wrong type or value
    "unknown_actor",  # no actor at that path
    "unknown_port",  # the actor has no such input/output
    "unknown_type",  # no actor class by that name
    "syntax_error",  # submitted source does not compile (line, column)
    "definition_error",  # submitted source compiles but defines no usable actor class
    "init_error",  # the actor's constructor raised
    "compile_error",  # drawing code / WGSL rejected by its compiler (line, column)
    "runtime_error",  # live drawing code that raised on its first frames (line); it was taken back out
    "connect_error",  # ports of incompatible types, ambiguous pairs
    "not_supported",  # the actor has no live code, the output carries no video ...
    "no_frame",  # nothing arrived on the output in time
    "sandbox_violation",  # a trial run of submitted code broke a sandbox limit
    "timeout",  # the runtime did not answer in time
    "internal",  # a bug in streamlib: the message says what was being done
]


@dataclass
class ToolFailure(Exception):
    """A tool's failure, as data.

    ``kind`` says what went wrong (see :data:`ErrorKind`); ``message`` says it in words,
    with the fix; ``actor`` (a path), ``class_name``, ``port``, ``line`` and ``column``
    (1-based, in the source the agent submitted) are set where they apply."""

    kind: ErrorKind
    message: str
    actor: str | None = None
    class_name: str | None = None
    port: str | None = None
    line: int | None = None
    column: int | None = None
    source_line: str | None = None
    details: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        where = f" (line {self.line}" + (f", column {self.column}" if self.column else "") + ")" if self.line else ""
        return f"{self.kind}: {self.message}{where}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``kind`` and ``message`` always, the rest only where set."""
        found: dict[str, Any] = {"kind": self.kind, "message": self.message}
        for key in ("actor", "class_name", "port", "line", "column", "source_line", "details"):
            value = getattr(self, key)
            if value is not None:
                found[key] = value
        return found


def source_location(exc: BaseException, filename: str) -> tuple[int | None, int | None]:
    """``(line, column)`` of ``exc`` in the submitted source called ``filename``.

    A :class:`SyntaxError` carries its own position; any other exception is located by the
    deepest traceback frame that runs that source (column from Python 3.11's positions)."""
    if isinstance(exc, SyntaxError) and exc.filename == filename:
        return exc.lineno, exc.offset
    found: tuple[int | None, int | None] = (None, None)
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == filename:
            column = None
            for summary in traceback.extract_tb(tb, limit=1):
                colno = getattr(summary, "colno", None)
                column = colno + 1 if isinstance(colno, int) else None
            found = (tb.tb_lineno, column)
        tb = tb.tb_next
    return found
