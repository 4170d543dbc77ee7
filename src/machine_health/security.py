"""Password hashing: pwdlib with argon2 for every new hash, bcrypt only to verify imported ones.

Core, not API: the CLI and the local stack create users too, and neither should import the web
layer for it. Tokens, roles and the login throttle stay in `api/security.py`.
"""

from __future__ import annotations

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pwdlib.hashers.bcrypt import BcryptHasher

from machine_health.errors import AuthError

MIN_PASSWORD_LENGTH = 8

_HASHER = PasswordHash((Argon2Hasher(), BcryptHasher()))
# Verified when the user does not exist, so a wrong name costs the same time as a wrong password.
_DUMMY_HASH = _HASHER.hash("machine-health-timing-equaliser")


def hash_password(password: str) -> str:
    """An argon2 hash of `password`; AuthError when it is shorter than `MIN_PASSWORD_LENGTH`."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AuthError(f"password: at least {MIN_PASSWORD_LENGTH} characters")
    return _HASHER.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """Constant-time check; also spends the time of a check when there is no hash."""
    try:
        return _HASHER.verify(password, password_hash or _DUMMY_HASH) and bool(password_hash)
    except Exception:  # a corrupt or unknown hash format must read as "wrong password"
        return False
