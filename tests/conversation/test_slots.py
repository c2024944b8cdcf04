"""Slot validation and RRULE expansion: bounded, DAILY or coarser, DST-correct."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from pratico_daemon.conversation import slots
from pratico_daemon.errors import AppError

NOW = dt.datetime(2030, 1, 7, 9, 0, tzinfo=dt.UTC)


def body(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "targetLanguageCode": "en", "level": "B1", "startTime": "2030-01-07T18:00:00Z",
        "durationMinutes": 30, "minParticipants": 2, "maxParticipants": 8}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def refused(**changes: object) -> str:
    with pytest.raises(AppError) as caught:
        slots.parse_slot_request(body(**changes), now=NOW, cap=8)
    assert caught.value.code == "invalid_payload"
    return caught.value.message


def test_a_valid_request_is_normalised() -> None:
    request = slots.parse_slot_request(body(recurrence="RRULE:FREQ=WEEKLY;BYDAY=MO"),
                                       now=NOW, cap=8)
    assert request.start == dt.datetime(2030, 1, 7, 18, 0, tzinfo=dt.UTC)
    assert request.rrule == "FREQ=WEEKLY;BYDAY=MO"
    assert request.timezone == "UTC"


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"startTime": "2030-01-07T08:59:00Z"}, "startTime: must be in the future"),
    ({"startTime": "2030-01-07T18:00:00"}, "UTC offset"),
    ({"startTime": "yesterday"}, "startTime"),
    ({"maxParticipants": 50}, "maxParticipants: must be between 2 and 8"),
    ({"minParticipants": 1}, "minParticipants"),
    ({"minParticipants": 5, "maxParticipants": 4}, "minParticipants: must be between 2 and 4"),
    ({"durationMinutes": 0}, "durationMinutes"),
    ({"durationMinutes": True}, "durationMinutes: expected an integer"),
    ({"level": None}, "level: missing"),
    ({"timezone": "Mars/Olympus"}, "unknown time zone"),
    ({"recurrence": "FREQ=HOURLY"}, "nothing finer than DAILY"),
    ({"recurrence": "FREQ=MINUTELY;COUNT=5"}, "nothing finer than DAILY"),
    ({"recurrence": "FREQ=DAILY;BYHOUR=9,10,11"}, "BYHOUR is not allowed"),
    ({"recurrence": "DTSTART:20300101T000000Z\nRRULE:FREQ=DAILY"}, "one RRULE only"),
    ({"recurrence": "FREQ=WEEKLY;BYDAY=XX"}, "not a valid RRULE"),
    ({"recurrence": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"}, "never produces"),
])
def test_bad_requests_are_refused_with_a_clear_reason(changes: dict[str, object],
                                                       fragment: str) -> None:
    assert fragment in refused(**changes)


def test_an_impossible_daily_rule_is_refused_quickly() -> None:
    # dateutil alone searches ~5 s (until the year 9999) for the 30th of February.
    started = time.perf_counter()
    assert "never produces" in refused(recurrence="FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30")
    assert time.perf_counter() - started < 2.0


def test_a_rule_without_end_expands_only_to_the_horizon() -> None:
    start = dt.datetime(2030, 1, 7, 18, 0)
    until = NOW + dt.timedelta(days=14)
    found = slots.expand("FREQ=DAILY", start, "UTC", after=None, until=until)
    assert len(found) == 14
    assert found[0] == dt.datetime(2030, 1, 7, 18, 0, tzinfo=dt.UTC)
    assert found[-1] <= until


def test_recurrence_keeps_local_time_across_dst() -> None:
    # Mondays 18:00 in Paris: 17:00 UTC in winter, 16:00 UTC after 31 March 2030.
    start = dt.datetime(2030, 3, 18, 18, 0)
    until = dt.datetime(2030, 4, 10, tzinfo=dt.UTC)
    found = slots.expand("FREQ=WEEKLY;BYDAY=MO", start, "Europe/Paris", after=None, until=until)
    assert [f.strftime("%m-%d %H:%M") for f in found] == [
        "03-18 17:00", "03-25 17:00", "04-01 16:00", "04-08 16:00"]


def test_expansion_resumes_after_a_point_and_respects_count() -> None:
    start = dt.datetime(2030, 1, 7, 18, 0)
    first = slots.expand("FREQ=DAILY;COUNT=3", start, "UTC", after=None,
                         until=dt.datetime(2030, 1, 8, 0, tzinfo=dt.UTC))
    rest = slots.expand("FREQ=DAILY;COUNT=3", start, "UTC", after=first[-1],
                        until=dt.datetime(2031, 1, 1, tzinfo=dt.UTC))
    assert len(first) == 1
    assert [r.day for r in rest] == [8, 9]
