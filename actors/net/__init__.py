"""Network media actors: SMPTE ST 2110 video and audio over RTP, RTP H.264, MPEG-TS over UDP, WebRTC.

See ``docs/network.md`` for a recipe per transport with the matching ffmpeg and GStreamer commands.
Every actor here that touches the network reports its counters under ``stats()['network']``.
"""

from __future__ import annotations

from typing import Any

from streamlib import Actor, add_stats_section

from .receive import RTPReceiveActor
from .send import RTPSendActor

__all__ = [
    "H264RTPReceiveActor",
    "H264RTPSendActor",
    "MPEGTSReceiveActor",
    "MPEGTSSendActor",
    "RTPReceiveActor",
    "RTPSendActor",
    "WebRTCSink",
]

# PyAV and aiortc load only when their actors are first used
_LAZY = {
    "H264RTPReceiveActor": "h264",
    "H264RTPSendActor": "h264",
    "MPEGTSReceiveActor": "mpegts",
    "MPEGTSSendActor": "mpegts",
    "WebRTCSink": "webrtc",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streamlib.actors.net' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def _network_section(actor: Actor) -> dict[str, Any] | None:
    """``stats()['network']``: the counters of any actor that offers ``network_stats()``."""
    found = getattr(actor, "network_stats", None)
    return found() if callable(found) else None


add_stats_section("network", _network_section)
