"""The lifecycle transition table, state by state (seed 003's state diagram)."""

from __future__ import annotations

import pytest

from pratico_daemon.conversation import lifecycle
from pratico_daemon.conversation.lifecycle import EndReason, SessionStatus, Trigger

W, A, E = SessionStatus.WAITING, SessionStatus.ACTIVE, SessionStatus.ENDED


@pytest.mark.parametrize(("status", "trigger", "target", "reason"), [
    (W, Trigger.MIN_REACHED, A, None),
    (W, Trigger.GRACE_EXPIRED, E, EndReason.NOT_ENOUGH_PARTICIPANTS),
    (W, Trigger.SLOT_ENDED, E, EndReason.NOT_ENOUGH_PARTICIPANTS),
    (A, Trigger.SLOT_ENDED, E, EndReason.TIME_EXPIRED),
    (A, Trigger.ALL_LEFT, E, EndReason.ALL_LEFT),
])
def test_transitions(status: SessionStatus, trigger: Trigger, target: SessionStatus,
                     reason: EndReason | None) -> None:
    transition = lifecycle.fire(status, trigger)
    assert transition is not None
    assert (transition.source, transition.target, transition.reason) == (status, target, reason)


@pytest.mark.parametrize(("status", "trigger"), [
    (W, Trigger.ALL_LEFT),  # people may still come until the grace period ends
    (A, Trigger.GRACE_EXPIRED),
    (A, Trigger.MIN_REACHED),
    *[(E, t) for t in Trigger],  # the end is final
])
def test_no_ops(status: SessionStatus, trigger: Trigger) -> None:
    assert lifecycle.fire(status, trigger) is None


def test_join_and_leave_helpers_count_participants() -> None:
    assert lifecycle.after_join(W, 1, 2) is None
    joined = lifecycle.after_join(W, 2, 2)
    assert joined is not None
    assert joined.target is A
    assert lifecycle.after_leave(A, 1) is None
    left = lifecycle.after_leave(A, 0)
    assert left is not None
    assert left.reason is EndReason.ALL_LEFT
