"""The seed's three tables, plus the event outbox and deployment history.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATUSES = "('QUEUED','RUNNING','COMPLETED','FAILED','CANCELLED')"


def _id() -> sa.Column:
    return sa.Column("id", UUID(as_uuid=True), primary_key=True, server_default=sa.text("gen_random_uuid()"))


def _now(name: str) -> sa.Column:
    return sa.Column(name, sa.TIMESTAMP(timezone=True), nullable=False, server_default=sa.text("now()"))


def upgrade() -> None:
    op.create_table(
        "training_jobs",
        _id(),
        sa.Column("job_id", sa.String(100), nullable=False, unique=True),
        sa.Column("model_type", sa.String(50), nullable=False),
        sa.Column("training_mode", sa.String(50), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("progress_percentage", sa.Float, nullable=False, server_default="0"),
        sa.Column("training_config", JSONB, nullable=False),
        sa.Column("training_metrics", JSONB),
        _now("started_at"),
        sa.Column("completed_at", sa.TIMESTAMP(timezone=True)),
        # ours
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("current_stage", sa.String(100), nullable=False, server_default="queued"),
        sa.Column("estimated_completion", sa.TIMESTAMP(timezone=True)),
        sa.Column("model_id", sa.String(100)),
        sa.Column("error", sa.Text),
        _now("updated_at"),
        sa.CheckConstraint(f"status IN {STATUSES}", name="training_jobs_status_valid"),
        sa.CheckConstraint("progress_percentage BETWEEN 0 AND 100", name="training_jobs_progress_range"),
    )
    op.create_index("training_jobs_status_idx", "training_jobs", ["status", "started_at"])

    op.create_table(
        "model_artifacts",
        _id(),
        sa.Column("model_id", sa.String(100), nullable=False, unique=True),
        sa.Column("model_type", sa.String(50), nullable=False),
        sa.Column("version", sa.String(20), nullable=False),
        sa.Column("training_job_id", sa.String(100), nullable=False),
        sa.Column("performance_metrics", JSONB, nullable=False),
        sa.Column("model_size_mb", sa.Float),
        sa.Column("deployment_ready", sa.Boolean, nullable=False, server_default=sa.false()),
        _now("created_at"),
        # ours
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_uri", sa.Text, nullable=False),
        sa.Column("mlflow_run_id", sa.String(64)),
        sa.UniqueConstraint("model_name", "version", name="model_artifacts_lineage_version"),
    )
    op.create_index("model_artifacts_job_idx", "model_artifacts", ["training_job_id"])

    op.create_table(
        "hyperparameter_experiments",
        _id(),
        sa.Column("experiment_id", sa.String(100), nullable=False, unique=True),
        sa.Column("training_job_id", sa.String(100), nullable=False),
        sa.Column("hyperparameters", JSONB, nullable=False),
        sa.Column("performance_score", sa.Float, nullable=False),
        sa.Column("trial_number", sa.Integer, nullable=False),
        sa.Column("experiment_duration_minutes", sa.Float),
        _now("created_at"),
        # ours
        sa.Column("model_type", sa.String(50)),
        sa.Column("state", sa.String(20), nullable=False, server_default="COMPLETE"),
    )
    op.create_index("hyperparameter_experiments_job_idx", "hyperparameter_experiments", ["training_job_id"])

    op.create_table(
        "event_outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("aggregate_id", sa.String(100), nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        _now("created_at"),
        sa.Column("published_at", sa.TIMESTAMP(timezone=True)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index(
        "event_outbox_unpublished_idx",
        "event_outbox",
        ["id"],
        postgresql_where=sa.text("published_at IS NULL"),
    )

    op.create_table(
        "deployments",
        _id(),
        sa.Column("deployment_id", sa.String(100), nullable=False, unique=True),
        sa.Column("model_id", sa.String(100), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(20), nullable=False),
        sa.Column("target", sa.String(20), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("previous_model_id", sa.String(100)),
        sa.Column("message", sa.Text, nullable=False, server_default=""),
        _now("deployed_at"),
    )
    op.create_index("deployments_lineage_idx", "deployments", ["model_name", "deployed_at"])


def downgrade() -> None:
    for table in (
        "deployments",
        "event_outbox",
        "hyperparameter_experiments",
        "model_artifacts",
        "training_jobs",
    ):
        op.drop_table(table)
