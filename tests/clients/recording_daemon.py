"""A whole daemon with recording, as a process a test can kill -9.

    python recording_daemon.py CONFIG.toml

Runs `Daemon` with the recorded `/conversation` product
(`pratico_daemon.recording.create_namespace`: the daemon's default product
list does not include it yet, see docs/recording.md, hook 1) and prints one
JSON line {"http": url, "ws": url} once it listens.
"""

import json
import sys

import trio

from pratico_daemon.config import load
from pratico_daemon.daemon import Daemon
from pratico_daemon.recording import create_namespace


async def main(path: str) -> None:
    daemon = Daemon(load(path, environ={}), products=(create_namespace,))
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(daemon.run)
        print(json.dumps({"http": addresses.http_url, "ws": f"ws://{addresses.realtime}"}),
              flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
