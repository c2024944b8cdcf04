"""The embedded checkpoint file survives kill -9 of the process writing it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import trio

from pratico_daemon.storage.embedded_checkpoints import open_embedded_checkpoints
from tests.conftest import make_config
from tests.support.redis import make_services

WRITER = textwrap.dedent(
    """
    import sys, trio
    from pathlib import Path
    from pratico_daemon.storage.embedded_checkpoints import open_embedded_checkpoints
    from pratico_daemon.storage.protocols import Checkpoint
    from tests.conftest import make_config
    from tests.support.redis import make_services

    async def main():
        services = make_services(make_config(Path(sys.argv[1])))
        async with open_embedded_checkpoints(services.config, services) as stores:
            version = 0
            while True:
                version += 1
                batch = [Checkpoint(f"room-{i}", "pratico", version, {"page": version})
                         for i in range(5)]
                await stores.checkpoints.put_many(batch)
                print(version, flush=True)

    trio.run(main)
    """
)


async def test_checkpoints_survive_sigkill(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", WRITER, str(state)],
        stdout=subprocess.PIPE, cwd=Path(__file__).parents[2],
    )
    acknowledged = 0
    buffer = b""
    assert proc.stdout is not None
    with trio.fail_after(30):
        while acknowledged < 50:
            buffer += await proc.stdout.receive_some()
            *lines, buffer = buffer.split(b"\n")
            if lines:
                acknowledged = int(lines[-1])
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    await proc.stdout.aclose()

    services = make_services(make_config(state))
    async with open_embedded_checkpoints(services.config, services) as stores:
        restored = await stores.checkpoints.list()
    assert sorted(c.room_id for c in restored) == [f"room-{i}" for i in range(5)]
    # Every room is at least at the last version the writer saw committed.
    versions = {c.version for c in restored}
    assert len(versions) == 1  # one transaction per batch: never a torn batch
    assert versions.pop() >= acknowledged
