"""Schemathesis against the running daemon's own `/openapi.json`.

Operations are discovered from the live document, so every REST endpoint a
later change declares with `Api.route` is fuzzed here without editing this
file. Each operation is called with generated cases twice: with an admin
bearer token (so handlers behind authentication are reached) and without
one. Checked: no 5xx; the status code is documented; the content type and
the body match the documented response.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from pratico_daemon.auth import Authenticator
from pratico_daemon.config import load
from tests.support.process import write_config

# Bounded so that the whole run stays well under a minute as endpoints grow.
EXAMPLES_PER_OPERATION = int(os.environ.get("PRATICO_FUZZ_EXAMPLES", "15"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def live_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A daemon subprocess (embedded) and an admin token; (base URL, token)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    config = write_config(tmp / "config.toml", tmp / "state",
                          log={"file": str(tmp / "daemon.log"), "format": "json"})
    token = Authenticator.from_config(load(config, environ={})).mint("admin1", "admin", "org1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRATICO_")}
    proc = subprocess.Popen([sys.executable, "-m", "pratico_daemon", "serve", "--config",
                             str(config)], env=env, stderr=subprocess.PIPE)
    try:
        address = _wait_ready(tmp / "daemon.log", proc)
        yield f"http://{address}", token
    finally:
        proc.send_signal(signal.SIGTERM)
        stderr = proc.communicate(timeout=30)[1]
        # A crash hidden behind a 500 would show in the log as "unhandled error".
        log = (tmp / "daemon.log").read_text()
        assert "unhandled error" not in log, log[-3000:]
        assert proc.returncode == 0, stderr.decode()[-2000:]


def _wait_ready(log_file: Path, proc: subprocess.Popen) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        if log_file.exists():
            for line in log_file.read_text().splitlines():
                match = re.search(r" ready on (\S+)$", orjson.loads(line)["msg"])
                if match:
                    return match.group(1)
        time.sleep(0.05)
    raise AssertionError("daemon not ready within 30 s")


def _fuzz(base_url: str, headers: dict[str, str]) -> list[str]:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  derandomize=True, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS,
                                   timeout=30)

        run()
        tested.append(f"{operation.method.upper()} {operation.path}")
    return tested


def test_every_operation_with_an_admin_token(live_daemon):
    base_url, token = live_daemon
    tested = _fuzz(base_url, {"Authorization": f"Bearer {token}"})
    # (schemathesis leaves out the document it was loaded from, /openapi.json)
    assert {"GET /healthz", "GET /readyz", "GET /metrics"} <= set(tested)
    assert any(op.endswith("}") for op in tested)  # endpoints with path parameters too


def test_every_operation_without_credentials(live_daemon):
    base_url, _ = live_daemon
    tested = _fuzz(base_url, {})
    assert len(tested) >= 4
