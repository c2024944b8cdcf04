"""Time slots: validating a `POST /timeslots` body and expanding its recurrence.

A slot is one occurrence (the seed's ERD: a TimeSlot has at most one Session).
A recurring request becomes a *series*: its RRULE (RFC 5545, python-dateutil)
is expanded in the slot's IANA time zone, so "every Monday at 18:00
Europe/Paris" stays at 18:00 local time across DST changes, and the UTC
instants are stored. Expansion is always bounded by a horizon
(`conversation.horizon_days` ahead); the scheduler extends series as time
passes, so a rule without COUNT or UNTIL never expands forever.

Rules refused up front: frequencies finer than DAILY (and BYHOUR/BYMINUTE/
BYSECOND, which would split a day), a DTSTART inside the rule (the start is
`startTime`), and rules that can never produce an occurrence (dateutil would
search until the year 9999 for one: 5 s of CPU per request for a DAILY rule).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from dateutil.rrule import YEARLY, rrule, rrulestr

from pratico_daemon.errors import AppError

UTC = dt.UTC
ALLOWED_FREQS = ("DAILY", "WEEKLY", "MONTHLY", "YEARLY")
_FORBIDDEN_PARTS = ("BYHOUR", "BYMINUTE", "BYSECOND", "DTSTART")
# A conversation slot lasts minutes; a day is a generous bound that also
# bounds how far back the scheduler looks for slots still running.
MAX_DURATION_MINUTES = 24 * 60
MAX_RULE_CHARS = 500
# Slots are planned weeks ahead; ten years bounds every date computation far
# from datetime's limits (year 9999) whatever the zone or rule.
MAX_AHEAD = dt.timedelta(days=3653)
_LANG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


def _bad(message: str) -> AppError:
    return AppError("invalid_payload", message)


@attrs.frozen
class SlotRequest:
    """A validated `POST /timeslots` body (times in UTC, rule normalised)."""

    language: str
    level: str
    start: dt.datetime
    duration_minutes: int
    min_participants: int
    max_participants: int
    timezone: str
    rrule: str | None

    @property
    def local_start(self) -> dt.datetime:
        """The start as naive local time in `timezone` (the series' DTSTART)."""
        return self.start.astimezone(ZoneInfo(self.timezone)).replace(tzinfo=None)


def parse_time(value: Any, name: str) -> dt.datetime:
    """An ISO 8601 instant with an offset (or Z), as an aware UTC datetime."""
    if not isinstance(value, str) or len(value) > 64:
        raise _bad(f"{name}: expected an ISO 8601 date-time string")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        if parsed.tzinfo is None:
            raise _bad(f"{name}: needs a UTC offset (e.g. 2030-01-07T18:00:00Z)")
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise _bad(f"{name}: not an ISO 8601 date-time") from None


def _int(body: Mapping[str, Any], name: str, low: int, high: int) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{name}: expected an integer")
    if not low <= value <= high:
        raise _bad(f"{name}: must be between {low} and {high}")
    return value


def _text(body: Mapping[str, Any], name: str, max_len: int = 32) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise _bad(f"{name}: expected a non-empty string of at most {max_len} characters")
    return value.strip()


def parse_slot_request(body: Mapping[str, Any], *, now: dt.datetime, cap: int) -> SlotRequest:
    """Validate a slot request (PROTOCOL.md §4 rules); raises `invalid_payload`."""
    for name in ("targetLanguageCode", "level", "startTime", "durationMinutes",
                 "minParticipants", "maxParticipants"):
        if name not in body:
            raise _bad(f"{name}: missing")
    language = _text(body, "targetLanguageCode", 16)
    if not _LANG.match(language):
        raise _bad("targetLanguageCode: expected a language code such as 'en' or 'pt-BR'")
    level = _text(body, "level")
    start = parse_time(body["startTime"], "startTime")
    if start <= now:
        raise _bad("startTime: must be in the future")
    if start > now + MAX_AHEAD:
        raise _bad(f"startTime: at most {MAX_AHEAD.days} days ahead")
    duration = _int(body, "durationMinutes", 1, MAX_DURATION_MINUTES)
    maximum = _int(body, "maxParticipants", 2, cap)
    minimum = _int(body, "minParticipants", 2, maximum)
    tz_name = body.get("timezone", "UTC")
    if tz_name is None:
        tz_name = "UTC"
    if not isinstance(tz_name, str) or len(tz_name) > 64:
        raise _bad("timezone: expected an IANA time zone name")
    try:
        ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _bad(f"timezone: unknown time zone {tz_name!r}") from None
    rule = body.get("recurrence")
    normalised = None
    if rule is not None:
        request = SlotRequest(language, level, start, duration, minimum, maximum, tz_name, None)
        normalised = normalise_rrule(rule)
        check_rule_possible(normalised, request.local_start)
    return SlotRequest(language, level, start, duration, minimum, maximum, tz_name, normalised)


def normalise_rrule(rule: Any) -> str:
    """The RRULE body (`FREQ=…;…`), `RRULE:` prefix optional; refuses what we don't serve."""
    if not isinstance(rule, str) or not rule.strip() or len(rule) > MAX_RULE_CHARS:
        raise _bad(f"recurrence: expected an RRULE string of at most {MAX_RULE_CHARS} characters")
    text = rule.strip()
    if text.upper().startswith("RRULE:"):
        text = text[len("RRULE:"):]
    if "\n" in text or "\r" in text or ":" in text:
        raise _bad("recurrence: one RRULE only (no DTSTART, EXDATE or other lines)")
    parts: dict[str, str] = {}
    for item in text.split(";"):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _bad(f"recurrence: malformed part {item!r}")
        parts[key.strip().upper()] = value.strip()
    freq = parts.get("FREQ", "").upper()
    if freq not in ALLOWED_FREQS:
        raise _bad(f"recurrence: FREQ must be one of {', '.join(ALLOWED_FREQS)} "
                   "(nothing finer than DAILY)")
    for forbidden in _FORBIDDEN_PARTS:
        if forbidden in parts:
            raise _bad(f"recurrence: {forbidden} is not allowed (the time of day is startTime's)")
    normalised = ";".join(f"{k}={v}" for k, v in parts.items())
    try:
        rrulestr(normalised, dtstart=dt.datetime(2030, 1, 1))
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise _bad(f"recurrence: not a valid RRULE ({exc})") from None
    return normalised


def _build(rule: str, local_start: dt.datetime) -> rrule:
    text = rule
    until = re.search(r"UNTIL=([0-9TZ]+)", rule)
    if until and until.group(1).upper().endswith("Z"):
        # Our DTSTART is naive local time: read a UTC UNTIL as its naive value,
        # close enough for a bound expressed in days (RFC 5545 §3.3.10 asks
        # for UTC only when DTSTART is zoned).
        text = rule.replace(until.group(1), until.group(1)[:-1])
    built = rrulestr(text, dtstart=local_start)
    assert isinstance(built, rrule)
    return built


def check_rule_possible(rule: str, local_start: dt.datetime) -> None:
    """Refuse rules with no occurrence at all (e.g. the 30th of February).

    The probe is the same rule read YEARLY (the BYxxx filters are the same,
    and dateutil needs at most ~8,000 yearly steps, ~0.3 s, to give up), so
    an impossible DAILY rule is refused before anyone expands it day by day.
    """
    built = _build(rule, local_start)
    probe = built.replace(freq=YEARLY, interval=1, count=None, until=None)
    if next(iter(probe), None) is None or next(iter(built), None) is None:
        raise _bad("recurrence: the rule never produces an occurrence")


def expand(rule: str, local_start: dt.datetime, timezone: str, *,
           after: dt.datetime | None, until: dt.datetime, limit: int = 1000) -> list[dt.datetime]:
    """UTC instants of the rule's occurrences in (after, until], at most `limit`.

    Local wall times are converted with the zone's rules at each date, so a
    DST change moves the UTC instant, not the local time. A local time that
    does not exist that day (in a spring-forward gap) is read with the
    offset before the change, as `zoneinfo` does with fold=0.
    """
    zone = ZoneInfo(timezone)
    built = _build(rule, local_start)
    out: list[dt.datetime] = []
    for local in built:
        instant = local.replace(tzinfo=zone).astimezone(UTC)
        if instant > until:
            break
        if after is not None and instant <= after:
            continue
        out.append(instant)
        if len(out) >= limit:
            break
    return out
