"""WebRTCSink in a real browser: Debian's headless Chromium, driven by Playwright, plays the stream.

Pass: the page's own ``getStats()`` reports >= 85 frames (of a 30 fps 320x240 source) decoded by
3 s after the first one, and the first frame decoded <= 2 s after the page was opened.
"""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest

from streamlib.actors import AudioGenerator, TestPattern, WebRTCSink

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FRAMES_DECODED = """async () => {
  if (!window.pc) return 0;
  let n = 0;
  (await window.pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") n = r.framesDecoded || 0;
  });
  return n;
}"""
AUDIO_SAMPLES = """async () => {
  let n = 0;
  (await window.pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "audio") n = r.totalSamplesReceived || 0;
  });
  return n;
}"""


def test_non_loopback_address_needs_a_token() -> None:
    from streamlib import ActorInitError

    with pytest.raises(ActorInitError, match=r"/web_rtc_sink\S*: serving WebRTC on '0.0.0.0'.*needs token="):
        WebRTCSink("0.0.0.0")


@pytest.mark.skipif(CHROMIUM is None, reason="the chromium binary is absent (apt-get install chromium)")
@pytest.mark.timeout(90)
async def test_chromium_decodes_the_stream() -> None:
    from playwright.async_api import async_playwright

    source = TestPattern("moving_box", width=320, height=240, fps=30)
    tone = AudioGenerator(440.0, block_size=960)
    sink = WebRTCSink(token="s3cret")  # loopback needs none, but a given token is enforced
    source >> sink
    tone >> sink.inputs["audio"]
    while not sink.started.is_set():
        await asyncio.sleep(0.01)
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                refused = await page.goto(sink.url.split("?")[0])
                assert refused is not None and refused.status == 403
                opened = time.monotonic()
                await page.goto(sink.url)
                start = 0
                while start == 0:  # the first decoded frame, as the page's getStats() reports it
                    assert time.monotonic() - opened < 10, "no frame decoded within 10 s"
                    await asyncio.sleep(0.02)
                    start = await page.evaluate(FRAMES_DECODED)
                first = time.monotonic() - opened
                t0 = time.monotonic()
                await asyncio.sleep(3.0)
                decoded = await page.evaluate(FRAMES_DECODED)  # all frames decoded by 3 s after the first
                span = time.monotonic() - t0
                audio = await page.evaluate(AUDIO_SAMPLES)
                width = await page.evaluate("document.getElementById('video').videoWidth")
            finally:
                await browser.close()
    finally:
        await source.stop()
        await tone.stop()
        await sink.stop()
    print(f"WebRTC: first frame {first:.2f} s, {decoded} frames decoded in {span:.2f} s, {audio} audio samples")
    assert first <= 2.0, f"first frame decoded after {first:.2f} s"
    assert decoded * 3.0 / span >= 85, f"{decoded} frames decoded in {span:.2f} s"
    assert width == 320
    assert audio > 0
    assert sink.stats()["network"]["peers_total"] == 1 and sink.stats()["network"]["requests_refused"] >= 1
