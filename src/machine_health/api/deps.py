"""Dependencies of the route handlers, as `Annotated` aliases (`SettingsDep`, `OperatorUser`...)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.security import OAuth2PasswordBearer
from pymongo.asynchronous.database import AsyncDatabase

from machine_health.api.scoring import Scorer
from machine_health.api.security import Principal, authenticate_bearer, check_current
from machine_health.config import Settings
from machine_health.errors import AuthError, Forbidden

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="token", auto_error=False)


async def get_state(request: Request) -> Any:
    return request.app.state.mh


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.mh.settings


async def get_db(request: Request) -> AsyncDatabase:
    return request.app.state.mh.db


async def get_scorer(request: Request) -> Scorer:
    return request.app.state.mh.scorer


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
DbDep = Annotated[AsyncDatabase, Depends(get_db)]
ScorerDep = Annotated[Scorer, Depends(get_scorer)]
StateDep = Annotated[Any, Depends(get_state)]
TokenDep = Annotated[str | None, Depends(oauth2_scheme)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="Retry-safe key: a repeated request returns the first result, writes nothing.",
    ),
]


async def _checked(request: Request, settings: Settings, token: str) -> Principal:
    """The token's principal, if its user still exists, is enabled and has the token's role
    and token version (`security.check_current`, cached per replica)."""
    principal = authenticate_bearer(settings, token)
    state = request.app.state.mh
    return await check_current(
        state.db,
        principal,
        store_up=state.store.status != "unreachable",
        ttl=settings.user_cache_seconds,
    )


async def optional_principal(
    request: Request, settings: SettingsDep, token: TokenDep
) -> Principal | None:
    return await _checked(request, settings, token) if token else None


async def current_principal(request: Request, settings: SettingsDep, token: TokenDep) -> Principal:
    if not token:
        raise AuthError("not authenticated: send `Authorization: Bearer <token>` (POST /token)")
    return await _checked(request, settings, token)


def _requires(permission: str) -> Any:
    async def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        return principal.require(permission)

    return Depends(check)


async def _admin(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if principal.role != "admin":
        raise Forbidden(f"role {principal.role!r} may not administer users (admins only)")
    return principal


OptionalUser = Annotated[Principal | None, Depends(optional_principal)]
AdminUser = Annotated[Principal, Depends(_admin)]
CurrentUser = Annotated[Principal, Depends(current_principal)]
Predictor = Annotated[Principal, _requires("predict")]
Reader = Annotated[Principal, _requires("read")]
Labeller = Annotated[Principal, _requires("feedback")]
Reloader = Annotated[Principal, _requires("reload")]
