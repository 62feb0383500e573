"""Every error becomes a JSON answer with a readable message, never a stack trace."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from pmls.contracts.errors import (
    ConflictError,
    ForbiddenError,
    InvalidError,
    NotFoundError,
    PmlsError,
    TooManyError,
    UnauthenticatedError,
    UnavailableError,
    UnsupportedError,
)

log = logging.getLogger("pmls.api")
STATUS = {
    UnauthenticatedError: 401,
    ForbiddenError: 403,
    NotFoundError: 404,
    ConflictError: 409,
    UnsupportedError: 422,
    InvalidError: 422,
    TooManyError: 429,
    UnavailableError: 503,
}
HEADERS = {
    UnauthenticatedError: {"WWW-Authenticate": 'Bearer realm="pmls"'},
    TooManyError: {"Retry-After": "60"},
}


def field_errors(errors: list[dict]) -> list[dict]:
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        out.append({"field": ".".join(loc) or "body", "message": message, "type": err.get("type", "")})
    return out


def _invalid(errors: list[dict]) -> JSONResponse:
    details = field_errors(errors)
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
    return JSONResponse(
        status_code=422, content={"message": f"invalid request: {summary}", "detail": details}
    )


def too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        status_code=413,
        content={
            "message": f"request body too large: at most {limit} bytes (PMLS_API_MAX_BODY_BYTES)",
            "detail": [{"field": "body", "message": f"at most {limit} bytes"}],
        },
    )


class BodyLimit:
    """Request bodies over ``limit`` bytes get 413 in the API's shape before they are read whole: a declared
    length at once, a streamed body as soon as it passes the limit. (FastAPI's own ``max_body_size`` answers a
    declared length in plain text, whatever the app's handlers say.)"""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared and (not declared.isdigit() or int(declared) > self.limit):
            await too_large(self.limit)(scope, receive, send)
            return
        seen = 0

        async def bounded():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                # An HTTPException: FastAPI's body parsing passes it on as is, to the handler below.
                raise HTTPException(413)
            return message

        await self.app(scope, bounded, send)


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return _invalid(list(exc.errors()))

    @app.exception_handler(ValidationError)
    async def _model_invalid(_req: Request, exc: ValidationError) -> JSONResponse:
        return _invalid(exc.errors())

    @app.exception_handler(HTTPException)
    async def _http(req: Request, exc: HTTPException) -> JSONResponse:
        # Starlette's own answers (413 body too large, 404 no such route, 405) in the API's error shape.
        if exc.status_code == 413:
            return too_large(req.app.state.settings.api.api_max_body_bytes)
        return JSONResponse(
            status_code=exc.status_code,
            content={"message": str(exc.detail), "detail": []},
            headers=exc.headers,
        )

    @app.exception_handler(PmlsError)
    async def _known(_req: Request, exc: PmlsError) -> JSONResponse:
        status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 400)
        detail = [{"field": exc.field, "message": exc.message}] if exc.field else []
        headers = next((h for kind, h in HEADERS.items() if isinstance(exc, kind)), None)
        return JSONResponse(
            status_code=status, content={"message": exc.message, "detail": detail}, headers=headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(req: Request, exc: Exception) -> JSONResponse:
        # The exception's text may hold paths, queries or credentials: it goes to the log under an id that
        # the caller can quote, never into the answer.
        error_id = uuid.uuid4().hex[:12]
        log.error("unhandled error %s on %s %s", error_id, req.method, req.url.path, exc_info=exc)
        if _unreachable(exc):
            return JSONResponse(
                status_code=503,
                content={
                    "message": f"a server the API needs (PostgreSQL) cannot be reached; try again shortly "
                    f"(error id {error_id})",
                    "error_id": error_id,
                },
                headers={"Retry-After": "5"},
            )
        return JSONResponse(
            status_code=500,
            content={
                "message": f"internal error (error id {error_id}; the service log has the details)",
                "error_id": error_id,
            },
        )


def _unreachable(exc: BaseException) -> bool:
    """A refused or dropped connection (asyncpg's or the OS's) anywhere in the chain."""
    import asyncpg

    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, (ConnectionError, TimeoutError, asyncpg.PostgresConnectionError)):
            return True
        if isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, PermissionError)):
            return True  # asyncio's "Multiple exceptions: [Errno 111] ..." when every address refused
        if isinstance(exc, (asyncpg.CannotConnectNowError, asyncpg.ConnectionDoesNotExistError)):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False
