"""A small HTTP client for tests: urllib in a worker thread, JSON in and out."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import attrs
import orjson
import trio


@attrs.frozen
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def _request(method: str, url: str, body: bytes | None, headers: dict[str, str]) -> Reply:
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return Reply(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, dict(err.headers), err.read())


async def request(
    method: str, url: str, json: Any = None, token: str | None = None,
    raw: bytes | None = None, headers: dict[str, str] | None = None,
) -> Reply:
    hdrs = dict(headers or {})
    body = raw
    if json is not None:
        body = orjson.dumps(json)
        hdrs["Content-Type"] = "application/json"
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    return await trio.to_thread.run_sync(_request, method, url, body, hdrs)


async def get(url: str, token: str | None = None) -> Reply:
    return await request("GET", url, token=token)
