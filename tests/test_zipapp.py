"""The single-file build: `scripts/build-zipapp` makes a shiv zipapp that runs
with a plain system `python3` (no venv, nothing of ours installed).

Building takes ~30 s (pip resolves and unpacks every dependency), so one
build serves every test of this module.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pratico_daemon import __version__
from tests.support import http
from tests.support.process import daemon_process, write_config

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = Path("/usr/bin/python3")
BUILD_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def zipapp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SYSTEM_PYTHON.exists():
        pytest.fail(f"{SYSTEM_PYTHON} is missing: the zipapp must run outside the venv")
    out = tmp_path_factory.mktemp("dist") / "pratico-daemon.pyz"
    started = time.monotonic()
    result = subprocess.run([str(ROOT / "scripts" / "build-zipapp"), str(out)],
                            capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    print(f"zipapp built in {time.monotonic() - started:.1f}s, {out.stat().st_size} bytes")
    assert os.access(out, os.X_OK)
    return out


@pytest.fixture(scope="module")
def plain_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment without the venv: system paths, a HOME and a SHIV_ROOT of our
    own (shared by the module: unpacking happens once, as on a server)."""
    root = tmp_path_factory.mktemp("plain")
    return {"PATH": "/usr/bin:/bin", "HOME": str(root / "home"), "LANG": "C.UTF-8",
            "SHIV_ROOT": str(root / "shiv")}


def run(zipapp: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SYSTEM_PYTHON), str(zipapp), *args], capture_output=True,
                          text=True, env=env, timeout=120, check=False)


@pytest.mark.timeout(BUILD_TIMEOUT_S)
def test_version_with_a_plain_python(zipapp: Path, plain_env):
    result = run(zipapp, plain_env, "--version")
    assert (result.returncode, result.stdout) == (0, f"pratico-daemon {__version__}\n")
    # It ran from the zipapp's own copy of the package, not from this checkout.
    assert any(Path(plain_env["SHIV_ROOT"]).iterdir())


@pytest.mark.timeout(BUILD_TIMEOUT_S)
def test_check_config_good_and_broken(zipapp: Path, plain_env, tmp_path: Path):
    good = write_config(tmp_path / "good.toml", tmp_path / "state")
    result = run(zipapp, plain_env, "check-config", "--config", str(good))
    assert (result.returncode, result.stdout) == (0, "configuration ok (embedded)\n")

    broken = tmp_path / "broken.toml"
    broken.write_text('[postgres]\ndsn = "mysql://db/pratico"\n')
    result = run(zipapp, plain_env, "check-config", "--config", str(broken))
    assert result.returncode == 2
    assert result.stderr == ("pratico-daemon: postgres.dsn: not a postgresql:// or "
                             "postgres:// URL\n")


@pytest.mark.timeout(BUILD_TIMEOUT_S)
async def test_serve_with_a_plain_python(zipapp: Path, plain_env, tmp_path: Path):
    config = write_config(tmp_path / "config.toml", tmp_path / "state")
    async with daemon_process(config, env=plain_env,
                              command=(str(SYSTEM_PYTHON), str(zipapp))) as proc:
        assert (await http.get(f"{proc.url}/healthz")).json() == {"status": "ok"}
        assert (await http.get(f"{proc.url}/readyz")).status == 200
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit(timeout_s=10) == 0
