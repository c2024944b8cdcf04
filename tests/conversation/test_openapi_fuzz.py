"""Schemathesis fuzzes the conversation endpoints of a running daemon (its real OpenAPI).

Any input gets a declared status with a body matching its declared schema,
and never a 5xx. Run with an admin token (every endpoint is reachable) and a
student token (the permission paths).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import trio

from tests.conftest import make_config, start_daemon

pytestmark = pytest.mark.slow
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance")


@pytest.mark.parametrize("role", ["admin", "student"])
async def test_conversation_endpoints_hold_their_openapi(nursery: trio.Nursery, tmp_path: Path,
                                                         role: str) -> None:
    daemon = await start_daemon(nursery, make_config(tmp_path / "state"))
    binary = Path(sys.executable).parent / "schemathesis"
    result = await trio.run_process(
        [str(binary), "run", f"{daemon.url}/openapi.json",
         "--include-path-regex", "^/(timeslots|sessions)",
         "--checks", CHECKS, "--max-examples", "25", "--seed", "7", "--workers", "1",
         "--generation-allow-x00", "false",
         "-H", f"Authorization: Bearer {daemon.token('fuzzer', role)}"],
        capture_stdout=True, capture_stderr=True, check=False,
        env={**os.environ, "NO_COLOR": "1"}, cwd=tmp_path)
    output = result.stdout.decode(errors="replace")
    assert result.returncode == 0, output[-6000:] + result.stderr.decode(errors="replace")[-2000:]
    assert "Tested: 8" in output, output[-3000:]  # every conversation operation
    daemon.daemon.request_shutdown()
