"""Readiness, as each component reports it; `/readyz` reads it.

Components own their line (`health.set("postgres", False, "connection refused")`);
nobody polls them. The daemon is ready when every line is ok and it is not
draining.
"""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class Check:
    ok: bool
    detail: str = ""


@attrs.define
class Health:
    checks: dict[str, Check] = attrs.Factory(dict)
    draining: bool = False

    def set(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks[name] = Check(ok, detail)

    def ready(self) -> bool:
        return not self.draining and bool(self.checks) and all(c.ok for c in self.checks.values())

    def report(self) -> dict[str, Any]:
        return {
            "ready": self.ready(),
            "draining": self.draining,
            "checks": {
                name: {"ok": c.ok, **({"detail": c.detail} if c.detail else {})}
                for name, c in sorted(self.checks.items())
            },
        }
