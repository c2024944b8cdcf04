"""Drives the gateway's "/echo" namespace with python-socketio's AsyncClient (asyncio).

Run as a subprocess (trio-asyncio changes asyncio for the whole test process):
    python gateway_echo.py URL TOKEN TRANSPORTS(websocket|default)
Prints one JSON line per observation.
"""

import asyncio
import json
import sys

import socketio


def say(obj):
    print(json.dumps(obj), flush=True)


async def main(url: str, token: str, transports: str) -> None:
    client = socketio.AsyncClient(reconnection=False)
    shouted = asyncio.get_running_loop().create_future()

    @client.on("shouted", namespace="/echo")
    async def on_shouted(payload, *offset):
        if not shouted.done():
            shouted.set_result(payload)

    kwargs = {"transports": ["websocket"]} if transports == "websocket" else {}
    await client.connect(url, namespaces=["/echo"], auth={"token": token},
                         socketio_path="sockets", wait_timeout=10, **kwargs)
    say({"connected": True, "transport": client.transport()})
    say({"echo": await client.call("echo", {"n": 2}, namespace="/echo", timeout=10)})
    say({"who": await client.call("whoami", {}, namespace="/echo", timeout=10)})
    say({"fail": await client.call("fail", {}, namespace="/echo", timeout=10)})
    say({"join": await client.call("join", {}, namespace="/echo", timeout=10)})
    await client.emit("shout", {"text": "from python"}, namespace="/echo")
    say({"shouted": await asyncio.wait_for(shouted, 10)})
    await client.disconnect()
    say({"done": True})


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
