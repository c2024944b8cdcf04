"""`validate.fields` plus one rule of ours: no NUL character in any string.

PostgreSQL's `text` cannot hold U+0000 while SQLite and Redis can; refusing it
at the door keeps both modes answering the same `invalid_payload` instead of
one of them failing inside the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pratico_daemon.errors import AppError
from pratico_daemon.session.validate import Field, fields


def checked_fields(payload: Mapping[str, Any], **specs: Field | type | tuple[type, ...]
                   ) -> tuple[Any, ...]:
    values = fields(payload, **specs)
    for name, value in zip(specs, values, strict=True):
        if isinstance(value, str) and "\x00" in value:
            raise AppError("invalid_payload", f"{name}: contains a NUL character")
    return values
