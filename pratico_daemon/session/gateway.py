"""The gateway: clients in, events to products, replies and broadcasts out.

It plugs into the front listener (`handlers()`), owns every client session,
and is the only thing that talks to `Namespace`s on a connection's behalf:

- connect: authenticate (a JWT in the CONNECT `auth` payload or the `auth=` /
  `token=` query; a bad token is refused, never downgraded to anonymous), ask the
  namespace, and either recover a recently dropped client (same sid, missed
  broadcasts replayed, `recovered: true`) or start a new one;
- events: rate limit, find the handler, run it, answer exactly one ack
  (`{"status": "SUCCESS"|"ERROR", "data": …}`) when one was asked for;
- disconnects: `Namespace.disconnect` at once, then `gone` either at once
  (explicit goodbye) or when the recovery window lapses.

Framing-specific code lives in `engine.py` (Socket.IO over Engine.IO, WebSocket
and long-polling) and `json_conn.py` (plain JSON); both call back here.
Tasks that outlive one request (polling heartbeats, recovery timers, deferred
closes) run in the gateway's own nursery, started by the daemon.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio

from pratico_daemon import logs
from pratico_daemon.errors import AppError
from pratico_daemon.protocol.event import Event, error, success
from pratico_daemon.session import encoders  # noqa: F401  (installs the broadcast encoders)
from pratico_daemon.session.client import ClientState, Conduit, SessionClient
from pratico_daemon.session.namespace import Identity, Namespace
from pratico_daemon.transport import FrontListener, Handlers, Request, Response, WebSocket

if TYPE_CHECKING:
    from pratico_daemon.services import Services
    from pratico_daemon.session.engine import EngineConnection

log = logs.get("gateway")


def new_id() -> str:
    """A connection or socket id: 120 random bits, URL-safe, like Socket.IO's."""
    return secrets.token_urlsafe(15)


@attrs.frozen
class Opened:
    """The outcome of a successful namespace connect."""

    client: SessionClient
    recovered: bool
    extra: Mapping[str, Any]
    replay: tuple[Any, ...] = ()


class Gateway:
    def __init__(self, services: Services, namespaces: Iterable[Namespace]) -> None:
        self.services = services
        self.config = services.config
        self.namespaces: dict[str, Namespace] = {ns.name: ns for ns in namespaces}
        self.engines: dict[str, EngineConnection] = {}
        self._detached: dict[str, tuple[SessionClient, trio.CancelScope]] = {}
        self._nursery: trio.Nursery | None = None
        self.front: FrontListener | None = None  # set by the daemon once the listener exists
        self.draining = False
        # Disconnect hooks handed to the nursery and not finished: the drain
        # waits for them, so that presence is written before the stores close.
        self._losing = 0
        self._lost_all = trio.Event()
        # (deadline, order, session) of every open Engine.IO session (`_heartbeat`).
        self._beats: list[tuple[float, int, EngineConnection]] = []
        self._beat_order = itertools.count()

    def __repr__(self) -> str:
        clients = sum(len(ns.directory) for ns in self.namespaces.values())
        return (f"<Gateway {len(self.namespaces)} namespaces {clients} clients "
                f"{len(self._detached)} detached>")

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Own the nursery for the heartbeat, recovery timers and deferred closes."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._heartbeat)
            task_status.started(self)
            await trio.sleep_forever()

    def watch_heartbeat(self, engine: EngineConnection) -> None:
        """Ping this session when due (`_heartbeat`), from now until it closes."""
        heapq.heappush(self._beats, (engine.eio.next_deadline(), next(self._beat_order), engine))

    async def _heartbeat(self) -> None:
        """One task pings every Engine.IO session (not one task per session: ~3 KB each).

        It wakes a few times per interval, so a ping goes out at most a quarter
        interval late and a dead peer is dropped at most a quarter timeout late.
        It visits only the sessions whose deadline has come, from a heap: a
        sweep over every session each second cost 2,000 calls a second with
        2,000 idle clients (bench/gateway_bench.py). A heap entry may be early
        (a pong moved the session's next ping later): the session is then
        pushed back at its real deadline. Deadlines only move later, except
        through `heartbeat` itself, which re-files the session.
        """
        eio = self.config.engineio
        tick = min(1.0, eio.ping_interval_s / 4, eio.ping_timeout_s / 4)
        beats = self._beats
        while True:
            await trio.sleep(tick)
            now = trio.current_time()
            while beats and beats[0][0] <= now:
                engine = heapq.heappop(beats)[2]
                if engine.closed:
                    continue
                engine.heartbeat(now)
                if not engine.closed:
                    self.watch_heartbeat(engine)

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> bool:
        """Run `fn(*args, **kwargs)` in the gateway's nursery, failures logged and contained.

        False when the nursery is already closed and `fn` will not run.
        """
        assert self._nursery is not None, "Gateway.run is not running"

        async def guarded() -> None:
            try:
                await fn(*args, **kwargs)
            except Exception:
                log.exception("gateway task %s failed", getattr(fn, "__name__", fn))

        try:
            self._nursery.start_soon(guarded)
        except RuntimeError:  # the daemon is past its drain: nothing left to tell
            log.debug("gateway closed; %s not run", getattr(fn, "__name__", fn))
            return False
        return True

    def handlers(self) -> Handlers:
        return Handlers(websocket=self.websocket, polling=self.polling, drain=self._goodbye)

    async def drain(self) -> None:
        """The daemon's drain: the front stops accepting, calls `_goodbye`, closes with 1001.

        Returns once every client's disconnect hook has run: a teacher's
        presence must be put in grace before the daemon closes its stores.
        """
        if self.front is not None:
            await self.front.drain()
        else:
            await self._goodbye()
        while self._losing:
            await self._lost_all.wait()

    async def _goodbye(self) -> None:
        """Tell every Socket.IO session to reconnect (the front then closes all with 1001).

        Clients are told `disconnect` (presence) but not `gone`: the process is going
        away, the rooms are checkpointed, and the clients will come back to whichever
        node restores them.
        """
        self.draining = True
        for engine in list(self.engines.values()):
            engine.going_away()
        for _, scope in list(self._detached.values()):
            scope.cancel()

    # -- transport entry points ----------------------------------------------------------

    async def websocket(self, ws: WebSocket, request: Request) -> None:
        from pratico_daemon.session.engine import EngineConnection
        from pratico_daemon.session.json_conn import JsonConnection

        if ws.framing == "json":
            await JsonConnection(self, ws, request).run()
            return
        sid = request.query.get("sid")
        engine = (self.engines.get(sid) if sid
                  else EngineConnection.over_websocket(self, ws, request))
        # This frame lives as long as the connection and nothing below needs the
        # request: drop its head (~1.3 KB per connection, bench/gateway_bench.py).
        del request
        if engine is None:
            await ws.aclose(1008, "unknown Engine.IO session")
        elif sid:
            await engine.run_upgrade(ws)
        else:
            await engine.run_websocket()

    async def polling(self, request: Request, body: bytes) -> Response:
        from pratico_daemon.session.engine import EngineConnection

        if request.query.get("EIO") != "4":
            return Response.error(400, "invalid_payload", "only Engine.IO v4 (EIO=4) is served")
        sid = request.query.get("sid")
        if not sid:
            if request.method != "GET":
                return Response.error(400, "invalid_payload", "a new session starts with a GET")
            if self.draining:
                return Response.error(503, "unavailable", "server shutting down")
            return EngineConnection.over_polling(self, request).handshake_response()
        engine = self.engines.get(sid)
        if engine is None:
            return Response.error(400, "invalid_payload", "unknown Engine.IO session")
        if request.method == "GET":
            return await engine.poll()
        if request.method == "POST":
            return await engine.post(body)
        return Response.error(400, "invalid_payload", "polling takes GET and POST")

    # -- namespace connections -----------------------------------------------------------

    def identity(self, auth: Mapping[str, Any], query: Mapping[str, str]) -> Identity:
        """The caller's identity from `auth.token`, or the `auth`/`token` query parameter."""
        token = auth.get("token") if isinstance(auth, Mapping) else None
        if token is None:
            token = query.get("auth") or query.get("token") or None
        if token is None:
            return Identity(None)
        if not isinstance(token, str):
            raise AppError("unauthorized", "token must be a string")
        return Identity(self.services.auth.verify(token))

    async def open_client(
        self,
        conduit: Conduit,
        namespace: str,
        auth: Mapping[str, Any],
        query: Mapping[str, str],
        remote: str,
        resume: tuple[str, int] | None = None,
    ) -> Opened:
        """Connect `conduit` to `namespace`: recover a dropped client, or start a new one.

        Raises AppError when the namespace is unknown or refuses the connection.
        """
        ns = self.namespaces.get(namespace)
        if ns is None:
            raise AppError("not_found", "Invalid namespace")
        if self.draining:
            raise AppError("unavailable", "server shutting down, reconnect")
        identity = self.identity(auth, query)
        if resume is not None:
            recovered = self._recover(ns, conduit, identity, *resume)
            if recovered is not None:
                return recovered
        client = SessionClient(
            sid=new_id(), pid=new_id(), namespace=namespace, identity=identity,
            query=dict(query), remote=remote, conduit=conduit,
            recent_limit=self.config.limits.outbox_messages,
        )
        extra = await ns.connect(client, auth)
        ns.directory.add(client)
        return Opened(client, False, dict(extra or {}))

    def _recover(
        self, ns: Namespace, conduit: Conduit, identity: Identity, pid: str, offset: int
    ) -> Opened | None:
        entry = self._detached.get(pid)
        if entry is None:
            return None
        client, scope = entry
        if client.namespace != ns.name or client.identity.user_id != identity.user_id:
            return None
        replay = client.replay_after(offset)
        if replay is None:
            return None  # missed too much: the old client lapses on its timer
        del self._detached[pid]
        scope.cancel()
        client.attach(conduit)
        return Opened(client, True, {}, tuple(replay))

    async def recovered(self, client: SessionClient) -> None:
        """Tell the product a client came back (after the replay was sent)."""
        await self._call_hook(self.namespaces[client.namespace].reconnected, client)

    async def dispatch(self, client: SessionClient, event: Event) -> dict[str, Any]:
        """Run the handler of `event` for `client`; return the reply object (§1c)."""
        ns = self.namespaces[client.namespace]
        handler = ns.events.get(event.name)
        try:
            if handler is None:
                raise AppError("unknown_event", f"unknown event {event.name[:64]!r}")
            result = await handler(client, event.payload)
        except AppError as exc:
            self.services.metrics.errors.labels(exc.code).inc()
            if event.ack is None:
                log.info("event %s refused: %s %s", event.name[:64], exc.code, exc.message,
                         extra={"conn": client.sid, "user": client.identity.user_id})
            return error(exc.code, exc.message, **exc.data)
        except Exception:
            self.services.metrics.errors.labels("internal").inc()
            log.exception("handler %s failed", event.name,
                          extra={"conn": client.sid, "user": client.identity.user_id})
            return error("internal", "internal error")
        return success(dict(result) if result else {})

    def refused(self, code: str) -> None:
        self.services.metrics.errors.labels(code).inc()

    # -- disconnects ---------------------------------------------------------------------

    def lose_soon(self, client: SessionClient, *, explicit: bool, reason: str) -> None:
        """`client_lost` in the gateway's nursery, counted until it is done (see `drain`)."""
        if self._lost_all.is_set():
            self._lost_all = trio.Event()
        self._losing += 1
        if not self.spawn(self._counted_loss, client, explicit, reason):
            self._one_loss_done()

    def _one_loss_done(self) -> None:
        self._losing -= 1
        if not self._losing:
            self._lost_all.set()

    async def _counted_loss(self, client: SessionClient, explicit: bool, reason: str) -> None:
        try:
            await self.client_lost(client, explicit=explicit, reason=reason)
        finally:
            self._one_loss_done()

    async def client_lost(self, client: SessionClient, *, explicit: bool, reason: str) -> None:
        """The client's connection ended: presence now, `gone` now or after the window."""
        if client.state is not ClientState.ATTACHED:
            return
        ns = self.namespaces[client.namespace]
        client.detach()
        await self._call_hook(ns.disconnect, client, reason)
        window = self.config.engineio.recovery_window_s
        if self.draining:
            return
        if explicit or window <= 0 or self._nursery is None:
            await self.forget(client)
            return
        scope = trio.CancelScope()
        self._detached[client.pid] = (client, scope)
        self.spawn(self._lapse, client, scope, window)

    async def _lapse(self, client: SessionClient, scope: trio.CancelScope, window: float) -> None:
        with scope:
            await trio.sleep(window)
        if self._detached.get(client.pid, (None,))[0] is client and not scope.cancelled_caught:
            del self._detached[client.pid]
            await self.forget(client)

    async def forget(self, client: SessionClient) -> None:
        """The client will not come back: remove it and tell the product (`gone`)."""
        if client.state is ClientState.GONE:
            return
        ns = self.namespaces[client.namespace]
        client.mark_gone()
        ns.directory.remove(client)
        await self._call_hook(ns.gone, client)

    async def _call_hook(self, hook: Callable[..., Awaitable[Any]], *args: Any) -> None:
        try:
            await hook(*args)
        except Exception:
            log.exception("namespace hook %s failed", getattr(hook, "__qualname__", hook))

    # -- admin -------------------------------------------------------------------------------

    def clients(self) -> list[SessionClient]:
        out: list[SessionClient] = []
        for ns in self.namespaces.values():
            out.extend(ns.directory)  # type: ignore[arg-type]
        return out
