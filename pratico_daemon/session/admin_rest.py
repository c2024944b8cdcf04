"""Admin REST over the live rooms and connections (issue 4): look, and disconnect.

All endpoints need a token with role `admin`. They read the registry's and the
gateway's statistics (plain reads of state that the owners keep current) and
ask the gateway to disconnect; nothing here writes room state.
"""

from __future__ import annotations

from typing import Any

import attrs
from quart import Response

from pratico_daemon.errors import AppError
from pratico_daemon.http.api import json_response
from pratico_daemon.http.app import api, require_admin, services

_ROOM = {"type": "object", "required": ["room_id", "kind", "state", "members"],
         "properties": {"room_id": {"type": "string"}, "kind": {"type": "string"},
                        "state": {"type": "string"}, "members": {"type": "integer"},
                        "inbox_queued": {"type": "integer"}, "commands": {"type": "integer"},
                        "broadcasts": {"type": "integer"}}}
_CLIENT = {"type": "object", "required": ["sid", "namespace", "state"],
           "properties": {"sid": {"type": "string"}, "namespace": {"type": "string"},
                          "user_id": {"type": ["string", "null"]},
                          "role": {"type": ["string", "null"]},
                          "state": {"type": "string"}, "framing": {"type": "string"},
                          "remote": {"type": "string"}}}
_DISCONNECTED = {"type": "object", "required": ["disconnected"],
                 "properties": {"disconnected": {"type": "integer"}}}


def _client_view(client: Any) -> dict[str, Any]:
    return {"sid": client.sid, "namespace": client.namespace,
            "user_id": client.identity.user_id, "role": client.identity.role,
            "state": client.state.value, "framing": client.framing.value,
            "remote": client.remote}


@api.route("/admin/rooms", summary="Live rooms with their statistics (admin)",
           responses={200: {"type": "object", "required": ["items"],
                            "properties": {"items": {"type": "array", "items": _ROOM}}}})
async def list_rooms() -> Response:
    require_admin()
    registry = services().rooms
    items = [attrs.asdict(s) for s in registry.statistics()] if registry is not None else []
    return json_response({"items": items})


@api.route("/admin/rooms/<room_id>", summary="One live room and its members (admin)",
           responses={200: {"type": "object", "required": ["room", "members"],
                            "properties": {"room": _ROOM, "members": {
                                "type": "array", "items": {"type": "object"}}}}})
async def room_members(room_id: str) -> Response:
    require_admin()
    registry = services().rooms
    room = registry.get(room_id) if registry is not None else None
    if room is None:
        raise AppError("not_found", "no such live room")
    members = await room.call(lambda r: [
        _client_view(m) if hasattr(m, "identity") else {"sid": m.member_id}
        for m in r.members.values()])
    return json_response({"room": attrs.asdict(room.statistics()), "members": members})


@api.route("/admin/connections", summary="Connected clients (admin)",
           query={"user_id": {"type": "string"}},
           responses={200: {"type": "object", "required": ["items"],
                            "properties": {"items": {"type": "array", "items": _CLIENT}}}})
async def list_connections() -> Response:
    from quart import request

    require_admin()
    gateway = services().gateway
    user = request.args.get("user_id")
    clients = gateway.clients() if gateway is not None else []
    items = [_client_view(c) for c in clients if user is None or c.identity.user_id == user]
    return json_response({"items": items})


@api.route("/admin/connections/<sid>", "DELETE", summary="Disconnect one client (admin)",
           responses={200: _DISCONNECTED})
async def disconnect_connection(sid: str) -> Response:
    require_admin()
    gateway = services().gateway
    targets = [c for c in (gateway.clients() if gateway else []) if c.sid == sid]
    if not targets:
        raise AppError("not_found", "no such connection")
    for client in targets:
        client.disconnect_soon("disconnected by an administrator")
    return json_response({"disconnected": len(targets)})


@api.route("/admin/users/<user_id>/connections", "DELETE",
           summary="Disconnect every client of a user (admin)", responses={200: _DISCONNECTED})
async def disconnect_user(user_id: str) -> Response:
    require_admin()
    gateway = services().gateway
    targets = [c for c in (gateway.clients() if gateway else [])
               if c.identity.user_id == user_id]
    for client in targets:
        client.disconnect_soon("disconnected by an administrator")
    return json_response({"disconnected": len(targets)})
