"""A resource fence for agent-written actors: a worker process per actor, under kernel limits.

Classes that ``define_actor`` loads run, by default, on a :class:`SandboxDispatcher`: the
:class:`~streamlib.ProcessPoolDispatcher` (one forked worker process per actor; ``on_start``,
``process`` and ``on_stop`` run there) with Linux resource limits set on each worker from
the outside (``prlimit``) as soon as it is forked, before any of the actor's code runs in it:

* **memory** (``RLIMIT_AS``): the worker may grow its address space by at most
  ``limits.memory`` bytes beyond what it had when forked (default 1 GiB). An allocation past
  that fails with ``MemoryError`` inside the worker;
* **CPU time per call** (``RLIMIT_CPU``, re-armed before every call): one ``process`` (or
  hook) call may use ``limits.cpu_per_call`` CPU seconds (default 2 s, rounded up to whole
  seconds by the kernel); past that the kernel sends ``SIGXCPU``, which kills the worker.
  ``limits.cpu_total`` (default unlimited) caps the worker's whole life the same way;
* **open files** (``RLIMIT_NOFILE``): about ``limits.open_files`` descriptors beyond those
  the worker inherited (default 64);
* **core dumps** off (``RLIMIT_CORE`` 0).

Whatever kills or fails the worker fails *that actor only*, with a
:class:`SandboxViolation` saying which limit and how much ("exceeded memory limit 1 GiB"),
or with the worker's exit code for ``os._exit`` and crashes; every other actor, and the
server, keep running. A stop cancels a call in flight and kills its worker, so an actor
stuck in a call (a sleep, a blocking read) still stops at once (its ``on_stop`` does not run
then). :func:`trial_run` runs a piece of submitted code (a module body, a constructor) in a
throwaway fork under the same limits first, so code that would spin or blow up at import
or construction time is refused before it runs in the server.

What it is *not*: a security boundary. The worker is a fork of the server: it can read
the server's memory as it was at the fork (tokens, other actors' data), it inherits the
server's open file descriptors (sockets, the MCP stdio pipe, files), it can use the network
and the file system with the server's user rights, start processes (``os.fork``,
``subprocess``) that the limits do not follow, and a class whose code behaves differently
on a second run passes a trial. Run untrusted code in a container or a VM, not here.
Linux only (``prlimit``); elsewhere the sandbox refuses to start.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from streamlib import ProcessPoolDispatcher
from streamlib.dispatch.process import WorkerCrashed, WorkerError

try:
    import resource
except ImportError:  # pragma: no cover - Windows: the sandbox refuses to start there
    resource = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from streamlib import Actor, TimedTick

__all__ = ["SandboxDispatcher", "SandboxLimits", "SandboxViolation", "TrialOutcome", "trial_run"]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def format_bytes(count: int) -> str:
    """``1 GiB``, ``512 MiB``, ``3.5 GiB``: the size as the limits are written."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            value = count / size
            return f"{value:g} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{count} B"


@dataclass(frozen=True)
class SandboxLimits:
    """The fence around each sandboxed actor's worker process (see the module docstring)."""

    memory: int = 1 << 30
    """Bytes of address space a worker may add to what it inherited at the fork."""
    cpu_per_call: float = 2.0
    """CPU seconds one call (``process``, ``on_start``, ``on_stop``) may use."""
    cpu_total: float | None = None
    """CPU seconds over the worker's life (``None``: no limit)."""
    open_files: int = 64
    """File descriptors a worker may open beyond those it inherited."""
    workers: int = 32
    """Sandboxed actors that may run at once (one process each)."""
    trial_timeout: float = 5.0
    """Seconds a trial run (a module body, a constructor) may take."""

    def describe(self) -> dict[str, Any]:
        return {
            "memory": format_bytes(self.memory),
            "memory_bytes": self.memory,
            "cpu_per_call_s": self.cpu_per_call,
            "cpu_total_s": self.cpu_total,
            "open_files": self.open_files,
            "workers": self.workers,
            "trial_timeout_s": self.trial_timeout,
        }


class SandboxViolation(RuntimeError):
    """A sandboxed actor broke a limit (or its worker died): ``limit`` is ``"memory"``,
    ``"cpu"``, ``"open_files"`` or ``"exit"``; the message says how much."""

    def __init__(self, message: str, limit: str = "exit") -> None:
        super().__init__(message)
        self.limit = limit

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.limit))


# -- reading and setting another process's limits ---------------------------------------------


def _proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (from ``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rpartition(b")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _proc_vm_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _proc_max_fd(pid: int) -> int:
    return max((int(fd) for fd in os.listdir(f"/proc/{pid}/fd")), default=2)


def _limit_values(limits: SandboxLimits, vm: int, max_fd: int, cpu_used: float) -> dict[int, tuple[int, int]]:
    hard_cpu = resource.RLIM_INFINITY if limits.cpu_total is None else math.ceil(cpu_used + limits.cpu_total)
    soft_cpu = math.ceil(cpu_used + limits.cpu_per_call)
    if hard_cpu != resource.RLIM_INFINITY:
        soft_cpu = min(soft_cpu, hard_cpu)
    files = max_fd + 1 + limits.open_files
    return {
        resource.RLIMIT_AS: (vm + limits.memory, vm + limits.memory),
        resource.RLIMIT_CPU: (soft_cpu, hard_cpu),
        resource.RLIMIT_NOFILE: (files, files),
        resource.RLIMIT_CORE: (0, 0),
    }


def fence(pid: int, limits: SandboxLimits) -> None:
    """Set ``limits`` on the process ``pid`` (relative to what it holds now)."""
    values = _limit_values(limits, _proc_vm_bytes(pid), _proc_max_fd(pid), _proc_cpu_seconds(pid))
    for which, value in values.items():
        resource.prlimit(pid, which, value)


def _fence_self(limits: SandboxLimits) -> None:
    pid = os.getpid()
    values = _limit_values(limits, _proc_vm_bytes(pid), _proc_max_fd(pid), _proc_cpu_seconds(pid))
    for which, value in values.items():
        resource.setrlimit(which, value)


# -- the dispatcher ---------------------------------------------------------------------------------


def _is_memory_error(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, WorkerError) and "MemoryError" in str(exc).split("\n", 1)[0]


def _is_file_limit(exc: BaseException) -> bool:
    first = str(exc).split("\n", 1)[0]
    return isinstance(exc, OSError | WorkerError) and "Too many open files" in first


class SandboxDispatcher(ProcessPoolDispatcher):
    """The process dispatcher with a :class:`SandboxLimits` fence around every worker.

    ``interruptible``: a stop cancels a call in flight and the worker is killed (a sandboxed
    actor stuck in a call must still stop)."""

    interruptible: ClassVar[bool] = True

    def __init__(self, limits: SandboxLimits | None = None) -> None:
        if not sys.platform.startswith("linux"):
            raise RuntimeError("the agent sandbox sets resource limits with prlimit(2): Linux only")
        self.limits = limits or SandboxLimits()
        super().__init__(workers=self.limits.workers, start_method="fork")

    async def attach(self, actor: Actor) -> None:
        await super().attach(actor)
        pid = self.pid(actor)
        if pid is None:  # pragma: no cover - attach just started it
            return
        try:
            fence(pid, self.limits)
        except OSError as exc:
            await super().detach(actor)
            raise RuntimeError(
                f"{actor.path}: cannot set the sandbox's limits on its worker (pid {pid}): {exc}"
            ) from exc

    def _rearm(self, actor: Actor) -> None:
        """Give the coming call its own CPU budget: the soft CPU limit moves to what the
        worker has used so far plus ``cpu_per_call``."""
        pid = self.pid(actor)
        if pid is None:
            return
        with contextlib.suppress(OSError):  # the worker is gone: the call will say so
            used = _proc_cpu_seconds(pid)
            _soft, hard = resource.prlimit(pid, resource.RLIMIT_CPU)
            soft = math.ceil(used + self.limits.cpu_per_call)
            if hard != resource.RLIM_INFINITY:
                soft = min(soft, hard)
            resource.prlimit(pid, resource.RLIMIT_CPU, (soft, hard))

    async def _guard(self, actor: Actor, work: Awaitable[None]) -> None:
        try:
            await work
        except WorkerCrashed as exc:
            raise self._violation(actor, exc) from exc
        except (MemoryError, OSError, WorkerError) as exc:
            if _is_memory_error(exc):
                where = f"{actor.path} ({type(actor).__qualname__})"
                what = str(exc).splitlines()[0].removeprefix(f"{where} raised ")
                raise SandboxViolation(
                    f"{where} exceeded memory limit {format_bytes(self.limits.memory)} ({what})", "memory"
                ) from exc
            if _is_file_limit(exc):
                raise SandboxViolation(
                    f"{actor.path} ({type(actor).__qualname__}) exceeded its open files limit "
                    f"({self.limits.open_files} beyond those it inherited)",
                    "open_files",
                ) from exc
            raise

    def _violation(self, actor: Actor, crash: WorkerCrashed) -> SandboxViolation:
        where = f"{actor.path} ({type(actor).__qualname__})"
        text = str(crash)
        if "SIGXCPU" in text or ("SIGKILL" in text and self.limits.cpu_total is not None):
            return SandboxViolation(
                f"{where} exceeded its CPU time limit of {self.limits.cpu_per_call:g} s per call "
                f"(killed by SIGXCPU); its worker process was stopped",
                "cpu",
            )
        return SandboxViolation(f"{where}: {text} (os._exit, or a crash); only this actor failed", "exit")

    def bind(self, actor: Actor) -> Callable[[TimedTick], Awaitable[None] | None]:
        inner = super().bind(actor)
        rearm, guard = self._rearm, self._guard

        def run_tick(tick: TimedTick) -> Awaitable[None]:
            rearm(actor)
            work = inner(tick)
            assert work is not None
            return guard(actor, work)

        return run_tick

    def schedule(self, actor: Actor, tick: TimedTick) -> Awaitable[None]:
        self._rearm(actor)
        return self._guard(actor, super().schedule(actor, tick))

    def call_hook(self, actor: Actor, hook: Callable[[], Any]) -> Awaitable[None] | None:
        self._rearm(actor)
        work = super().call_hook(actor, hook)
        return None if work is None else self._guard(actor, work)

    def __repr__(self) -> str:
        return f"<SandboxDispatcher {self.limits.describe()}>"


# -- trial runs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialOutcome:
    """How a trial run ended: ``ok``, or the exception (type, message, line, column in
    ``filename``), or the limit it broke."""

    ok: bool
    exception: str = ""
    message: str = ""
    line: int | None = None
    column: int | None = None
    limit: str | None = None


def _trial_child(connection: Any, fn: Callable[[], Any], limits: SandboxLimits, filename: str) -> None:
    from .errors import source_location

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # a print() in the trial must not reach the server's stdout (the MCP pipe)
    try:
        _fence_self(limits)
        fn()
    except BaseException as exc:
        line, column = source_location(exc, filename)
        limit = "memory" if isinstance(exc, MemoryError) else None
        text = str(exc) or "".join(traceback.format_exception_only(type(exc), exc)).strip()
        with contextlib.suppress(Exception):
            connection.send(TrialOutcome(False, type(exc).__name__, text, line, column, limit))
    else:
        with contextlib.suppress(Exception):
            connection.send(TrialOutcome(True))
    finally:
        connection.close()
        os._exit(0)


def trial_run(fn: Callable[[], Any], limits: SandboxLimits, filename: str) -> TrialOutcome:
    """Run ``fn()`` once in a forked process under ``limits`` (``trial_timeout`` wall
    seconds); report how it ended. Blocks the calling thread: call it off the event loop."""
    context = multiprocessing.get_context("fork")
    parent_end, child_end = context.Pipe(duplex=False)
    process = context.Process(target=_trial_child, args=(child_end, fn, limits, filename), daemon=True)
    process.start()
    child_end.close()
    try:
        if parent_end.poll(limits.trial_timeout):
            try:
                outcome: TrialOutcome = parent_end.recv()
            except EOFError:
                outcome = _death(process)
        else:
            outcome = TrialOutcome(
                False,
                "Timeout",
                f"did not finish within {limits.trial_timeout:g} s (it may loop forever)",
                limit="time",
            )
    finally:
        parent_end.close()
        if process.is_alive():
            process.kill()
        process.join(2.0)
        process.close()
    if outcome.limit == "memory":
        return TrialOutcome(
            False,
            outcome.exception,
            f"exceeded memory limit {format_bytes(limits.memory)} ({outcome.message})",
            outcome.line,
            outcome.column,
            "memory",
        )
    return outcome


def _death(process: Any) -> TrialOutcome:
    process.join(2.0)
    code = process.exitcode
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        limit = "cpu" if name == "SIGXCPU" else "exit"
        return TrialOutcome(False, "WorkerCrashed", f"the trial process was killed by {name}", limit=limit)
    return TrialOutcome(False, "WorkerCrashed", f"the trial process exited with code {code} (os._exit?)", limit="exit")
