"""Teachers of a node that died are put in grace by a node still alive.

A node that stops cleanly puts its connected teachers in grace itself (the
drain waits for their disconnect hooks). A node that is killed (SIGKILL, OOM,
a lost machine) cannot: their alive keys would stay `connect` with no TTL, the
managers would show them online for ever, and their lessons would never end.
So in Redis mode every node keeps, under `redis.key_prefix`:

- `presence_node:{node}`: its lease, a string with a TTL of `node_lease_s`,
  renewed three times per lease;
- `presence_teachers:{node}`: a hash `{"{org}/{user}": "1"}` of the teachers
  this node holds `connect` (added at connect and again at every renewal,
  removed when it lets go);
- `presence_nodes`: a hash `{node: "1"}`, the index a sweep reads (no SCAN).

At each renewal a node looks for indexed nodes whose lease is gone. The node
that wins `SET NX presence_sweep:{node}` adopts the dead node's teachers that
no live node holds and whose alive key still says `connect`: each goes into
grace as a disconnect would (`teacher_disconnect` to the managers, the grace
TTL; its expiry then ends the lessons). The dead node's hash and index entry
are removed last, so a sweeper that dies half-way leaves the work to the next.

The holds also make presence right across nodes: a teacher whose last
connection on one node drops goes into grace only if no other live node
holds it (`held_elsewhere`).

Two more cases. At every renewal a node adopts its own holds of teachers not
connected to it: what its previous run left under the same `daemon.node_id`
(a restarted node renews the lease at once, so nobody else would sweep it),
and a disconnect that could not be written while Redis was away. And at
every renewal a node asks the namespace to
assert the presence of the teachers connected to it (`reassert`): a node cut
off from Redis longer than its lease may have had them put in grace by the
others, and a disconnect on another node can race a connect here; either is
repaired within a third of a lease (`teacher_connect`, no TTL), and the
renewal writes the holds back.

Embedded mode has one node and forgets presence on restart (embedded_keys.py):
there is nothing to adopt, and this class does nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio

from pratico_daemon import logs
from pratico_daemon.backoff import Backoff
from pratico_daemon.storage.protocols import StorageError

log = logs.get("classroom.leases")

NODES = "presence_nodes"
# Long enough that one sweep finishes under it; a later sweeper retries after it.
SWEEP_CLAIM_TTL_S = 60.0


def lease_key(node: str) -> str:
    return f"presence_node:{node}"


def teachers_key(node: str) -> str:
    return f"presence_teachers:{node}"


def teacher_field(org_id: str, user_id: str) -> str:
    return f"{org_id}/{user_id}"


Adopt = Callable[[str, str, str], Awaitable[bool]]
"""(org_id, user_id, dead node) → whether the teacher was put in grace. For this
node's own leftovers it also lets go of the hold, unless the teacher is back."""
Reassert = Callable[[], Awaitable[None]]
"""Make sure this node's connected teachers read `connect`; repair those that do not."""
Held = Callable[[], Iterable[tuple[str, str]]]
"""(org_id, user_id) of the teachers connected to this node now."""


class NodeLeases:
    """This node's lease, its teachers' hash, and the sweep of dead nodes."""

    def __init__(self, presence: Callable[[], Any], node_id: str, lease_s: float,
                 *, enabled: bool) -> None:
        self._presence = presence  # the store opens after the namespace is built
        self.node_id = node_id
        self.lease_s = lease_s
        self.enabled = enabled
        self.adopted = 0

    def __repr__(self) -> str:
        state = "on" if self.enabled else "off"
        return f"<NodeLeases {self.node_id} {state}, {self.adopted} adopted>"

    async def hold(self, org_id: str, user_id: str) -> None:
        """This node holds the teacher `connect` (call with the alive key's write)."""
        if self.enabled:
            await self._presence().hset(teachers_key(self.node_id),
                                        {teacher_field(org_id, user_id): "1"})

    async def release(self, org_id: str, user_id: str) -> None:
        """This node no longer holds the teacher (grace, logout)."""
        if self.enabled:
            await self._presence().hdel(teachers_key(self.node_id),
                                        teacher_field(org_id, user_id))

    async def run(self, adopt: Adopt, reassert: Reassert, held: Held) -> None:
        """Renew the lease and sweep, for the daemon's lifetime; Redis outages are waited out."""
        if not self.enabled:
            return
        backoff = Backoff(0.1, self.lease_s / 3)
        renewed_at: float | None = None
        while True:
            try:
                await self.adopt_stale_holds(adopt)
                if renewed_at is not None and trio.current_time() - renewed_at >= self.lease_s:
                    log.warning("node lease of %s lapsed: its teachers may have been put "
                                "in grace by another node", self.node_id)
                await self.renew(held())
                renewed_at = trio.current_time()
                await reassert()
                await self.sweep(adopt)
                backoff.reset()
                await trio.sleep(self.lease_s / 3)
            except StorageError as exc:
                log.warning("node lease not renewed: %s (retrying in %.1fs)", exc, backoff.delay)
                await backoff.wait()

    async def renew(self, held: Iterable[tuple[str, str]] = ()) -> None:
        """The lease, the index entry, and the holds (a sweep may have removed them)."""
        presence = self._presence()
        await presence.set(lease_key(self.node_id), "1", ttl_s=self.lease_s)
        await presence.hset(NODES, {self.node_id: "1"})
        fields = {teacher_field(org_id, user_id): "1" for org_id, user_id in held}
        if fields:
            await presence.hset(teachers_key(self.node_id), fields)

    async def held_elsewhere(self, org_id: str, user_id: str) -> bool:
        """Whether another live node holds the teacher `connect` (it keeps the presence)."""
        if not self.enabled:
            return False
        live, _ = await self._other_nodes()
        return teacher_field(org_id, user_id) in await self._held_by(live)

    async def adopt_stale_holds(self, adopt: Adopt) -> int:
        """This node's holds of teachers not connected here, adopted as a dead node's.

        Those of an earlier run under this node id (it died), and those whose
        disconnect could not be written (Redis was away); `adopt` skips the
        teachers connected here.
        """
        adopted = 0
        for field in await self._presence().hgetall(teachers_key(self.node_id)):
            org_id, _, user_id = field.partition("/")
            if user_id and await adopt(org_id, user_id, self.node_id):
                adopted += 1
        if adopted:
            log.warning("node %s: %d teachers it held but no longer serves put in grace",
                        self.node_id, adopted)
        self.adopted += adopted
        return adopted

    async def _other_nodes(self) -> tuple[list[str], list[str]]:
        """(live, dead): the other indexed nodes, by whether their lease still exists."""
        presence = self._presence()
        live: list[str] = []
        dead: list[str] = []
        for node in await presence.hgetall(NODES):
            if node != self.node_id:
                (live if await presence.exists(lease_key(node)) else dead).append(node)
        return live, dead

    async def _held_by(self, nodes: list[str]) -> set[str]:
        """Every teacher field these nodes hold."""
        held: set[str] = set()
        for node in nodes:
            held.update(await self._presence().hgetall(teachers_key(node)))
        return held

    async def sweep(self, adopt: Adopt) -> int:
        """Adopt the teachers of every indexed node whose lease is gone; how many."""
        presence = self._presence()
        live, dead = await self._other_nodes()
        held: set[str] | None = None  # by the live nodes, this one included: read once
        adopted = 0
        for node in dead:
            if not await presence.set(f"presence_sweep:{node}", self.node_id,
                                      ttl_s=SWEEP_CLAIM_TTL_S, nx=True):
                continue  # another node sweeps it
            if held is None:
                held = await self._held_by([self.node_id, *live])
            count = 0
            for field in await presence.hgetall(teachers_key(node)):
                org_id, _, user_id = field.partition("/")
                if field in held or not user_id:
                    continue
                if await adopt(org_id, user_id, node):
                    count += 1
            await presence.delete(teachers_key(node))
            await presence.hdel(NODES, node)
            log.warning("node %s stopped renewing its lease: %d of its teachers put in grace",
                        node, count)
            adopted += count
        self.adopted += adopted
        return adopted
