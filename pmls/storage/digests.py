"""The bundle content hashes recorded in ``model_artifacts`` at registration, read from a worker thread."""

from __future__ import annotations

import sqlalchemy as sa


class RecordedDigests:
    def __init__(self, database_url: str) -> None:
        self.engine = sa.create_engine(
            database_url.replace("postgresql://", "postgresql+psycopg2://", 1),
            pool_size=1,
            pool_pre_ping=True,
        )

    def of(self, model_id: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT bundle_sha256 FROM model_artifacts WHERE model_id = :id"), {"id": model_id}
            ).scalar()

    def close(self) -> None:
        self.engine.dispose()
