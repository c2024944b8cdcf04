"""Real Socket.IO clients in subprocesses, steered line by line from a test.

`classroom_client.js` (npm socket.io-client: teachers, managers) and
`classroom_client.py` (python-socketio: students) take JSON commands on stdin
and print JSON observations; `Remote` sends the commands and waits for the
observation a step expects, keeping every server event it saw on the way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import orjson
import trio

from tests.support.node import CLIENTS_DIR, JS_DIR, node_binary


class Remote:
    def __init__(self, process: trio.Process, name: str) -> None:
        self.process = process
        self.name = name
        self.seen: list[dict[str, Any]] = []
        self._buffer = b""
        self.id: str | None = None
        self._checked = 0

    def __repr__(self) -> str:
        return f"<Remote {self.name} {self.id}>"

    async def send(self, **command: Any) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(orjson.dumps(command) + b"\n")

    async def _line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                raise EOFError(f"{self.name} exited; seen {self.seen}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        observation: dict[str, Any] = orjson.loads(line)
        self.seen.append(observation)
        return observation

    async def expect(self, predicate: Callable[[dict[str, Any]], bool],
                     limit_s: float = 15.0, *, anywhere: bool = False) -> dict[str, Any]:
        """The first new observation matching `predicate` (earlier ones stay in `seen`).

        `anywhere` also searches what was already consumed: a JS client resolves
        an ack's promise after it has handled the rest of the same read (a
        disconnect right behind the ack is printed first).
        """
        if anywhere:
            for observation in self.seen:
                if predicate(observation):
                    return observation
        for observation in self.seen[self._checked:]:
            self._checked += 1
            if predicate(observation):
                return observation
        with trio.move_on_after(limit_s):
            while True:
                observation = await self._line()
                self._checked = len(self.seen)
                if predicate(observation):
                    return observation
        raise AssertionError(f"{self.name}: nothing expected within {limit_s}s; saw {self.seen}")

    async def connect(self, query: dict[str, str], auth: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
        await self.send(op="connect", query=query, auth=auth or {})
        result = await self.expect(lambda o: "connected" in o or "connect_error" in o)
        self.id = result.get("id")
        return result

    async def call(self, event: str, payload: Any) -> dict[str, Any]:
        await self.send(op="emit", event=event, payload=payload)
        observation = await self.expect(lambda o: o.get("ack") == event)
        return observation.get("reply") or {"error": observation.get("error")}

    async def event(self, name: str, limit_s: float = 15.0) -> Any:
        observation = await self.expect(lambda o: o.get("event") == name, limit_s)
        return observation["payload"]

    def events(self, name: str) -> list[Any]:
        return [o["payload"] for o in self.seen if o.get("event") == name]

    async def close(self) -> None:
        await self.send(op="close")
        await self.expect(lambda o: "closed" in o)


async def _start(nursery: trio.Nursery, command: list[str], env: dict[str, str], name: str
                 ) -> Remote:
    async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await trio.run_process(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=None, check=False, env=env, task_status=task_status)

    process = await nursery.start(run)
    return Remote(process, name)


async def node_client(nursery: trio.Nursery, base_url: str) -> Remote:
    env = {**os.environ, "NODE_PATH": str(JS_DIR / "node_modules")}
    return await _start(nursery, [node_binary(), str(JS_DIR / "classroom_client.js"), base_url],
                        env, "node")


async def python_client(nursery: trio.Nursery, base_url: str) -> Remote:
    return await _start(nursery, [sys.executable, str(CLIENTS_DIR / "classroom_client.py"),
                                  base_url], dict(os.environ), "python-socketio")
