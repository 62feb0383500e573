"""Configuration, one pydantic-settings class per concern, all read from ``PMLS_*`` variables.

A part whose URL is unset runs embedded (DESIGN.md §2): ``pmls up``, the tests and the demo start it.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pmls.contracts.temporal import TRAINING_QUEUE, TRIALS_QUEUE

_ENV = SettingsConfigDict(env_prefix="PMLS_", extra="ignore")
# Every port the embedded stack listens on: tests and benchmarks give each a free port to run beside a stack.
PORT_VARS = (
    "PMLS_API_PORT",
    "PMLS_TEMPORAL_PORT",
    "PMLS_TEMPORAL_UI_PORT",
    "PMLS_POSTGRES_PORT",
    "PMLS_REDIS_PORT",
    "PMLS_MLFLOW_PORT",
    "PMLS_SERVING_PORT",
)


def pmls_home() -> Path:
    return Path(os.environ.get("PMLS_HOME", ".pmls")).expanduser().resolve()


class TemporalSettings(BaseSettings):
    model_config = _ENV
    temporal_address: str | None = None
    temporal_namespace: str = "default"
    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    task_queue: str = Field(TRAINING_QUEUE, description="workflows and light I/O activities")
    trials_task_queue: str = Field(TRIALS_QUEUE, description="CPU training activities")

    @property
    def embedded(self) -> bool:
        return not self.temporal_address

    @property
    def address(self) -> str:
        return self.temporal_address or f"127.0.0.1:{self.temporal_port}"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.temporal_ui_port}" if self.embedded else ""


class DatabaseSettings(BaseSettings):
    model_config = _ENV
    database_url: str | None = None
    postgres_port: int = 5433
    database_name: str = "pmls"

    @property
    def embedded(self) -> bool:
        return not self.database_url

    @property
    def url(self) -> str:
        """asyncpg/libpq URL of the service database."""
        return (
            self.database_url or f"postgresql://postgres@127.0.0.1:{self.postgres_port}/{self.database_name}"
        )

    def url_for(self, database: str) -> str:
        """The same server, another database (MLflow keeps its tables in ``mlflow``)."""
        base, _, _ = self.url.rpartition("/")
        return f"{base}/{database}"

    optuna_database: str = Field(
        "pmls_optuna", description="Optuna keeps its own tables (and alembic_version)"
    )

    @property
    def sqlalchemy_url(self) -> str:
        return self.url.replace("postgresql://", "postgresql+psycopg2://", 1)

    @property
    def optuna_url(self) -> str:
        return self.url_for(self.optuna_database).replace("postgresql://", "postgresql+psycopg2://", 1)


class RedisSettings(BaseSettings):
    model_config = _ENV
    redis_url: str | None = None
    redis_port: int = 6380
    redis_socket_timeout: float = 0.5

    @property
    def embedded(self) -> bool:
        return not self.redis_url

    @property
    def url(self) -> str:
        return self.redis_url or f"redis://127.0.0.1:{self.redis_port}/0"


class MlflowSettings(BaseSettings):
    model_config = _ENV
    mlflow_tracking_uri: str | None = None
    mlflow_port: int = 5000

    @property
    def embedded(self) -> bool:
        return not self.mlflow_tracking_uri

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"http://127.0.0.1:{self.mlflow_port}"


class ApiSettings(BaseSettings):
    model_config = _ENV
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_max_body_bytes: int = Field(
        1 << 20, ge=1024, description="larger request bodies are refused with 413 before they are read whole"
    )

    @property
    def base_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"


class ServingSettings(BaseSettings):
    """The `local` deployment target: one supervised process that serves each lineage's locally deployed
    version over HTTP (`pmls serve`, started by `pmls up`)."""

    model_config = _ENV
    serving_host: str = "127.0.0.1"
    serving_port: int = 8100
    serving_max_rows: int = Field(10_000, ge=1, le=1_000_000, description="rows per prediction request")
    serving_poll_seconds: float = Field(
        1.0, gt=0, le=60, description="how often it looks for new deployments"
    )
    # Single-model mode (the `kubernetes` target's pods): serve this version, without PostgreSQL.
    serve_model: str | None = None
    serve_alias: str = "production"
    serve_version: str | None = None
    serve_sha256: str | None = None
    serve_run_id: str | None = None  # its MLflow run: the held-out rows it must predict as registered

    @property
    def base_url(self) -> str:
        return f"http://{self.serving_host}:{self.serving_port}"


class KubernetesSettings(BaseSettings):
    """The `kubernetes` deployment target (the cluster from KUBECONFIG, or in-cluster)."""

    model_config = _ENV
    k8s_namespace: str = "default"
    k8s_image: str = Field("pmls:latest", description="pmls's image (deploy/Dockerfile) the serving pods run")
    k8s_cpu: str = "500m"
    k8s_memory: str = "1Gi"
    k8s_env_secret: str | None = Field(
        None,
        description="a Secret whose keys become the pods' environment: PMLS_API_TOKENS, MLflow credentials",
    )
    k8s_service_account: str | None = None
    k8s_mlflow_uri: str | None = Field(
        None, description="MLflow as the pods reach it (default: the workers' URI)"
    )
    k8s_rollout_timeout_seconds: float = Field(300.0, gt=0, le=3600)

    @property
    def configured(self) -> bool:
        """A cluster to talk to: in-cluster, or a kubeconfig."""
        home_config = Path("~/.kube/config").expanduser()
        return bool(
            os.environ.get("KUBERNETES_SERVICE_HOST") or os.environ.get("KUBECONFIG") or home_config.is_file()
        )


class AuthSettings(BaseSettings):
    model_config = _ENV
    auth: Literal["enabled", "disabled"] = Field(
        "enabled",
        description="'disabled' lets anyone who reaches the API do anything (a warning at every start)",
    )
    api_tokens: str | None = Field(
        None, description="operator tokens as name:scope+scope:sha256, comma-separated (`pmls token create`)"
    )
    jwt_jwks: str | None = Field(None, description="the identity provider's JWKS: an https URL or a file")
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_scope_claim: str = Field("scope", description="the claim holding the scopes (a string or a list)")
    jwt_algorithms: str = "RS256,ES256"
    max_active_jobs_per_caller: int = Field(20, ge=1, description="more QUEUED or RUNNING jobs: 429")


class WorkerSettings(BaseSettings):
    model_config = _ENV
    trial_slots: int = Field(
        default_factory=lambda: os.cpu_count() or 2,
        ge=1,
        description="trials that run at once on this machine (default: one per core)",
    )
    trial_processes: int | None = Field(
        None,
        ge=1,
        description="trials-worker processes `pmls up` starts (default: one per slot, so that concurrent "
        "trials never share an interpreter lock; fewer saves ~0.8 GB of memory each)",
    )
    relay_interval_seconds: float = 2.0
    outage_budget_seconds: float = Field(
        1800.0,
        ge=10,
        le=7 * 24 * 3600,
        description="how long a job waits out a server or data source it cannot reach (PostgreSQL, Redis, MLflow, "
        "a database source) before it fails; each stage's attempts retry with backoff until then",
    )
    fault_injection_rate: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="for fault-injection tests and bench/faults only: the share of activity attempts this "
        "worker fails on purpose, at random, before they start (default 0: never)",
    )
    max_running_jobs: int | None = Field(
        None,
        ge=1,
        description="jobs that may run at once across the deployment; the rest wait QUEUED, oldest first "
        "(default: no limit)",
    )
    reconcile_interval_seconds: float = Field(
        5.0,
        gt=0,
        description="how often a training worker looks for jobs whose runs were closed from outside",
    )

    @property
    def processes(self) -> int:
        return min(self.trial_processes or self.trial_slots, self.trial_slots)

    @property
    def threads_per_trial(self) -> int:
        """Cores per slot: each trial's library threads (LightGBM, XGBoost, torch)."""
        return max(1, (os.cpu_count() or 1) // self.trial_slots)

    def slots_of(self, process: int) -> int:
        """The slots of trials-worker process ``process`` (0-based): the machine's slots split evenly."""
        share, extra = divmod(self.trial_slots, self.processes)
        return share + (1 if process < extra else 0)


class Settings(BaseSettings):
    """Everything, for the composition roots (workers, API, CLI, stack)."""

    model_config = _ENV
    artifact_root: str | None = None
    data_roots: str | None = Field(
        None,
        description="folders file and DuckDB sources may read, separated by ',' (default: PMLS_HOME/data)",
    )

    connections: dict[str, str] = Field(
        default_factory=dict,
        description="database sources a request may name, as a JSON object name -> postgresql:// URL "
        "(with credentials; give each a role with SELECT grants only)",
    )
    source_statement_timeout_seconds: float = Field(1800.0, gt=0, description="a source query's time limit")

    @cached_property
    def home(self) -> Path:
        return pmls_home()

    @property
    def artifacts(self) -> str:
        return self.artifact_root or str(self.home / "artifacts")

    @cached_property
    def data_root_paths(self) -> list[Path]:
        """The data roots, resolved. None may hold PMLS_HOME or the artifact store (a source there could read
        another job's snapshot or the service's own files): such a setting stops the process at start."""
        given = [p.strip() for p in (self.data_roots or "").split(",") if p.strip()]
        roots = [Path(p).expanduser().resolve() for p in given] or [self.home / "data"]
        artifacts = Path(self.artifacts).resolve()
        for root in roots:
            for inner in (self.home, artifacts):
                if inner.is_relative_to(root) or root.is_relative_to(artifacts):
                    raise ValueError(
                        f"PMLS_DATA_ROOTS: {root} holds or is inside {inner}; name the folders with the data instead"
                    )
        return roots

    @cached_property
    def temporal(self) -> TemporalSettings:
        return TemporalSettings()

    @cached_property
    def database(self) -> DatabaseSettings:
        return DatabaseSettings()

    @cached_property
    def redis(self) -> RedisSettings:
        return RedisSettings()

    @cached_property
    def mlflow(self) -> MlflowSettings:
        return MlflowSettings()

    @cached_property
    def api(self) -> ApiSettings:
        return ApiSettings()

    @cached_property
    def serving(self) -> ServingSettings:
        return ServingSettings()

    @cached_property
    def kubernetes(self) -> KubernetesSettings:
        return KubernetesSettings()

    @cached_property
    def auth(self) -> AuthSettings:
        return AuthSettings()

    @cached_property
    def worker(self) -> WorkerSettings:
        return WorkerSettings()
