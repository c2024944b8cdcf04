"""One /classroom client on python-socketio's AsyncClient, driven by the Python tests.

Run as a subprocess (asyncio; trio-asyncio changes asyncio in the test process):
    python classroom_client.py URL
Reads JSON commands on stdin (connect / emit / close / exit, as classroom_client.js)
and prints one JSON line per observation.
"""

import asyncio
import json
import sys

import socketio

NS = "/classroom"


def say(obj):
    print(json.dumps(obj), flush=True)


async def main(url: str) -> None:
    client = socketio.AsyncClient(reconnection=False)

    @client.on("connect", namespace=NS)
    async def on_connect():
        say({"connected": True, "id": client.get_sid(NS)})

    @client.on("connect_error", namespace=NS)
    async def on_connect_error(data):
        say({"connect_error": (data or {}).get("message"), "data": (data or {}).get("data")})

    @client.on("disconnect", namespace=NS)
    async def on_disconnect(*reason):
        say({"disconnected": str(reason[0]) if reason else "io server disconnect"})

    @client.on("*", namespace=NS)
    async def on_any(event, payload=None, *rest):
        say({"event": event, "payload": payload})

    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            break
        command = json.loads(line)
        op = command["op"]
        if op == "connect":
            query = "&".join(f"{k}={v}" for k, v in command.get("query", {}).items())
            try:
                await client.connect(f"{url}?{query}", namespaces=[NS],
                                     auth=command.get("auth") or None,
                                     socketio_path="sockets", transports=["websocket"],
                                     wait_timeout=10)
            except socketio.exceptions.ConnectionError as exc:
                say({"connect_error": str(exc), "data": None})
        elif op == "emit":
            try:
                reply = await client.call(command["event"], command["payload"], namespace=NS,
                                          timeout=10)
                say({"ack": command["event"], "reply": reply})
            except Exception as exc:  # reported to the test as a line
                say({"ack": command["event"], "error": repr(exc)})
        elif op == "close":
            await client.disconnect()
            say({"closed": True})
        elif op == "exit":
            break
    if client.connected:
        await client.disconnect()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
