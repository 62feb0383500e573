"""App factory and lifespan: one Temporal client, one asyncpg pool, one Redis cache per process."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import errors, routes
from pmls.auth import authenticator_from
from pmls.settings import Settings

log = logging.getLogger("pmls.api")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    from api.service import JobService
    from pmls.storage.cache import Cache
    from pmls.storage.postgres import ArtifactStore, DeploymentStore, ExperimentStore, JobStore, create_pool
    from pmls.storage.registry import ModelRegistry
    from pmls.temporal import connect_temporal

    settings: Settings = app.state.settings
    pool = await create_pool(settings.database.url, max_size=10)
    cache = Cache(settings.redis.url, timeout=settings.redis.redis_socket_timeout)
    app.state.service = JobService(
        settings=settings,
        temporal=await connect_temporal(settings),
        jobs=JobStore(pool),
        artifacts=ArtifactStore(pool),
        deployments=DeploymentStore(pool),
        experiments=ExperimentStore(pool),
        cache=cache,
        registry=ModelRegistry(settings.mlflow.tracking_uri),
    )
    try:
        yield
    finally:
        await cache.close()
        await pool.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="pmls — Prediction Model Learning Service",
        description="Durable training of prediction models: a TrainingRequest in, a registered model out.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.authenticator = authenticator_from(settings)
    if app.state.authenticator is None:
        log.warning("PMLS_AUTH=disabled: anyone who reaches this API can start, cancel and deploy anything")
    app.add_middleware(errors.BodyLimit, limit=settings.api.api_max_body_bytes)
    errors.install(app)
    for router in (routes.training, routes.models, routes.health):
        app.include_router(router)
    return app
