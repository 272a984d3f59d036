"""Signed, expiring user tokens: how a person's app proves which user it acts for.

Why our own tiny format instead of a JWT library: one algorithm (HMAC-SHA256), one claim
set (user, expiry), nothing to negotiate, so none of JWT's ``alg`` pitfalls.  A token is
``nfu1.<payload>.<signature>``: payload = base64url of ``{"sub": user, "exp": epoch_s}``,
signature = base64url of HMAC-SHA256(secret, ``nfu1.<payload>``).  The ``nfu1.`` prefix
tells user tokens apart from producers' API keys on the same ``Authorization`` header.

The secret is ``NOTIFLOW_USER_TOKEN_SECRET``: whoever has it can act as any user, so the
gateway refuses to start with the built-in one (it is in this repository) or one under
``MIN_SECRET_BYTES``, unless ``NOTIFLOW_DEV_MODE=1`` (local development only).

CLI: ``python -m gateway.user_tokens USER [--ttl SECONDS]`` prints a token (``make
user-token USER=u1``), signed with ``NOTIFLOW_USER_TOKEN_SECRET`` from the environment, else
the running stack's (``var/stack.env``, written by ``make run``).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import os
import sys
import time
from dataclasses import dataclass

import orjson
from fastapi import HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from notiflow.config import Settings, get_settings
from schemas.limits import USER_ID_RE  # the people's API's user id (gateway.dashboard uses it)

PREFIX = "nfu1."
SECRET_ENV = "NOTIFLOW_USER_TOKEN_SECRET"
MIN_SECRET_BYTES = 32  # HMAC-SHA256's own output size
_BUILTIN_SECRET = Settings.model_fields["user_token_secret"].default.get_secret_value()


class TokenError(ValueError):
    """A token that does not authenticate anyone; ``reason`` says why (for the 401)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class UserToken:
    user_id: str
    expires_s: int


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _sign(secret: bytes, signed_part: str) -> bytes:
    return hmac.new(secret, signed_part.encode(), hashlib.sha256).digest()


def create_token(user_id: str, secret: bytes, ttl_s: int, now_s: float | None = None) -> str:
    """A token for ``user_id`` valid for ``ttl_s`` seconds from ``now_s``."""
    if not USER_ID_RE.fullmatch(user_id):
        raise ValueError(f"user id {user_id!r} must match {USER_ID_RE.pattern}")
    if ttl_s <= 0:
        raise ValueError("ttl must be positive")
    now = time.time() if now_s is None else now_s
    payload = _b64(orjson.dumps({"sub": user_id, "exp": int(now) + int(ttl_s)}))
    signed = PREFIX + payload
    return f"{signed}.{_b64(_sign(secret, signed))}"


def verify_token(token: str, secret: bytes, now_s: float | None = None) -> UserToken:
    """The user a token names, or TokenError with the reason it is refused."""
    if not token.startswith(PREFIX):
        raise TokenError("not one (user tokens start with 'nfu1.')")
    signed, dot, sig = token.rpartition(".")
    if not dot or signed == PREFIX.rstrip(".") or "." in signed[len(PREFIX):]:
        raise TokenError("malformed")
    try:
        given = _unb64(sig)
    except (binascii.Error, ValueError):
        raise TokenError("malformed signature") from None
    # signature first: nothing from an unsigned payload is trusted or even parsed
    if not hmac.compare_digest(given, _sign(secret, signed)):
        raise TokenError("bad signature (forged, or signed with another secret)")
    try:
        claims = orjson.loads(_unb64(signed[len(PREFIX):]))
        user, exp = claims["sub"], claims["exp"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise TokenError("malformed payload") from None
    if not isinstance(user, str) or not isinstance(exp, int) or not USER_ID_RE.fullmatch(user):
        raise TokenError("malformed payload")
    now = time.time() if now_s is None else now_s
    if exp <= now:
        raise TokenError(f"expired {int(now - exp)} s ago")
    return UserToken(user_id=user, expires_s=exp)


def secret_problem(cfg: Settings) -> str | None:
    """Why ``cfg``'s user-token secret must not be used (None: it may), saying what to set."""
    if cfg.dev_mode:
        return None
    secret = cfg.user_token_secret.get_secret_value()
    how = (f"set {SECRET_ENV} to at least {MIN_SECRET_BYTES} random bytes (e.g. the output of "
           "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`), or "
           "NOTIFLOW_DEV_MODE=1 on a development machine only")
    if secret == _BUILTIN_SECRET:
        return (f"{SECRET_ENV} is not set, and the built-in default is public (anyone could "
                f"sign tokens for any user): {how}")
    if len(secret.encode()) < MIN_SECRET_BYTES:
        return f"{SECRET_ENV} is {len(secret.encode())} bytes, too short to be safe: {how}"
    return None


# --- FastAPI ----------------------------------------------------------------------------

bearer = HTTPBearer(auto_error=False, scheme_name="userToken",
                    description="a user token from `make user-token USER=...`")


def unauthorized(reason: str) -> HTTPException:
    return HTTPException(401, detail={"error": "unauthorized", "reason": reason},
                         headers={"WWW-Authenticate": "Bearer"})


def settings_of(request: Request) -> Settings:
    """The app's settings (G1's create_app puts them on app.state), else the environment's."""
    return getattr(request.app.state, "settings", None) or get_settings()


def token_user(request: Request, creds: HTTPAuthorizationCredentials | None) -> str:
    """The user id a request's bearer user token names; 401 with the reason otherwise."""
    if creds is None:
        raise unauthorized("authorization: missing user token "
                           "(send 'Authorization: Bearer nfu1...')")
    secret = settings_of(request).user_token_secret.get_secret_value().encode()
    try:
        return verify_token(creds.credentials, secret).user_id
    except TokenError as e:
        raise unauthorized(f"user token: {e.reason}") from None


def require_same_user(token_user_id: str, path_user_id: str) -> None:
    """One user can never act on another's data."""
    if token_user_id != path_user_id:
        raise HTTPException(403, detail={
            "error": "forbidden",
            "reason": f"user token: it is for user {token_user_id!r} and may not act on "
                      f"user {path_user_id!r}"})


# --- CLI --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gateway.user_tokens",
                                 description="Print a signed user token for the people's API.")
    ap.add_argument("user", help="user id the token acts for")
    ap.add_argument("--ttl", type=int, default=None,
                    help="lifetime in seconds (default NOTIFLOW_USER_TOKEN_TTL_S)")
    args = ap.parse_args(argv)
    cfg = cli_settings()
    if (why := secret_problem(cfg)) is not None:
        print(f"error: no usable secret: {why}; or start the stack (make run)", file=sys.stderr)
        return 2
    ttl = cfg.user_token_ttl_s if args.ttl is None else args.ttl
    try:
        print(create_token(args.user, cfg.user_token_secret.get_secret_value().encode(), ttl))
    except ValueError as e:
        ap.error(str(e))
    return 0


def cli_settings() -> Settings:
    """Settings from the environment; without a secret there, the running stack's."""
    cfg = get_settings()
    if SECRET_ENV in os.environ:
        return cfg
    from notiflow.local_stack import ROOT, read_env_file

    stack_secret = read_env_file(ROOT).get(SECRET_ENV)
    if stack_secret:
        return cfg.model_copy(update={"user_token_secret": SecretStr(stack_secret)})
    return cfg


if __name__ == "__main__":
    raise SystemExit(main())
