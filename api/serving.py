"""The `local` deployment target: one process (`pmls serve`, supervised by `pmls up`) that serves the version each
lineage's alias is deployed with locally, over HTTP.

It follows PostgreSQL's ``local_serving`` (written by the lineage workflow when it promotes or rolls back with
target `local`) every ``PMLS_SERVING_POLL_SECONDS``, and loads a version through pmls's checked loader (its content
hash against the one recorded at registration; no pickles, no model code run). A restart reloads what it served.
Predictions need a bearer token with the `read` scope, as the API's reads do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import pandas as pd
from fastapi import FastAPI, Query, Request, Response
from pydantic import BaseModel, Field

from api import errors
from api.auth import Reader
from pmls.auth import authenticator_from
from pmls.contracts.errors import InvalidError, NotFoundError
from pmls.settings import Settings

log = logging.getLogger("pmls.serving")
ALIAS = r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$"


@dataclass
class Served:
    model_name: str
    alias: str
    version: str
    bundle: Any
    loaded_at: datetime


class ServedModel(BaseModel):
    model_name: str
    alias: str
    version: str | None = None  # loaded and answering
    loaded_at: datetime | None = None
    input_columns: list[str] = Field(default_factory=list)
    wanted_version: str | None = None  # what the deployment asks for (loading, or failed to load)
    load_error: str | None = None


class PredictRequest(BaseModel):
    rows: list[dict[str, Any]] = Field(description="raw rows: the source's columns, no target")


class PredictResponse(BaseModel):
    model_name: str
    alias: str
    version: str
    predictions: list[dict[str, Any]]


class Models:
    """What this process serves, kept in step with ``local_serving``."""

    def __init__(self, settings: Settings, store, registry, *, check_run: str | None = None) -> None:
        self.settings, self.store, self.registry = settings, store, registry
        # Single-model mode: the MLflow run whose held-out rows the loaded version must predict as registered
        # before it is served (so a pod is ready only once its predictions are the registered model's).
        self.check_run = check_run
        self.served: dict[tuple[str, str], Served] = {}
        self.failed: dict[tuple[str, str, str], str] = {}  # a version that would not load, and why
        self.wanted: dict[tuple[str, str], str] = {}
        self.synced = False  # read what to serve at least once

    async def follow(self) -> None:
        while True:
            try:
                await self.sync()
            except Exception as exc:  # noqa: BLE001 - an outage must not end the loop; the next round retries
                log.warning("could not read what to serve: %s", exc)
            await asyncio.sleep(self.settings.serving.serving_poll_seconds)

    async def sync(self) -> None:
        wanted = await self.store.wanted()
        self.wanted = {(name, alias): version for name, alias, version, _h in wanted}
        keys = set(self.wanted)
        for key in [k for k in self.served if k not in keys]:
            log.info("no longer serving %s@%s", *key)
            del self.served[key]
        for name, alias, version, sha in wanted:
            current = self.served.get((name, alias))
            if (current and current.version == version) or (name, alias, version) in self.failed:
                continue
            try:
                if not sha:
                    raise ValueError("no bundle hash was recorded for it by pmls")
                bundle = await asyncio.to_thread(self.registry.load_checked, name, version, sha)
            except Exception as exc:  # noqa: BLE001 - reported by /v1/models and the smoke test
                self.failed[(name, alias, version)] = str(exc)[:500]
                log.error("could not load %s version %s: %s", name, version, exc)
                continue
            problem = await asyncio.to_thread(self._self_check, bundle) if self.check_run else None
            if problem:
                self.failed[(name, alias, version)] = problem
                log.error("version %s of %s fails its self-check: %s", version, name, problem)
                continue
            self.served[(name, alias)] = Served(name, alias, version, bundle, datetime.now(UTC))
            log.info("serving %s@%s: version %s", name, alias, version)
        self.synced = True

    def _self_check(self, bundle: Any) -> str | None:
        from pmls.deployments import prediction_mismatch

        reference = self.registry.smoke_set(self.check_run)
        if reference is None:
            return None
        rows, expected = reference
        mismatch = prediction_mismatch(bundle.predict(rows), expected)
        return f"self-check on {len(rows)} held-out rows: {mismatch}" if mismatch else None

    def serves(self, model_name: str, alias: str, version: str) -> bool:
        found = self.served.get((model_name, alias))
        return found is not None and found.version == version

    def get(self, model_name: str, alias: str) -> Served:
        found = self.served.get((model_name, alias))
        if found is None:
            raise NotFoundError(
                f"{model_name!r} has no version served locally as {alias!r}", field="model_name"
            )
        return found

    def describe(self, model_name: str, alias: str) -> ServedModel:
        key = (model_name, alias)
        wanted, served = self.wanted.get(key), self.served.get(key)
        if wanted is None and served is None:
            raise NotFoundError(
                f"{model_name!r} has no version deployed locally as {alias!r}", field="model_name"
            )
        out = _describe(served) if served else ServedModel(model_name=model_name, alias=alias)
        return out.model_copy(
            update={
                "wanted_version": wanted,
                "load_error": self.failed.get((model_name, alias, wanted or "")),
            }
        )


@dataclass(frozen=True)
class OneVersion:
    """Single-model mode (PMLS_SERVE_MODEL, _ALIAS, _VERSION, _SHA256, _RUN_ID: the `kubernetes` target's pods):
    the one version to serve, without PostgreSQL; ready once it predicts its run's held-out rows as registered."""

    model_name: str
    alias: str
    version: str
    sha256: str | None

    async def wanted(self) -> list[tuple[str, str, str, str | None]]:
        return [(self.model_name, self.alias, self.version, self.sha256)]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    from pmls.storage.postgres import LocalServingStore, create_pool
    from pmls.storage.registry import ModelRegistry

    settings: Settings = app.state.settings
    serving = settings.serving
    pool = None
    if serving.serve_model:
        store: Any = OneVersion(
            serving.serve_model, serving.serve_alias, serving.serve_version or "", serving.serve_sha256
        )
    else:
        pool = await create_pool(settings.database.url, max_size=3)
        store = LocalServingStore(pool)
    models = Models(
        settings,
        store,
        ModelRegistry(settings.mlflow.tracking_uri),
        check_run=serving.serve_run_id if serving.serve_model else None,
    )
    app.state.models = models
    follower = asyncio.create_task(models.follow())
    try:
        yield
    finally:
        follower.cancel()
        with suppress(asyncio.CancelledError):
            await follower
        if pool is not None:
            await pool.close()


def _describe(served: Served) -> ServedModel:
    return ServedModel(
        model_name=served.model_name,
        alias=served.alias,
        version=served.version,
        loaded_at=served.loaded_at,
        input_columns=served.bundle.input_columns,
    )


def create_serving_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="pmls — local model serving",
        description="The versions deployed with target `local`, served over HTTP.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.authenticator = authenticator_from(settings)
    app.add_middleware(errors.BodyLimit, limit=settings.api.api_max_body_bytes * 16)
    errors.install(app)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {}})
    async def readyz(request: Request, response: Response) -> dict:
        """Ready once every version it must serve is loaded (a Kubernetes readiness probe)."""
        models: Models = request.app.state.models
        waiting = sorted(
            f"{n}@{a}: v{v}" for (n, a), v in models.wanted.items() if not models.serves(n, a, v)
        )
        response.status_code = 503 if waiting or not models.synced else 200
        return {"status": "not ready" if response.status_code == 503 else "ready", "waiting": waiting}

    @app.get("/v1/models", response_model=list[ServedModel])
    async def served_models(request: Request, _caller: Reader) -> list[ServedModel]:
        """Every lineage and alias served here, with the version loaded."""
        return [_describe(s) for s in request.app.state.models.served.values()]

    @app.get("/v1/models/{model_name}", response_model=ServedModel, responses={404: {}})
    async def served_model(
        model_name: str,
        request: Request,
        _caller: Reader,
        alias: Annotated[str, Query(pattern=ALIAS)] = "production",
    ) -> ServedModel:
        """The version served as `alias`, and the one its deployment asks for (with why it failed to load)."""
        return request.app.state.models.describe(model_name, alias)

    @app.post("/v1/models/{model_name}/predict", response_model=PredictResponse, responses={404: {}, 422: {}})
    async def predict(
        model_name: str,
        body: PredictRequest,
        request: Request,
        _caller: Reader,
        alias: Annotated[str, Query(pattern=ALIAS)] = "production",
    ) -> PredictResponse:
        """Predict raw rows with the version served as `alias`: `prediction`, plus `proba_<class>` per class."""
        served = request.app.state.models.get(model_name, alias)
        limit = settings.serving.serving_max_rows
        if not body.rows or len(body.rows) > limit:
            raise InvalidError(f"send 1 to {limit} rows (PMLS_SERVING_MAX_ROWS)", field="rows")
        missing = [c for c in served.bundle.input_columns if c not in body.rows[0]]
        if missing:
            raise InvalidError(f"the rows lack the model's input columns {missing[:10]}", field="rows")
        frame = pd.DataFrame.from_records(body.rows)
        try:
            out = await asyncio.to_thread(served.bundle.predict, frame)
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidError(f"the rows could not be predicted: {exc}"[:500], field="rows") from exc
        return PredictResponse(
            model_name=model_name,
            alias=alias,
            version=served.version,
            predictions=out.to_dict(orient="records"),
        )

    return app
