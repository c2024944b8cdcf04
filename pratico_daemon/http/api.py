"""Route registration that also writes the OpenAPI document.

Every REST endpoint is declared once, with `Api.route(...)`; the same
declaration registers the quart view and its OpenAPI operation, so
`/openapi.json` (and the schemathesis test that reads it) covers each endpoint
as soon as it exists. Schemas are plain JSON Schema dicts.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import orjson
from quart import Quart, Response, request

from pratico_daemon.errors import AppError

Handler = Callable[..., Awaitable[Any]]

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
_PARAM = re.compile(r"<(?:\w+:)?(\w+)>")


@attrs.define
class Operation:
    path: str
    method: str
    summary: str
    handler: Handler
    request: dict[str, Any] | None
    responses: dict[int, dict[str, Any] | None]
    security: bool
    query: dict[str, dict[str, Any]]
    content_type: str = "application/json"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )


async def json_body(schema_required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The request's JSON object, or `invalid_payload` naming what is wrong."""
    raw = await request.get_data(as_text=False)
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        raise AppError("invalid_payload", "body is not valid JSON") from None
    if not isinstance(body, dict):
        raise AppError("invalid_payload", "body must be a JSON object")
    missing = [k for k in schema_required if k not in body]
    if missing:
        raise AppError("invalid_payload", f"missing field: {missing[0]}")
    return body


@attrs.define
class Api:
    operations: list[Operation] = attrs.Factory(list)

    def route(
        self,
        path: str,
        method: str = "GET",
        *,
        summary: str,
        request: dict[str, Any] | None = None,
        responses: dict[int, dict[str, Any] | None] | None = None,
        security: bool = True,
        query: dict[str, dict[str, Any]] | None = None,
        content_type: str = "application/json",
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.operations.append(
                Operation(path, method.upper(), summary, handler, request,
                          responses or {200: None}, security, query or {}, content_type)
            )
            return handler

        return register

    def install(self, app: Quart) -> None:
        for op in self.operations:
            app.add_url_rule(
                op.path, f"{op.method} {op.path}", op.handler, methods=[op.method]
            )

    def openapi(self, title: str, version: str) -> dict[str, Any]:
        paths: dict[str, Any] = {}
        for op in self.operations:
            oa_path = _PARAM.sub(r"{\1}", op.path)
            params = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in _PARAM.findall(op.path)
            ] + [
                {"name": name, "in": "query", "required": False, "schema": schema}
                for name, schema in op.query.items()
            ]
            responses: dict[str, Any] = {}
            for status, schema in op.responses.items():
                content = {op.content_type: {"schema": schema}} if schema is not None else {
                    op.content_type: {}}
                responses[str(status)] = {"description": str(status), "content": content}
            responses["default"] = {
                "description": "error",
                "content": {"application/json": {"schema": ERROR_SCHEMA}},
            }
            item: dict[str, Any] = {
                "summary": op.summary,
                "operationId": f"{op.method.lower()}_{oa_path}",
                "parameters": params,
                "responses": responses,
            }
            if op.request is not None:
                item["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": op.request}},
                }
            if op.security:
                item["security"] = [{"bearer": []}]
            paths.setdefault(oa_path, {})[op.method.lower()] = item
        return {
            "openapi": "3.0.3",
            "info": {"title": title, "version": version},
            "paths": paths,
            "components": {
                "securitySchemes": {
                    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
                }
            },
        }
