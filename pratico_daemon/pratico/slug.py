"""Link names: a slug of the capsule's title, unique among live rooms (PROTOCOL.md §3).

`"Algèbre linéaire"` → `algebre-lineaire`; taken names get the smallest free
suffix `-2`, `-3`… Uniqueness itself is not decided here: the `rooms` table's
UNIQUE constraint decides it (two daemons may race for a name; exactly one
INSERT wins), and the creator walks `candidates()` until an INSERT succeeds.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

MAX_LEN = 64
EMPTY = "room"
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
# Letters that NFKD does not decompose into ASCII plus a combining mark.
_FOLD = str.maketrans({"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "đ": "d", "ł": "l",
                       "þ": "th", "ð": "d", "ı": "i"})


def slugify(title: str) -> str:
    """Lowercase ASCII `[a-z0-9-]`, at most 64 characters, never empty."""
    folded = unicodedata.normalize("NFKD", title.lower().translate(_FOLD))
    ascii_only = folded.encode("ascii", "ignore").decode("ascii")
    slug = _NOT_SLUG.sub("-", ascii_only).strip("-")[:MAX_LEN].rstrip("-")
    return slug or EMPTY


def with_suffix(base: str, n: int) -> str:
    """`base` for n=1, else `base-n`, cut so that the whole stays within 64 characters."""
    if n <= 1:
        return base
    suffix = f"-{n}"
    return base[: MAX_LEN - len(suffix)].rstrip("-") + suffix


def candidates(base: str, taken: set[str] | frozenset[str] = frozenset()) -> Iterator[str]:
    """Names to try in order: `base`, `base-2`, `base-3`…, skipping those known taken."""
    n = 1
    while True:
        name = with_suffix(base, n)
        if name not in taken:
            yield name
        n += 1


def is_slug(name: str) -> bool:
    return 0 < len(name) <= MAX_LEN and slugify(name) == name
