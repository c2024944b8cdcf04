"""Participants whose real aiortc peers send a tone to the daemon's recorder.

    python recording_peers.py WS_BASE PEERS_JSON

PEERS_JSON is a list of {"user", "token", "freq", "consent"}. Each peer opens
/ws/conversation with its token and reacts to the server:

- `record-request` → a new RTCPeerConnection with one paced sine-tone audio
  track (`freq` Hz, 48 kHz, 20 ms frames), `record-offer {sdp}`, its
  candidates trickled as `record-ice-candidate`;
- `record-answer` → the answer is applied; `record-stop` → the peer
  connection is closed (nothing more is sent);
- a peer without consent that sees the session active sends a
  `record-offer` anyway and reports the refusal.

Prints JSON lines {"user", "event", ...}: ready, requested, connected,
stopped, refused, ended. Exits 0 once every peer saw `session-ended`.
Plain asyncio, in its own process: `import trio_asyncio` in the daemon's
process changes asyncio process-wide (STACK-NOTES.md).
"""

import asyncio
import fractions
import itertools
import json
import sys
import time

import aiohttp
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from av import AudioFrame

RATE = 48000
SAMPLES = 960


def say(user, event, **extra):
    print(json.dumps({"user": user, "event": event, **extra}), flush=True)


class ToneTrack(MediaStreamTrack):
    """A sine tone paced in real time (STACK-NOTES.md: tracks must pace themselves)."""

    kind = "audio"

    def __init__(self, freq):
        super().__init__()
        self.freq = freq
        self.pts = 0
        self.start = None

    async def recv(self):
        if self.start is None:
            self.start = time.monotonic()
        wait = self.start + self.pts / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        t = np.arange(self.pts, self.pts + SAMPLES) / RATE
        data = (0.3 * 32767 * np.sin(2 * np.pi * self.freq * t)).astype(np.int16)
        frame = AudioFrame.from_ndarray(data.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.time_base = fractions.Fraction(1, RATE)
        frame.pts = self.pts
        self.pts += SAMPLES
        return frame


async def peer(http, base, spec):
    user, freq, consent = spec["user"], spec["freq"], spec["consent"]
    refs = itertools.count(1)
    pc = None
    tried = False
    async with http.ws_connect(f"{base}/ws/conversation?token={spec['token']}") as ws:

        async def send(kind, **payload):
            await ws.send_str(json.dumps({"type": kind, "ref": next(refs), **payload}))

        async def offer():
            nonlocal pc
            if pc is not None:
                await pc.close()
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            current = pc

            @pc.on("connectionstatechange")
            async def on_state():
                if current.connectionState == "connected":
                    say(user, "connected")

            pc.addTrack(ToneTrack(freq))
            await pc.setLocalDescription(await pc.createOffer())
            await send("record-offer", sdp=pc.localDescription.sdp)
            for line in pc.localDescription.sdp.splitlines():
                if line.startswith("a=candidate:"):
                    await send("record-ice-candidate",
                               candidate={"candidate": line[2:], "sdpMid": "0",
                                          "sdpMLineIndex": 0})

        try:
            async for message in ws:
                data = json.loads(message.data)
                kind = data.get("type")
                if kind == "session-state":
                    say(user, "ready", status=data["status"])
                if kind in ("session-state", "session-started") and not consent and not tried:
                    if kind == "session-started" or data.get("status") == "active":
                        tried = True
                        probe = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                        probe.addTrack(ToneTrack(freq))
                        await probe.setLocalDescription(await probe.createOffer())
                        await send("record-offer", sdp=probe.localDescription.sdp)
                        await probe.close()
                elif kind == "record-request":
                    say(user, "requested")
                    await offer()
                elif kind == "record-answer" and pc is not None:
                    await pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "answer"))
                    say(user, "answered")
                elif kind == "record-stop":
                    if pc is not None:
                        await pc.close()
                        pc = None
                    say(user, "stopped")
                elif kind == "reply" and data.get("status") != "SUCCESS":
                    say(user, "refused", reply=data)
                elif kind == "session-ended":
                    say(user, "ended", reason=data.get("reason"))
                    return
        finally:
            if pc is not None:
                await pc.close()


async def main(base, peers_json):
    specs = json.loads(peers_json)
    async with aiohttp.ClientSession() as http:
        await asyncio.wait_for(asyncio.gather(*(peer(http, base, s) for s in specs)), 300)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
