"""protocol/ is sans-IO: it imports no event loop, no clock and no logging (STYLE.md, h11)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pratico_daemon.protocol

PROTOCOL_DIR = Path(pratico_daemon.protocol.__file__).parent
FORBIDDEN = {"trio", "trio_asyncio", "asyncio", "anyio", "logging", "time", "socket"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_protocol_modules_import_no_io_clock_or_logging() -> None:
    files = sorted(PROTOCOL_DIR.glob("*.py"))
    assert {f.name for f in files} >= {"event.py", "errors.py", "engineio.py", "socketio.py"}
    for path in files:
        for module in imported_modules(path):
            top = module.split(".")[0]
            assert top not in FORBIDDEN, f"{path.name} imports {module}"
            # Inside the package, protocol/ may only lean on the shared error codes.
            if top == "pratico_daemon":
                assert module.startswith("pratico_daemon.protocol") or module == (
                    "pratico_daemon.errors"
                ), f"{path.name} imports {module}"


def test_importing_the_codecs_loads_no_event_loop_or_logging() -> None:
    """The AST check misses indirect imports; a fresh interpreter catches them."""
    code = (
        "import sys; before = set(sys.modules)\n"
        "import pratico_daemon.protocol.engineio, pratico_daemon.protocol.socketio\n"
        "import pratico_daemon.protocol.jsonframe\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    assert "pratico_daemon.protocol.socketio" in out
    loaded = {name.split(".")[0] for name in out}
    assert not loaded & FORBIDDEN, loaded & FORBIDDEN
