"""Connected clients of one namespace, by sid and by user id (kept by the gateway).

Products read it to address a user rather than a connection (PROTOCOL.md §2:
"force_logout to that teacher wherever connected"; §4: "delivery is addressed
to users, not to connections"). Only the gateway adds and removes entries.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pratico_daemon.session.namespace import Client


class ClientDirectory:
    def __init__(self) -> None:
        self._by_sid: dict[str, Client] = {}
        self._by_user: dict[str, dict[str, Client]] = {}

    def __len__(self) -> int:
        return len(self._by_sid)

    def __iter__(self) -> Iterator[Client]:
        return iter(list(self._by_sid.values()))

    def add(self, client: Client) -> None:
        self._by_sid[client.sid] = client
        user = client.identity.user_id
        if user is not None:
            self._by_user.setdefault(user, {})[client.sid] = client

    def remove(self, client: Client) -> None:
        self._by_sid.pop(client.sid, None)
        user = client.identity.user_id
        if user is not None:
            clients = self._by_user.get(user)
            if clients is not None:
                clients.pop(client.sid, None)
                if not clients:
                    del self._by_user[user]

    def rebind(self, client: Client, old_user: str | None) -> None:
        """The client's user id changed (e.g. a student bound a token later)."""
        if old_user is not None and old_user in self._by_user:
            self._by_user[old_user].pop(client.sid, None)
            if not self._by_user[old_user]:
                del self._by_user[old_user]
        self.add(client)

    def get(self, sid: str) -> Client | None:
        return self._by_sid.get(sid)

    def of_user(self, user_id: str) -> list[Client]:
        return list(self._by_user.get(user_id, {}).values())

    def users(self) -> set[str]:
        return set(self._by_user)
