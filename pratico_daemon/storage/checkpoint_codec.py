"""How a `Checkpoint` becomes bytes and back, shared by the Redis and SQLite stores.

One JSON document (orjson) per room: `{room_id, kind, version, schema, state}`.
Writing refuses what could not be restored (`InvalidData`, with a log line):
state that is not JSON-serialisable, a snapshot over `limits.max_snapshot_bytes`,
a schema newer than this build reads. Reading never raises: a stored document
that is not valid JSON, has the wrong shape or comes from a newer schema (a
newer daemon wrote it during a rolling upgrade) is skipped with a log line, so
one bad checkpoint cannot stop the daemon from restoring the other rooms.
"""

from __future__ import annotations

from typing import Any, NoReturn

import orjson

from pratico_daemon import logs
from pratico_daemon.storage.protocols import Checkpoint, InvalidData

log = logs.get("storage.checkpoints")

# The newest checkpoint schema this build can restore. A room kind that changes
# its state's shape bumps `Checkpoint.schema` and teaches its restore code the
# old shape; this number moves with it.
MAX_SCHEMA = 1


def encode(cp: Checkpoint, *, max_bytes: int, max_schema: int = MAX_SCHEMA) -> bytes:
    """The stored form of `cp`, or `InvalidData` when it could not be restored later."""
    if not isinstance(cp.version, int) or isinstance(cp.version, bool) or cp.version < 0:
        _refuse(cp.room_id, f"version must be a non-negative integer, not {cp.version!r}")
    if not isinstance(cp.schema, int) or cp.schema > max_schema:
        _refuse(cp.room_id, f"schema {cp.schema!r} is newer than this build reads ({max_schema})")
    if not cp.room_id or not isinstance(cp.room_id, str):
        _refuse(cp.room_id, "room_id must be a non-empty string")
    try:
        data = orjson.dumps(
            {
                "room_id": cp.room_id,
                "kind": cp.kind,
                "version": cp.version,
                "schema": cp.schema,
                "state": cp.state,
            }
        )
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        _refuse(cp.room_id, f"state is not JSON-serialisable: {exc}")
    if len(data) > max_bytes:
        _refuse(cp.room_id, f"snapshot of {len(data)} bytes exceeds {max_bytes}")
    return data


def decode(raw: bytes | str, *, where: str, max_schema: int = MAX_SCHEMA) -> Checkpoint | None:
    """The checkpoint stored at `where`, or None (logged) when it cannot be restored."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        log.error("checkpoint %s skipped: not valid JSON (%s)", where, exc)
        return None
    if not isinstance(doc, dict):
        log.error("checkpoint %s skipped: not a JSON object", where)
        return None
    room_id, kind, version = doc.get("room_id"), doc.get("kind"), doc.get("version")
    schema, state = doc.get("schema", 1), doc.get("state")
    if not (
        isinstance(room_id, str)
        and isinstance(kind, str)
        and isinstance(version, int)
        and isinstance(schema, int)
        and isinstance(state, dict)
    ):
        log.error("checkpoint %s skipped: missing or mistyped fields", where)
        return None
    if schema > max_schema:
        log.error(
            "checkpoint %s skipped: schema %d is newer than this build reads (%d)",
            where, schema, max_schema,
        )
        return None
    return Checkpoint(room_id=room_id, kind=kind, version=version, state=state, schema=schema)


def _refuse(room_id: Any, reason: str) -> NoReturn:
    log.warning("checkpoint of room %r refused: %s", room_id, reason, extra={"room": room_id})
    raise InvalidData(f"checkpoint of room {room_id!r} refused: {reason}")
