"""WebRTCSink: streams a video input (and an audio input, if connected) to any browser, through aiortc.

The sink serves one page and one signalling endpoint with aiohttp on the actor's event loop: the
page makes a receive-only offer, POSTs it to ``/offer``, and plays what comes back. Each browser
gets its own peer connection and its own tracks, fed the newest frame (a slow browser skips frames,
it never delays the pipeline). aiortc encodes (VP8 or H.264, as negotiated) and paces.
"""

from __future__ import annotations

import asyncio
import fractions
import secrets
import threading
from typing import Any

import av
import numpy as np
from aiohttp import web
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from streamlib import Actor, AudioBuffer, StreamInput, TimedTick, VideoFrame
from streamlib.listening import is_loopback, token_matches

__all__ = ["WebRTCSink"]

_VIDEO_TB = fractions.Fraction(1, 90000)

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>streamlib WebRTC</title>
<style>body{margin:0;background:#111;color:#ccc;font:14px sans-serif}video{width:100%;max-height:95vh}</style>
</head><body>
<video id="video" autoplay playsinline muted></video>
<div id="state">connecting</div>
<script>
const pc = new RTCPeerConnection();
window.pc = pc;
pc.addTransceiver("video", {direction: "recvonly"});
pc.addTransceiver("audio", {direction: "recvonly"});
const media = new MediaStream();
pc.ontrack = (e) => { media.addTrack(e.track); document.getElementById("video").srcObject = media; };
pc.onconnectionstatechange = () => { document.getElementById("state").textContent = pc.connectionState; };
async function start() {
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === "complete") resolve(); };
  });
  const response = await fetch("offer" + location.search, {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({sdp: pc.localDescription.sdp, type: pc.localDescription.type}),
  });
  if (!response.ok) { document.getElementById("state").textContent = "refused: " + response.status; return; }
  await pc.setRemoteDescription(await response.json());
}
start();
</script></body></html>
"""


class _LatestVideo(MediaStreamTrack):
    """A video track that hands aiortc the newest frame the sink received (and waits for the next one)."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._frame: VideoFrame | None = None
        self._new = asyncio.Event()
        self._t0: float | None = None
        self._last_pts = -1

    def push(self, frame: VideoFrame) -> None:
        self._frame = frame
        self._new.set()

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self._new.wait()
        self._new.clear()
        frame = self._frame
        assert frame is not None
        if self._t0 is None:
            self._t0 = frame.timestamp
        out = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame.data[..., :3]), format="rgb24")
        pts = max(round((frame.timestamp - self._t0) * 90000), self._last_pts + 1)
        self._last_pts = pts
        out.pts, out.time_base = pts, _VIDEO_TB
        return out


class _QueuedAudio(MediaStreamTrack):
    """An audio track fed AudioBuffers in order (a short queue: audio must not skip like video)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[AudioBuffer] = asyncio.Queue(maxsize=50)
        self._samples = 0

    def push(self, block: AudioBuffer) -> None:
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(block)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        block = await self._queue.get()
        data = np.asarray(block.data, np.float32)
        if data.ndim == 1:
            data = data[:, None]
        if data.shape[1] == 1:
            data = np.repeat(data, 2, axis=1)
        pcm = (np.clip(data[:, :2], -1, 1) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = block.sample_rate
        frame.pts, frame.time_base = self._samples, fractions.Fraction(1, block.sample_rate)
        self._samples += pcm.shape[0]
        return frame


class WebRTCSink(Actor):
    """Serves a page at :attr:`url` that plays the ``'video'`` input (and ``'audio'``, when connected)
    over WebRTC in any browser that opens it.

    Binds ``host`` (``127.0.0.1``; ``port=0`` picks a free port). Any other address needs a
    ``token``: the page and the ``/offer`` endpoint then answer only with ``?token=...`` in the URL
    (``url`` includes it). ``stats()['network']`` counts peers and frames handed to them.
    """

    default_fps = None

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, token: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        if not is_loopback(host) and not token:
            raise ValueError(
                f"{self.path}: serving WebRTC on {host!r} (not loopback) needs token=...; "
                f"e.g. token={secrets.token_urlsafe(16)!r}"
            )
        self.host, self.port, self.token = host, int(port), token
        self.inputs["video"] = StreamInput("video", VideoFrame)
        self.inputs["audio"] = StreamInput("audio", AudioBuffer, maxsize=16)
        self.peers: set[RTCPeerConnection] = set()
        self.peers_total = 0
        self.frames_out = 0
        self.refused = 0
        self._video_tracks: set[_LatestVideo] = set()
        self._audio_tracks: set[_QueuedAudio] = set()
        self._runner: web.AppRunner | None = None
        self.started = threading.Event()
        """Set once the page is served (:attr:`url` is valid)."""

    @property
    def url(self) -> str:
        """The page's address (with the token, if one is required)."""
        if not self.started.is_set():
            raise RuntimeError(f"{self.path}: the page is not served yet; wait for sink.started")
        query = f"?token={self.token}" if self.token else ""
        return f"http://{self.host}:{self.port}/{query}"

    def network_stats(self) -> dict[str, Any]:
        return {
            "peers": len(self.peers),
            "peers_total": self.peers_total,
            "frames_out": self.frames_out,
            "requests_refused": self.refused,
        }

    def _allowed(self, request: web.Request) -> bool:
        if token_matches(request.query.get("token"), self.token):
            return True
        self.refused += 1
        return False

    async def _page(self, request: web.Request) -> web.Response:
        if not self._allowed(request):
            return web.Response(status=403, text="a token is required: open the URL WebRTCSink.url prints")
        return web.Response(text=PAGE, content_type="text/html")

    async def _offer(self, request: web.Request) -> web.Response:
        if not self._allowed(request):
            return web.Response(status=403, text="token required")
        try:
            params = await request.json()
            offer = RTCSessionDescription(sdp=params["sdp"], type=params["type"])
        except (ValueError, KeyError, TypeError):
            return web.Response(status=400, text="expected a JSON offer {sdp, type}")
        pc = RTCPeerConnection()
        self.peers.add(pc)
        self.peers_total += 1
        video = _LatestVideo()
        self._video_tracks.add(video)
        pc.addTrack(video)
        audio: _QueuedAudio | None = None
        if self.inputs["audio"].connected:
            audio = _QueuedAudio()
            self._audio_tracks.add(audio)
            pc.addTrack(audio)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self._drop(pc, video, audio)

        await pc.setRemoteDescription(offer)
        await pc.setLocalDescription(await pc.createAnswer())
        local = pc.localDescription
        return web.json_response({"sdp": local.sdp, "type": local.type})

    async def _drop(self, pc: RTCPeerConnection, video: _LatestVideo, audio: _QueuedAudio | None) -> None:
        self._video_tracks.discard(video)
        if audio is not None:
            self._audio_tracks.discard(audio)
        self.peers.discard(pc)
        await pc.close()

    async def on_start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_post("/offer", self._offer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])  # the port the OS picked
        self.started.set()

    async def on_stop(self) -> None:
        for pc in list(self.peers):
            await pc.close()
        self.peers.clear()
        if self._runner is not None:
            await self._runner.cleanup()

    async def process(self, tick: TimedTick) -> None:
        frame = await self.inputs["video"].try_read()
        if frame is not None:
            if frame.is_gpu():
                raise TypeError(f"{self.path}: input 'video' got a GPU frame; put a Download() before WebRTCSink")
            for track in self._video_tracks:
                track.push(frame)
            self.frames_out += 1 if self._video_tracks else 0
        audio = self.inputs["audio"]
        while (block := audio.read_nowait()) is not None:
            for atrack in self._audio_tracks:
                atrack.push(block)
