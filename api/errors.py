"""Every error becomes a JSON answer with a readable message, never a stack trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from pmls.contracts.errors import ConflictError, NotFoundError, PmlsError, UnavailableError, UnsupportedError

log = logging.getLogger("pmls.api")
STATUS = {NotFoundError: 404, ConflictError: 409, UnsupportedError: 422, UnavailableError: 503}


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


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return _invalid(list(exc.errors()))

    @app.exception_handler(ValidationError)
    async def _model_invalid(_req: Request, exc: ValidationError) -> JSONResponse:
        return _invalid(exc.errors())

    @app.exception_handler(PmlsError)
    async def _known(_req: Request, exc: PmlsError) -> JSONResponse:
        status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 400)
        detail = [{"field": exc.field, "message": exc.message}] if exc.field else []
        return JSONResponse(status_code=status, content={"message": exc.message, "detail": detail})

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(
            status_code=500, content={"message": f"internal error: {type(exc).__name__}: {exc}"}
        )
