"""The daemon's configuration: one frozen attrs tree, loaded from TOML and the environment.

Every key lives in a section (`[realtime] port`) and can be overridden by an
environment variable `PRATICO_SECTION__KEY` (`PRATICO_REALTIME__PORT=9000`).
Units are in the names (`*_s` seconds, `*_bytes` bytes) and every default says
where its number comes from. A bad value is a `ConfigError` that names the key
(`postgres.dsn: not a postgresql:// URL`), which the CLI prints as one line and
exits 2 — an operator should never read a traceback to find a typo.
"""


import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

import attrs
import cattrs
import orjson
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

SECONDS = 1.0
KIB = 1024
MIB = 1024 * KIB
ENV_PREFIX = "PRATICO_"


class ConfigError(Exception):
    """A configuration value is wrong; `key` is its dotted path (`postgres.dsn`)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class _FieldInvalid(ValueError):
    """Raised by our validators: attrs' __init__ does not say which field failed."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


def _port(instance: Any, attribute: "attrs.Attribute[Any]", value: int) -> None:
    if not 0 <= value <= 65535:
        raise _FieldInvalid(attribute.name, "not a TCP port (0-65535; 0 picks a free one)")


def _positive(instance: Any, attribute: "attrs.Attribute[Any]", value: float) -> None:
    if value <= 0:
        raise _FieldInvalid(attribute.name, "must be greater than 0")


def _url_scheme(*schemes: str) -> Any:
    def check(instance: Any, attribute: "attrs.Attribute[Any]", value: str | None) -> None:
        if value is None:
            return
        scheme = urlsplit(value).scheme
        if scheme not in schemes:
            raise _FieldInvalid(
                attribute.name, f"not a {' or '.join(s + '://' for s in schemes)} URL"
            )

    return check


@attrs.frozen
class DaemonSection:
    # Several daemons share Redis; each needs a name of its own for leases and logs.
    # Empty means "hostname-pid", unique enough for one machine and readable in logs.
    node_id: str = ""
    # systemd's default TimeoutStopSec is 90 s; 10 s leaves clients time to hear
    # "reconnect elsewhere" and the writers time to flush, and keeps deploys quick.
    shutdown_timeout_s: float = attrs.field(default=10 * SECONDS, validator=_positive)
    # Young-generation threshold of Python's cyclic garbage collector (Python: 700).
    # At 700 a busy daemon collects hundreds of times a second and promotes the
    # rooms' recent messages into full collections that stop every client for
    # 50-150 ms (bench/signalling_bench.py); 20,000 made p99 relay latency 2-8x
    # lower there. Applied by `serve` only (the collector is process-wide).
    gc_threshold: int = attrs.field(default=20_000, validator=attrs.validators.ge(100))


@attrs.frozen
class RealtimeSection:
    # Loopback by default: a fresh install must not be reachable from the network
    # until an operator says so.
    host: str = "127.0.0.1"
    port: int = attrs.field(default=8080, validator=_port)


@attrs.frozen
class HttpSection:
    # The REST/ops endpoints are served on the realtime listener unless `port` is
    # set, in which case hypercorn serves them on their own port too (e.g. /metrics
    # on a private interface).
    host: str = "127.0.0.1"
    port: int | None = attrs.field(default=None)
    # Used to build shareable links (`{public_base_url}/r/{name}`).
    public_base_url: str = "http://127.0.0.1:8080"

    @port.validator
    def _check_port(self, attribute: "attrs.Attribute[Any]", value: int | None) -> None:
        if value is not None:
            _port(self, attribute, value)


@attrs.frozen
class LogSection:
    level: Literal["debug", "info", "warning", "error"] = "info"
    # auto: readable lines on a TTY, JSON lines otherwise (journald, files).
    format: Literal["auto", "json", "text"] = "auto"
    # Empty: stderr (journald captures it). A file is reopened on SIGHUP (logrotate).
    file: str = ""


@attrs.frozen
class RedisSection:
    url: str | None = attrs.field(default=None, validator=_url_scheme("redis", "rediss", "unix"))
    # Prefixes every key and stream name; empty keeps the seed documents' exact names.
    key_prefix: str = ""
    # DESIGN.md's crash target: at most 100 ms of room changes lost.
    checkpoint_interval_s: float = attrs.field(default=0.1 * SECONDS, validator=_positive)


@attrs.frozen
class PostgresSection:
    dsn: str | None = attrs.field(
        default=None, validator=_url_scheme("postgresql", "postgres")
    )
    migrate_on_start: bool = True
    # One process uses one core; a handful of connections keeps COPY batches and
    # REST queries from queueing behind each other without crowding Postgres.
    pool_min: int = 1
    pool_max: int = 8


@attrs.frozen
class AuthSection:
    # HS256 secret. Empty in embedded mode means "generate one and keep it in
    # state_dir" so a first run works; production sets it (or a public key).
    jwt_secret: str = ""
    jwt_public_key_file: str = ""
    issuer: str = ""
    audience: str = ""


@attrs.frozen
class LimitsSection:
    # PROTOCOL.md §1c: 64 KiB covers an SDP offer with many candidates.
    max_message_bytes: int = attrs.field(default=64 * KIB, validator=_positive)
    # A tldraw capsule snapshot (PROTOCOL.md §3).
    max_snapshot_bytes: int = attrs.field(default=10 * MIB, validator=_positive)
    max_chat_chars: int = 4000
    max_sdp_bytes: int = 64 * KIB
    # A human clicks a few times a second; 20/s with a burst of 40 never bites
    # a real client and stops a runaway loop.
    rate_per_s: float = 20.0
    rate_burst: int = 40
    # A slow consumer is disconnected past these (DESIGN.md "Bounded everything").
    outbox_messages: int = 1000
    outbox_bytes: int = 4 * MIB
    max_connections: int = 20000
    # A school shares one public IP among a few hundred devices.
    max_connections_per_ip: int = 500
    handshake_timeout_s: float = 10 * SECONDS
    max_room_members: int = 1000


@attrs.frozen
class EngineIOSection:
    # Socket.IO's own defaults, which clients already tune their timers to.
    ping_interval_s: float = 25 * SECONDS
    ping_timeout_s: float = 20 * SECONDS
    max_payload_bytes: int = 1_000_000
    # Socket.IO v4.6 connection-state recovery default (2 minutes).
    recovery_window_s: float = 120 * SECONDS


@attrs.frozen
class PresenceSection:
    # PROTOCOL.md §2.
    disconnect_grace_s: float = 300 * SECONDS
    force_logout_cooldown_s: float = 300 * SECONDS
    # Redis mode: a node that stops renewing its lease this long is dead, and
    # its connected teachers go into grace (classroom/node_leases.py).
    node_lease_s: float = attrs.field(default=15 * SECONDS, validator=_positive)


@attrs.frozen
class RoomsSection:
    # A room nobody is in for 30 minutes is a tab someone forgot.
    empty_timeout_s: float = 1800 * SECONDS
    chat_history: int = 50


@attrs.frozen
class StorageSection:
    # Embedded store, outage journal and recordings live here. systemd's
    # StateDirectory= sets $STATE_DIRECTORY, which wins when this is empty.
    state_dir: str = ""


@attrs.frozen
class ConversationSection:
    grace_period_s: float = 300 * SECONDS
    reminder_lead_s: float = 300 * SECONDS
    horizon_days: int = 14
    max_participants_cap: int = 8
    ice_servers: list[dict[str, Any]] = attrs.Factory(list)


@attrs.frozen
class AnalyticsSection:
    endpoint: str = ""
    token: str = ""
    batch_size: int = 50
    queue_size: int = 10000
    flush_interval_s: float = 2 * SECONDS


@attrs.frozen
class RecordingSection:
    enabled: bool = False
    endpoint_url: str = ""
    bucket: str = ""
    key_prefix: str = "recordings/"
    region: str = "auto"
    access_key_id: str = ""
    secret_access_key: str = ""
    public_base_url: str = ""


@attrs.frozen
class Config:
    daemon: DaemonSection = attrs.Factory(DaemonSection)
    realtime: RealtimeSection = attrs.Factory(RealtimeSection)
    http: HttpSection = attrs.Factory(HttpSection)
    log: LogSection = attrs.Factory(LogSection)
    redis: RedisSection = attrs.Factory(RedisSection)
    postgres: PostgresSection = attrs.Factory(PostgresSection)
    auth: AuthSection = attrs.Factory(AuthSection)
    limits: LimitsSection = attrs.Factory(LimitsSection)
    engineio: EngineIOSection = attrs.Factory(EngineIOSection)
    presence: PresenceSection = attrs.Factory(PresenceSection)
    rooms: RoomsSection = attrs.Factory(RoomsSection)
    storage: StorageSection = attrs.Factory(StorageSection)
    conversation: ConversationSection = attrs.Factory(ConversationSection)
    analytics: AnalyticsSection = attrs.Factory(AnalyticsSection)
    recording: RecordingSection = attrs.Factory(RecordingSection)

    @property
    def embedded(self) -> bool:
        """No Redis and no Postgres configured: one node, state in `state_dir`."""
        return self.redis.url is None and self.postgres.dsn is None

    def state_dir(self) -> Path:
        chosen = self.storage.state_dir or os.environ.get("STATE_DIRECTORY", "")
        return Path(chosen or "./pratico-state").resolve()


def _converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)

    def to_bool(value: Any, _: type) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on"}:
            return True
        if isinstance(value, str) and value.lower() in {"0", "false", "no", "off"}:
            return False
        raise ValueError("not a boolean (true/false)")

    def to_number(kind: type) -> Any:
        def convert(value: Any, _: type) -> Any:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError(f"not a{'n integer' if kind is int else ' number'}")
            try:
                number = kind(value)
            except ValueError:
                raise ValueError(
                    f"not a{'n integer' if kind is int else ' number'}: {value!r}"
                ) from None
            if kind is int and isinstance(value, float) and value != number:
                raise ValueError(f"not an integer: {value!r}")
            return number

        return convert

    def to_str(value: Any, _: type) -> str:
        if not isinstance(value, str):
            raise ValueError("not a string")
        return value

    def to_list(value: Any, kind: type) -> list[Any]:
        if isinstance(value, str):  # from the environment: JSON
            value = orjson.loads(value)
        if not isinstance(value, list):
            raise ValueError("not a list")
        return list(value)

    conv.register_structure_hook(bool, to_bool)
    conv.register_structure_hook(int, to_number(int))
    conv.register_structure_hook(float, to_number(float))
    conv.register_structure_hook(str, to_str)
    conv.register_structure_hook_func(lambda t: get_origin(t) is list, to_list)
    return conv


_CONVERTER = _converter()


def _first_error(exc: BaseException, path: list[str]) -> tuple[str, str]:
    """Walk cattrs' exception groups down to the first leaf and its dotted key."""
    if isinstance(exc, ForbiddenExtraKeysError):
        key = ".".join([*path, sorted(exc.extra_fields)[0]])
        return key, "unknown key"
    if isinstance(exc, ClassValidationError | IterableValidationError):
        for sub in exc.exceptions:
            notes = getattr(sub, "__notes__", [])
            name = next((str(n.name) for n in notes if hasattr(n, "name")), None)
            return _first_error(sub, [*path, name] if name else path)
    if isinstance(exc, _FieldInvalid):
        return ".".join([*path, exc.field]), str(exc)
    if isinstance(exc, KeyError):
        return ".".join(path), "missing"
    reason = str(exc) or type(exc).__name__
    if "Literal" in reason or "not in" in reason:
        reason = f"not one of the allowed values ({reason})"
    return ".".join(path), reason


def _literal_check(data: Mapping[str, Any]) -> None:
    """cattrs' Literal errors are cryptic; check them first with a plain message."""
    for section in attrs.fields(Config):
        values = data.get(section.name)
        if not isinstance(values, Mapping):
            continue
        for field in attrs.fields(section.type):  # type: ignore[arg-type]
            if get_origin(field.type) is Literal and field.name in values:
                allowed = get_args(field.type)
                if values[field.name] not in allowed:
                    raise ConfigError(
                        f"{section.name}.{field.name}",
                        f"{values[field.name]!r} is not one of {', '.join(allowed)}",
                    )


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    sections = {f.name: f.type for f in attrs.fields(Config)}
    out: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        if section not in sections:
            raise ConfigError(f"{name}", f"no section [{section}]")
        out.setdefault(section, {})[key] = value
    return out


def from_mapping(data: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    """Build a `Config` from parsed TOML plus `PRATICO_*` environment overrides."""
    merged: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}
    for section, values in _env_overrides(os.environ if environ is None else environ).items():
        target = merged.setdefault(section, {})
        if isinstance(target, dict):
            target.update(values)
    for section, value in merged.items():
        if not isinstance(value, Mapping):
            raise ConfigError(section, "must be a [section] table")
    _literal_check(merged)
    try:
        return _CONVERTER.structure(merged, Config)
    except Exception as exc:  # cattrs wraps every failure; we name the key.
        key, reason = _first_error(exc, [])
        raise ConfigError(key or "config", reason) from None


def load(path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Config:
    """Load `path` (or only defaults and environment when None)."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("--config", f"{path}: no such file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("--config", f"{path}: not valid TOML ({exc})") from None
    return from_mapping(data, environ)


def to_dict(config: Config) -> dict[str, Any]:
    return _CONVERTER.unstructure(config)  # type: ignore[no-any-return]
