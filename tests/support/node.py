"""Real clients in subprocesses (npm socket.io-client, python-socketio) and their JSON lines."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import orjson
import trio

JS_DIR = Path(__file__).parent.parent / "js"
CLIENTS_DIR = Path(__file__).parent.parent / "clients"


def node_binary() -> str:
    found = shutil.which("node")
    if found is None:
        raise RuntimeError("node is not installed: scripts/test installs the npm client with it")
    if not (JS_DIR / "node_modules" / "socket.io-client").is_dir():
        raise RuntimeError(f"run `npm install` in {JS_DIR} (scripts/test does)")
    return found


class NodeClient:
    """A node script whose stdout lines are JSON observations, read one at a time."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = b""

    async def next(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                raise EOFError(f"node exited: {self._buffer!r}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return orjson.loads(line)  # type: ignore[no-any-return]

    async def wait(self) -> int:
        return await self.process.wait()


async def start_node(nursery: trio.Nursery, script: str, *args: str) -> NodeClient:
    command = [node_binary(), str(JS_DIR / script), *args]
    env = {**os.environ, "NODE_PATH": str(JS_DIR / "node_modules")}
    return await _start(nursery, command, env, JS_DIR)


async def start_python_client(nursery: trio.Nursery, script: str, *args: str) -> NodeClient:
    """A python-socketio (asyncio) client script from tests/clients, in its own process."""
    command = [sys.executable, str(CLIENTS_DIR / script), *args]
    return await _start(nursery, command, dict(os.environ), CLIENTS_DIR)


async def _start(
    nursery: trio.Nursery, command: list[str], env: dict[str, str], cwd: Path
) -> NodeClient:
    async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await trio.run_process(command, stdout=-1, stderr=None, check=False, cwd=cwd,
                               env=env, task_status=task_status)

    process = await nursery.start(run)
    return NodeClient(process)
