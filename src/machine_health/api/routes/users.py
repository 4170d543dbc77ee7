"""User administration (admins only): GET /users, PATCH /users/{name}, DELETE /users/{name}.

Every change bumps the user's `token_version`, so the tokens issued before it are refused: at
once on this replica, within `MH_USER_CACHE_SECONDS` (30 s) on the others. Removing the last
enabled admin is refused (409). Each change is logged with the admin who made it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, Field, StrictBool, WithJsonSchema, field_validator

from machine_health.api.deps import AdminUser, DbDep
from machine_health.api.json_body import api_router
from machine_health.api.security import forget_user
from machine_health.archive import users

router = api_router(tags=["users"])

_NAME = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")


class UserInfo(BaseModel):
    username: str
    role: str
    disabled: bool = False
    token_version: int = 0


class UserList(BaseModel):
    items: list[UserInfo]


class UserChange(BaseModel):
    """At least one change; a field left out is not changed (a null is refused, not ignored)."""

    disabled: Annotated[StrictBool | None, WithJsonSchema({"type": "boolean"})] = Field(
        default=None, description="Disable (true) or enable (false)."
    )
    role: Annotated[
        Literal["admin", "operator", "viewer"] | None,
        WithJsonSchema({"type": "string", "enum": ["admin", "operator", "viewer"]}),
    ] = Field(default=None, description="The new role.")

    model_config = {
        "extra": "forbid",
        "json_schema_extra": {
            "minProperties": 1,
            "examples": [{"disabled": True}, {"role": "viewer"}],
        },
    }

    @field_validator("disabled", "role", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("give a value, or leave the field out to keep it")
        return value


class UserDeleted(BaseModel):
    username: str
    deleted: bool


@router.get("/users", response_model=UserList)
async def list_users(db: DbDep, _: AdminUser) -> dict[str, Any]:
    """Every user with its role and whether it is disabled (never a password hash)."""
    return {"items": await users.list_users(db)}


@router.patch("/users/{username}", response_model=UserInfo)
async def update_user(
    username: Annotated[str, _NAME], body: UserChange, db: DbDep, admin: AdminUser
) -> dict[str, Any]:
    """Disable, enable or change the role of a user; its existing tokens stop working."""
    user = await users.update_user(
        db, username, by=admin.username, disabled=body.disabled, role=body.role
    )
    forget_user(db.name, username)
    return user


@router.delete("/users/{username}", response_model=UserDeleted)
async def delete_user(
    username: Annotated[str, _NAME], db: DbDep, admin: AdminUser
) -> dict[str, Any]:
    """Delete a user; its existing tokens stop working."""
    result = await users.delete_user(db, username, by=admin.username)
    forget_user(db.name, username)
    return result
