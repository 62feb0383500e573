"""Annotated dependency aliases; the lifespan builds the real adapters once per process."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.service import JobService


def get_service(request: Request) -> JobService:
    return request.app.state.service


ServiceDep = Annotated[JobService, Depends(get_service)]
