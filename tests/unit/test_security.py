"""Passwords, JWT verification and roles: every forged or broken token is an AuthError (401)."""

from __future__ import annotations

import base64
import json
import secrets
import time
from datetime import UTC, datetime, timedelta, timezone

import jwt
import pytest

from machine_health import security as passwords
from machine_health.api import security
from machine_health.config import Settings
from machine_health.errors import AuthError, Forbidden


@pytest.fixture
def settings() -> Settings:
    return Settings(
        _env_file=None, env="test",
        jwt_secret=secrets.token_urlsafe(48), service_token=secrets.token_urlsafe(48),
    )  # fmt: skip


def _claims(settings: Settings, **overrides: object) -> dict[str, object]:
    now = datetime.now(UTC)
    claims: dict[str, object] = {
        "sub": "ana", "role": "operator", "iat": now, "exp": now + timedelta(minutes=5),
        "iss": settings.jwt_issuer, "aud": settings.jwt_audience, "jti": "j1",
    }  # fmt: skip
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: dict[str, object]) -> str:
    raw = json.dumps(data, default=lambda d: int(d.timestamp())).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_argon2_hash_verifies_only_the_right_password() -> None:
    hashed = passwords.hash_password("correct horse battery")
    assert hashed.startswith("$argon2")
    assert passwords.verify_password("correct horse battery", hashed)
    assert not passwords.verify_password("correct horse batterz", hashed)
    assert not passwords.verify_password("anything", None)
    assert not passwords.verify_password("anything", "not-a-hash")


def test_short_password_is_refused() -> None:
    with pytest.raises(AuthError):
        passwords.hash_password("short")


def test_issued_token_round_trips_with_every_claim(settings: Settings) -> None:
    token, expires = security.create_access_token(settings, "ana", "operator")
    claims = security.decode_access_token(settings, token)
    assert {"exp", "iat", "iss", "aud", "jti", "sub", "role"} <= set(claims)
    assert claims["sub"] == "ana" and claims["role"] == "operator"
    assert abs(claims["exp"] - expires.timestamp()) < 1
    principal = security.authenticate_bearer(settings, token)
    assert principal == security.Principal("ana", "operator", claims["jti"])


def _signed(settings: Settings, algorithm: str = "HS256", **overrides: object) -> str:
    return jwt.encode(
        _claims(settings, **overrides), settings.jwt_secret.get_secret_value(), algorithm=algorithm
    )


_PAST = datetime.now(UTC) - timedelta(minutes=1)
FORGERIES = {
    "alg-none": lambda s: f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(s))}.",
    "wrong-key": lambda s: jwt.encode(_claims(s), "another-secret-of-enough-length-00000000"),
    "malformed": lambda s: "not.a.jwt",
    "one-segment": lambda s: "garbage",
    "bad-base64": lambda s: "eyJhbGciOiJIUzI1NiJ9!!.e30.x",
    "expired": lambda s: _signed(s, exp=_PAST),
    "wrong-audience": lambda s: _signed(s, aud="someone-else"),
    "wrong-issuer": lambda s: _signed(s, iss="evil"),
    "no-jti": lambda s: _signed(s, jti=None),
    "unknown-role": lambda s: _signed(s, role="root"),
    "other-alg": lambda s: _signed(s, algorithm="HS512"),
}


@pytest.mark.parametrize("forge", list(FORGERIES.values()), ids=list(FORGERIES))
def test_forged_or_broken_tokens_are_auth_errors(settings: Settings, forge: object) -> None:
    token = forge(settings)  # type: ignore[operator]
    with pytest.raises(AuthError):
        security.authenticate_bearer(settings, token)


def test_previous_key_is_accepted_during_rotation(settings: Settings) -> None:
    old_token, _ = security.create_access_token(settings, "ana", "viewer")
    rotated = settings.model_copy(
        update={"jwt_secret": Settings(
            _env_file=None, jwt_secret=secrets.token_urlsafe(48)
        ).jwt_secret, "jwt_previous_secret": settings.jwt_secret}
    )  # fmt: skip
    assert security.authenticate_bearer(rotated, old_token).username == "ana"
    after_grace = rotated.model_copy(update={"jwt_previous_secret": None})
    with pytest.raises(AuthError):
        security.authenticate_bearer(after_grace, old_token)


def test_previous_key_is_refused_after_its_grace_period_ends(settings: Settings) -> None:
    old_token, _ = security.create_access_token(settings, "ana", "viewer")
    new_key = Settings(_env_file=None, jwt_secret=secrets.token_urlsafe(48)).jwt_secret
    now = datetime.now(UTC)

    def rotated(until: object) -> Settings:
        return Settings(
            _env_file=None, env="test", service_token=secrets.token_urlsafe(48),
            jwt_secret=new_key.get_secret_value(),  # type: ignore[union-attr]
            jwt_previous_secret=settings.jwt_secret.get_secret_value(),  # type: ignore[union-attr]
            jwt_previous_secret_until=until,
        )  # fmt: skip

    # Until the end (given as the environment gives it: ISO 8601 with an offset), accepted.
    later = rotated((now + timedelta(hours=1)).astimezone(timezone(timedelta(hours=2))).isoformat())
    assert security.authenticate_bearer(later, old_token).username == "ana"
    ended = rotated((now - timedelta(seconds=1)).isoformat())
    with pytest.raises(AuthError, match="previous key, no longer accepted since"):
        security.authenticate_bearer(ended, old_token)
    # The current key is not affected, and a token of neither key is still just a bad signature.
    new_token, _ = security.create_access_token(ended, "bob", "viewer")
    assert security.authenticate_bearer(ended, new_token).username == "bob"
    stranger = jwt.encode(_claims(settings), secrets.token_urlsafe(48), algorithm="HS256")
    with pytest.raises(AuthError, match=r"invalid token \(signature\)"):
        security.authenticate_bearer(ended, stranger)
    with pytest.raises(ValueError, match="timezone"):  # a naive end is ambiguous: refused
        rotated("2026-01-01T00:00:00")


def test_a_verified_token_is_remembered_only_until_it_expires(settings: Settings) -> None:
    # exp (whole seconds) 3-4 s ago: inside the 5 s leeway for one to two more seconds
    token, _ = security.create_access_token(settings, "ana", "viewer", ttl=timedelta(seconds=-3))
    assert security.authenticate_bearer(settings, token).username == "ana"
    remembered = len(security._VERIFIED)
    assert any(key[0] == token for key in security._VERIFIED)
    assert security.authenticate_bearer(settings, token).username == "ana"  # from the cache
    assert len(security._VERIFIED) == remembered
    time.sleep(2.2)
    with pytest.raises(AuthError, match="token expired"):
        security.authenticate_bearer(settings, token)


def test_a_remembered_token_is_not_valid_under_another_key(settings: Settings) -> None:
    token, _ = security.create_access_token(settings, "ana", "viewer")
    assert security.authenticate_bearer(settings, token).username == "ana"
    other = settings.model_copy(
        update={
            "jwt_secret": Settings(_env_file=None, jwt_secret=secrets.token_urlsafe(48)).jwt_secret
        }
    )
    with pytest.raises(AuthError, match=r"invalid token \(signature\)"):
        security.authenticate_bearer(other, token)
    assert security.authenticate_bearer(settings, token).username == "ana"


def test_service_token_is_the_service_role(settings: Settings) -> None:
    principal = security.authenticate_bearer(settings, settings.service_token.get_secret_value())
    assert principal.role == "service"
    assert principal.can("reload") and not principal.can("predict")


@pytest.mark.parametrize(
    ("role", "allowed", "denied"),
    [
        ("admin", {"predict", "feedback", "read", "reload", "register"}, set()),
        ("operator", {"predict", "feedback", "read"}, {"reload", "register"}),
        ("viewer", {"read"}, {"predict", "feedback", "reload", "register"}),
        ("service", {"reload", "read"}, {"predict", "feedback", "register"}),
    ],
)
def test_role_permissions(role: str, allowed: set[str], denied: set[str]) -> None:
    principal = security.Principal("x", role)
    for permission in allowed:
        assert principal.require(permission) is principal
    for permission in denied:
        with pytest.raises(Forbidden):
            principal.require(permission)
