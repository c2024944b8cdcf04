"""A real WebRTC peer (aiortc) signalling through the daemon's /ws/conversation.

    python conversation_webrtc.py WS_BASE TOKEN ME PEER offer|answer

The offerer opens a data channel, sends its offer to PEER, then trickles each
of its ICE candidates as an `ice-candidate` message; the answerer answers
and trickles too. Candidates received are added to the connection (aiortc
also puts them in the SDP; a duplicate is harmless and counted anyway).
Prints JSON lines: {"ready": true} on `session-state`, {"state": …} on each
connection state change, and
{"connected": true, "candidatesReceived": n, "message": …} once the
connection is up and a message went over the data channel. Exits 0 then.
iceServers is [] (STACK-NOTES.md: the default public STUN server is unreachable).
"""

import asyncio
import itertools
import json
import sys

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp


def say(obj):
    print(json.dumps(obj), flush=True)


async def main(base: str, token: str, me: str, peer: str, role: str) -> None:
    loop = asyncio.get_running_loop()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    connected = loop.create_future()
    message = loop.create_future()
    received = 0
    remote_set = False
    pending = []

    @pc.on("connectionstatechange")
    async def on_state():
        say({"state": pc.connectionState})
        if pc.connectionState == "connected" and not connected.done():
            connected.set_result(True)
        if pc.connectionState == "failed" and not connected.done():
            connected.set_exception(RuntimeError("ICE failed"))

    def wire_channel(channel):
        @channel.on("message")
        def on_message(text):
            if role == "answer":
                channel.send(f"pong from {me}")
            if not message.done():
                message.set_result(text)

    @pc.on("datachannel")
    def on_datachannel(channel):
        wire_channel(channel)

    async with aiohttp.ClientSession() as http, \
            http.ws_connect(f"{base}/ws/conversation?token={token}") as ws:
        refs = itertools.count(1)

        async def send(kind, **payload):
            await ws.send_str(json.dumps({"type": kind, "ref": next(refs), **payload}))

        async def trickle():
            for line in pc.localDescription.sdp.splitlines():
                if line.startswith("a=candidate:"):
                    await send("ice-candidate", toUserId=peer,
                               candidate={"candidate": line[2:], "sdpMid": "0",
                                          "sdpMLineIndex": 0})

        async def add(candidate):
            parsed = candidate_from_sdp(candidate["candidate"].split(":", 1)[1])
            parsed.sdpMid = candidate.get("sdpMid")
            parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
            try:
                await pc.addIceCandidate(parsed)
            except Exception:  # already known from the SDP
                pass

        if role == "offer":
            channel = pc.createDataChannel("chat")
            wire_channel(channel)

            @channel.on("open")
            def on_open():
                channel.send(f"ping from {me}")

            await pc.setLocalDescription(await pc.createOffer())
            await send("offer", toUserId=peer, sdp=pc.localDescription.sdp)
            await trickle()

        async def read():
            nonlocal received, remote_set
            async for frame in ws:
                data = json.loads(frame.data)
                kind = data.get("type")
                if kind == "session-state":
                    say({"ready": True, "participants": data["participants"]})
                elif kind == "reply" and data.get("status") != "SUCCESS":
                    say({"fail": data})
                elif kind == "offer" and role == "answer":
                    await pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "offer"))
                    remote_set = True
                    for candidate in pending:
                        await add(candidate)
                    await pc.setLocalDescription(await pc.createAnswer())
                    await send("answer", toUserId=data["fromUserId"],
                               sdp=pc.localDescription.sdp)
                    await trickle()
                elif kind == "answer" and role == "offer":
                    await pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "answer"))
                    remote_set = True
                    for candidate in pending:
                        await add(candidate)
                elif kind == "ice-candidate":
                    assert data["fromUserId"] == peer
                    received += 1
                    if remote_set:
                        await add(data["candidate"])
                    else:
                        pending.append(data["candidate"])

        reader = asyncio.ensure_future(read())
        try:
            await asyncio.wait_for(connected, 30)
            text = await asyncio.wait_for(message, 30)
            await asyncio.sleep(0.5)  # let the last answer/pong leave
            say({"connected": True, "candidatesReceived": received, "message": text})
        finally:
            reader.cancel()
            await pc.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
