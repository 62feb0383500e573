"""Bearer authentication and scopes for every /api/v1 route (health and readiness stay open).

No credential or a bad one: 401 with ``WWW-Authenticate: Bearer``; a credential without the route's scope: 403
naming it. With ``PMLS_AUTH=disabled`` every caller is an anonymous admin (the API logs a warning at start).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pmls.auth import Principal
from pmls.contracts.errors import ForbiddenError, UnauthenticatedError

ANONYMOUS = Principal("anonymous", frozenset({"admin"}))

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="`pmls token create` (or the local admin token in PMLS_HOME/api-token), or a JWT from the "
    "identity provider",
)


def principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    auth = request.app.state.authenticator
    if auth is None:
        return ANONYMOUS
    if credentials is None:
        raise UnauthenticatedError("authentication required: send 'Authorization: Bearer <token>'")
    found = auth.authenticate(credentials.credentials)
    if found is None:
        raise UnauthenticatedError("the bearer token is not valid (unknown, expired or badly signed)")
    return found


def scoped(scope: str):
    """A dependency: the caller, who must hold ``scope`` (or ``admin``)."""

    def check(caller: Annotated[Principal, Depends(principal)]) -> Principal:
        if not caller.can(scope):
            held = ", ".join(sorted(caller.scopes)) or "none"
            raise ForbiddenError(f"this call needs the '{scope}' scope; '{caller.name}' has: {held}")
        return caller

    return check


Reader = Annotated[Principal, Depends(scoped("read"))]
Trainer = Annotated[Principal, Depends(scoped("train"))]
Deployer = Annotated[Principal, Depends(scoped("deploy"))]
