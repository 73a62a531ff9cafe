"""Admin API (``Authorization: Bearer <admin token>``): tokens, approval and revocation over HTTP,
for deployments where operators cannot reach the database (the CLI's ``hub admin`` works on the
database directly)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from autoresearch.protocol import ClientView

from .. import store
from ..deps import AdminDep, SessionDep, WriteSessionDep
from ..openapi import ERRORS

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])

KeyIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]


class TokenRequest(BaseModel):
    """What token to make."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["enroll", "read"]
    label: Annotated[str, Field(max_length=200)] = ""


class TokenCreated(BaseModel):
    """A new token: shown once, only its SHA-256 is stored."""

    token: str
    kind: Literal["enroll", "read"]
    label: str


@router.post("/tokens", status_code=201, response_model=TokenCreated, responses=ERRORS)
def create_token(request: TokenRequest, session: WriteSessionDep, _: AdminDep) -> TokenCreated:
    token = store.create_token(session, request.kind, request.label)
    session.commit()
    return TokenCreated(token=token, kind=request.kind, label=request.label)


@router.get("/clients", response_model=list[ClientView], responses=ERRORS)
def list_clients(session: SessionDep, _: AdminDep) -> list[ClientView]:
    return store.list_clients(session)


@router.post("/clients/{key_id}/approve", response_model=ClientView, responses=ERRORS)
def approve(key_id: KeyIdPath, session: WriteSessionDep, _: AdminDep) -> ClientView:
    """Make a pending (or revoked) key active."""
    client = store.set_client_status(session, key_id, "active")
    session.commit()
    return client


@router.post("/clients/{key_id}/revoke", response_model=ClientView, responses=ERRORS)
def revoke(key_id: KeyIdPath, session: WriteSessionDep, _: AdminDep) -> ClientView:
    """Refuse the key's new records; its stored ones stay, marked revoked, out of the bests."""
    client = store.set_client_status(session, key_id, "revoked")
    session.commit()
    return client
