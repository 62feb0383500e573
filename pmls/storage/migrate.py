"""``pmls migrate``: create the databases when missing, run Alembic, register Temporal search attributes."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import psycopg2
from alembic import command
from alembic.config import Config
from psycopg2 import sql

from pmls.settings import Settings

log = logging.getLogger("pmls.migrate")
MIGRATIONS = Path(__file__).parent / "migrations"


def ensure_database(url: str) -> None:
    """Create the database in ``url`` if the server does not have it yet."""
    base, _, name = url.rpartition("/")
    name = name.split("?")[0]
    conn = psycopg2.connect(f"{base}/postgres", connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                log.info("created database %s", name)
    finally:
        conn.close()


def alembic_config(settings: Settings) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", settings.database.sqlalchemy_url.replace("%", "%%"))
    return cfg


def upgrade_database(settings: Settings) -> None:
    ensure_database(settings.database.url)
    command.upgrade(alembic_config(settings), "head")


async def register_search_attributes(settings: Settings) -> None:
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest

    from pmls.contracts.temporal import SEARCH_ATTRIBUTES
    from pmls.temporal import connect_temporal

    client = await connect_temporal(settings)
    ns = settings.temporal.temporal_namespace
    existing = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=ns))
    missing = {
        name: IndexedValueType.Value(f"INDEXED_VALUE_TYPE_{kind.upper()}")
        for name, kind in SEARCH_ATTRIBUTES.items()
        if name not in existing.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=ns, search_attributes=missing)
        )


def migrate_all(settings: Settings) -> None:
    from pmls.storage.studies import create_tables

    upgrade_database(settings)
    ensure_database(settings.database.url_for(settings.database.optuna_database))
    create_tables(settings.database.optuna_url)
    if settings.mlflow.embedded:
        ensure_database(settings.database.url_for("mlflow"))
    asyncio.run(register_search_attributes(settings))
