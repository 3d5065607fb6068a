"""streamlib: realtime streams (video, audio, events, data) as a true actor system.

Every node is an actor that starts itself when constructed, owns bounded drop-on-full
mailboxes, syncs to its upstream's clock (or runs its own), composes with ``>>``, lives
in a supervision tree, and runs on a pluggable dispatcher. See ``docs/concepts.md``.

``import streamlib`` loads the actor system only (actor, ports, mailbox, clock, messages,
supervision, dispatchers, testing): ``docs/architecture.md`` draws the layers. The layers
-- :mod:`streamlib.actors` (ready actors), :mod:`streamlib.gpu`, :mod:`streamlib.observe`,
:mod:`streamlib.service`, :mod:`streamlib.cli` -- are subpackages built on this public API;
the few convenience names below that live in a layer (``gpu``, ``graph``, ``run`` ...) are
imported on first use.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from . import speedups
from .actor import Actor, ActorSpec, Completion, add_stats_section, current_actor
from .alignment import InputSync, MatchedSet
from .clock import Clock, SoftwareClock
from .dispatch import (
    AsyncioDispatcher,
    BlockingWarning,
    Dispatcher,
    ProcessPoolDispatcher,
    ThreadPoolDispatcher,
    register_dispatcher,
)
from .errors import (
    ActorDefinitionError,
    ActorInitError,
    EndOfStream,
    RestartIntensityExceeded,
)
from .lifecycle import Cause, ChildFate, LifecycleState
from .mailbox import Mailbox, MailboxStatistics
from .messages import AudioBuffer, DataMessage, KeyEvent, Message, MouseEvent, TimedTick, VideoFrame
from .ports import InputStatistics, StreamInput, StreamOutput, connect, disconnect, register_transfer
from .runtime import ClockMode, running_actors, set_tick_instrument
from .supervision import Supervisor
from .waiting import wait

speedups.install()  # the message path in C, if the extension was built (see streamlib.speedups)

__version__ = "0.1.0"

# Convenience names that live in a layer: name -> (module, attribute or None for the module).
_LAYER_NAMES: dict[str, tuple[str, str | None]] = {
    "actors": ("streamlib.actors", None),
    "gpu": ("streamlib.gpu", None),
    "GPUDispatcher": ("streamlib.gpu", "GPUDispatcher"),
    "observe": ("streamlib.observe", None),
    "profiling": ("streamlib.observe.profiling", None),
    "views": ("streamlib.observe.views", None),
    "graph": ("streamlib.observe.views", "graph"),
    "live": ("streamlib.observe.views", "live"),
    "tree": ("streamlib.observe.views", "tree"),
    "dashboard": ("streamlib.observe.dashboard", "dashboard"),
    "run": ("streamlib.service", "run"),
    "service": ("streamlib.service", None),
    "get_actor": ("streamlib.remote", "get_actor"),
}


def __getattr__(name: str) -> Any:
    """Resolve a layer's convenience name on first use (``streamlib.run``, ``streamlib.gpu`` ...)."""
    found = _LAYER_NAMES.get(name)
    if found is None:
        raise AttributeError(f"module 'streamlib' has no attribute {name!r}")
    module = importlib.import_module(found[0])
    value = module if found[1] is None else getattr(module, found[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAYER_NAMES))


# Notebooks show actors and frames through the renderers streamlib.observe registers;
# STREAMLIB_PROFILE=1 switches profiling on from the start. Both load the layer on demand.
_PROFILE_FLAG = os.environ.get("STREAMLIB_PROFILE", "").strip().lower()
if "IPython" in sys.modules or _PROFILE_FLAG not in ("", "0", "false", "no", "off"):
    importlib.import_module("streamlib.observe")

__all__ = [
    "Actor",
    "ActorDefinitionError",
    "ActorInitError",
    "ActorSpec",
    "AsyncioDispatcher",
    "AudioBuffer",
    "BlockingWarning",
    "Cause",
    "ChildFate",
    "Clock",
    "ClockMode",
    "Completion",
    "DataMessage",
    "Dispatcher",
    "EndOfStream",
    "InputStatistics",
    "InputSync",
    "KeyEvent",
    "LifecycleState",
    "Mailbox",
    "MailboxStatistics",
    "MatchedSet",
    "Message",
    "MouseEvent",
    "ProcessPoolDispatcher",
    "RestartIntensityExceeded",
    "SoftwareClock",
    "StreamInput",
    "StreamOutput",
    "Supervisor",
    "ThreadPoolDispatcher",
    "TimedTick",
    "VideoFrame",
    "add_stats_section",
    "connect",
    "current_actor",
    "disconnect",
    "register_dispatcher",
    "register_transfer",
    "running_actors",
    "set_tick_instrument",
    "wait",
]
