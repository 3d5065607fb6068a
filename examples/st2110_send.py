"""Send SMPTE colour bars as an ST 2110-20 stream (RTP, YCbCr-4:2:2 10-bit) and print how to watch it.

    python examples/st2110_send.py                      # 5 s to 127.0.0.1:5004, writes st2110.sdp
    python examples/st2110_send.py --seconds 0 --depth 8  # until Ctrl-C, 8-bit
    python examples/st2110_send.py --host 239.1.1.1     # multicast, as ST 2110 is used in practice

While it runs, in another terminal: the printed ffplay/ffmpeg or GStreamer command shows the
stream. At the end it prints the sender's counters (packets, largest burst, frames dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path

from streamlib.actors import RTPSendActor, TestPattern


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5004)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--depth", type=int, choices=(8, 10), default=10)
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to send (0: until Ctrl-C)")
    parser.add_argument("--sdp", default="st2110.sdp", help="where to write the session description")
    args = parser.parse_args()

    sdp = Path(args.sdp).resolve()
    sender = RTPSendActor(
        args.host, args.port, depth=args.depth, width=args.width, height=args.height, fps=30, sdp_file=sdp
    )
    frames = round(args.seconds * 30) if args.seconds > 0 else None
    TestPattern("smpte_bars", width=args.width, height=args.height, fps=30, burn_in=True, frames=frames) >> sender

    print(f"Sending {args.width}x{args.height}p30 YCbCr-4:2:2 {args.depth}-bit to {args.host}:{args.port}")
    print(f"SDP written to {sdp}:\n{sender.sdp()}")
    print("Watch it with ffmpeg (it needs a big socket buffer and no reorder queue for raw video):")
    print(f"  ffplay -protocol_whitelist file,udp,rtp -reorder_queue_size 0 -buffer_size 4194304 {sdp}")
    print(f"  ffmpeg -protocol_whitelist file,udp,rtp -reorder_queue_size 0 -buffer_size 4194304 -i {sdp} out.mkv")
    gst_format = "UYVP" if args.depth == 10 else "UYVY"
    caps = (
        "application/x-rtp,media=video,clock-rate=90000,encoding-name=RAW,sampling=YCbCr-4:2:2,"
        f"depth=(string){args.depth},width=(string){args.width},height=(string){args.height},"
        "colorimetry=BT709-2,payload=96"
    )
    print(f"or GStreamer ({gst_format}):")
    print(
        f'  gst-launch-1.0 udpsrc port={args.port} buffer-size=8388608 caps="{caps}" ! rtpvrawdepay ! '
        "capssetter caps=video/x-raw,colorimetry=bt709 ! videoconvert ! autovideosink"
    )
    await sender.join()  # the pattern ends after --seconds, which ends the sender
    net = sender.stats()["network"]
    print(
        f"Sent {net['frames_sent']} frames in {net['packets_sent']} packets "
        f"(largest burst {net['max_burst']} packets, {net['frames_dropped']} frames dropped)"
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
