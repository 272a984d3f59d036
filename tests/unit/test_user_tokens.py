"""User tokens: signed, expiring, tamper-evident; every refusal says why (no network)."""

import base64

import orjson
import pytest

from gateway.user_tokens import PREFIX, TokenError, create_token, main, verify_token

SECRET = b"test-secret"
NOW = 1_800_000_000


def test_token_round_trips_user_and_expiry():
    tok = create_token("u-1", SECRET, ttl_s=60, now_s=NOW)
    assert tok.startswith(PREFIX)
    got = verify_token(tok, SECRET, now_s=NOW + 59)
    assert got.user_id == "u-1" and got.expires_s == NOW + 60


def test_expired_token_is_refused_with_age():
    tok = create_token("u-1", SECRET, ttl_s=60, now_s=NOW)
    with pytest.raises(TokenError, match="expired 10 s ago"):
        verify_token(tok, SECRET, now_s=NOW + 70)
    with pytest.raises(TokenError, match="expired"):
        verify_token(tok, SECRET, now_s=NOW + 60)  # the expiry second itself is out


def test_other_secret_is_a_bad_signature():
    tok = create_token("u-1", SECRET, ttl_s=60, now_s=NOW)
    with pytest.raises(TokenError, match="bad signature"):
        verify_token(tok, b"another-secret", now_s=NOW)


def test_changed_payload_is_a_bad_signature():
    """Swapping in another user's payload keeps the old signature: refused."""
    tok = create_token("alice", SECRET, ttl_s=60, now_s=NOW)
    _, _, sig = tok.rpartition(".")
    forged = base64.urlsafe_b64encode(orjson.dumps({"sub": "bob", "exp": NOW + 60}))
    bad = f"{PREFIX}{forged.rstrip(b'=').decode()}.{sig}"
    with pytest.raises(TokenError, match="bad signature"):
        verify_token(bad, SECRET, now_s=NOW)


@pytest.mark.parametrize("token, reason", [
    ("", "not one"),
    ("nfk_apikey", "not one"),
    ("nfu1.", "malformed"),
    ("nfu1.abc", "malformed"),
    ("nfu1.a.b.c", "malformed"),
    ("nfu1.abc.***", "malformed signature"),
    ("nfu1.abc.ünï", "malformed signature"),
    ("nfu1.abc.AAAA", "bad signature"),
])
def test_malformed_tokens_are_refused_with_a_reason(token, reason):
    with pytest.raises(TokenError, match=reason):
        verify_token(token, SECRET, now_s=NOW)


def test_signed_but_odd_payload_is_refused():
    """Even a validly signed payload must carry a string user and an integer expiry."""
    import hashlib
    import hmac

    for claims in ({"sub": 7, "exp": NOW + 60}, {"sub": "u"}, [1], {"sub": "a:b", "exp": NOW + 9}):
        payload = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode()
        signed = PREFIX + payload
        sig = hmac.new(SECRET, signed.encode(), hashlib.sha256).digest()
        tok = f"{signed}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"
        with pytest.raises(TokenError, match="malformed payload"):
            verify_token(tok, SECRET, now_s=NOW)


@pytest.mark.parametrize("user", ["", "a b", "a:b", "x" * 129, "ü"])
def test_create_refuses_bad_user_ids(user):
    with pytest.raises(ValueError, match="user id"):
        create_token(user, SECRET, ttl_s=60)


def test_create_refuses_non_positive_ttl():
    with pytest.raises(ValueError, match="ttl"):
        create_token("u", SECRET, ttl_s=0)


def test_cli_prints_a_token_for_the_configured_secret(capsys, monkeypatch):
    monkeypatch.setenv("NOTIFLOW_USER_TOKEN_SECRET", "cli-secret-" + "x" * 32)
    from notiflow.config import get_settings

    get_settings.cache_clear()
    try:
        assert main(["u-9", "--ttl", "120"]) == 0
    finally:
        get_settings.cache_clear()
    tok = capsys.readouterr().out.strip()
    assert verify_token(tok, b"cli-secret-" + b"x" * 32).user_id == "u-9"
