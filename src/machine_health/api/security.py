"""JWT access tokens (PyJWT), roles and login throttling; passwords are hashed and checked by
`machine_health.security`.

Tokens carry `sub`, `role`, `exp`, `iat`, `iss`, `aud` and `jti`, are signed with the shared
`MH_JWT_SECRET` (HS256 by default) and verified against it or, during a key rotation, against
`MH_JWT_PREVIOUS_SECRET` (until `MH_JWT_PREVIOUS_SECRET_UNTIL`, when set). The algorithm is
fixed by the settings, so `alg=none` or any other algorithm in a token header is refused. Every
verification failure is an `AuthError` (401).

A user's token also carries `ver`, the user's `token_version` when it was issued: every request
checks it, with the user's role and `disabled` flag, against the user record (cached
`MH_USER_CACHE_SECONDS`, 30 s), so a disabled, demoted or deleted user's tokens stop working
within that time (`check_current`).

The pipeline authenticates with the static `MH_SERVICE_TOKEN` as a bearer token (role
`service`). Nothing in this module logs a token, a password or a secret.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from pymongo.asynchronous.database import AsyncDatabase

from machine_health import telemetry
from machine_health.archive import users
from machine_health.config import Settings
from machine_health.errors import AuthError, ConfigurationError, Forbidden, StoreError, Throttled
from machine_health.security import verify_password

logger = logging.getLogger(__name__)

_REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "jti"]
CLIENT_FACTOR = 5  # failed logins allowed per client address = 5 x those per user

# What each role may do; admin may do everything.
PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset({"predict", "feedback", "read", "reload", "register"}),
    "operator": frozenset({"predict", "feedback", "read"}),
    "viewer": frozenset({"read"}),
    "service": frozenset({"reload", "read"}),
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user from a JWT, or the pipeline with the service token."""

    username: str
    role: str
    token_id: str | None = None
    token_version: int = 0

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())

    def require(self, permission: str) -> Principal:
        if not self.can(permission):
            raise Forbidden(f"role {self.role!r} may not {permission}")
        return self


# --- tokens -----------------------------------------------------------------------------------
def _secret(settings: Settings) -> str:
    if settings.jwt_secret is None:
        raise ConfigurationError("MH_JWT_SECRET is not set")
    return settings.jwt_secret.get_secret_value()


def create_access_token(
    settings: Settings,
    username: str,
    role: str,
    *,
    ttl: timedelta | None = None,
    version: int = 0,
) -> tuple[str, datetime]:
    """A signed JWT for `username` and its expiry time."""
    now = datetime.now(UTC)
    expires = now + (ttl or timedelta(minutes=settings.jwt_ttl_minutes))
    claims = {
        "sub": username,
        "role": role,
        "iat": now,
        "exp": expires,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "jti": uuid.uuid4().hex,
        "ver": int(version),
    }
    token = jwt.encode(claims, _secret(settings), algorithm=settings.jwt_algorithm)
    return token, expires


def _decode(settings: Settings, token: str, key: str) -> dict[str, Any]:
    try:
        return jwt.decode(
            token,
            key,
            algorithms=[settings.jwt_algorithm],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": _REQUIRED_CLAIMS},
            leeway=_LEEWAY_S,
        )
    except jwt.InvalidSignatureError:
        raise
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("token expired") from exc
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token ({type(exc).__name__})") from exc
    except Exception as exc:  # e.g. a header that is not a JSON object
        raise AuthError("invalid token (malformed)") from exc


# Tokens already verified, so that a client's every request does not pay a signature check
# (about 5 % of a turbofan prediction). Keyed by the token AND everything that verified it, so
# other keys or claims settings never see an entry; an entry is used only before its `exp`.
_VERIFIED: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
_VERIFIED_MAX = 4096
_LEEWAY_S = 5


def decode_access_token(settings: Settings, token: str) -> dict[str, Any]:
    """The claims of a valid token; AuthError (401) for anything else.

    A token of the previous key is accepted until `MH_JWT_PREVIOUS_SECRET_UNTIL` (if set);
    after it, the refusal says so, so that its holder knows to log in again.
    """
    previous = settings.jwt_previous_secret
    key = (token, _secret(settings), previous and previous.get_secret_value(),
           settings.jwt_previous_secret_until, settings.jwt_algorithm, settings.jwt_audience,
           settings.jwt_issuer)  # fmt: skip
    claims = _VERIFIED.get(key)
    now = datetime.now(UTC).timestamp()
    if claims is not None and now < claims["exp"] + _LEEWAY_S and not _past_previous(settings):
        return claims
    claims = _verify(settings, token)
    _VERIFIED[key] = claims
    while len(_VERIFIED) > _VERIFIED_MAX:
        _VERIFIED.popitem(last=False)
    return claims


def _past_previous(settings: Settings) -> bool:
    until = settings.jwt_previous_secret_until
    return until is not None and datetime.now(UTC) >= until


def _verify(settings: Settings, token: str) -> dict[str, Any]:
    try:
        return _decode(settings, token, _secret(settings))
    except jwt.InvalidSignatureError as exc:
        if settings.jwt_previous_secret is None:
            raise AuthError("invalid token (signature)") from exc
        first_error = exc
    try:  # maybe signed with the previous key
        claims = _decode(settings, token, settings.jwt_previous_secret.get_secret_value())
    except jwt.InvalidSignatureError:
        raise AuthError("invalid token (signature)") from first_error
    until = settings.jwt_previous_secret_until
    if _past_previous(settings):
        raise AuthError(
            f"token signed with the previous key, no longer accepted since "
            f"{until.astimezone(UTC).isoformat()}: log in again"
        )
    return claims


def authenticate_bearer(settings: Settings, token: str) -> Principal:
    """The principal behind a bearer token (the service token or a user JWT)."""
    service = settings.service_token.get_secret_value() if settings.service_token else None
    if service and hmac.compare_digest(token.encode(), service.encode()):
        return Principal(username="service", role="service")
    claims = decode_access_token(settings, token)
    role = claims.get("role")
    if role not in PERMISSIONS:
        raise AuthError("invalid token (role)")
    version = claims.get("ver", 0)  # tokens issued before versions existed: version 0
    if not isinstance(version, int) or isinstance(version, bool):
        raise AuthError("invalid token (ver)")
    return Principal(
        username=str(claims["sub"]), role=str(role), token_id=str(claims["jti"]),
        token_version=version,
    )  # fmt: skip


# --- is the token's user still who the token says? --------------------------------------------
#: default of `MH_USER_CACHE_SECONDS`: how long a replica trusts what it last read of a user
#: (role, disabled, token_version), the longest a disabled, demoted or deleted user's token keeps
#: working on another replica
USER_CACHE_SECONDS = 30.0
_USER_CACHE_MAX = 4096
# (database name, user name) -> (monotonic time read, the user's access fields or None if absent)
_USERS: OrderedDict[tuple[str, str], tuple[float, dict[str, Any] | None]] = OrderedDict()


def forget_user(db_name: str, username: str) -> None:
    """Drop a cached user (this replica changed it: its next request reads it again)."""
    _USERS.pop((db_name, username), None)


async def _user_access(
    db: AsyncDatabase, username: str, *, store_up: bool, ttl: float
) -> dict[str, Any] | None:
    key = (db.name, username)
    cached = _USERS.get(key)
    now = time.monotonic()
    if cached is not None and now - cached[0] < ttl:
        return cached[1]
    try:
        if not store_up:
            raise StoreError("store unreachable")
        user = await users.get_user(db, username)
    except StoreError:
        if cached is not None:  # the last known record, however old
            return cached[1]
        raise
    access = (
        None
        if user is None
        else {"role": user.get("role"), "disabled": bool(user.get("disabled")),
              "token_version": users.token_version(user)}
    )  # fmt: skip
    _USERS[key] = (now, access)
    _USERS.move_to_end(key)
    while len(_USERS) > _USER_CACHE_MAX:
        _USERS.popitem(last=False)
    return access


async def check_current(
    db: AsyncDatabase,
    principal: Principal,
    *,
    store_up: bool,
    ttl: float = USER_CACHE_SECONDS,
) -> Principal:
    """Refuse (401) the token of a user deleted, disabled, given another role or whose tokens
    were revoked (token_version bumped) since it was issued.

    The user record is read by its unique name (one indexed `find_one`) at most once per `ttl`
    seconds per replica (`MH_USER_CACHE_SECONDS`). While the store is unreachable the last
    record read is used, and a user never read passes on the signed token alone: predictions
    keep being served (and spooled) during an outage, at the price of revocations waiting for
    the store.
    """
    if principal.token_id is None:  # the static service token: no user record
        return principal
    try:
        access = await _user_access(db, principal.username, store_up=store_up, ttl=ttl)
        reason = _refusal(access, principal)
        if reason is not None:
            # A refusal from a cached record is checked against the store (at most once a
            # second per user, at once for a token newer than the record): the user may have
            # been enabled, or logged in again elsewhere.
            newer = access is not None and principal.token_version > access["token_version"]
            access = await _user_access(
                db, principal.username, store_up=store_up, ttl=0 if newer else min(ttl, _RECHECK_S)
            )
            reason = _refusal(access, principal)
    except StoreError as exc:
        logger.warning("user check skipped, store unreachable: %s", exc)
        return principal
    if reason is not None:
        raise AuthError(f"token refused: {reason}")
    return principal


_RECHECK_S = 1.0


def _refusal(access: dict[str, Any] | None, principal: Principal) -> str | None:
    if access is None:
        return "the user no longer exists"
    if access["disabled"]:
        return "the user is disabled"
    if access["role"] != principal.role or access["token_version"] != principal.token_version:
        return "the user's access changed since it was issued: log in again"
    return None


# --- login ------------------------------------------------------------------------------------
async def login(
    db: AsyncDatabase, settings: Settings, username: str, password: str, client: str
) -> Principal:
    """Check a password, throttled per user and per client address; Throttled (429) when over."""
    keys = [f"user:{username}", f"client:{client}"]
    # A client address may be a NAT or a proxy in front of many users: it gets more attempts
    # than one user name, enough to stop password spraying without locking out an office.
    limits = [settings.login_max_failures, settings.login_max_failures * CLIENT_FACTOR]
    # The attempt counts as a failure BEFORE its password is checked and is uncounted if it
    # succeeds: checking first and recording after let 40 concurrent guesses of one password
    # through a limit of 3 (each passed the check before any failure was recorded).
    attempt = uuid.uuid4().hex
    await users.record_failure(db, keys, settings.login_window_seconds, attempt=attempt)
    for key, limit in zip(keys, limits, strict=True):
        failures = await users.recent_failures(db, key, settings.login_window_seconds)
        if failures > limit:  # this attempt included
            await users.forget_attempt(db, attempt)
            telemetry.LOGIN_FAILURES.labels(reason="throttled").inc()
            raise Throttled(
                f"too many failed logins; retry in up to {settings.login_window_seconds} s"
            )
    user = await users.get_user(db, username)
    hashed = user.get("password_hash") if user and not user.get("disabled") else None
    # argon2 is CPU-bound on purpose: keep it off the event loop.
    if not await asyncio.to_thread(verify_password, password, hashed):
        telemetry.LOGIN_FAILURES.labels(reason="bad_credentials").inc()
        logger.info("failed login for a user from %s", client)
        raise AuthError("incorrect username or password")
    await users.forget_attempt(db, attempt)
    await users.clear_failures(db, keys[0])
    assert user is not None
    return Principal(
        username=user["username"], role=user["role"], token_version=users.token_version(user)
    )
