"""Type stub of the C extension (see streamlib.speedups)."""

from typing import Any

class Waker:
    runtime: Any
    port: Any
    def __init__(self, runtime: Any, port: Any, /) -> None: ...
    def __call__(self) -> None: ...

def install(
    *,
    Mailbox: type,
    StreamInput: type,
    StreamOutput: type,
    ActorRuntime: type,
    LoopSlice: type,
    TimedTick: type,
    Message: type,
    EMPTY: object,
    current_tasks: dict[Any, Any],
    max_depth: int,
) -> None: ...
def deliver(output: Any, message: Any, /) -> tuple[tuple[Any, ...], Any] | None: ...
