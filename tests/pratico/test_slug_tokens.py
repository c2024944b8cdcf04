from __future__ import annotations

import itertools

import jwt
import pytest

from pratico_daemon.errors import AppError
from pratico_daemon.pratico.slug import MAX_LEN, candidates, is_slug, slugify, with_suffix
from pratico_daemon.pratico.tokens import GuestTokens
from tests.conftest import TEST_SECRET


@pytest.mark.parametrize(("title", "slug"), [
    ("Algèbre linéaire", "algebre-lineaire"),
    ("  Straße & Œuvre!! ", "strasse-oeuvre"),
    ("Ça va? Très bien.", "ca-va-tres-bien"),
    ("日本語", "room"),
    ("", "room"),
    ("---", "room"),
    ("Chapter 12: Vectors", "chapter-12-vectors"),
])
def test_slugify_folds_accents_and_never_returns_empty(title: str, slug: str) -> None:
    assert slugify(title) == slug
    assert is_slug(slug)


def test_slugs_are_at_most_64_chars_and_suffixes_fit() -> None:
    long = slugify("a b " * 100)
    assert len(long) <= MAX_LEN
    assert not long.endswith("-")
    assert len(with_suffix(long, 12)) <= MAX_LEN
    assert with_suffix(long, 12).endswith("-12")
    got = list(itertools.islice(candidates("algebre-lineaire", {"algebre-lineaire-2"}), 3))
    assert got == ["algebre-lineaire", "algebre-lineaire-3", "algebre-lineaire-4"]


def test_guest_tokens_are_bound_and_distinct_from_access_tokens() -> None:
    tokens = GuestTokens(TEST_SECRET)
    token = tokens.mint("room-1", "g_abc")
    claims = tokens.verify(token)
    assert (claims.room_id, claims.participant_id) == ("room-1", "g_abc")
    # Another daemon with the same auth secret accepts it; another secret does not.
    assert GuestTokens(TEST_SECRET).verify(token) == claims
    with pytest.raises(AppError) as info:
        GuestTokens(TEST_SECRET + "x").verify(token)
    assert info.value.code == "unauthorized"
    # An access token signed with the auth secret itself is not a guest token.
    access = jwt.encode({"sub": "u1", "room": "room-1", "aud": "pratico-guest"}, TEST_SECRET,
                        algorithm="HS256")
    with pytest.raises(AppError, match="guest_token"):
        tokens.verify(access)
    for bad in ("", "x.y.z", 42, None, "a" * 5000):
        with pytest.raises(AppError):
            tokens.verify(bad)
