"""The conversation session lifecycle (seed 003, "Cycle de Vie d'une Session").

Theory of operation
-------------------
A session is created at its slot's start in WAITING. Four things can happen
to it, the *triggers*:

- MIN_REACHED: a join brought the number of joined participants (recorders
  excluded) to the slot's `minParticipants`;
- GRACE_EXPIRED: `conversation.grace_period_s` after the slot's start;
- SLOT_ENDED: the slot's duration is over;
- ALL_LEFT: a leave (or a deletion) left nobody joined.

`TRANSITIONS` says what each trigger does in each state. A pair that is not
in the table is a no-op on purpose: GRACE_EXPIRED in ACTIVE (the grace period
only matters while waiting), ALL_LEFT in WAITING (people may still come until
the grace period ends; PROTOCOL.md §4: a session that never became ACTIVE
ends with `not_enough_participants`), anything in ENDED (ending is final and
idempotent, so a timer and a leave racing for the end both see one end).

The transition is computed inside the database transaction that records the
change (the database is the authority, and the same transaction writes the
domain events to the outbox); the session's Room actor then mirrors the new
state and tells the clients. Statuses only move forward (`RANK`), so a
mirror that receives two updates out of order keeps the later state.
"""

from __future__ import annotations

import enum

import attrs


class SessionStatus(enum.Enum):
    WAITING = "waiting"
    ACTIVE = "active"
    ENDED = "ended"


class Trigger(enum.Enum):
    MIN_REACHED = "min_reached"
    GRACE_EXPIRED = "grace_expired"
    SLOT_ENDED = "slot_ended"
    ALL_LEFT = "all_left"


class EndReason(enum.Enum):
    TIME_EXPIRED = "time_expired"
    ALL_LEFT = "all_left"
    NOT_ENOUGH_PARTICIPANTS = "not_enough_participants"


@attrs.frozen
class Transition:
    source: SessionStatus
    target: SessionStatus
    reason: EndReason | None = None


_W, _A, _E = SessionStatus.WAITING, SessionStatus.ACTIVE, SessionStatus.ENDED

TRANSITIONS: dict[tuple[SessionStatus, Trigger], tuple[SessionStatus, EndReason | None]] = {
    (_W, Trigger.MIN_REACHED): (_A, None),
    (_W, Trigger.GRACE_EXPIRED): (_E, EndReason.NOT_ENOUGH_PARTICIPANTS),
    (_W, Trigger.SLOT_ENDED): (_E, EndReason.NOT_ENOUGH_PARTICIPANTS),
    (_A, Trigger.SLOT_ENDED): (_E, EndReason.TIME_EXPIRED),
    (_A, Trigger.ALL_LEFT): (_E, EndReason.ALL_LEFT),
}

RANK = {_W: 0, _A: 1, _E: 2}


def fire(status: SessionStatus, trigger: Trigger) -> Transition | None:
    """The transition `trigger` causes in `status`, or None when it changes nothing."""
    found = TRANSITIONS.get((status, trigger))
    if found is None:
        return None
    return Transition(status, found[0], found[1])


def after_join(status: SessionStatus, joined: int, minimum: int) -> Transition | None:
    """A participant joined; `joined` counts them now (recorders excluded)."""
    return fire(status, Trigger.MIN_REACHED) if joined >= minimum else None


def after_leave(status: SessionStatus, joined: int) -> Transition | None:
    """A participant left; `joined` counts those still in (recorders excluded)."""
    return fire(status, Trigger.ALL_LEFT) if joined == 0 else None
