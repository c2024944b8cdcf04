"""The command line as an operator meets it: a real `python -m pratico_daemon`
process, its exit status and what it prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
import trio

from pratico_daemon import __version__
from tests.conftest import TEST_SECRET

EXIT_USAGE = 2
SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"


async def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("PRATICO_")}
    child_env.update(env or {})
    return await trio.run_process(
        [sys.executable, "-m", "pratico_daemon", *args], capture_stdout=True,
        capture_stderr=True, check=False, env=child_env,
    )


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


async def test_version():
    result = await run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.decode().strip() == f"pratico-daemon {__version__}"


async def test_check_config_accepts_the_shipped_file_and_says_the_mode(tmp_path: Path):
    env = {"PRATICO_STORAGE__STATE_DIR": str(tmp_path)}  # embedded secret lands here
    result = await run_cli("check-config", "--config", str(SHIPPED_CONFIG), env=env)
    assert (result.returncode, result.stdout.decode()) == (0, "configuration ok (embedded)\n")
    shared = write(tmp_path, '[redis]\nurl = "redis://127.0.0.1:6379/0"\n'
                             f'[auth]\njwt_secret = "{TEST_SECRET}"\n')
    result = await run_cli("check-config", "--config", shared)
    assert (result.returncode, result.stdout.decode()) == (0, "configuration ok (redis+postgres)\n")


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("[realtime\nport = 1\n", {}, "--config: "),
        ("[realtime]\nprot = 8080\n", {}, "realtime.prot: unknown key"),
        ('[realtime]\nport = "eighty"\n', {}, "realtime.port: not an integer"),
        ('[postgres]\ndsn = "mysql://db/x"\n', {}, "postgres.dsn: not a postgresql:// or "
                                                   "postgres:// URL"),
        ('[log]\nlevel = "loud"\n', {}, "log.level: 'loud' is not one of"),
        ("", {"PRATICO_REALTIME__PORT": "99999"}, "realtime.port: not a TCP port"),
        ('[redis]\nurl = "redis://127.0.0.1"\n', {}, "auth.jwt_secret: required when"),
        ('[auth]\njwt_secret = "short"\n', {}, "auth.jwt_secret: shorter than 32 bytes"),
    ],
    ids=["bad-toml", "unknown-key", "bad-type", "bad-dsn-scheme", "bad-choice",
         "bad-env-override", "shared-without-secret", "short-secret"],
)
async def test_check_config_names_the_key_and_exits_2(tmp_path: Path, text, env, expected):
    result = await run_cli("check-config", "--config", write(tmp_path, text), env=env)
    assert result.returncode == EXIT_USAGE
    stderr = result.stderr.decode()
    assert stderr.count("\n") == 1, stderr  # one line, never a traceback
    assert stderr.startswith(f"pratico-daemon: {expected}"), stderr
    assert result.stdout == b""


async def test_missing_config_file_is_one_line(tmp_path: Path):
    result = await run_cli("serve", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == EXIT_USAGE
    assert result.stderr.decode() == f"pratico-daemon: --config: {tmp_path / 'nope.toml'}: " \
                                     "no such file\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), "the following arguments are required: command"),
        (("frobnicate",), "invalid choice: 'frobnicate'"),
        (("serve", "--bogus"), "unrecognized arguments: --bogus"),
        (("token", "--sub", "u1", "--org", "o1"), "the following arguments are required: --role"),
        (("token", "--sub", "u", "--org", "o", "--role", "king"), "invalid choice: 'king'"),
        (("token", "--sub", "u", "--org", "o", "--role", "admin", "--ttl", "soon"),
         "invalid int value: 'soon'"),
    ],
)
async def test_wrong_usage_exits_2_with_one_line(args, expected):
    result = await run_cli(*args)
    assert result.returncode == EXIT_USAGE
    stderr = result.stderr.decode()
    assert stderr.count("\n") == 1, stderr
    assert expected in stderr


async def test_token_prints_a_jwt_that_verifies(tmp_path: Path):
    config = write(tmp_path, f'[auth]\njwt_secret = "{TEST_SECRET}"\n')
    result = await run_cli("token", "--config", config, "--sub", "u42", "--role", "teacher",
                           "--org", "org7", "--ttl", "120")
    assert result.returncode == 0, result.stderr
    token = result.stdout.decode().strip()
    claims = jwt.decode(token, TEST_SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["role"], claims["org_id"]) == ("u42", "teacher", "org7")
    assert claims["exp"] - claims["iat"] == 120
    assert token not in result.stderr.decode()


async def test_embedded_token_is_signed_with_the_generated_secret_the_daemon_uses(
    tmp_path: Path,
):
    # No secret configured: `token` and `serve` agree through state_dir.
    env = {"PRATICO_STORAGE__STATE_DIR": str(tmp_path / "state")}
    result = await run_cli("token", "--sub", "u1", "--role", "admin", "--org", "o1", env=env)
    assert result.returncode == 0, result.stderr
    secret = (tmp_path / "state" / "jwt_secret").read_text().strip()
    assert (tmp_path / "state" / "jwt_secret").stat().st_mode & 0o777 == 0o600
    claims = jwt.decode(result.stdout.decode().strip(), secret, algorithms=["HS256"])
    assert claims["role"] == "admin"
