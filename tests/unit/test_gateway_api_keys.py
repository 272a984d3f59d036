"""API key scopes and hashing (pure parts of gateway/api_keys.py)."""

from __future__ import annotations

import pytest

from gateway.api_keys import PREFIX, check_scope_pattern, hash_key, new_plaintext, scope_allows


@pytest.mark.parametrize(("scopes", "wanted", "ok"), [
    (["*"], "social.like", True),
    (["*"], "admin", False),  # every type, but not the operator endpoints
    (["admin"], "admin", True),
    (["admin"], "social.like", False),
    (["social.*"], "social.like", True),
    (["social.*"], "social", True),
    (["social.*"], "socialist.x", False),
    (["social.*"], "billing.invoice", False),
    (["social.like"], "social.like", True),
    (["social.like"], "social.like.extra", False),
    (["billing.*", "social.comment"], "social.comment", True),
    ([], "social.like", False),
])
def test_scope_allows(scopes, wanted, ok):
    assert scope_allows(scopes, wanted) is ok


@pytest.mark.parametrize("pat", ["*", "admin", "social.*", "social.like", "a_b.c1"])
def test_good_scope_patterns(pat):
    assert check_scope_pattern(pat) == pat


@pytest.mark.parametrize("pat", ["", "social.", "Social.*", "so cial", "*.like", "a..b",
                                 "social.like\n", "social\n.*"])  # fullmatch: no trailing \n
def test_bad_scope_patterns(pat):
    with pytest.raises(ValueError, match="scope"):
        check_scope_pattern(pat)


def test_keys_are_random_and_only_the_hash_is_kept():
    a, b = new_plaintext(), new_plaintext()
    assert a != b and a.startswith(PREFIX) and len(a) > 40
    assert hash_key(a) == hash_key(a) and len(hash_key(a)) == 64 and a not in hash_key(a)
