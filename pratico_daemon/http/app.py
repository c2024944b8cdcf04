"""The quart-trio application: operators' endpoints plus every REST module's routes.

The app owns no tasks (quart-trio's `app.nursery` is never used): handlers reach
the daemon through `Services` and send commands to room actors, which own
their state. Every error is `{"error": {"code", "message"}}` (PROTOCOL.md §1c).
"""

from __future__ import annotations

from typing import Any

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from pratico_daemon import __version__, logs
from pratico_daemon.auth import Claims
from pratico_daemon.errors import AppError
from pratico_daemon.http.api import Api, json_response
from pratico_daemon.metrics import CONTENT_TYPE
from pratico_daemon.services import Services

log = logs.get("http")
api = Api()
_HTTP_CODES = {400: "invalid_payload", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "not_found", 413: "payload_too_large", 429: "rate_limited"}


def services() -> Services:
    from quart import current_app

    return current_app.config["SERVICES"]  # type: ignore[no-any-return]


def bearer_claims() -> Claims:
    """The caller's verified token (`Authorization: Bearer …`), or `unauthorized`."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AppError("unauthorized", "missing bearer token")
    return services().auth.verify(token.strip())


def require_admin() -> Claims:
    claims = bearer_claims()
    if claims.role != "admin":
        raise AppError("forbidden", "admin role required")
    return claims


@api.route("/healthz", summary="Liveness: the process answers", security=False,
           responses={200: {"type": "object", "required": ["status"],
                            "properties": {"status": {"type": "string"}}}})
async def healthz() -> Response:
    return json_response({"status": "ok"})


_READY_SCHEMA = {"type": "object", "required": ["ready", "draining", "checks"],
                 "properties": {"ready": {"type": "boolean"}, "draining": {"type": "boolean"},
                                "checks": {"type": "object"}}}


@api.route("/readyz", summary="Readiness: listeners up, stores reachable, not draining",
           security=False, responses={200: _READY_SCHEMA, 503: _READY_SCHEMA})
async def readyz() -> Response:
    health = services().health
    return json_response(health.report(), 200 if health.ready() else 503)


@api.route("/metrics", summary="Prometheus metrics", security=False,
           responses={200: {"type": "string"}}, content_type="text/plain")
async def metrics() -> Response:
    return Response(services().metrics.render(), content_type=CONTENT_TYPE)


@api.route("/openapi.json", summary="This document", security=False,
           responses={200: {"type": "object"}})
async def openapi() -> Response:
    return json_response(api.openapi("pratico-daemon", __version__))


# Product REST modules declare their routes on `api` when imported.
ROUTE_MODULES = (
    "pratico_daemon.classroom.rest",
    "pratico_daemon.pratico.rest",
    "pratico_daemon.conversation.rest",
    "pratico_daemon.session.admin_rest",
)


def _import_route_modules() -> None:
    import importlib

    for name in ROUTE_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if not (name == missing or name.startswith(missing + ".")):
                raise  # a real import error inside the module


def create_app(svc: Services) -> QuartTrio:
    _import_route_modules()
    app = QuartTrio("pratico_daemon", static_folder=None)
    app.config["SERVICES"] = svc
    app.config["MAX_CONTENT_LENGTH"] = svc.config.limits.max_snapshot_bytes + 64 * 1024
    api.install(app)

    @app.errorhandler(AppError)
    async def app_error(exc: AppError) -> Response:
        svc.metrics.errors.labels(exc.code).inc()
        return json_response(exc.http_body(), exc.http_status)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = _HTTP_CODES.get(status, "invalid_payload" if status < 500 else "internal")
        body: dict[str, Any] = {"error": {"code": code, "message": exc.description or code}}
        return json_response(body, status)

    @app.errorhandler(Exception)
    async def crash(exc: Exception) -> Response:
        log.exception("unhandled error in %s %s", request.method, request.path)
        svc.metrics.errors.labels("internal").inc()
        return json_response({"error": {"code": "internal", "message": "internal error"}}, 500)

    return app
