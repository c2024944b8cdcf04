"""N aiortc peers, each sending a paced sine tone to one answerer (the recording bench).

    python recording_tones.py N

Plain asyncio, in its own process (the recorder under test runs under
trio-asyncio in the bench's process). Signalling over stdio, JSON lines:
prints {"user": "p0", "offer": sdp} for each peer; reads {"user", "answer"}
lines; prints {"user", "connected": true} when a peer's connection is up.
Runs until stdin closes.
"""

import asyncio
import fractions
import json
import sys
import time

import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame

RATE = 48000
SAMPLES = 960


class ToneTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, freq):
        super().__init__()
        self.freq, self.pts, self.start = freq, 0, None

    async def recv(self):
        if self.start is None:
            self.start = time.monotonic()
        wait = self.start + self.pts / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        t = np.arange(self.pts, self.pts + SAMPLES) / RATE
        data = (0.2 * 32767 * np.sin(2 * np.pi * self.freq * t)).astype(np.int16)
        frame = AudioFrame.from_ndarray(data.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.time_base, frame.pts = RATE, fractions.Fraction(1, RATE), self.pts
        self.pts += SAMPLES
        return frame


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(count):
    loop = asyncio.get_running_loop()
    pcs = {}
    for i in range(count):
        user = f"p{i}"
        pc = pcs[user] = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTrack(ToneTrack(300 + 100 * i))

        def watch(pc=pc, user=user):
            @pc.on("connectionstatechange")
            async def on_state():
                if pc.connectionState == "connected":
                    say({"user": user, "connected": True})

        watch()
        await pc.setLocalDescription(await pc.createOffer())
        say({"user": user, "offer": pc.localDescription.sdp})
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        data = json.loads(line)
        await pcs[data["user"]].setRemoteDescription(
            RTCSessionDescription(data["answer"], "answer"))
    for pc in pcs.values():
        await pc.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
