"""Patterns validate whole strings: ``re.match`` with ``$`` let a trailing newline through."""

from __future__ import annotations

import pytest

from gateway.people import _valid_token_id
from gateway.user_tokens import PREFIX, _b64, _sign, create_token, verify_token

SECRET = b"s" * 32


def test_a_device_token_id_with_a_trailing_newline_is_refused():
    """It could be registered, but DELETE's path pattern never matched it again."""
    assert _valid_token_id("ipad")
    assert not _valid_token_id("ipad\n")


def test_no_user_token_for_a_user_id_with_a_trailing_newline():
    with pytest.raises(ValueError, match="user id"):
        create_token("u1\n", SECRET, ttl_s=60)
    signed = PREFIX + _b64(b'{"sub":"u1\\n","exp":99999999999}')
    forged_by_the_secret_holder = f"{signed}.{_b64(_sign(SECRET, signed))}"
    with pytest.raises(ValueError, match="malformed payload"):
        verify_token(forged_by_the_secret_holder, SECRET)
