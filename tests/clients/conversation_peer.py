"""A /conversation participant on python-socketio's AsyncClient (asyncio, own process).

    python conversation_peer.py URL TOKEN USER_ID
Prints one JSON line per server event ({"event": name, "payload": …}); answers
every `offer` with an `answer` (acked, the ack printed) to its sender.
Runs until killed.
"""

import asyncio
import json
import sys

import socketio

EVENTS = ("session-state", "participant-joined", "participant-left", "media-state-changed",
          "session-started", "session-ended", "reminder", "offer", "answer", "ice-candidate")


def say(obj):
    print(json.dumps(obj), flush=True)


async def main(url: str, token: str, me: str) -> None:
    client = socketio.AsyncClient(reconnection=False)

    def recorder(name):
        async def handler(payload, *offset):
            say({"event": name, "payload": payload})
            if name == "offer":
                ack = await client.call("answer", {"toUserId": payload["fromUserId"],
                                                   "sdp": f"answer-from-{me}"},
                                        namespace="/conversation", timeout=10)
                say({"answered": ack})
        return handler

    for name in EVENTS:
        client.on(name, recorder(name), namespace="/conversation")
    await client.connect(url, namespaces=["/conversation"], auth={"token": token},
                         socketio_path="sockets", transports=["websocket"], wait_timeout=10)
    say({"connected": True})
    await client.wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
