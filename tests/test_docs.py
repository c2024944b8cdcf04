"""The reference pages list what the code defines, so they cannot fall behind."""

from __future__ import annotations

from pathlib import Path

import attrs

from pratico_daemon.config import Config
from pratico_daemon.errors import HTTP_STATUS
from pratico_daemon.metrics import Metrics

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_config_reference_lists_every_key():
    text = (DOCS / "reference" / "config.md").read_text()
    for section in attrs.fields(Config):
        assert f"### [{section.name}]" in text, section.name
        part = text.split(f"### [{section.name}]")[1].split("### [")[0]
        for field in attrs.fields(section.type):
            assert f"| `{field.name}` |" in part, f"{section.name}.{field.name}"


def test_error_reference_lists_every_code():
    text = (DOCS / "reference" / "errors.md").read_text()
    for code, status in HTTP_STATUS.items():
        assert f"| `{code}` | {status} |" in text, code


def test_metrics_reference_lists_every_metric():
    text = (DOCS / "reference" / "metrics.md").read_text()
    for family in Metrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}`" in text, name
