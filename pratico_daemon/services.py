"""What the daemon hands to its parts: one object, filled in by `Daemon.run`.

Only `daemon.py` chooses concrete classes; everything else receives this and
reads the piece it needs. Pieces that a later stage adds (stores, rooms) start
as None and are set before the listeners open.
"""

from __future__ import annotations

from typing import Any

import attrs

from pratico_daemon.auth import Authenticator
from pratico_daemon.config import Config
from pratico_daemon.health import Health
from pratico_daemon.metrics import Metrics


@attrs.define
class Services:
    config: Config
    auth: Authenticator
    health: Health = attrs.Factory(Health)
    metrics: Metrics = attrs.Factory(Metrics)
    node_id: str = ""
    # Set by later stages; typed loosely here so this module imports nothing above it.
    stores: Any = None
    rooms: Any = None
    checkpointer: Any = None
    gateway: Any = None
