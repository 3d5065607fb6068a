"""streamlib: realtime streams (video, audio, events, data) as a true actor system.

Every node is an actor that starts itself when constructed, owns bounded drop-on-full
mailboxes, syncs to its upstream's clock (or runs its own), composes with ``>>``, lives
in a supervision tree, and runs on a pluggable dispatcher. See ``docs/concepts.md``.
"""

from .actor import Actor, ActorSpec, Completion, LifecycleState, actors, current_actor
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
from .mailbox import Mailbox, MailboxStatistics
from .messages import AudioBuffer, DataMessage, KeyEvent, Message, MouseEvent, TimedTick, VideoFrame
from .ports import StreamInput, StreamOutput, connect, disconnect, register_transfer
from .supervision import Supervisor

from . import gpu  # isort: skip - numpy only: wgpu is imported when a GPU context is made
from .dispatch.gpu import GPUDispatcher  # isort: skip

from . import profiling, views  # isort: skip - after the core they observe
from .dashboard import dashboard  # isort: skip
from .service import run  # isort: skip
from .views import graph, live, tree  # isort: skip

__version__ = "0.1.0"

__all__ = [
    "Actor",
    "ActorDefinitionError",
    "ActorInitError",
    "ActorSpec",
    "AsyncioDispatcher",
    "AudioBuffer",
    "BlockingWarning",
    "Clock",
    "Completion",
    "DataMessage",
    "Dispatcher",
    "EndOfStream",
    "GPUDispatcher",
    "KeyEvent",
    "LifecycleState",
    "Mailbox",
    "MailboxStatistics",
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
    "actors",
    "connect",
    "current_actor",
    "dashboard",
    "disconnect",
    "gpu",
    "graph",
    "live",
    "profiling",
    "register_dispatcher",
    "register_transfer",
    "run",
    "tree",
    "views",
]
