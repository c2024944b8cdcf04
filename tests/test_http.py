from __future__ import annotations

from tests.support import http


async def test_health_ready_metrics_openapi(daemon):
    assert (await http.get(f"{daemon.url}/healthz")).json() == {"status": "ok"}
    ready = await http.get(f"{daemon.url}/readyz")
    assert ready.status == 200
    assert ready.json()["ready"] is True
    metrics = await http.get(f"{daemon.url}/metrics")
    assert metrics.status == 200
    assert b"pratico_connections" in metrics.body
    spec = (await http.get(f"{daemon.url}/openapi.json")).json()
    assert {"/healthz", "/readyz", "/metrics", "/openapi.json"} <= set(spec["paths"])


async def test_unknown_route_is_a_json_error(daemon):
    reply = await http.get(f"{daemon.url}/no/such/thing")
    assert reply.status == 404
    assert reply.json()["error"]["code"] == "not_found"


async def test_readyz_turns_not_ready_while_draining(daemon):
    daemon.daemon.services.health.draining = True
    reply = await http.get(f"{daemon.url}/readyz")
    assert reply.status == 503
    assert reply.json()["draining"] is True
