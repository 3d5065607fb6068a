"""``dispatcher="gpu"``: an actor's hooks run on the process's GPU thread, with the GPU context.

Every actor on this dispatcher shares one thread (``streamlib-gpu``) running its own
event loop: the CPU side of a GPU queue. Encoding and submitting GPU work there keeps
the actors' event loop free (a submit on a software adapter does the whole computation,
and even a real driver may block), serialises all use of the queue without locks, and
lets a hook that awaits (a readback, a blocking send downstream) give the thread to the
other GPU actors meanwhile.

Before ``on_start`` the actor gets the shared :class:`~streamlib.gpu.GPUContext` as
``self.gpu``. ``process`` may be ``async def`` (it runs as a task on the GPU thread's
loop: ``await input.read()``, ``await output.send()``, ``await download_async(...)``
work as usual) or a plain ``def``.

A lost device fails the actor with :class:`~streamlib.gpu.GPUDeviceLost` before its next
``process`` call (or from the call that hit the loss); a restarted instance is attached
to a new device.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from streamlib.dispatch import Dispatcher
from streamlib.threadsafe import call_soon, settle

from . import device as gpu
from .thread import GPUThread, awaited, gpu_thread

if TYPE_CHECKING:
    from streamlib import Actor, TimedTick

    from .device import GPUContext

__all__ = ["GPUDispatcher"]


class GPUDispatcher(Dispatcher):
    """Run an actor's hooks on the GPU thread, with ``self.gpu`` set to the GPU context."""

    def __init__(self) -> None:
        super().__init__()
        self._worker: GPUThread | None = None

    @property
    def worker(self) -> GPUThread:
        if self._worker is None:
            self._worker = gpu_thread()
        return self._worker

    async def attach(self, actor: Actor) -> None:
        ctx = await asyncio.wrap_future(self.worker.call(gpu.context))
        await super().attach(actor)
        with contextlib.suppress(AttributeError):  # a read-only 'gpu' property: it finds the context itself
            actor.gpu = ctx  # type: ignore[attr-defined]

    def schedule(self, actor: Actor, tick: TimedTick) -> Awaitable[None] | None:
        return self._submit(actor, actor.process, (tick,), check=True)

    def call_hook(self, actor: Actor, hook: Callable[[], Any]) -> Awaitable[None] | None:
        return self._submit(actor, hook, (), check=getattr(hook, "__name__", "") != "on_stop")

    def _submit(self, actor: Actor, fn: Callable[..., Any], args: tuple[Any, ...], check: bool) -> Awaitable[None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        ctx = contextvars.copy_context()  # carries current_actor() to the GPU thread
        worker = self.worker
        gpu_ctx: GPUContext | None = getattr(actor, "gpu", None)

        def report(exc: BaseException | None) -> None:
            if exc is not None and gpu_ctx is not None and hasattr(gpu_ctx, "translate"):
                exc = gpu_ctx.translate(exc)
            call_soon(loop, settle, fut, None, exc)

        def start() -> None:
            try:
                if check and gpu_ctx is not None and hasattr(gpu_ctx, "check"):
                    gpu_ctx.check()
                result = ctx.run(fn, *args)
            except BaseException as exc:
                report(exc)
                return
            if not inspect.isawaitable(result):
                report(None)
                return
            task = worker.loop.create_task(awaited(result), context=ctx)

            def done(t: asyncio.Task[Any]) -> None:
                if t.cancelled():
                    report(asyncio.CancelledError())
                else:
                    report(t.exception())

            task.add_done_callback(done)

        worker.loop.call_soon_threadsafe(start)
        return fut

    def __repr__(self) -> str:
        return f"<GPUDispatcher actors={self._attached}>"
