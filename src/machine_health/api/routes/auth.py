"""POST /token (OAuth2 password flow) and POST /register."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordRequestForm

from machine_health.api.deps import DbDep, OptionalUser, SettingsDep
from machine_health.api.json_body import api_router
from machine_health.api.schemas import RegisterRequest, Token, UserOut
from machine_health.api.security import create_access_token, login
from machine_health.archive import users
from machine_health.errors import AuthError, Forbidden
from machine_health.security import hash_password

router = api_router(tags=["auth"])


@router.post("/token", response_model=Token)
async def create_token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    request: Request,
    db: DbDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    """Exchange a username and password for a bearer token (throttled after failures)."""
    client = request.client.host if request.client else "unknown"
    principal = await login(db, settings, form.username, form.password, client)
    token, expires = create_access_token(
        settings, principal.username, principal.role, version=principal.token_version
    )
    return {"access_token": token, "expires_at": expires, "role": principal.role}


@router.post("/register", response_model=UserOut, status_code=201)
async def create_user(
    body: RegisterRequest, caller: OptionalUser, db: DbDep, settings: SettingsDep
) -> dict[str, Any]:
    """Create a user: admins any role; others only a viewer, when self-registration is on."""
    if caller is not None and caller.can("register"):
        role = body.role
    elif settings.self_registration:
        if body.role != "viewer":
            raise Forbidden("self-registration creates viewers only; ask an admin for more")
        role = "viewer"
    elif caller is None:
        raise AuthError("registration needs an admin token (self-registration is off)")
    else:
        raise Forbidden(f"role {caller.role!r} may not register users")
    hashed = await asyncio.to_thread(hash_password, body.password)
    return await users.create_user(db, body.username, hashed, role)
