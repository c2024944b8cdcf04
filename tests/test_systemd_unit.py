"""The shipped systemd unit: `systemd-analyze verify` accepts it, its hardening
scores well, and it says what the daemon relies on (Type=notify, watchdog...).

`systemd-analyze verify` works without a running systemd (containers, CI) as
long as `--man=no` is given (the unit's Documentation= is not a man page) and
the ExecStart= binary exists. The unit points at /opt/pratico-daemon/...,
so the test verifies a copy whose binary path is an executable it controls;
every other line is the shipped one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import attrs
import pytest

from pratico_daemon.config import Config

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "pratico-daemon.service"
ENV_EXAMPLE = ROOT / "systemd" / "pratico-daemon.env.example"
INSTALLED_BINARY = "/opt/pratico-daemon/pratico-daemon.pyz"


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail(
            "systemd-analyze is missing: install it (Debian: apt-get install systemd) "
            "so the unit file can be verified"
        )
    return tool


def _directives(text: str) -> dict[str, list[str]]:
    """`Key=Value` lines of a unit, keeping repeated keys (SystemCallFilter=...)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The shipped unit with its ExecStart= binary replaced by a stub that exists."""
    binary = tmp_path / "opt" / "pratico-daemon.pyz"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    text = UNIT.read_text()
    assert INSTALLED_BINARY in text, "ExecStart= no longer points at the documented path"
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(INSTALLED_BINARY, str(binary)))
    return copy


def test_unit_passes_systemd_analyze_verify(unit_copy: Path):
    result = subprocess.run(
        [_systemd_analyze(), "verify", "--man=no", str(unit_copy)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    # verify prints warnings (unknown keys, bad values) and still exits 0 for
    # some of them: a clean unit has no output at all.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_unit_hardening_exposure_is_low(unit_copy: Path):
    result = subprocess.run(
        [_systemd_analyze(), "security", "--offline=true", "--threshold=20", str(unit_copy)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert match, result.stdout[-500:]
    # 0 is a fully locked-down unit, 10 an unconfined one; "OK" ends at 2.
    assert float(match.group(1)) <= 2.0


def test_unit_declares_what_the_daemon_relies_on():
    d = _directives(UNIT.read_text())
    assert d["Type"] == ["notify"]
    assert d["NotifyAccess"] == ["main"]
    assert d["Restart"] == ["on-failure"]
    assert d["DynamicUser"] == ["yes"]
    assert d["StateDirectory"] == ["pratico-daemon"]
    assert d["ProtectSystem"] == ["strict"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["ExecStart"][0].startswith(f"{INSTALLED_BINARY} serve --config ")
    assert "@system-service" in d["SystemCallFilter"]
    assert int(d["LimitNOFILE"][0]) >= 20000 + 1000  # limits.max_connections + slack
    for key in ("ProtectHome", "NoNewPrivileges", "PrivateTmp", "RestrictAddressFamilies"):
        assert key in d, key
    # systemd must wait longer than the daemon's own drain before SIGKILL.
    stop_s = float(d["TimeoutStopSec"][0].removesuffix("s"))
    assert stop_s > Config().daemon.shutdown_timeout_s
    assert float(d["WatchdogSec"][0].removesuffix("s")) > 0


def test_env_example_names_only_real_keys():
    sections = {f.name: {g.name for g in attrs.fields(f.type)} for f in attrs.fields(Config)}
    names = re.findall(r"^#?PRATICO_(\w+?)__(\w+)=", ENV_EXAMPLE.read_text(), re.MULTILINE)
    assert names
    for section, key in names:
        assert key.lower() in sections[section.lower()], f"{section}__{key}"
