"""Payload checks for handlers: one line per field, one clear `invalid_payload` error.

    lesson_id, role = fields(payload, lesson_id=ID, role=OneOf("teacher", "student"))

A spec is a type (`str`, `int`, `bool`, `dict`, `list`), a tuple of types, or a
`Field` with bounds. Missing fields, wrong types and oversized strings raise
`AppError("invalid_payload", "<field>: <reason>")`, so the ERROR ack names
what to fix and nothing in the room changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from pratico_daemon.errors import AppError

_MISSING = object()


@attrs.frozen
class Field:
    types: tuple[type, ...]
    required: bool = True
    default: Any = None
    max_len: int | None = None
    min_len: int = 0
    choices: tuple[Any, ...] | None = None
    min_value: float | None = None
    max_value: float | None = None
    nullable: bool = False

    def check(self, name: str, value: Any) -> Any:
        if value is _MISSING:
            if self.required:
                raise AppError("invalid_payload", f"{name}: missing")
            return self.default
        if value is None and self.nullable:
            return None
        # bool is an int in Python; a JSON true is never a valid number here.
        if isinstance(value, bool) and bool not in self.types:
            raise AppError("invalid_payload", f"{name}: expected {self._names()}")
        if not isinstance(value, self.types):
            raise AppError("invalid_payload", f"{name}: expected {self._names()}")
        if isinstance(value, str | list | dict):
            if self.max_len is not None and len(value) > self.max_len:
                raise AppError("invalid_payload", f"{name}: longer than {self.max_len}")
            if len(value) < self.min_len:
                raise AppError("invalid_payload", f"{name}: shorter than {self.min_len}")
        if self.choices is not None and value not in self.choices:
            raise AppError("invalid_payload", f"{name}: not one of {list(self.choices)}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.min_value is not None and value < self.min_value:
                raise AppError("invalid_payload", f"{name}: below {self.min_value}")
            if self.max_value is not None and value > self.max_value:
                raise AppError("invalid_payload", f"{name}: above {self.max_value}")
        return value

    def _names(self) -> str:
        return " or ".join({"str": "string", "int": "integer", "float": "number",
                            "bool": "boolean", "dict": "object", "list": "array"}.get(
                                t.__name__, t.__name__) for t in self.types)


# Ids in this system are short strings (uuids, slugs, numeric ids as text); 200
# characters is generous and stops a 10 KB "id" at the door.
ID = Field((str,), min_len=1, max_len=200)
OPTIONAL_ID = Field((str,), required=False, min_len=1, max_len=200)
TEXT = Field((str,), max_len=4000)
OBJECT = Field((dict,))
INT = Field((int,))


def optional(spec: Field | type | tuple[type, ...], default: Any = None) -> Field:
    base = _as_field(spec)
    return attrs.evolve(base, required=False, default=default)


def one_of(*choices: Any) -> Field:
    return Field(tuple({type(c) for c in choices}), choices=choices)


def _as_field(spec: Field | type | tuple[type, ...]) -> Field:
    if isinstance(spec, Field):
        return spec
    if isinstance(spec, tuple):
        return Field(spec)
    return Field((spec,))


def fields(payload: Mapping[str, Any], **specs: Field | type | tuple[type, ...]) -> tuple[Any, ...]:
    """Check `payload` against `specs` and return the values in the order given."""
    if not isinstance(payload, Mapping):
        raise AppError("invalid_payload", "payload must be an object")
    return tuple(
        _as_field(spec).check(name, payload.get(name, _MISSING)) for name, spec in specs.items()
    )
