"""The daemon: the root nursery of DESIGN.md and its lifecycle.

`Daemon.run(task_status=…)` opens the stores, starts every long-lived task,
binds the listeners and reports the bound addresses through
`task_status.started(...)` (port 0 works: tests read the real port there). It
then waits for a shutdown request (SIGTERM/SIGINT, or `request_shutdown()`)
and drains: readiness turns false, clients are told to reconnect elsewhere,
writers flush, and everything is cancelled once `shutdown_timeout_s` is up.

Only this module (and `cli.py`) chooses concrete classes.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from pratico_daemon import __version__, classroom, logs, pratico, recording
from pratico_daemon.auth import Authenticator
from pratico_daemon.backoff import Backoff
from pratico_daemon.config import Config
from pratico_daemon.http.app import create_app
from pratico_daemon.loopwatch import LoopWatch, freeze_startup_objects, tune_collector
from pratico_daemon.rooms.registry import RoomRegistry
from pratico_daemon.sdnotify import Notifier
from pratico_daemon.services import Services
from pratico_daemon.session.gateway import Gateway
from pratico_daemon.session.namespace import Namespace
from pratico_daemon.storage.checkpointer import Checkpointer
from pratico_daemon.storage.protocols import StorageError
from pratico_daemon.storage.stores import open_stores
from pratico_daemon.transport import FrontListener

log = logs.get("daemon")

PRODUCTS: tuple[Callable[[Services], Namespace], ...] = (
    classroom.create_namespace,
    pratico.create_namespace,
    recording.create_namespace,  # /conversation, recorded when [recording] enabled
)
"""The namespaces this daemon serves (tests may pass their own to `Daemon`)."""


async def restore_rooms(svc: Services) -> None:
    """Bring back every live room from its checkpoint (DESIGN.md: before READY=1).

    Raises StorageUnavailable when the checkpoint store does not answer; one
    room that cannot be restored is logged and skipped.
    """
    for checkpoint in await svc.stores.checkpoints.list(pratico.KIND):
        try:
            await pratico.restore(svc, checkpoint)
        except Exception:
            log.exception("could not restore room %s", checkpoint.room_id,
                          extra={"room": checkpoint.room_id})


async def restore_rooms_when_reachable(svc: Services) -> None:
    """Restore once the checkpoint store answers; readiness says we are waiting.

    A daemon whose Redis is down at start still serves (health, REST, new rooms)
    rather than crash-looping under systemd; `/readyz` stays not-ready with a
    `restore` line until the rooms are back.
    """
    backoff = Backoff(0.2, 5.0)
    while True:
        try:
            await restore_rooms(svc)
        except StorageError as exc:
            svc.health.set("restore", False, f"waiting for the checkpoint store: {exc}")
            await backoff.wait()
        else:
            svc.health.set("restore", True)
            return


@attrs.frozen
class BoundAddresses:
    """Where the daemon listens, as `host:port` strings (tests connect here)."""

    realtime: str
    http: str

    @property
    def realtime_url(self) -> str:
        return f"http://{self.realtime}"

    @property
    def http_url(self) -> str:
        return f"http://{self.http}"


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        notifier: Notifier | None = None,
        products: Sequence[Callable[[Services], Namespace]] | None = None,
    ) -> None:
        self.config = config
        self.notifier = notifier or Notifier(None)
        node_id = config.daemon.node_id or f"{socket.gethostname()}-{os.getpid()}"
        self.services = Services(config=config, auth=Authenticator.from_config(config),
                                 node_id=node_id)
        self._products = list(PRODUCTS if products is None else products)
        self._shutdown = trio.Event()
        self._signals_seen = 0

    def __repr__(self) -> str:
        state = "DRAINING" if self.services.health.draining else "RUNNING"
        mode = "embedded" if self.config.embedded else "shared"
        return f"<Daemon {self.services.node_id} {state} {mode}>"

    def request_shutdown(self) -> None:
        """Begin the drain (idempotent); called by signals and tests."""
        self._shutdown.set()

    async def run(
        self,
        *,
        handle_signals: bool = False,
        tune_gc: bool = False,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until a shutdown request, then drain.

        `handle_signals` and `tune_gc` are for a daemon that owns its process
        (the CLI): signals are process-wide, and so is the garbage collector.
        """
        svc = self.services
        cfg = self.config
        if cfg.embedded:
            log.info("embedded mode: one node, state in %s (no redis.url, no postgres.dsn)",
                     cfg.state_dir())
        if tune_gc:
            # Before any room or connection exists: what is frozen now (modules,
            # config) lives as long as the process; a room frozen here would
            # leave its cycles uncollected once it ended.
            freeze_startup_objects()
            tune_collector(cfg.daemon.gc_threshold)
        async with trio.open_nursery() as nursery:
            if handle_signals:
                await nursery.start(self._watch_signals)
            await nursery.start(LoopWatch(svc.metrics).run)
            interval = self.notifier.watchdog_interval_s()
            if interval:
                nursery.start_soon(self.notifier.watchdog_loop, interval)

            # Stores open before anything that could use them binds or restores.
            svc.stores = await nursery.start(_hold_stores, svc)
            http_stop = trio.Event()
            http_done = trio.Event()
            app = create_app(svc)
            # One port serves WebSockets, polling and REST (a newcomer has one URL);
            # hypercorn serves the app on a second port only when [http] port is set.
            gateway = await self._start_rooms_and_products(nursery)
            front = FrontListener(cfg.limits, svc.metrics, app=app,
                                  handlers=gateway.handlers(),
                                  keepalive_s=cfg.engineio.ping_interval_s)
            gateway.front = front
            bound = await nursery.start(front.serve, cfg.realtime.host, cfg.realtime.port)
            http_bound = bound
            if cfg.http.port is not None:
                hc = HypercornConfig()
                hc.bind = [f"{cfg.http.host}:{cfg.http.port}"]
                hc.graceful_timeout = 1.0
                hc.accesslog = None
                hc.errorlog = None
                binds = await nursery.start(_serve_http, app, hc, http_stop, http_done)
                http_bound = binds[0].removeprefix("http://")
            else:
                http_done.set()
            svc.health.set("listeners", True)
            addresses = BoundAddresses(realtime=bound, http=http_bound)
            log.info("pratico-daemon %s ready on %s", __version__, bound)
            self.notifier.notify("READY=1", f"STATUS=serving on {bound}")
            task_status.started(addresses)

            await self._shutdown.wait()
            await self._drain(nursery, http_stop, http_done)

    async def _start_rooms_and_products(self, nursery: trio.Nursery) -> Gateway:
        """Rooms, the checkpointer, the products (restoring their live rooms), the gateway."""
        svc = self.services
        svc.rooms = await nursery.start(RoomRegistry(svc.metrics).run)
        svc.checkpointer = Checkpointer(svc.stores.checkpoints, svc.metrics,
                                        interval_s=self.config.redis.checkpoint_interval_s)
        await nursery.start(svc.checkpointer.run)
        namespaces = [create(svc) for create in self._products]
        gateway = Gateway(svc, namespaces)
        svc.gateway = gateway
        await nursery.start(gateway.run)
        for namespace in namespaces:
            await nursery.start(namespace.run)
        try:
            await restore_rooms(svc)
            svc.health.set("restore", True)
        except StorageError as exc:
            log.warning("rooms not restored yet (%s): retrying in the background", exc)
            svc.health.set("restore", False, f"waiting for the checkpoint store: {exc}")
            nursery.start_soon(restore_rooms_when_reachable, svc)
        return gateway

    async def _drain(
        self, nursery: trio.Nursery, http_stop: trio.Event, http_done: trio.Event
    ) -> None:
        svc = self.services
        svc.health.draining = True
        svc.metrics.draining.set(1)
        self.notifier.notify("STOPPING=1", "STATUS=draining")
        log.info("draining (timeout %.1fs)", self.config.daemon.shutdown_timeout_s)
        with trio.move_on_after(self.config.daemon.shutdown_timeout_s) as scope:
            if svc.gateway is not None:
                await svc.gateway.drain()
            http_stop.set()
            # In-flight HTTP requests finish (hypercorn's graceful_timeout bounds them).
            await http_done.wait()
            if svc.checkpointer is not None:
                await svc.checkpointer.flush()
            if svc.stores is not None:
                await svc.stores.flush()
        if scope.cancelled_caught:
            log.warning("drain timed out; cancelling what is left")
        nursery.cancel_scope.cancel()

    async def _watch_signals(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    logs.reopen()
                    log.info("SIGHUP: log files reopened")
                    continue
                self._signals_seen += 1
                if self._signals_seen > 1:
                    log.warning("second %s: exiting now", signal.Signals(signum).name)
                    os._exit(1)
                log.info("%s: draining", signal.Signals(signum).name)
                self.request_shutdown()


async def _hold_stores(svc: Services, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Keep the stores open for the daemon nursery's lifetime (`_drain` flushes them)."""
    async with open_stores(svc) as stores:
        task_status.started(stores)
        await trio.sleep_forever()


async def _serve_http(
    app: Any, hc: HypercornConfig, stop: trio.Event, done: trio.Event,
    *, task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    try:
        await hypercorn_serve(app, hc, shutdown_trigger=stop.wait, task_status=task_status)
    finally:
        done.set()
