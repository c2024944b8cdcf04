"""Redis key names of the classroom, exactly as the seed documents spell them.

Other services read these keys, so the names never change; the presence store
adds `redis.key_prefix` itself, which is why no prefix appears here.
(PROTOCOL.md §2; seeds 001 and 002.)
"""

from __future__ import annotations

from pratico_daemon.config import SECONDS

DAY = 24 * 3600 * SECONDS
# Seeds 001/002: lesson_teacher_*, lesson_student_* and the {user_id} hash live 24 h.
SESSION_TTL_S = DAY

_ALIVE_HEAD = "alive:org_"
_USER_SEP = "_user_"


def alive(org_id: str, user_id: str) -> str:
    """Teacher presence hash `{login_time, state}`; gets the grace TTL on disconnect."""
    return f"{_ALIVE_HEAD}{org_id}{_USER_SEP}{user_id}"


def cooldown(org_id: str, user_id: str) -> str:
    """Set by force_logout; a teacher connect is refused while it exists."""
    return f"cooldown:org_{org_id}{_USER_SEP}{user_id}"


def user(user_id: str) -> str:
    """The `{user_id}` hash: `{sid, client_id, role, org_id, lesson_id}`, 24 h."""
    return user_id


def lesson_seat(lesson_id: str) -> str:
    """Seat hash `{"1": student_id or "", …}` of a lesson."""
    return f"lesson_seat_{lesson_id}"


def lesson_teacher(lesson_id: str) -> str:
    """`{teacher_user_id: sid}` of the lesson's teacher connection(s)."""
    return f"lesson_teacher_{lesson_id}"


def lesson_student(lesson_id: str) -> str:
    """`{client_id: sid}` of the lesson's students."""
    return f"lesson_student_{lesson_id}"


ALIVE_PATTERN = f"{_ALIVE_HEAD}*"


def parse_alive(key: str) -> tuple[str, str] | None:
    """`(org_id, user_id)` of an alive key name, None for any other key.

    The name is ambiguous only if an org id itself contains `_user_`; ids
    in this system are uuids or slugs, so the first separator is the one.
    """
    if not key.startswith(_ALIVE_HEAD):
        return None
    org_id, sep, user_id = key[len(_ALIVE_HEAD):].partition(_USER_SEP)
    if not sep or not org_id or not user_id:
        return None
    return org_id, user_id
